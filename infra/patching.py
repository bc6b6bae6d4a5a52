"""Patching: rolling security patching of the EC2 hosts with SSM, running the kit's own playbook.

One patch group per host role that EC2 instances realise (infra/topology.py: app, vault); every
instance carries its group in the `Patch Group` tag (infra/app_hosts.py, infra/vault.py). Each group
gets the Debian security baseline, and its own maintenance window: the windows follow each other on
one day and never overlap, so two roles are never patched at once (PAT-04). A window's one task runs
`playbooks/patch.yml` through `AWS-ApplyAnsiblePlaybooks` (Run Command) on one host at a time
(max_concurrency "1") and stops at the first failure (max_errors "0"); the playbook drains, patches,
restarts or reboots, health-checks and undrains each host, as in the lab. Every run's output lands in
an encrypted, object-locked evidence bucket under `runs/<role>/` (PAT-07); the playbooks are uploaded
to the same bucket (`bundle/playbooks.zip`) by the program, so hosts run the revision that was deployed.
A daily `AWS-RunPatchBaseline` scan (never an install, never a reboot) keeps SSM's patch compliance
current, so pending security updates show in SSM and Security Hub (PAT-05).

What SSM Patch Manager cannot do for Debian, and what the kit does instead:

- No patch age. Approval delays (`approve_after_days`) and cut-off dates (`approve_until_date`) are not
  supported for Debian: apt repositories carry no reliable release date per package. "No security
  update older than a month" (PCI DSS 6.3.3) is enforced by `billkit patch --check`, which dates each
  pending update from the mirror's own data.
- No classification or severity. Patch Manager knows a Debian security update only by its repository:
  with non-security updates excluded, a package's candidate version must come from the security suite
  (`<codename>-security`). The only filter keys are PRODUCT, PRIORITY and SECTION, and PRIORITY is the
  package's importance in Debian (Required … Extra), not the update's severity, so the baseline approves
  every priority and reports anything missing as CRITICAL.
- No drain and no orchestration. `AWS-RunPatchBaseline` installs and reboots in place: it never takes
  an app host out of the load balancer, never steps a Vault leader down, never checks raft quorum. It is
  used here only to scan; installing is the playbook's work.
- No view of restarts. A patch is "installed, pending reboot" only when Patch Manager installed it, so
  after the playbook's install SSM cannot show a host that still needs a reboot, and it never restarts
  only the services using replaced libraries (needrestart's job). Restarts and reboots are proven by the
  playbook's evidence (boot IDs, restarted services) in the evidence bucket.
- Patch Manager runs `apt-get update` on the host against its own sources: a host without a package
  path (a mirror or proxy reachable from its tier) scans and patches nothing.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pulumi
import pulumi_aws as aws

from infra import topology
from infra.buckets import SecureBucket, SecureBucketArgs
from infra.common import PATCH_GROUP_TAG, policy_json, statement, tags

# What topology.Role.aws_realised_by says of roles whose hosts are EC2 instances (the others are managed).
EC2_REALISATION = "EC2 instances"
# Debian's package priorities: all of them, since a priority is a package's importance, not a severity.
DEBIAN_PRIORITIES = ("Required", "Important", "Standard", "Optional", "Extra")
# apt-based systems: the same filter keys, no approval delay (see the module docstring).
APT_SYSTEMS = ("DEBIAN", "UBUNTU")
DAYS = ("MON", "TUE", "WED", "THU", "FRI", "SAT", "SUN")
APPLY_PLAYBOOKS = "AWS-ApplyAnsiblePlaybooks"
RUN_PATCH_BASELINE = "AWS-RunPatchBaseline"
PLAYBOOKS_DIR = Path(__file__).resolve().parent.parent / "playbooks"
BUNDLE_KEY = "bundle/playbooks.zip"
RUNS_PREFIX = "runs/"
SCANS_PREFIX = "scans/"


# --- pure logic ------------------------------------------------------------------------------


def ec2_roles() -> tuple[str, ...]:
    """The host roles that EC2 instances realise in AWS, in topology order: each is one patch group."""
    return tuple(r.name for r in topology.ROLES if r.aws_realised_by == EC2_REALISATION)


def patch_group_name(prefix: str, role: str) -> str:
    """The `Patch Group` tag value of a role's instances (one per stack prefix, so stacks never share one)."""
    if role not in ec2_roles():
        raise ValueError(f"role {role!r} has no EC2 instances to patch; patch groups exist for {list(ec2_roles())}")
    return f"{prefix}-{role}"


@dataclass(frozen=True)
class RolloutWindow:
    """One role's maintenance window: it opens at start_hour and closes duration_hours later."""

    role: str
    group: str
    start_hour: int
    duration_hours: int
    cutoff_hours: int
    day: str

    @property
    def schedule(self) -> str:
        return f"cron(0 {self.start_hour} ? * {self.day} *)"


def rollout_windows(
    groups: Mapping[str, str], *, day: str = "SUN", start_hour: int = 2, duration_hours: int = 3, cutoff_hours: int = 1
) -> tuple[RolloutWindow, ...]:
    """One window per patch group, back to back on one day, so no two roles are ever patched at once.

    SSM starts no task in a window's last cutoff hours; a rollout that has started finishes its hosts
    (CONTINUE_TASK), so a window must be long enough for its role's largest group.
    """
    if not groups:
        raise ValueError("no patch group to schedule: pass one per role (patch_group_name)")
    if day not in DAYS:
        raise ValueError(f"window day {day!r} is not one of {', '.join(DAYS)}")
    if not 1 <= duration_hours <= 24:
        raise ValueError(f"a maintenance window lasts 1 to 24 hours, not {duration_hours}")
    if not 1 <= cutoff_hours < duration_hours:
        raise ValueError(
            f"the cutoff ({cutoff_hours} h) must be at least 1 h and shorter than the window ({duration_hours} h)"
        )
    end = start_hour + len(groups) * duration_hours
    if start_hour < 0 or end > 24:
        raise ValueError(
            f"{len(groups)} windows of {duration_hours} h from {start_hour}:00 end at {end}:00: they must fit in "
            "one day; start earlier or shorten the windows"
        )
    return tuple(
        RolloutWindow(role, group, start_hour + i * duration_hours, duration_hours, cutoff_hours, day)
        for i, (role, group) in enumerate(groups.items())
    )


def playbook_variables(role: str) -> str:
    """The extra variables the task hands the playbook: the role the host plays.

    AWS-ApplyAnsiblePlaybooks runs `ansible-playbook -i localhost, -c local` on each host, so the
    playbook's first play puts the host in its role's group (role_<kind>) from this variable.
    """
    return f"patching_kind={role}"


def source_info(region: str, bucket: pulumi.Input[str]) -> pulumi.Output[str]:
    """AWS-ApplyAnsiblePlaybooks's SourceInfo for the bundle in the evidence bucket (SourceType S3)."""
    url = pulumi.Output.concat("https://s3.", region, ".amazonaws.com/", bucket, "/", BUNDLE_KEY)
    return url.apply(lambda u: json.dumps({"path": u}))


# --- the component ---------------------------------------------------------------------------


@dataclass
class PatchingArgs:
    account_id: pulumi.Input[str]
    region: str
    # Host role -> its instances' `Patch Group` tag value (patch_group_name), in rollout order.
    patch_groups: dict[str, str]
    # Host role -> the IAM role name of its instances (they read the bundle and write their evidence).
    host_role_names: dict[str, pulumi.Input[str]]
    # The KMS key of the evidence bucket (hosts encrypt with it, auditors decrypt).
    evidence_key_arn: pulumi.Input[str]
    base_tags: dict[str, str] = field(default_factory=dict)
    operating_system: str = "DEBIAN"
    # Security updates only; True also approves every other pending update (`billkit patch --all`).
    include_non_security: bool = False
    compliance_level: str = "CRITICAL"
    window_day: str = "SUN"
    window_start_hour: int = 2
    window_hours: int = 3
    window_cutoff_hours: int = 1
    window_timezone: str = "UTC"
    # PAT-04: one host at a time, stop at the first failure.
    max_concurrency: str = "1"
    max_errors: str = "0"
    playbook: str = "patch.yml"
    # Uploaded as the bundle the hosts run; None: the bundle is published to BUNDLE_KEY some other way.
    playbooks_dir: str | None = str(PLAYBOOKS_DIR)
    scan_schedule: str = "cron(0 1 * * ? *)"
    # Evidence is kept and object-locked (compliance mode) this long.
    evidence_days: int = 365


class Patching(pulumi.ComponentResource):
    def __init__(self, name: str, args: PatchingArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        # Checked before anything is registered: a bad argument leaves nothing half-built.
        if args.operating_system not in APT_SYSTEMS:
            raise ValueError(f"the baseline is written for apt systems {APT_SYSTEMS}, not {args.operating_system}")
        if set(args.host_role_names) != set(args.patch_groups):
            raise ValueError(
                f"every patch group needs its hosts' IAM role: groups {sorted(args.patch_groups)}, "
                f"roles {sorted(args.host_role_names)}"
            )
        windows = rollout_windows(
            args.patch_groups, day=args.window_day, start_hour=args.window_start_hour,
            duration_hours=args.window_hours, cutoff_hours=args.window_cutoff_hours,
        )  # fmt: skip
        super().__init__("billkit:patching:Patching", name, None, opts)
        child = pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(parent=self))
        t = tags(args.base_tags, billkit_component="patching")

        # PAT-07: the evidence of every run, encrypted and locked; the playbook bundle lives beside it.
        self.bucket = SecureBucket(
            f"{name}-evidence",
            SecureBucketArgs(
                account_id=args.account_id,
                base_tags=t,
                kms_key_arn=args.evidence_key_arn,
                expire_after_days=args.evidence_days,
                object_lock_days=args.evidence_days,
            ),
            opts=child,
        )
        bucket_name = self.bucket.bucket.bucket
        bucket_arn = self.bucket.bucket.arn
        if args.playbooks_dir is not None:
            self.bundle = aws.s3.BucketObjectv2(
                f"{name}-bundle",
                bucket=self.bucket.bucket.id,
                key=BUNDLE_KEY,
                source=pulumi.FileArchive(args.playbooks_dir),
                content_type="application/zip",
                # Object Lock refuses uploads without an integrity checksum.
                checksum_algorithm="SHA256",
                tags=t,
                opts=pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(depends_on=[self.bucket])),
            )

        # PAT-05: security updates of every priority, reported as critical while missing.
        self.baseline = aws.ssm.PatchBaseline(
            f"{name}-baseline",
            name=f"{name}-{args.operating_system.lower()}-security",
            description="billkit: security updates from the security suite; age is checked by billkit patch --check",
            operating_system=args.operating_system,
            approval_rules=[
                aws.ssm.PatchBaselineApprovalRuleArgs(
                    patch_filters=[
                        # Every Debian release: a new AMI must not silently fall outside the baseline.
                        aws.ssm.PatchBaselineApprovalRulePatchFilterArgs(key="PRODUCT", values=["*"]),
                        aws.ssm.PatchBaselineApprovalRulePatchFilterArgs(
                            key="PRIORITY", values=list(DEBIAN_PRIORITIES)
                        ),
                    ],
                    compliance_level=args.compliance_level,
                    enable_non_security=args.include_non_security,
                )
            ],
            approved_patches_enable_non_security=False,
            tags=t,
            opts=child,
        )
        self.patch_groups = {
            role: aws.ssm.PatchGroup(
                f"{name}-{role}-group", baseline_id=self.baseline.id, patch_group=group, opts=child
            )
            for role, group in args.patch_groups.items()
        }

        self.windows: dict[str, aws.ssm.MaintenanceWindow] = {}
        self.tasks: dict[str, aws.ssm.MaintenanceWindowTask] = {}
        info = source_info(args.region, bucket_name)
        for w in windows:
            window = aws.ssm.MaintenanceWindow(
                f"{name}-{w.role}-window",
                name=f"{name}-{w.role}",
                description=f"billkit: rolling security patching of the {w.role} hosts",
                schedule=w.schedule,
                schedule_timezone=args.window_timezone,
                duration=w.duration_hours,
                cutoff=w.cutoff_hours,
                allow_unassociated_targets=False,
                enabled=True,
                tags=t,
                opts=child,
            )
            target = aws.ssm.MaintenanceWindowTarget(
                f"{name}-{w.role}-targets",
                window_id=window.id,
                name=f"{name}-{w.role}",
                description=f"the instances in patch group {w.group}",
                resource_type="INSTANCE",
                targets=[aws.ssm.MaintenanceWindowTargetTargetArgs(key=f"tag:{PATCH_GROUP_TAG}", values=[w.group])],
                opts=child,
            )
            parameters = {
                "SourceType": ["S3"],
                "SourceInfo": [info],
                # Private tiers have no internet path: Ansible is on the image, never installed by the task.
                "InstallDependencies": ["False"],
                "PlaybookFile": [args.playbook],
                "ExtraVariables": [playbook_variables(w.role)],
                "Check": ["False"],
                "Verbose": ["-v"],
            }
            self.tasks[w.role] = aws.ssm.MaintenanceWindowTask(
                f"{name}-{w.role}-rollout",
                window_id=window.id,
                name=f"{name}-{w.role}-rollout",
                description=f"playbooks/{args.playbook} on one {w.role} host at a time; stop at the first failure",
                task_type="RUN_COMMAND",
                task_arn=APPLY_PLAYBOOKS,
                priority=1,
                max_concurrency=args.max_concurrency,
                max_errors=args.max_errors,
                # A host in the middle of its rollout is finished when the window closes, never left drained.
                cutoff_behavior="CONTINUE_TASK",
                targets=[aws.ssm.MaintenanceWindowTaskTargetArgs(key="WindowTargetIds", values=[target.id])],
                task_invocation_parameters=aws.ssm.MaintenanceWindowTaskTaskInvocationParametersArgs(
                    run_command_parameters=aws.ssm.MaintenanceWindowTaskTaskInvocationParametersRunCommandParametersArgs(
                        comment=f"billkit rollout: {w.role}",
                        parameters=[
                            aws.ssm.MaintenanceWindowTaskTaskInvocationParametersRunCommandParametersParameterArgs(
                                name=key, values=values
                            )
                            for key, values in parameters.items()
                        ],
                        output_s3_bucket=bucket_name,
                        output_s3_key_prefix=f"{RUNS_PREFIX}{w.role}",
                        # A command that cannot start within 10 minutes (host unreachable) fails, and stops the rollout.
                        timeout_seconds=600,
                    )
                ),
                opts=child,
            )  # fmt: skip
            self.windows[w.role] = window

        # Hosts read the bundle and write their own role's evidence; nothing else of the bucket.
        self.host_policies = [
            aws.iam.RolePolicy(
                f"{name}-{role}-host",
                role=role_name,
                policy=policy_json(
                    statement(
                        "ReadPlaybookBundle",
                        ["s3:GetObject", "s3:GetObjectVersion"],
                        [pulumi.Output.concat(bucket_arn, "/", BUNDLE_KEY)],
                    ),
                    statement(
                        "WritePatchEvidence",
                        ["s3:PutObject", "s3:PutObjectAcl"],
                        [
                            pulumi.Output.concat(bucket_arn, f"/{RUNS_PREFIX}{role}/*"),
                            pulumi.Output.concat(bucket_arn, f"/{SCANS_PREFIX}*"),
                        ],
                    ),
                    statement("ReadEvidenceEncryption", ["s3:GetEncryptionConfiguration"], [bucket_arn]),
                    statement("UseEvidenceKey", ["kms:GenerateDataKey", "kms:Decrypt"], [args.evidence_key_arn]),
                ),
                opts=child,
            )
            for role, role_name in args.host_role_names.items()
        ]

        # PAT-05: a daily read-only scan keeps SSM's patch compliance current (pending security updates).
        self.scan = aws.ssm.Association(
            f"{name}-scan",
            name=RUN_PATCH_BASELINE,
            association_name=f"{name}-daily-scan",
            schedule_expression=args.scan_schedule,
            parameters={"Operation": "Scan", "RebootOption": "NoReboot"},
            targets=[
                aws.ssm.AssociationTargetArgs(key=f"tag:{PATCH_GROUP_TAG}", values=list(args.patch_groups.values()))
            ],
            compliance_severity=args.compliance_level,
            max_concurrency="50%",
            max_errors="100%",
            output_location=aws.ssm.AssociationOutputLocationArgs(
                s3_bucket_name=bucket_name, s3_key_prefix=SCANS_PREFIX.rstrip("/"), s3_region=args.region
            ),
            tags=t,
            opts=child,
        )
        self.register_outputs(
            {
                "baseline_id": self.baseline.id,
                "patch_groups": dict(args.patch_groups),
                "window_ids": {role: w.id for role, w in self.windows.items()},
                "evidence_bucket": bucket_name,
            }
        )
