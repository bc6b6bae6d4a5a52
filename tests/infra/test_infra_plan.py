"""`billkit plan`: the shipped stacks are clean, the insecure fixture is refused, outputs are usable."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable

import pytest
from typer.testing import CliRunner

from billkit.cli import app
from billkit.plan import PlanResult, Resource, as_sarif, captured, evaluate, run_program
from policies.rules import control_links

try:
    from . import insecure_stack  # type: ignore[import-not-found]
except ImportError:  # collected without a package (rootdir-relative import mode)
    import insecure_stack  # type: ignore[no-redef]

# pulumi_aws warns about its own deprecated aliases when a service module loads.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:pulumi_aws")

runner = CliRunner()


@pytest.fixture(scope="module")
def insecure() -> PlanResult:
    return evaluate("insecure", run_program("insecure", insecure_stack.CONFIG, insecure_stack.program))


@pytest.mark.control("CMP-02")
def test_prod_plan_is_clean_through_the_cli() -> None:
    result = runner.invoke(app, ["plan", "--stack", "prod", "--format", "json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["violations"] == [] and data["mandatory_violations"] == 0
    assert data["resources"] > 200 and data["resources_by_type"]["aws:rds/instance:Instance"] == 1
    assert data["resources_by_type"]["aws:ec2/instance:Instance"] == 4  # three Vault nodes and the mon host
    assert data["policies_evaluated"] == len(control_links())
    assert set(data["controls"].values()) == {"proven"} and "MON-01" in data["controls"]


@pytest.mark.control("CMP-02", "BAK-07")
def test_dev_plan_shows_its_opt_out_as_advisory_only() -> None:
    result = runner.invoke(app, ["plan", "--stack", "dev", "--format", "sarif"])
    assert result.exit_code == 0, result.output
    sarif = json.loads(result.stdout)
    run = sarif["runs"][0]
    assert sarif["version"] == "2.1.0"
    rule_ids = [r["id"] for r in run["tool"]["driver"]["rules"]]
    assert [(r["ruleId"], r["level"]) for r in run["results"]] == [("aws-rds-instance-enable-multi-az", "warning")]
    assert all(rule_ids[r["ruleIndex"]] == r["ruleId"] for r in run["results"])
    assert run["results"][0]["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] == "infra/database.py"


def test_plan_refuses_unknown_stacks_and_formats() -> None:
    assert runner.invoke(app, ["plan", "--stack", "staging"]).exit_code == 2
    assert runner.invoke(app, ["plan", "--format", "xml"]).exit_code == 2


# The policies the insecure fixture must trip (at least 15 distinct problems).
EXPECTED_INSECURE = {
    "aws-kms-key-enable-rotation", "aws-kms-key-configure-deletion-window",
    "aws-kms-key-configure-least-privilege-policy", "aws-rds-parametergroup-enable-force-ssl",
    "aws-rds-parametergroup-enable-audit-logging", "aws-rds-instance-enable-storage-encryption",
    "aws-rds-instance-disallow-public-access", "aws-rds-instance-enable-multi-az",
    "aws-rds-instance-enable-deletion-protection", "aws-rds-instance-configure-final-snapshot",
    "aws-rds-instance-configure-backup-retention", "aws-rds-instance-enable-iam-authentication",
    "aws-rds-instance-configure-managed-master-password", "aws-rds-instance-enable-log-exports",
    "aws-rds-instance-enable-minor-version-upgrade", "aws-rds-instance-enable-copy-tags-to-snapshot",
    "aws-ec2-defaultsecuritygroup-disallow-rules", "aws-ec2-subnet-disallow-public-ip-on-launch",
    "aws-ec2-securitygroup-disallow-admin-ports", "aws-ec2-securitygroup-disallow-public-ingress",
    "aws-ec2-securitygroup-disallow-port-ranges", "aws-ec2-securitygroup-disallow-unlisted-ports",
    "aws-ec2-instance-configure-imdsv2",
    "aws-ec2-instance-disallow-public-ip", "aws-ec2-instance-enable-volume-encryption",
    "aws-s3-bucket-disallow-public-acl", "aws-s3-bucketpublicaccessblock-enable-all-blocks",
    "aws-cloudwatch-loggroup-enable-kms-encryption", "aws-cloudwatch-loggroup-configure-retention",
    "aws-cloudtrail-trail-enable-multi-region", "aws-cloudtrail-trail-enable-log-file-validation",
    "aws-cloudtrail-trail-enable-kms-encryption", "aws-cloudtrail-trail-enable-cloudwatch-delivery",
    "aws-ec2-flowlog-configure-all-traffic", "aws-elb-loadbalancer-enable-drop-invalid-headers",
    "aws-elb-loadbalancer-enable-access-logs", "aws-elb-listener-disallow-plaintext",
    "aws-elb-listener-configure-modern-tls", "aws-iam-accountpasswordpolicy-configure-pci-requirements",
    "aws-iam-policy-disallow-admin-wildcards", "aws-iam-role-configure-mfa-for-humans",
    "aws-iam-accesskey-disallow-access-keys", "aws-guardduty-detector-enable-detector",
    "aws-sns-topic-enable-kms-encryption",
    # stack policies
    "aws-ec2-stack-disallow-private-tier-internet-route", "aws-elb-stack-enable-waf-association",
    "aws-backup-stack-enable-database-coverage", "aws-backup-stack-enable-restore-testing",
    "aws-cloudwatch-stack-enable-security-alarms", "aws-cloudwatch-stack-enable-app-security-alarms",
    "aws-cloudtrail-stack-enable-trail",
    "aws-guardduty-stack-enable-detector", "aws-securityhub-stack-enable-pci-standard",
    "aws-s3-stack-enable-bucket-guardrails",
    # cloud identity escalation: unbounded roles, self-modification, keys their administrators may use
    "aws-iam-role-enable-permissions-boundary", "aws-iam-policy-enable-permissions-boundary",
    "aws-iam-policy-disallow-evidence-destruction", "aws-iam-stack-disallow-role-self-escalation",
    "aws-kms-key-disallow-admin-key-use",
    # patching: no patch group, everything at once, no evidence, installs and reboots outside a rollout
    "aws-ec2-instance-configure-patch-group", "aws-ssm-maintenancewindowtask-configure-rate-control",
    "aws-ssm-maintenancewindowtask-enable-output-evidence", "aws-ssm-patchbaseline-configure-security-approval",
    "aws-ssm-association-configure-scan-only", "aws-ssm-stack-enable-patch-coverage",
}  # fmt: skip


@pytest.mark.control(
    "CMP-02", "NET-03", "EAR-01", "NET-09", "CMP-03", "MFA-02", "LOG-01", "EAR-08", "RBAC-03", "RBAC-06"
)
def test_the_insecure_fixture_is_refused(insecure: PlanResult) -> None:
    violated = {v.policy for v in insecure.violations}
    assert violated == EXPECTED_INSECURE
    assert len(violated) >= 15
    assert insecure.exit_code == 1
    assert "violated" in insecure.controls.values()
    sarif = as_sarif(insecure)
    assert len(sarif["runs"][0]["results"]) == len(insecure.violations)


# --- stack policies: one change to the compliant prod stack, exactly the expected violation -----


def _mutated(change: Callable[[list[Resource]], None]) -> set[tuple[str, str]]:
    resources = copy.deepcopy(list(captured("prod")))
    change(resources)
    return {(v.policy, v.resource_name) for v in evaluate("prod", resources).violations}


def _drop(kind: str, name_contains: str = "") -> Callable[[list[Resource]], None]:
    def change(resources: list[Resource]) -> None:
        victim = next(r for r in resources if r.type == kind and name_contains in r.name)
        resources.remove(victim)

    return change


def _add_igw_route_to_data(resources: list[Resource]) -> None:
    table = next(r for r in resources if r.type == "aws:ec2/routeTable:RouteTable" and r.name.endswith("-data-rt"))
    resources.append(
        Resource("aws:ec2/route:Route", "billkit-net-data-escape", "urn:test::billkit-net-data-escape", table.parent,
                 True, {"routeTableId": f"{table.name}-id", "destinationCidrBlock": "0.0.0.0/0", "gatewayId": "igw-1"},
                 {"routeTableId": [table.urn]})
    )  # fmt: skip


def _untag_database(resources: list[Resource]) -> None:
    db = next(r for r in resources if r.type == "aws:rds/instance:Instance")
    db.inputs["tags"].pop("billkit:backup")


def _stop_key_rotation(resources: list[Resource]) -> None:
    key = next(r for r in resources if r.type == "aws:kms/key:Key" and r.name.endswith("-database"))
    key.inputs["enableKeyRotation"] = False


def _silence_alarm(name_contains: str) -> Callable[[list[Resource]], None]:
    def change(resources: list[Resource]) -> None:
        alarm = next(
            r for r in resources if r.type == "aws:cloudwatch/metricAlarm:MetricAlarm" and name_contains in r.name
        )
        alarm.inputs["actionsEnabled"] = False

    return change


def _drop_deployer_self_denial(resources: list[Resource]) -> None:
    policy = next(
        r for r in resources if r.type == "aws:iam/policy:Policy" and r.name == "billkit-identity-ci-deployer"
    )
    document = json.loads(policy.inputs["policy"])
    document["Statement"] = [s for s in document["Statement"] if s["Sid"] != "DenyChangingItself"]
    policy.inputs["policy"] = json.dumps(document)


STACK_CASES = [
    ("NET-06", _drop("aws:wafv2/webAclAssociation:WebAclAssociation"),
     {("aws-elb-stack-enable-waf-association", "billkit-edge-alb")}),
    ("NET-01", _add_igw_route_to_data,
     {("aws-ec2-stack-disallow-private-tier-internet-route", f"billkit-net-data-{i}") for i in range(3)}),
    ("BAK-01", _untag_database, {("aws-backup-stack-enable-database-coverage", "billkit-db-postgres")}),
    ("BAK-05", _drop("aws:backup/restoreTestingSelection:RestoreTestingSelection"),
     {("aws-backup-stack-enable-restore-testing", "prod")}),
    ("EAR-02", _stop_key_rotation,
     {("aws-kms-key-enable-rotation", "billkit-keys-database"),
      ("aws-kms-stack-enable-rotation-for-keys-in-use", "billkit-keys-database")}),
    ("LOG-02", _drop("aws:cloudwatch/logMetricFilter:LogMetricFilter", "root-use"),
     {("aws-cloudwatch-stack-enable-security-alarms", "prod")}),
    ("LOG-11", _drop("aws:guardduty/detector:Detector"), {("aws-guardduty-stack-enable-detector", "prod")}),
    ("CMP-01", _drop("aws:securityhub/standardsSubscription:StandardsSubscription"),
     {("aws-securityhub-stack-enable-pci-standard", "prod")}),
    ("LOG-01", _drop("aws:cloudtrail/trail:Trail"), {("aws-cloudtrail-stack-enable-trail", "prod")}),
    ("EAR-08", _drop("aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock", "trail"),
     {("aws-s3-stack-enable-bucket-guardrails", "billkit-audit-trail")}),
    ("RBAC-03", _drop_deployer_self_denial,
     {("aws-iam-stack-disallow-role-self-escalation", "billkit-identity-ci-deployer")}),
    ("PAT-05", _drop("aws:ssm/patchGroup:PatchGroup", "vault"),
     {("aws-ssm-stack-enable-patch-coverage", f"billkit-vault-{i}") for i in (1, 2, 3)}),
    ("PAT-04", _drop("aws:ssm/maintenanceWindowTask:MaintenanceWindowTask", "app"),
     {("aws-ssm-stack-enable-patch-coverage", "billkit-app-lt")}),
    ("PAT-05", _drop("aws:ssm/association:Association", "scan"),
     {("aws-ssm-stack-enable-patch-coverage", n) for n in ("billkit-app-lt", "billkit-vault-1", "billkit-vault-2",
                                                           "billkit-vault-3", "billkit-mon-1")}),
    ("MON-01", _drop("aws:cloudwatch/logMetricFilter:LogMetricFilter", "app-lockouts"),
     {("aws-cloudwatch-stack-enable-app-security-alarms", "prod")}),
    ("MON-01", _silence_alarm("app-role-grants"),
     {("aws-cloudwatch-stack-enable-app-security-alarms", "prod"),
      ("aws-cloudwatch-metricalarm-configure-notification", "billkit-mon-app-role-grants-alarm")}),
]  # fmt: skip


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        pytest.param(c, e, id=f"{cid}-{sorted(e)[0][0]}", marks=pytest.mark.control(cid, "CMP-02"))
        for cid, c, e in STACK_CASES
    ],
)
def test_stack_policy_catches_one_change(
    change: Callable[[list[Resource]], None], expected: set[tuple[str, str]]
) -> None:
    assert _mutated(lambda _: None) == set()
    assert _mutated(change) == expected


@pytest.mark.control("CMP-02")
def test_cli_exits_1_and_lists_the_violations_of_a_refused_stack(
    insecure: PlanResult, monkeypatch: pytest.MonkeyPatch
) -> None:
    import billkit.plan

    monkeypatch.setattr(billkit.plan, "plan", lambda stack: insecure)
    result = runner.invoke(app, ["plan", "--stack", "prod"])
    assert result.exit_code == 1
    n, m = len(insecure.violations), len(insecure.mandatory)
    assert f"{n} violation(s), {m} mandatory" in result.output
    assert f"{m} mandatory policy violation(s): the stack would be refused" in result.output
    assert runner.invoke(app, ["plan", "--format", "json"]).exit_code == 1
