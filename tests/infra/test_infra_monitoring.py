"""Monitoring in AWS (infra/monitoring.py): the mon host, its network and role, and the alarms on the app's
security events, checked on the prod stack's mock run and against real audit lines of the app."""

from __future__ import annotations

import copy
import dataclasses
import datetime as dt
import json
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from types import SimpleNamespace
from typing import Any

import pytest
from cwpattern import UnsupportedPattern, matches
from stackhelpers import doc, named, of

from billkit.controls import load_catalog
from billkit.plan import ACCOUNT_ID, Resource, captured, evaluate, run_program, stack_config
from infra import topology
from infra.common import PATCH_GROUP_TAG
from infra.monitoring import (
    AGENT_PACKAGE,
    APP_ALARMS,
    APP_AUDIT_LOG_FILE,
    METRIC_NAMESPACE,
    Monitoring,
    MonitoringArgs,
)
from policies.rules._base import grants

# pulumi_aws warns about its own deprecated aliases when a service module loads.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:pulumi_aws")

INSTANCE = "aws:ec2/instance:Instance"
ROLE_POLICY = "aws:iam/rolePolicy:RolePolicy"
FILTER = "aws:cloudwatch/logMetricFilter:LogMetricFilter"
ALARM = "aws:cloudwatch/metricAlarm:MetricAlarm"
SGI = "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule"
SGE = "aws:vpc/securityGroupEgressRule:SecurityGroupEgressRule"
REGION = "eu-central-1"
TOPIC_ARN = f"arn:aws:sns:{REGION}:{ACCOUNT_ID}:topic/billkit-audit-alarms"
AUDIT_KEY = f"arn:aws:kms:{REGION}:{ACCOUNT_ID}:key/billkit-keys-audit"
LOG_GROUP = "/billkit/billkit-mon/app-audit"
LOG_GROUP_ARN = f"arn:aws:cloudwatch:{REGION}:{ACCOUNT_ID}:loggroup/billkit-mon-app-audit"


def _ours(prod: tuple[Resource, ...], kind: str) -> list[Resource]:
    """The monitoring component's resources of one type."""
    return [r for r in of(prod, kind) if r.name.startswith("billkit-mon-")]


def _mon(prod: tuple[Resource, ...]) -> list[Resource]:
    return [r for r in of(prod, INSTANCE) if r.inputs["tags"].get("billkit:role") == "mon"]


# --- the host -------------------------------------------------------------------------------------------


@pytest.mark.control("MON-01", "NET-03", "NET-09", "EAR-03", "PAT-05")
def test_the_mon_host_is_a_hardened_host_of_the_management_tier(prod: tuple[Resource, ...]) -> None:
    hosts = _mon(prod)
    assert [h.name for h in hosts] == ["billkit-mon-1"]
    mon = hosts[0]
    management = {f"billkit-net-management-{i}-id" for i in range(3)}
    assert mon.inputs["subnetId"] in management
    assert mon.inputs["vpcSecurityGroupIds"] == ["billkit-net-mon-sg-id"]
    assert mon.inputs["associatePublicIpAddress"] is False
    assert mon.inputs["metadataOptions"] == {
        "httpEndpoint": "enabled", "httpTokens": "required", "httpPutResponseHopLimit": 1,
        "instanceMetadataTags": "disabled",
    }  # fmt: skip
    root = mon.inputs["rootBlockDevice"]
    assert root["encrypted"] is True and root["kmsKeyId"].endswith(":key/billkit-keys-ebs")
    assert mon.inputs["iamInstanceProfile"] == "billkit-identity-mon"
    assert mon.inputs["tags"][PATCH_GROUP_TAG] == "billkit-mon"
    # The same hardening as the Vault nodes: one helper makes both (infra.common.hardened_instances).
    vault = named(prod, INSTANCE, "billkit-vault-1").inputs
    shared = ("metadataOptions", "associatePublicIpAddress", "monitoring", "disableApiTermination")
    assert {k: mon.inputs[k] for k in shared} == {k: vault[k] for k in shared}


def _endpoint(rule: Resource, sg_names: dict[str, str]) -> str:
    """The other end of a rule: a security group's topology name, a CIDR or a prefix list."""
    peer = rule.inputs.get("referencedSecurityGroupId")
    return sg_names.get(peer, peer) if peer else rule.inputs.get("cidrIpv4") or rule.inputs["prefixListId"]


@pytest.mark.control("MON-01", "NET-02")
def test_the_mon_group_allows_exactly_the_topology_flows(prod: tuple[Resource, ...]) -> None:
    sg_names = {f"billkit-net-{sg}-sg-id": sg for sg in topology.aws_security_groups()}
    rules = {(kind, sg_names[r.inputs["securityGroupId"]], _endpoint(r, sg_names), int(r.inputs["fromPort"]))
             for kind, kind_type in (("ingress", SGI), ("egress", SGE)) for r in of(prod, kind_type)}  # fmt: skip
    touching_mon = {r for r in rules if "mon" in (r[1], r[2])}
    # What the contract says mon does in AWS: scrape, probe, publish; operators reach its UIs.
    management = topology.aws_tier_blocks()["management"]
    own = {
        ("egress", "mon", "app", topology.NODE_EXPORTER), ("egress", "mon", "app", topology.APP_METRICS),
        ("egress", "mon", "app", topology.APP_PORT), ("egress", "mon", "vault", topology.NODE_EXPORTER),
        ("egress", "mon", "vault", topology.VAULT_API), ("egress", "mon", "db", topology.POSTGRES),
        ("egress", "mon", "endpoints", topology.HTTPS),
        ("ingress", "mon", management, topology.PROMETHEUS), ("ingress", "mon", management, topology.ALERTMANAGER),
    }  # fmt: skip
    # Each egress has its ingress on the other end's group.
    peers = {("ingress", dst, "mon", port) for kind, _, dst, port in own if kind == "egress"}
    assert touching_mon == own | peers
    # And the topology says the same, rule by rule.
    expected = {(r.direction, r.sg, r.peer_sg or r.peer_cidrs[0], r.port)
                for r in topology.aws_sg_rules() if "mon" in (r.sg, r.peer_sg)}  # fmt: skip
    assert touching_mon == expected


# --- the role: publish to the alarm topic, nothing else --------------------------------------------------


def _role_policies(prod: tuple[Resource, ...], role: str) -> dict[str, list[dict[str, Any]]]:
    return {p.name: doc(p.inputs["policy"])["Statement"] for p in of(prod, ROLE_POLICY) if p.inputs["role"] == role}


@pytest.mark.control("MON-01", "RBAC-06")
def test_the_mon_role_may_publish_to_the_alarm_topic_only(prod: tuple[Resource, ...]) -> None:
    policies = _role_policies(prod, "billkit-identity-mon")
    assert set(policies) == {"billkit-mon-publish", "billkit-patching-mon-host"}
    attached = [a.inputs["policyArn"] for a in of(prod, "aws:iam/rolePolicyAttachment:RolePolicyAttachment")
                if a.inputs["role"] == "billkit-identity-mon"]  # fmt: skip
    assert attached == ["arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore"]
    assert policies["billkit-mon-publish"] == [
        {"Sid": "PublishAlerts", "Effect": "Allow", "Action": ["sns:Publish"], "Resource": [TOPIC_ARN]},
        {"Sid": "EncryptAlerts", "Effect": "Allow", "Action": ["kms:GenerateDataKey*", "kms:Decrypt"],
         "Resource": [AUDIT_KEY], "Condition": {"StringEquals": {"kms:ViaService": f"sns.{REGION}.amazonaws.com"}}},
    ]  # fmt: skip
    # What a stolen instance credential must not do with these statements.
    statements = policies["billkit-mon-publish"]
    for action in ("sns:Subscribe", "sns:SetTopicAttributes", "sns:DeleteTopic", "kms:Encrypt", "kms:CreateGrant",
                   "logs:DeleteLogGroup", "cloudwatch:DisableAlarmActions", "iam:PassRole"):  # fmt: skip
        assert not [s["Sid"] for s in statements if grants(s, action)], action
    # The topic's key lets the mon role use it through SNS only.
    key = named(prod, "aws:kms/key:Key", "billkit-keys-audit")
    stmt = next(s for s in doc(key.inputs["policy"])["Statement"] if s["Sid"] == "MonitoringPublishesAlerts")
    assert stmt["Principal"] == {"AWS": [f"arn:aws:iam:{REGION}:{ACCOUNT_ID}:role/billkit-identity-mon"]}
    assert stmt["Condition"]["StringEquals"]["kms:ViaService"] == f"sns.{REGION}.amazonaws.com"
    assert sorted(stmt["Action"]) == ["kms:Decrypt", "kms:GenerateDataKey*"]
    # Alertmanager reaches SNS through an interface endpoint: the management tier has no internet route.
    sns = named(prod, "aws:ec2/vpcEndpoint:VpcEndpoint", "billkit-net-sns-endpoint").inputs
    assert sns["serviceName"] == f"com.amazonaws.{REGION}.sns" and sns["privateDnsEnabled"] is True


# --- the app's audit records in CloudWatch ------------------------------------------------------------------


@pytest.mark.control("MON-01", "LOG-04", "EAR-06")
def test_the_app_audit_records_ship_to_an_encrypted_group_kept_a_year(prod: tuple[Resource, ...]) -> None:
    group = named(prod, "aws:cloudwatch/logGroup:LogGroup", "billkit-mon-app-audit").inputs
    assert group["name"] == LOG_GROUP
    assert group["retentionInDays"] >= 365 and group["kmsKeyId"].endswith(":key/billkit-keys-logs")
    # The app hosts may write this group, nothing else of CloudWatch Logs.
    assert _role_policies(prod, "billkit-identity-app")["billkit-mon-app-audit-write"] == [
        {"Sid": "ShipAuditRecords", "Effect": "Allow",
         "Action": ["logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams"],
         "Resource": [LOG_GROUP_ARN, f"{LOG_GROUP_ARN}:*"]},
    ]  # fmt: skip
    # The CloudWatch agent, installed and configured by SSM on the app hosts, ships the audit file there.
    parameter = named(prod, "aws:ssm/parameter:Parameter", "billkit-mon-app-agent-config").inputs
    config = json.loads(parameter["insecureValue"])
    assert set(config) == {"logs"}  # no metrics: the agent needs no cloudwatch:PutMetricData
    assert config["logs"]["logs_collected"]["files"]["collect_list"] == [
        {"file_path": APP_AUDIT_LOG_FILE, "log_group_name": LOG_GROUP, "log_stream_name": "{instance_id}"}
    ]
    install = named(prod, "aws:ssm/association:Association", "billkit-mon-app-agent-install").inputs
    configure = named(prod, "aws:ssm/association:Association", "billkit-mon-app-agent-configure").inputs
    assert install["parameters"] == {"action": "Install", "name": AGENT_PACKAGE}
    assert configure["parameters"]["optionalConfigurationLocation"] == parameter["name"]
    assert configure["parameters"]["optionalConfigurationSource"] == "ssm"
    app_hosts = [{"key": f"tag:{PATCH_GROUP_TAG}", "values": ["billkit-app"]}]
    assert install["targets"] == configure["targets"] == app_hosts


@pytest.mark.control("MON-01")
def test_every_app_alarm_notifies_the_topic_and_names_its_controls(prod: tuple[Resource, ...]) -> None:
    catalog = {c.id: c for c in load_catalog().controls}
    group = named(prod, "aws:cloudwatch/logGroup:LogGroup", "billkit-mon-app-audit")
    filters = {f.inputs["metricTransformation"]["name"]: f for f in _ours(prod, FILTER)}
    alarms = {a.inputs["metricName"]: a for a in _ours(prod, ALARM)}
    assert set(filters) == set(alarms) == {a.name for a in APP_ALARMS}
    for spec in APP_ALARMS:
        f, a = filters[spec.name], alarms[spec.name].inputs
        assert f.property_dependencies["logGroupName"] == [group.urn]
        assert f.inputs["metricTransformation"]["namespace"] == a["namespace"] == METRIC_NAMESPACE
        assert a["alarmActions"] == [TOPIC_ARN] and a["actionsEnabled"] is True
        assert (a["threshold"], a["period"], a["evaluationPeriods"]) == (spec.threshold, 300, 1)
        assert a["comparisonOperator"] == "GreaterThanOrEqualToThreshold" and a["treatMissingData"] == "notBreaching"
        description = a["alarmDescription"]
        assert spec.controls[0] == "MON-01" and f"Controls: {', '.join(spec.controls)}." in description
        assert "Runbook: " in description and spec.severity in ("critical", "warning", "info")
        # Every control is in the catalogue, and every PCI requirement named is one of those controls'.
        assert set(spec.controls) <= set(catalog), spec.controls
        pci = {p for c in spec.controls for p in catalog[c].pci_dss}
        assert set(spec.pci) <= pci, (spec.name, set(spec.pci) - pci)
        assert f"PCI DSS: {', '.join(spec.pci)}." in description
        assert a["tags"]["billkit:controls"] == " ".join(spec.controls)


# --- the filter patterns against the app's real audit lines ---------------------------------------------------


class _Rows:
    def __init__(self, row: tuple[Any, ...] | None) -> None:
        self.row = row

    def fetchone(self) -> tuple[Any, ...] | None:
        return self.row


class _AuditDb:
    """Just enough of a psycopg connection for app_stub.audit: the chain's rows and the heads."""

    def __init__(self) -> None:
        self.events: dict[int, str] = {}

    def execute(self, sql: str, params: tuple[Any, ...] = ()) -> _Rows:
        if sql.startswith("SELECT seq, hash FROM audit.events ORDER BY seq DESC"):
            return _Rows((max(self.events), self.events[max(self.events)]) if self.events else None)
        if sql.startswith("SELECT hash FROM audit.events WHERE seq"):
            seq = params[0]
            return _Rows((self.events[seq],) if seq in self.events else None)
        if sql.startswith("INSERT INTO audit.events"):
            self.events[params[0]] = params[-1]
        return _Rows(None)

    def transaction(self) -> nullcontext[None]:
        return nullcontext()

    @contextmanager
    def connection(self) -> Iterator[_AuditDb]:  # the pool's side, for the head signer
        yield self


NOW = dt.datetime(2025, 3, 1, 12, 0, tzinfo=dt.UTC)
# (action, outcome, actor, target, detail) as the app's services record them, and the alarms each must feed.
EVENTS: list[tuple[tuple[str, str, str, str, dict[str, Any]], set[str]]] = [
    (("auth.login", "failure", "user:7", "user:7", {"failed_attempts": 1}), {"app-failed-sign-ins"}),
    (("auth.login", "refused-locked", "anonymous", "user:unknown", {}), {"app-failed-sign-ins"}),
    (("auth.login", "refused-disabled", "user:7", "user:7", {}), {"app-failed-sign-ins"}),
    (("auth.mfa", "failure", "user:7", "user:7", {"method": "totp"}), {"app-failed-sign-ins"}),
    (("auth.password_change", "failure", "user:7", "user:7", {}), {"app-failed-sign-ins"}),
    (("auth.login", "ok", "user:7", "user:7", {}), set()),
    (("auth.mfa", "ok", "user:7", "user:7", {"method": "totp"}), set()),
    (("auth.lockout", "ok", "system", "user:7", {"locked_until": "2025-03-01T12:30:00+00:00"}), {"app-lockouts"}),
    (("auth.step_up", "missing", "user:9", "card.detokenize", {}), {"app-step-up-failures"}),
    (("auth.step_up", "refused-locked", "user:9", "role.grant", {}), {"app-step-up-failures"}),
    # The purpose of a step-up names the action it guards: it is not that action.
    (("auth.step_up", "ok", "user:9", "card.detokenize", {}), set()),
    (("card.detokenize", "ok", "user:9", "card:tok_4f2a", {}), {"app-detokenizations"}),
    (("card.tokenize", "ok", "user:9", "card:tok_4f2a", {}), set()),
    (("access.denied", "refused", "user:8", "card.detokenize", {}), set()),
    (("role.grant", "ok", "user:1", "user:9", {"role": "billing_admin"}), {"app-role-grants"}),
    (("role.approve", "ok", "user:2", "user:9", {"role": "payment_processor", "request": 4}), {"app-role-grants"}),
    (("role.request", "ok", "user:1", "user:9", {"role": "payment_processor", "request": 4}), set()),
    (("role.revoke", "ok", "user:1", "user:9", {"role": "billing_admin"}), set()),
    # A value an attacker chooses (a new account's name) that spells another record: JSON escapes it.
    (("user.create", "ok", "user:1", "user:10", {"username": '", "action": "role.grant", "x": "'}), set()),
    (("user.create", "ok", "user:1", "user:11", {"username": '{"type": "audit", "action": "auth.lockout"}'}), set()),
]


def _journal_lines(capsys: pytest.CaptureFixture[str]) -> tuple[list[str], str]:
    """Every EVENTS record through app_stub.audit's real path (append, commit, journal), then the alarm line the
    head signer writes when records it signed are gone."""
    from app_stub import audit

    audit.configure_logging()
    db = _AuditDb()
    capsys.readouterr()
    lines: list[str] = []
    for (action, outcome, actor, target, detail), _ in EVENTS:
        with audit.journaled(db):  # type: ignore[arg-type]
            audit.append(db, NOW, actor, action, target, outcome, **detail)  # type: ignore[arg-type]
        out = capsys.readouterr().out.splitlines()
        assert len(out) == 1, out  # one record, one line: one CloudWatch event
        lines.append(out[0])
    transit = SimpleNamespace(sign=lambda key, message: "vault:v1:c2lnbmVk")
    settings = SimpleNamespace(
        clock=lambda: NOW, audit_head_interval=dt.timedelta(seconds=60), audit_head_every=100
    )  # fmt: skip
    signer = audit.HeadSigner(db, transit, settings)  # type: ignore[arg-type]
    assert signer.write() is not None
    db.events.pop(max(db.events))  # the tail the head covered is removed
    capsys.readouterr()
    assert signer.write() is None
    alarm = [line for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert len(alarm) == 1
    return lines, alarm[0]


@pytest.mark.control("MON-01")
def test_the_filters_count_exactly_the_app_security_events(
    prod: tuple[Resource, ...], capsys: pytest.CaptureFixture[str]
) -> None:
    patterns = {f.inputs["metricTransformation"]["name"]: f.inputs["pattern"] for f in _ours(prod, FILTER)}
    lines, chain_alarm = _journal_lines(capsys)
    for line, (event, expected) in zip(lines, EVENTS, strict=True):
        assert json.loads(line)["action"] == event[0]
        assert {name for name, p in patterns.items() if matches(p, line)} == expected, line
    assert {name for name, p in patterns.items() if matches(p, chain_alarm)} == {"app-audit-chain-broken"}
    # Lines that only mention an event are not that event.
    for noise in ('{"message": "auth.lockout"}', "auth.lockout failure card.detokenize", '["auth.lockout"]'):
        assert not [name for name, p in patterns.items() if matches(p, noise)], noise


@pytest.mark.parametrize(
    ("pattern", "line", "expected"),
    [
        ('{ $.eventType = "UpdateTrail" }', '{"eventType": "UpdateTrail"}', True),
        ('{ $.eventType = "UpdateTrail" }', '{"eventType": "UpdateTrails"}', False),
        ("{ $.sourceIPAddress != 123.123.* }", '{"sourceIPAddress": "123.123.4.5"}', False),
        ("{ $.sourceIPAddress != 123.123.* }", '{"sourceIPAddress": "10.0.0.1"}', True),
        ('{ ($.a = "x") && (($.b = "y") || ($.b = "z")) }', '{"a": "x", "b": "z"}', True),
        ('{ ($.a = "x") && (($.b = "y") || ($.b = "z")) }', '{"a": "w", "b": "z"}', False),
        ('{ $.user.id = "7" }', '{"user": {"id": "7"}}', True),
        ('{ $.user.id = "7" }', '{"user": "7"}', False),
        ('{ $.a = "x" }', "not json", False),
        # Decided without the comparison on the missing property.
        ('{ ($.a = "y") && ($.missing != "x") }', '{"a": "x"}', False),
        ('{ ($.a = "x") || ($.missing != "x") }', '{"a": "x"}', True),
    ],
)
def test_the_pattern_evaluator_follows_the_documented_semantics(pattern: str, line: str, expected: bool) -> None:
    assert matches(pattern, line) is expected


@pytest.mark.parametrize(
    "pattern",
    [
        '{ $.a = "x" && $.b = "y" || $.c = "z" }',
        '{ $.missing != "x" }',
        '{ ($.a = "x") && ($.missing != "x") }',
        "{ $.n > 3 }",
        '"plain term"',
    ],
)
def test_the_evaluator_refuses_what_it_does_not_model(pattern: str) -> None:
    with pytest.raises(UnsupportedPattern):
        matches(pattern, '{"a": "x", "b": "y", "c": "z", "n": 4}')


# --- the component's arguments, the stack's outputs, the pack -------------------------------------------------


@pytest.mark.control("MON-01", "LOG-04")
def test_monitoring_args_default_to_the_secure_setting_and_bad_ones_are_refused() -> None:
    defaults = {f.name: f.default for f in dataclasses.fields(MonitoringArgs) if f.default is not dataclasses.MISSING}
    assert defaults["log_retention_days"] >= 365 and defaults["alarms"] == APP_ALARMS
    assert defaults["instance_count"] >= 1 and defaults["alarm_period_seconds"] <= 300
    args = MonitoringArgs(
        region=REGION, subnet_ids=["s"], security_group_id="sg", ami_id="ami", ebs_key_arn="k", logs_key_arn="l",
        alarm_topic_arn=TOPIC_ARN, alarm_key_arn=AUDIT_KEY, role_name="r", instance_profile_name="p",
        patch_group="billkit-mon", app_role_name="a", app_patch_group="billkit-app",
    )  # fmt: skip
    for change, message in (({"log_retention_days": 90}, "PCI DSS 10.5.1 needs 365"),
                            ({"instance_count": 0}, "at least one host")):  # fmt: skip
        with pytest.raises(ValueError, match=message):
            Monitoring("billkit-mon", dataclasses.replace(args, **change))


def test_the_stack_exports_the_monitoring_addresses() -> None:
    from infra import settings
    from infra.stack import build

    resolved: dict[str, Any] = {}

    def program() -> None:
        import pulumi

        outputs = build(settings.load(), ACCOUNT_ID)
        keys = ("monitoringInstanceIds", "monitoringPrivateIps", "prometheusUrls", "alertmanagerUrls",
                "appAuditLogGroup")  # fmt: skip
        pulumi.Output.all(*(outputs[k] for k in keys)).apply(
            lambda values: resolved.update(zip(keys, values, strict=True))
        )

    run_program("prod", stack_config("prod"), program)
    assert resolved == {
        "monitoringInstanceIds": ["billkit-mon-1-id"],
        "monitoringPrivateIps": ["10.0.0.10"],
        "prometheusUrls": [f"https://10.0.0.10:{topology.PROMETHEUS}"],
        "alertmanagerUrls": [f"https://10.0.0.10:{topology.ALERTMANAGER}"],
        "appAuditLogGroup": LOG_GROUP,
    }


def _set(name: str, change: Any) -> list[Resource]:
    resources = copy.deepcopy(list(captured("prod")))
    change(next(r for r in resources if r.name == name).inputs)
    return resources


@pytest.mark.parametrize(
    ("name", "change", "policy"),
    [
        ("billkit-mon-1", lambda p: p["metadataOptions"].update(httpTokens="optional"),
         "aws-ec2-instance-configure-imdsv2"),
        ("billkit-mon-1", lambda p: p["rootBlockDevice"].update(encrypted=False),
         "aws-ec2-instance-enable-volume-encryption"),
        ("billkit-mon-1", lambda p: p.update(associatePublicIpAddress=True), "aws-ec2-instance-disallow-public-ip"),
        ("billkit-mon-1", lambda p: p["tags"].pop(PATCH_GROUP_TAG), "aws-ec2-instance-configure-patch-group"),
        ("billkit-mon-app-audit", lambda p: p.update(retentionInDays=30),
         "aws-cloudwatch-loggroup-configure-retention"),
        ("billkit-mon-app-audit", lambda p: p.pop("kmsKeyId"), "aws-cloudwatch-loggroup-enable-kms-encryption"),
        ("billkit-mon-app-detokenizations-alarm",
         lambda p: p.update(alarmActions=["arn:aws:automate:eu-central-1:ec2:stop"]),
         "aws-cloudwatch-metricalarm-configure-notification"),
    ],
)  # fmt: skip
@pytest.mark.control("MON-01", "CMP-02")
def test_the_offline_plan_passes_the_pack_and_refuses_weakened_monitoring(name: str, change: Any, policy: str) -> None:
    clean = evaluate("prod", list(captured("prod")))
    assert clean.violations == [] and clean.controls["MON-01"] == "proven"
    found = {(v.policy, v.resource_name) for v in evaluate("prod", _set(name, change)).violations}
    assert (policy, name) in found
    # A weakened alarm also leaves the app's events without a notifying alarm, stack-wide.
    assert found - {(policy, name)} <= {("aws-cloudwatch-stack-enable-app-security-alarms", "prod")}
