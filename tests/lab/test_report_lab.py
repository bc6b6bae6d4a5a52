"""`billkit report` on the running lab (CMP-07): every control of the catalogue with a status, the manifest
signed by the lab's Vault with a key the report may use but never export, `billkit report verify` confirming
it with Vault, and a changed byte named. A drill: it makes a short-lived Vault token and writes a bundle
(in a temporary folder)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from billkit.controls import ROOT, load_catalog
from billkit.report.manifest import MANIFEST, SIGNATURE
from billkit.report.model import STATUSES

pytestmark = [
    pytest.mark.lab,
    pytest.mark.drill("report", disrupts="makes a short-lived report-signing token in Vault and writes a bundle"),
]


def _billkit(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "billkit", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, check=False)  # fmt: skip


@pytest.fixture(scope="module")
def bundle(lab_up: None, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("report") / "bundle"
    proc = _billkit("report", "--out", str(out))
    # 1 means "some control not satisfied": a verdict, not a failure to build
    assert proc.returncode in (0, 1), proc.stdout[-2000:] + proc.stderr[-3000:]
    return out


@pytest.mark.control("CMP-07")
def test_every_control_has_a_status(bundle: Path) -> None:
    summary = json.loads((bundle / "summary.json").read_text())
    assert set(summary["controls"]) == {c.id for c in load_catalog().active()}
    assert {s["status"] for s in summary["controls"].values()} <= set(STATUSES)


@pytest.mark.control("CMP-07")
def test_the_labs_vault_signed_the_manifest_and_confirms_it(bundle: Path) -> None:
    sig = json.loads((bundle / SIGNATURE).read_text())
    assert sig.get("signature", "").startswith("vault:"), sig
    proc = _billkit("report", "verify", str(bundle))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Vault confirms the signature" in proc.stdout + proc.stderr


@pytest.mark.control("CMP-07")
def test_a_changed_byte_is_named(bundle: Path, tmp_path: Path) -> None:
    evidence = sorted(p for p in (bundle / "evidence").iterdir() if p.is_file())
    assert evidence, "the bundle holds no evidence file"
    for name in (f"evidence/{evidence[0].name}", MANIFEST):
        copy = tmp_path / name.replace("/", "_")
        shutil.copytree(bundle, copy)
        target = copy / name
        data = bytearray(target.read_bytes())
        data[len(data) // 2] ^= 0x01
        target.write_bytes(bytes(data))
        proc = _billkit("report", "verify", str(copy))
        assert proc.returncode == 1, proc.stdout + proc.stderr
        assert name.split("/")[-1] in proc.stdout + proc.stderr, proc.stdout + proc.stderr
