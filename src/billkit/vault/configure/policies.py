"""ACL policies: the HCL files of src/billkit/vault/policies/, written as they are."""

from __future__ import annotations

from pathlib import Path

import hvac

from billkit.vault.configure.api import _get

POLICY_DIR = Path(__file__).parent.parent / "policies"


def policy_texts() -> dict[str, str]:
    return {p.stem: p.read_text(encoding="utf-8") for p in sorted(POLICY_DIR.glob("*.hcl"))}


def ensure_policies(c: hvac.Client, changes: list[str]) -> None:
    for name, text in policy_texts().items():
        current = _get(c, f"sys/policies/acl/{name}")
        if current is None or current.get("policy", "").strip() != text.strip():
            c.sys.create_or_update_acl_policy(name, text)
            changes.append(f"policy {name}")
