"""Patching in AWS (infra/patching.py): the rollout plan as plain functions, the component under the mock runtime."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest
from stackhelpers import doc, named, of, one

from billkit.plan import Resource
from infra import topology
from infra.common import PATCH_GROUP_TAG
from infra.patching import (
    APPLY_PLAYBOOKS,
    BUNDLE_KEY,
    DEBIAN_PRIORITIES,
    PLAYBOOKS_DIR,
    Patching,
    PatchingArgs,
    ec2_roles,
    patch_group_name,
    playbook_variables,
    rollout_windows,
)

# pulumi_aws warns about its own deprecated aliases when a service module loads.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:pulumi_aws")

BASELINE = "aws:ssm/patchBaseline:PatchBaseline"
GROUP = "aws:ssm/patchGroup:PatchGroup"
WINDOW = "aws:ssm/maintenanceWindow:MaintenanceWindow"
TARGET = "aws:ssm/maintenanceWindowTarget:MaintenanceWindowTarget"
TASK = "aws:ssm/maintenanceWindowTask:MaintenanceWindowTask"
ASSOCIATION = "aws:ssm/association:Association"
EVIDENCE_BUCKET = "billkit-patching-evidence-bucket"  # the mock's bucket name of billkit-patching-evidence
GROUPS = {"app": "billkit-app", "vault": "billkit-vault", "mon": "billkit-mon"}
# How an archive travels to the engine: Pulumi's signature key and its archive signature.
SIG_KEY, ARCHIVE_SIG = "4dabf18193072939515e22adb298388d", "0def7320c3a5731c473e5ecbe6d01bc7"


# --- the plan, without Pulumi ------------------------------------------------------------------------


def test_patch_groups_are_the_roles_ec2_instances_realise() -> None:
    assert ec2_roles() == ("app", "vault", "mon")
    managed = [r.name for r in topology.ROLES if r.name not in ec2_roles()]
    assert managed == ["waf", "db", "backup"]  # ALB, RDS, AWS Backup: AWS patches them
    assert {r: patch_group_name("billkit", r) for r in ec2_roles()} == GROUPS
    with pytest.raises(ValueError, match="role 'db' has no EC2 instances to patch"):
        patch_group_name("billkit", "db")


@pytest.mark.control("PAT-04")
def test_windows_follow_each_other_on_one_day_and_never_overlap() -> None:
    windows = rollout_windows(GROUPS, day="SUN", start_hour=2, duration_hours=3, cutoff_hours=1)
    assert [(w.role, w.group, w.schedule) for w in windows] == [
        ("app", "billkit-app", "cron(0 2 ? * SUN *)"),
        ("vault", "billkit-vault", "cron(0 5 ? * SUN *)"),
        ("mon", "billkit-mon", "cron(0 8 ? * SUN *)"),
    ]
    for earlier, later in zip(windows, windows[1:], strict=False):
        assert earlier.start_hour + earlier.duration_hours <= later.start_hour


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"groups": {}}, "no patch group to schedule"),
        ({"day": "SUNDAY"}, "window day 'SUNDAY' is not one of MON, TUE"),
        ({"duration_hours": 0}, "a maintenance window lasts 1 to 24 hours, not 0"),
        ({"cutoff_hours": 0}, "the cutoff (0 h) must be at least 1 h and shorter than the window (3 h)"),
        ({"cutoff_hours": 3}, "the cutoff (3 h) must be at least 1 h and shorter than the window (3 h)"),
        ({"start_hour": 20}, "3 windows of 3 h from 20:00 end at 29:00: they must fit in one day"),
    ],
)
def test_a_window_plan_that_cannot_work_is_refused_with_the_fix(kwargs: dict[str, Any], message: str) -> None:
    groups = kwargs.pop("groups", GROUPS)
    with pytest.raises(ValueError) as exc:
        rollout_windows(groups, **kwargs)
    assert message in str(exc.value)


def test_the_playbook_learns_its_role_from_extra_variables() -> None:
    # AWS-ApplyAnsiblePlaybooks runs the playbook against localhost: no inventory group names the role.
    assert playbook_variables("vault") == "patching_kind=vault"


@pytest.mark.control("PAT-04", "PAT-05", "PAT-07")
def test_patching_args_default_to_the_secure_setting() -> None:
    defaults = {f.name: f.default for f in dataclasses.fields(PatchingArgs) if f.default is not dataclasses.MISSING}
    assert defaults["max_concurrency"] == "1" and defaults["max_errors"] == "0"
    assert defaults["include_non_security"] is False and defaults["compliance_level"] == "CRITICAL"
    assert defaults["operating_system"] == "DEBIAN" and defaults["evidence_days"] >= 365
    assert defaults["playbook"] == "patch.yml" and defaults["playbooks_dir"] == str(PLAYBOOKS_DIR)
    assert PLAYBOOKS_DIR.is_dir()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"operating_system": "WINDOWS"}, "the baseline is written for apt systems"),
        ({"host_role_names": {"app": "r"}}, "every patch group needs its hosts' IAM role"),
        ({"window_hours": 13}, "3 windows of 13 h from 2:00 end at 41:00"),
    ],
)
def test_bad_arguments_are_refused_before_anything_is_registered(change: dict[str, Any], message: str) -> None:
    args = PatchingArgs(
        account_id="123456789012", region="eu-central-1", patch_groups=dict(GROUPS),
        host_role_names={"app": "a", "vault": "v", "mon": "m"},
        evidence_key_arn="arn:aws:kms:eu-central-1:123456789012:key/k",
    )  # fmt: skip
    with pytest.raises(ValueError, match=message):
        Patching("billkit-patching", dataclasses.replace(args, **change))


# --- the component in the prod stack ------------------------------------------------------------------


@pytest.mark.control("PAT-05")
def test_every_host_carries_a_patch_group_registered_with_the_baseline(prod: tuple[Resource, ...]) -> None:
    groups = {g.inputs["patchGroup"]: g.inputs["baselineId"] for g in of(prod, GROUP)}
    assert groups == dict.fromkeys(GROUPS.values(), "billkit-patching-baseline-id")
    nodes = {n.name: n.inputs["tags"][PATCH_GROUP_TAG] for n in of(prod, "aws:ec2/instance:Instance")}
    assert nodes == {"billkit-vault-1": "billkit-vault", "billkit-vault-2": "billkit-vault",
                     "billkit-vault-3": "billkit-vault", "billkit-mon-1": "billkit-mon"}  # fmt: skip
    lt = one(prod, "aws:ec2/launchTemplate:LaunchTemplate").inputs
    spec = next(s for s in lt["tagSpecifications"] if s["resourceType"] == "instance")
    assert spec["tags"][PATCH_GROUP_TAG] == "billkit-app"
    asg = {t["key"]: t for t in one(prod, "aws:autoscaling/group:Group").inputs["tags"]}
    assert asg[PATCH_GROUP_TAG]["value"] == "billkit-app" and asg[PATCH_GROUP_TAG]["propagateAtLaunch"]


@pytest.mark.control("PAT-05")
def test_the_baseline_approves_every_debian_security_update(prod: tuple[Resource, ...]) -> None:
    baseline = one(prod, BASELINE).inputs
    assert baseline["operatingSystem"] == "DEBIAN" and baseline["approvedPatchesEnableNonSecurity"] is False
    [rule] = baseline["approvalRules"]
    # Security only: a candidate version must come from the security suite; reported as critical while missing.
    assert rule["enableNonSecurity"] is False and rule["complianceLevel"] == "CRITICAL"
    # SSM supports no approval delay for Debian: patch age is billkit patch --check's job.
    assert "approveAfterDays" not in rule and "approveUntilDate" not in rule
    assert {f["key"]: f["values"] for f in rule["patchFilters"]} == {
        "PRODUCT": ["*"],
        "PRIORITY": list(DEBIAN_PRIORITIES),
    }


@pytest.mark.control("PAT-05")
def test_a_daily_scan_reports_pending_updates_and_never_installs(prod: tuple[Resource, ...]) -> None:
    scan = named(prod, ASSOCIATION, "billkit-patching-scan").inputs
    assert scan["name"] == "AWS-RunPatchBaseline" and scan["scheduleExpression"] == "cron(0 1 * * ? *)"
    assert scan["parameters"] == {"Operation": "Scan", "RebootOption": "NoReboot"}
    assert scan["targets"] == [{"key": f"tag:{PATCH_GROUP_TAG}", "values": list(GROUPS.values())}]
    assert scan["complianceSeverity"] == "CRITICAL"
    assert scan["outputLocation"] == {
        "s3BucketName": EVIDENCE_BUCKET,
        "s3KeyPrefix": "scans",
        "s3Region": "eu-central-1",
    }


@pytest.mark.control("PAT-04")
def test_each_role_is_rolled_out_in_its_own_window_one_host_at_a_time(prod: tuple[Resource, ...]) -> None:
    windows = {w.inputs["name"]: w for w in of(prod, WINDOW)}
    assert {n: w.inputs["schedule"] for n, w in windows.items()} == {
        "billkit-patching-app": "cron(0 2 ? * SUN *)",
        "billkit-patching-vault": "cron(0 5 ? * SUN *)",
        "billkit-patching-mon": "cron(0 8 ? * SUN *)",
    }
    for w in windows.values():
        assert (w.inputs["duration"], w.inputs["cutoff"], w.inputs["allowUnassociatedTargets"]) == (3, 1, False)
    for role, group in GROUPS.items():
        window = windows[f"billkit-patching-{role}"]
        target = named(prod, TARGET, f"billkit-patching-{role}-targets")
        assert target.inputs["targets"] == [{"key": f"tag:{PATCH_GROUP_TAG}", "values": [group]}]
        assert target.property_dependencies["windowId"] == [window.urn]
        task = named(prod, TASK, f"billkit-patching-{role}-rollout")
        assert task.property_dependencies["windowId"] == [window.urn]
        t = task.inputs
        assert (t["taskType"], t["taskArn"]) == ("RUN_COMMAND", APPLY_PLAYBOOKS)
        assert (t["maxConcurrency"], t["maxErrors"], t["cutoffBehavior"]) == ("1", "0", "CONTINUE_TASK")
        assert t["targets"] == [{"key": "WindowTargetIds", "values": [f"{target.name}-id"]}]
        run = t["taskInvocationParameters"]["runCommandParameters"]
        params = {p["name"]: p["values"] for p in run["parameters"]}
        assert params["PlaybookFile"] == ["patch.yml"] and params["ExtraVariables"] == [playbook_variables(role)]
        # No internet in the private tiers: the task never installs Ansible, and really applies (no check mode).
        assert params["InstallDependencies"] == ["False"] and params["Check"] == ["False"]
        assert params["SourceType"] == ["S3"]
        assert json.loads(params["SourceInfo"][0]) == {
            "path": f"https://s3.eu-central-1.amazonaws.com/{EVIDENCE_BUCKET}/{BUNDLE_KEY}"
        }


@pytest.mark.control("PAT-07")
def test_every_run_leaves_its_output_in_a_locked_encrypted_bucket(prod: tuple[Resource, ...]) -> None:
    for role in GROUPS:
        run = named(prod, TASK, f"billkit-patching-{role}-rollout").inputs["taskInvocationParameters"]
        assert run["runCommandParameters"]["outputS3Bucket"] == EVIDENCE_BUCKET
        assert run["runCommandParameters"]["outputS3KeyPrefix"] == f"runs/{role}"
    lock = named(prod, "aws:s3/bucketObjectLockConfiguration:BucketObjectLockConfiguration",
                 "billkit-patching-evidence-object-lock").inputs  # fmt: skip
    assert lock["rule"]["defaultRetention"] == {"mode": "COMPLIANCE", "days": 365}
    sse = named(prod, "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration",
                "billkit-patching-evidence-sse").inputs  # fmt: skip
    assert sse["rules"][0]["applyServerSideEncryptionByDefault"]["kmsMasterKeyId"].endswith("billkit-keys-patching")
    bundle = named(prod, "aws:s3/bucketObjectv2:BucketObjectv2", "billkit-patching-bundle").inputs
    assert bundle["key"] == BUNDLE_KEY and bundle["checksumAlgorithm"] == "SHA256"
    # The whole playbooks/ folder, zipped by the engine (an archive, as the engine sees it).
    assert bundle["source"] == {SIG_KEY: ARCHIVE_SIG, "path": str(PLAYBOOKS_DIR)}


@pytest.mark.control("PAT-07", "RBAC-06")
def test_hosts_read_the_bundle_and_write_only_their_own_evidence(prod: tuple[Resource, ...]) -> None:
    bucket = "arn:aws:s3:eu-central-1:123456789012:bucket/billkit-patching-evidence"
    for role in GROUPS:
        policy = named(prod, "aws:iam/rolePolicy:RolePolicy", f"billkit-patching-{role}-host")
        assert policy.inputs["role"] == f"billkit-identity-{role}"
        stmts = {s["Sid"]: (s["Action"], s["Resource"]) for s in doc(policy.inputs["policy"])["Statement"]}
        assert stmts == {
            "ReadPlaybookBundle": (["s3:GetObject", "s3:GetObjectVersion"], [f"{bucket}/{BUNDLE_KEY}"]),
            "WritePatchEvidence": (["s3:PutObject", "s3:PutObjectAcl"],
                                   [f"{bucket}/runs/{role}/*", f"{bucket}/scans/*"]),
            "ReadEvidenceEncryption": (["s3:GetEncryptionConfiguration"], [bucket]),
            "UseEvidenceKey": (["kms:GenerateDataKey", "kms:Decrypt"],
                               ["arn:aws:kms:eu-central-1:123456789012:key/billkit-keys-patching"]),
        }  # fmt: skip
    key = next(k for k in of(prod, "aws:kms/key:Key") if k.name == "billkit-keys-patching")
    users = {s["Sid"]: s for s in doc(key.inputs["policy"])["Statement"]}
    assert users["HostsWriteEvidence"]["Principal"]["AWS"] == [
        f"arn:aws:iam:eu-central-1:123456789012:role/billkit-identity-{r}" for r in GROUPS
    ]
    # The deployer uploads the bundle through S3 only; it cannot use the key directly.
    assert users["DeployerUploadsPlaybooks"]["Condition"]["StringEquals"]["kms:ViaService"] == (
        "s3.eu-central-1.amazonaws.com"
    )


@pytest.mark.control("PAT-04", "PAT-05")
def test_the_dev_stack_is_patched_the_same_way(dev: tuple[Resource, ...]) -> None:
    assert {g.inputs["patchGroup"] for g in of(dev, GROUP)} == set(GROUPS.values())
    assert {t.inputs["maxConcurrency"] for t in of(dev, TASK)} == {"1"}
