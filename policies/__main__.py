"""The billkit CrossGuard policy pack: `pulumi preview --policy-pack policies`.

Only this file builds the PolicyPack (which starts a gRPC server and blocks); the policies
live in importable modules under policies/rules/.
"""

import sys
from pathlib import Path

# The analyzer runs this file with policies/ as its path; the kit's packages live one up.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pulumi_policy import EnforcementLevel, PolicyPack  # noqa: E402

from policies.rules import PACK_NAME, all_policies  # noqa: E402

PolicyPack(
    name=PACK_NAME,
    enforcement_level=EnforcementLevel.MANDATORY,
    policies=all_policies(),
    description="billkit: PCI DSS v4.0 guardrails for the billing environment; each policy names its control IDs.",
)
