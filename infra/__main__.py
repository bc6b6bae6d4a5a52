"""The billkit AWS stack: read the config, build the components, export the outputs.

Run with `pulumi preview --policy-pack policies` / `pulumi up` from the repository root
(Pulumi.yaml names this folder as main). Offline: `billkit plan --stack prod`.
"""

from __future__ import annotations

import sys
from pathlib import Path

# Pulumi runs this file with infra/ as the working module path; the kit's packages live one up.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import pulumi  # noqa: E402
import pulumi_aws as aws  # noqa: E402

from infra import settings  # noqa: E402
from infra.stack import build  # noqa: E402

cfg = settings.load()
account_id = aws.get_caller_identity_output().account_id
outputs = build(cfg, account_id)
for key, value in outputs.items():
    pulumi.export(key, value)
