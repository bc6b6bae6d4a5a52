"""Build the bundle: collect, judge every control, write the outputs, then the manifest and its signature."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from billkit.checks import Check, collect_policy_checks, collect_test_checks
from billkit.controls import Catalog, load_catalog
from billkit.report import collect, formats, html, manifest, oscal
from billkit.report.bundle import Bundle
from billkit.report.model import Report, Result, regressions, statuses
from billkit.report.waivers import WAIVERS_PATH, load_waivers


@dataclass
class Options:
    out: Path
    stack: str = "prod"
    stale_days: int = 30
    junit: list[Path] = field(default_factory=list)  # app/cloud JUnit to reuse (besides the lab's checks-*.xml)
    evidence_dir: Path | None = None  # the lab's; None: billkit.lab.state.EVIDENCE_DIR
    waivers: Path = WAIVERS_PATH
    catalog: Catalog | None = None
    checks: list[Check] | None = None  # None: collect the suite (pytest --collect-only)
    plan: bool = True
    vault: Any | None = None  # an hvac client; None: from VAULT_ADDR/VAULT_TOKEN when set
    today: dt.date | None = None


def vault_from_env() -> Any | None:
    if not os.environ.get("VAULT_ADDR") or not os.environ.get("VAULT_TOKEN"):
        return None
    import hvac

    return hvac.Client(
        url=os.environ["VAULT_ADDR"],
        token=os.environ["VAULT_TOKEN"],
        verify=os.environ.get("VAULT_CACERT") or True,
        timeout=10,
    )


@contextlib.contextmanager
def vault_client(progress: Callable[[str], None] = lambda _m: None) -> Iterator[Any | None]:
    """The Vault that signs and checks manifests: VAULT_ADDR and VAULT_TOKEN when set; else, when this
    checkout's lab runs, a token of the report-signing policy alone (15 minutes, made in a root session that
    is revoked at once, revoked itself at the end); else None (the bundle stays unsigned)."""
    env = vault_from_env()
    if env is not None:
        yield env
        return
    from billkit.lab.state import LAB_DIR, lab_owner

    if lab_owner() != str(LAB_DIR):
        yield None
        return
    from billkit.lab.app import vault_root
    from billkit.vault import lab as vault_lab
    from billkit.vault.deploy import open_cluster
    from billkit.vault.server import lab_nodes

    progress("the lab's Vault: a signing token (report-signing policy, 15 minutes)")
    try:
        with vault_root(progress) as root:
            token = root.auth.token.create(policies=["report-signing"], ttl="15m", no_parent=True, renewable=False)
        cluster, _ = open_cluster(lab_nodes(), vault_lab.state())
        client = cluster.active_client(token["auth"]["client_token"])
    except Exception as exc:  # noqa: BLE001 - the lab's Vault unusable: unsigned (and said so), never a crash
        progress(f"the lab's Vault gave no signing token: {type(exc).__name__}: {str(exc)[:200]}")
        yield None
        return
    try:
        yield client
    finally:
        with contextlib.suppress(Exception):  # it expires within 15 minutes anyway
            client.auth.token.revoke_self()


def _lab_hosts() -> tuple[str, ...]:
    from infra.topology import lab_hosts

    return tuple(h.name for h in lab_hosts())


def build(opts: Options, progress: Callable[[str], None] = lambda _m: None) -> Report:
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    if opts.out.exists():
        if any(opts.out.iterdir()) and not (opts.out / manifest.MANIFEST).exists():
            raise FileExistsError(f"{opts.out} exists and is not a billkit report: choose an empty or new --out")
        shutil.rmtree(opts.out)
    bundle = Bundle(opts.out)
    progress("catalogue and waivers")
    catalog = opts.catalog or load_catalog()
    waivers = load_waivers(catalog, opts.waivers)
    if opts.waivers.exists():
        bundle.copy(
            opts.waivers, "examine", "billkit waivers", "1", "Waivers: control, justification, approver, expiry"
        )
    if opts.checks is None:
        progress("collecting the checks of the test suite (coverage)")
    checks = opts.checks if opts.checks is not None else collect_test_checks() + collect_policy_checks()
    collect.coverage_evidence(bundle, catalog, checks)
    results: list[Result] = []
    policy_sarif: dict[str, Any] | None = None
    notes: list[str] = []
    if opts.plan:
        progress(f"policy pack on stack {opts.stack} (offline plan)")
        plan_res, policy_sarif = collect.plan_results(bundle, opts.stack)
        results += plan_res
    of_the_lab = opts.evidence_dir is None  # then the lab's Vault may sign it
    if opts.evidence_dir is None:
        from billkit.lab.state import EVIDENCE_DIR

        opts.evidence_dir = EVIDENCE_DIR
    hosts = _lab_hosts()
    junits = list(opts.junit)
    lab_checks = collect.newest(opts.evidence_dir, "checks-*.xml") if opts.evidence_dir.is_dir() else None
    if lab_checks:
        junits.append(lab_checks)
    for path in junits:
        progress(f"JUnit {path.name}")
        ev = bundle.copy(
            path, "test", "pytest", collect._v("pytest"), f"Check results ({path.name})", collect.junit_time(path)
        )
        # the suite's loopback host tests are not the lab's hosts: that layer comes from verify alone
        results += [r for r in collect.junit_results(path, ev.id, checks, hosts) if r.layer != "host"]
    verify_xml = collect.newest(opts.evidence_dir, "verify-*.xml") if opts.evidence_dir.is_dir() else None
    lab_assessed = verify_xml is not None
    if verify_xml is not None:
        progress(f"host checks {verify_xml.name}")
        ev = bundle.copy(
            verify_xml,
            "test",
            "billkit verify (pytest, testinfra)",
            collect._v("pytest-testinfra"),
            "Host checks on the lab, read only",
            collect.junit_time(verify_xml),
        )
        results += [r for r in collect.junit_results(verify_xml, ev.id, checks, hosts) if r.layer == "host"]
    else:
        notes.append("No host checks from `billkit verify` were found: the host layer is NOT ASSESSED in this report.")
    if opts.evidence_dir.is_dir():
        results += collect.drill_results(bundle, opts.evidence_dir, checks, hosts, progress)
        results += collect.lab_files(bundle, opts.evidence_dir, progress)
    today = opts.today or now.date()
    report = Report(
        now.isoformat(),
        opts.stack,
        catalog,
        bundle.evidence,
        results,
        statuses(catalog, results, list(waivers), today),
        lab_assessed,
        notes,
        opts.stale_days,
    )
    progress("writing index.html, OSCAL, SARIF, JUnit, summary")
    formats.write_summary(report, opts.out)
    formats.write_junit(report, opts.out)
    formats.write_sarif(report, policy_sarif, opts.out)
    oscal.write_all(report, opts.out)
    if opts.vault is not None or not of_the_lab:
        sign(report, opts.out, opts.vault if opts.vault is not None else vault_from_env(), progress)
    else:
        with vault_client(progress) as client:
            sign(report, opts.out, client, progress)
    return report


def sign(report: Report, out: Path, client: Any | None, progress: Callable[[str], None]) -> None:
    """Write index.html (it states whether the bundle is signed), the manifest, then the signature."""
    reason = "no Vault configured (VAULT_ADDR and VAULT_TOKEN unset)"
    if client is not None:
        try:
            client.secrets.transit.read_key(manifest.KEY, mount_point=manifest.MOUNT)
            reason = ""
        except Exception as exc:  # noqa: BLE001 - unreachable or refused: the bundle is still produced, unsigned
            reason = f"Vault not usable for signing: {str(exc)[:200]}"
    if reason:
        report.notes.append(
            f"The manifest is UNSIGNED: {reason}. `billkit report verify` refuses it without --allow-unsigned."
        )
    html.write_html(report, out)
    data = manifest.write_manifest(out, report.generated)
    if reason:
        manifest.mark_unsigned(out, reason)
        progress("manifest written, UNSIGNED")
        return
    progress(f"signing the manifest with {manifest.MOUNT}/{manifest.KEY}")
    manifest.sign(client, data, out)


def load_baseline(folder: Path) -> dict[str, Any]:
    path = folder / "summary.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no summary.json; --baseline takes the directory of an earlier report")
    return json.loads(path.read_text(encoding="utf-8"))


def gate(report: Report, baseline: Path) -> list[str]:
    return regressions(load_baseline(baseline), report.statuses)
