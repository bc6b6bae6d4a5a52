"""The Pulumi program under the mock runtime: every component, its secure defaults, its shape.

One mock run per stack (billkit.plan.captured) serves every test of the session.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import re
from typing import Any

import pytest
import yaml
from stackhelpers import doc, of, one

from billkit.controls import ROOT
from billkit.plan import Resource
from infra import topology
from infra.common import BACKUP_TAG_KEY, BACKUP_TAG_VALUE

# pulumi_aws warns about its own deprecated aliases when a service module loads.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:pulumi_aws")

COMPONENTS = {
    "billkit:identity:Identity",
    "billkit:keys:Keys",
    "billkit:network:Network",
    "billkit:database:Database",
    "billkit:edge:Edge",
    "billkit:app_hosts:AppHosts",
    "billkit:vault:VaultCluster",
    "billkit:backup:Backup",
    "billkit:audit:Audit",
    "billkit:buckets:SecureBucket",
    "billkit:patching:Patching",
    "billkit:monitoring:Monitoring",
}


# --- shape ----------------------------------------------------------------------------------


def test_every_component_is_built_and_every_resource_is_parented(prod: tuple[Resource, ...]) -> None:
    kinds = {r.type for r in prod if not r.custom}
    assert kinds == COMPONENTS
    component_urns = {r.urn for r in prod if not r.custom}
    orphans = [r.name for r in prod if r.custom and r.parent not in component_urns]
    assert orphans == [], "resources outside any component"
    for r in prod:
        assert re.fullmatch(r"billkit-[a-z0-9-]+", r.name), r.name


def _taggable(kind: str) -> bool:
    _, mod, cls = kind.split(":")
    module = importlib.import_module(f"pulumi_aws.{mod.split('/')[0]}")
    return "tags" in inspect.signature(getattr(module, cls).__init__).parameters


def test_everything_taggable_carries_the_stack_tags(prod: tuple[Resource, ...]) -> None:
    untagged = []
    for r in prod:
        if not r.custom or not _taggable(r.type):
            continue
        tags = r.inputs.get("tags") or {}
        if r.type == "aws:autoscaling/group:Group":
            continue  # carries tags as a list of {key, value, propagateAtLaunch}: checked below
        if tags.get("billkit:stack") != "prod" or tags.get("billkit:data-class") != "pci":
            untagged.append(f"{r.type} {r.name}")
    assert untagged == []
    asg = one(prod, "aws:autoscaling/group:Group")
    asg_tags = {t["key"]: t for t in asg.inputs["tags"]}
    assert asg_tags["billkit:stack"]["value"] == "prod" and asg_tags["billkit:stack"]["propagateAtLaunch"]


# --- network ----------------------------------------------------------------------------------


@pytest.mark.control("NET-02", "NET-09")
def test_security_group_rules_are_generated_from_the_topology(prod: tuple[Resource, ...]) -> None:
    ingress = of(prod, "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule")
    egress = of(prod, "aws:vpc/securityGroupEgressRule:SecurityGroupEgressRule")
    expected = topology.aws_sg_rules(topology.VPC_CIDR_DEFAULT, 3)
    want = sum(max(1, len(r.peer_cidrs)) for r in expected)
    assert len(ingress) + len(egress) == want
    for r in ingress + egress:
        port = int(r.inputs["fromPort"])
        assert port == int(r.inputs["toPort"])
        assert r.inputs["ipProtocol"] == "tcp"
        assert port != topology.SSH
        peers = [k for k in ("referencedSecurityGroupId", "prefixListId", "cidrIpv4") if r.inputs.get(k)]
        assert len(peers) == 1, r.name
    assert not [g for g in of(prod, "aws:ec2/securityGroup:SecurityGroup") if g.inputs.get("ingress")]


@pytest.mark.control("NET-02", "NET-01")
def test_nacls_match_the_topology(prod: tuple[Resource, ...]) -> None:
    entries = of(prod, "aws:ec2/networkAclRule:NetworkAclRule")
    expected = topology.aws_nacl_rules(topology.VPC_CIDR_DEFAULT, 3)
    assert len(entries) == sum(len(v) for v in expected.values())
    assert all(e.inputs["ruleAction"] == "allow" for e in entries)
    acls = of(prod, "aws:ec2/networkAcl:NetworkAcl")
    assert {a.inputs["tags"]["billkit:tier"] for a in acls} == {t.name for t in topology.TIERS}


@pytest.mark.control("NET-01", "NET-03")
def test_subnets_routes_and_nat(prod: tuple[Resource, ...], dev: tuple[Resource, ...]) -> None:
    subnets = of(prod, "aws:ec2/subnet:Subnet")
    assert len(subnets) == 4 * 3
    assert all(s.inputs["mapPublicIpOnLaunch"] is False for s in subnets)
    assert {s.inputs["cidrBlock"] for s in subnets} == {
        c for cidrs in topology.aws_subnets(topology.VPC_CIDR_DEFAULT, 3).values() for c in cidrs
    }
    routes = of(prod, "aws:ec2/route:Route")
    igw_routes = [r for r in routes if r.inputs.get("gatewayId")]
    nat_routes = [r for r in routes if r.inputs.get("natGatewayId")]
    assert len(igw_routes) == 1 and len(nat_routes) == 3  # one public table, one app table per AZ
    assert len(of(prod, "aws:ec2/natGateway:NatGateway")) == 3
    assert len(of(dev, "aws:ec2/natGateway:NatGateway")) == 1  # dev's explicit opt-out


@pytest.mark.control("NET-04", "LOG-03", "NET-08", "LOG-04")
def test_default_sg_flow_logs_and_endpoints(prod: tuple[Resource, ...]) -> None:
    default_sg = one(prod, "aws:ec2/defaultSecurityGroup:DefaultSecurityGroup")
    assert default_sg.inputs.get("ingress", []) == [] and default_sg.inputs.get("egress", []) == []
    flow_log = one(prod, "aws:ec2/flowLog:FlowLog")
    assert flow_log.inputs["trafficType"] == "ALL"
    assert flow_log.inputs["logDestinationType"] == "cloud-watch-logs"
    endpoints = {e.inputs["serviceName"].rsplit(".", 1)[-1]: e for e in of(prod, "aws:ec2/vpcEndpoint:VpcEndpoint")}
    assert {"s3", "kms", "ssm", "logs", "secretsmanager", "ssmmessages", "ec2messages"} <= set(endpoints)
    assert endpoints["s3"].inputs["vpcEndpointType"] == "Gateway"
    assert all(e.inputs["privateDnsEnabled"] for k, e in endpoints.items() if k != "s3")
    for group in of(prod, "aws:cloudwatch/logGroup:LogGroup"):
        assert group.inputs["retentionInDays"] >= 365 and group.inputs["kmsKeyId"], group.name


# --- keys -------------------------------------------------------------------------------------


@pytest.mark.control("EAR-02", "RBAC-06")
def test_one_rotating_key_per_purpose_with_a_narrow_policy(prod: tuple[Resource, ...]) -> None:
    keys = {r.inputs["tags"]["billkit:key-purpose"]: r for r in of(prod, "aws:kms/key:Key")}
    assert set(keys) == {"database", "backup", "logs", "ebs", "vault-unseal", "audit", "patching"}
    dr = [k for k in of(prod, "aws:kms/key:Key") if k.inputs.get("region") == "eu-west-1"]
    assert len(dr) == 1  # the DR vault's own key
    for key in of(prod, "aws:kms/key:Key"):
        assert key.inputs["enableKeyRotation"] is True
        assert key.inputs["deletionWindowInDays"] == 30
        policy = doc(key.inputs["policy"])
        for s in policy["Statement"]:
            assert "kms:*" not in s["Action"] and s.get("Principal") != "*"
            if s["Sid"] == "AccountAdministersKey":
                assert not {"kms:Decrypt", "kms:Encrypt"} & set(s["Action"])
    unseal = doc(keys["vault-unseal"].inputs["policy"])["Statement"]
    users = [s for s in unseal if s["Sid"] not in ("AccountAdministersKey", "RootUserSetsKeyPolicy")]
    assert [u["Principal"]["AWS"] for u in users] == [
        ["arn:aws:iam:eu-central-1:123456789012:role/billkit-identity-vault"]
    ]


# --- database ----------------------------------------------------------------------------------


@pytest.mark.control("EAR-01", "NET-03", "BAK-07", "BAK-01", "RBAC-05", "PAT-02", "LOG-10", "ENC-02", "CMP-03")
def test_database_secure_defaults(prod: tuple[Resource, ...]) -> None:
    db = one(prod, "aws:rds/instance:Instance").inputs
    expected = {
        "storageEncrypted": True, "publiclyAccessible": False, "multiAz": True, "deletionProtection": True,
        "skipFinalSnapshot": False, "backupRetentionPeriod": 35, "copyTagsToSnapshot": True,
        "iamDatabaseAuthenticationEnabled": True, "manageMasterUserPassword": True, "autoMinorVersionUpgrade": True,
        "performanceInsightsEnabled": True,
    }  # fmt: skip
    assert {k: db.get(k) for k in expected} == expected
    assert "password" not in db
    assert db["kmsKeyId"].endswith("billkit-keys-database") and db["performanceInsightsKmsKeyId"] == db["kmsKeyId"]
    assert db["monitoringInterval"] == 60 and "postgresql" in db["enabledCloudwatchLogsExports"]
    assert db["tags"][BACKUP_TAG_KEY] == BACKUP_TAG_VALUE
    params = {p["name"]: p["value"] for p in one(prod, "aws:rds/parameterGroup:ParameterGroup").inputs["parameters"]}
    assert params["rds.force_ssl"] == "1" and params["ssl_min_protocol_version"] == "TLSv1.2"
    assert params["log_connections"] == params["log_disconnections"] == "1"
    assert "pgaudit" in params["shared_preload_libraries"] and params["pgaudit.log"] == "ddl,role,write"


@pytest.mark.control("BAK-07")
def test_dev_opts_out_of_multi_az_explicitly(dev: tuple[Resource, ...]) -> None:
    assert one(dev, "aws:rds/instance:Instance").inputs["multiAz"] is False
    assert "dbMultiAz: false" in (ROOT / "Pulumi.dev.yaml").read_text(encoding="utf-8")


# --- hosts ----------------------------------------------------------------------------------------


@pytest.mark.control("NET-09", "EAR-03", "NET-03", "EAR-07", "ENC-03")
def test_vault_cluster(prod: tuple[Resource, ...]) -> None:
    nodes = [n for n in of(prod, "aws:ec2/instance:Instance") if n.inputs["tags"]["billkit:role"] == "vault"]
    assert len(nodes) == 3
    assert len({n.inputs["subnetId"] for n in nodes}) == 3  # one per AZ
    for n in nodes:
        assert n.inputs["metadataOptions"]["httpTokens"] == "required"
        assert n.inputs["associatePublicIpAddress"] is False
        assert n.inputs["rootBlockDevice"]["encrypted"] and n.inputs["rootBlockDevice"]["kmsKeyId"].endswith("-ebs")
    volumes = of(prod, "aws:ebs/volume:Volume")
    assert len(volumes) == 3 and all(v.inputs["encrypted"] and v.inputs["kmsKeyId"] for v in volumes)
    assert all(v.inputs["tags"][BACKUP_TAG_KEY] == BACKUP_TAG_VALUE for v in volumes)
    nlb = next(lb for lb in of(prod, "aws:lb/loadBalancer:LoadBalancer") if lb.inputs["loadBalancerType"] == "network")
    assert nlb.inputs["internal"] is True
    vault_listener = next(li for li in of(prod, "aws:lb/listener:Listener") if li.inputs["port"] == topology.VAULT_API)
    assert vault_listener.inputs["protocol"] == "TLS" and vault_listener.inputs["sslPolicy"].startswith(
        "ELBSecurityPolicy-TLS13"
    )
    # EAR-07: the instance role may use the unseal key and nothing else of KMS.
    unseal = next(p for p in of(prod, "aws:iam/rolePolicy:RolePolicy") if p.name == "billkit-vault-unseal")
    stmts = doc(unseal.inputs["policy"])["Statement"]
    unseal_key = "arn:aws:kms:eu-central-1:123456789012:key/billkit-keys-vault-unseal"
    actions = ["kms:Encrypt", "kms:Decrypt", "kms:DescribeKey"]
    assert stmts == [{"Sid": "AutoUnseal", "Effect": "Allow", "Action": actions, "Resource": [unseal_key]}]


@pytest.mark.control("NET-09", "EAR-03", "NET-03")
def test_app_hosts(prod: tuple[Resource, ...]) -> None:
    lt = one(prod, "aws:ec2/launchTemplate:LaunchTemplate").inputs
    assert lt["metadataOptions"]["httpTokens"] == "required"
    assert [n["associatePublicIpAddress"] for n in lt["networkInterfaces"]] == ["false"]
    ebs = lt["blockDeviceMappings"][0]["ebs"]
    assert ebs["encrypted"] == "true" and ebs["kmsKeyId"].endswith("billkit-keys-ebs")
    asg = one(prod, "aws:autoscaling/group:Group").inputs
    assert asg["minSize"] == 2 and asg["desiredCapacity"] == 3 and len(asg["vpcZoneIdentifiers"]) == 3
    # SSM instead of SSH: the instance role has the SSM core policy.
    attachments = [a.inputs["policyArn"] for a in of(prod, "aws:iam/rolePolicyAttachment:RolePolicyAttachment")]
    assert attachments.count("arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore") == 3  # app, vault, mon
    assert one(prod, "aws:ebs/encryptionByDefault:EncryptionByDefault").inputs["enabled"] is True


# --- edge ---------------------------------------------------------------------------------------------


@pytest.mark.control("ENC-01", "ENC-04", "NET-06", "NET-07", "LOG-13")
def test_edge(prod: tuple[Resource, ...]) -> None:
    alb = next(
        lb for lb in of(prod, "aws:lb/loadBalancer:LoadBalancer") if lb.inputs["loadBalancerType"] == "application"
    )
    assert alb.inputs["internal"] is False and alb.inputs["dropInvalidHeaderFields"] is True
    assert alb.inputs["accessLogs"]["enabled"] is True
    listeners = {li.inputs["port"]: li.inputs for li in of(prod, "aws:lb/listener:Listener")}
    assert listeners[topology.HTTPS]["protocol"] == "HTTPS"
    assert listeners[topology.HTTP]["defaultActions"][0]["redirect"]["protocol"] == "HTTPS"
    acl = one(prod, "aws:wafv2/webAcl:WebAcl").inputs
    groups = {
        r["statement"]["managedRuleGroupStatement"]["name"]
        for r in acl["rules"]
        if "managedRuleGroupStatement" in r["statement"]
    }
    assert groups == {"AWSManagedRulesCommonRuleSet", "AWSManagedRulesKnownBadInputsRuleSet",
                      "AWSManagedRulesSQLiRuleSet", "AWSManagedRulesAmazonIpReputationList"}  # fmt: skip
    rate = next(r for r in acl["rules"] if "rateBasedStatement" in r["statement"])
    assert (
        rate["statement"]["rateBasedStatement"]["scopeDownStatement"]["byteMatchStatement"]["searchString"] == "/login"
    )
    logging = one(prod, "aws:wafv2/webAclLoggingConfiguration:WebAclLoggingConfiguration").inputs
    assert {f["singleHeader"]["name"] for f in logging["redactedFields"]} == {"authorization", "cookie"}
    assert one(prod, "aws:wafv2/webAclAssociation:WebAclAssociation")


# --- backup -----------------------------------------------------------------------------------------


@pytest.mark.control("BAK-01", "BAK-02", "BAK-03", "BAK-04", "BAK-05")
def test_backup(prod: tuple[Resource, ...]) -> None:
    vaults = of(prod, "aws:backup/vault:Vault")
    assert len(vaults) == 2 and all(v.inputs["kmsKeyArn"] for v in vaults)
    assert {v.inputs.get("region") for v in vaults} == {None, "eu-west-1"}
    locks = of(prod, "aws:backup/vaultLockConfiguration:VaultLockConfiguration")
    assert len(locks) == 2 and all(lock.inputs["changeableForDays"] >= 3 for lock in locks)  # compliance mode
    plan = one(prod, "aws:backup/plan:Plan").inputs
    keep = {r["ruleName"]: r["lifecycle"]["deleteAfter"] for r in plan["rules"]}
    assert keep == {"daily": 35, "monthly": 365}
    assert all(r["copyActions"][0]["destinationVaultArn"].endswith("billkit-backup-dr-vault") for r in plan["rules"])
    selection = one(prod, "aws:backup/selection:Selection").inputs
    assert selection["selectionTags"] == [{"type": "STRINGEQUALS", "key": BACKUP_TAG_KEY, "value": BACKUP_TAG_VALUE}]
    for policy in of(prod, "aws:backup/vaultPolicy:VaultPolicy"):
        stmt = doc(policy.inputs["policy"])["Statement"][0]
        assert stmt["Effect"] == "Deny" and "backup:DeleteRecoveryPoint" in stmt["Action"]
    assert (
        one(prod, "aws:backup/restoreTestingSelection:RestoreTestingSelection").inputs["protectedResourceType"] == "RDS"
    )


# --- audit ----------------------------------------------------------------------------------------------


@pytest.mark.control("LOG-01", "LOG-02", "LOG-11", "CMP-01", "EAR-06", "EAR-08")
def test_audit(prod: tuple[Resource, ...]) -> None:
    trail = one(prod, "aws:cloudtrail/trail:Trail").inputs
    assert trail["isMultiRegionTrail"] and trail["enableLogFileValidation"] and trail["kmsKeyId"]
    locks = of(prod, "aws:s3/bucketObjectLockConfiguration:BucketObjectLockConfiguration")
    lock = next(lock for lock in locks if lock.name == "billkit-audit-trail-object-lock").inputs
    assert lock["rule"]["defaultRetention"] == {"mode": "COMPLIANCE", "days": 365}
    buckets = of(prod, "aws:s3/bucket:Bucket")
    assert [b.inputs["objectLockEnabled"] for b in buckets if "trail" in b.name] == [True]
    for pab in of(prod, "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock"):
        assert all(
            pab.inputs[k] for k in ("blockPublicAcls", "blockPublicPolicy", "ignorePublicAcls", "restrictPublicBuckets")
        )
    for policy in of(prod, "aws:s3/bucketPolicy:BucketPolicy"):
        first = doc(policy.inputs["policy"])["Statement"][0]
        assert first["Sid"] == "DenyInsecureTransport" and first["Effect"] == "Deny"
    alarms = of(prod, "aws:cloudwatch/metricAlarm:MetricAlarm")
    assert len(alarms) == len(of(prod, "aws:cloudwatch/logMetricFilter:LogMetricFilter")) >= 8
    assert one(prod, "aws:sns/topic:Topic").inputs["kmsMasterKeyId"].endswith("billkit-keys-audit")
    assert one(prod, "aws:guardduty/detector:Detector").inputs["enable"] is True
    assert (
        "pci-dss/v/4.0.1"
        in one(prod, "aws:securityhub/standardsSubscription:StandardsSubscription").inputs["standardsArn"]
    )


@pytest.mark.control("CMP-03")
def test_no_secret_in_stack_files_or_program_inputs(prod: tuple[Resource, ...]) -> None:
    for stack in ("dev", "prod"):
        config = yaml.safe_load((ROOT / f"Pulumi.{stack}.yaml").read_text(encoding="utf-8"))["config"]
        for key, value in config.items():
            assert not re.search(r"password|secret|token|private", key, re.I), key
            assert not isinstance(value, dict), f"{key}: no encrypted values are needed"
    suspicious = [r.name for r in prod if r.custom and {"password", "secretString", "privateKey"} & set(r.inputs)]
    assert suspicious == []
    assert not of(prod, "aws:iam/accessKey:AccessKey")


# --- secure defaults of the component arguments (callers must opt out explicitly) ----------------


@pytest.mark.control("BAK-07", "BAK-01", "LOG-04", "EAR-02", "BAK-03", "LOG-01")
def test_component_args_default_to_the_secure_setting() -> None:
    from infra.audit import AuditArgs
    from infra.backup import BackupArgs
    from infra.buckets import SecureBucketArgs
    from infra.database import DatabaseArgs
    from infra.edge import EdgeArgs
    from infra.keys import KeysArgs
    from infra.network import NetworkArgs

    def defaults(cls: type) -> dict[str, Any]:
        return {f.name: f.default for f in dataclasses.fields(cls) if f.default is not dataclasses.MISSING}

    db = defaults(DatabaseArgs)
    assert db["multi_az"] and db["deletion_protection"] and not db["skip_final_snapshot"]
    assert db["backup_retention_days"] >= 35 and db["log_retention_days"] >= 365 and db["performance_insights"]
    assert defaults(KeysArgs)["deletion_window_days"] == 30 and defaults(KeysArgs)["rotation_period_days"] <= 365
    net = defaults(NetworkArgs)
    assert net["flow_log_traffic_type"] == "ALL" and net["flow_log_retention_days"] >= 365 and net["nat_per_az"]
    backup = defaults(BackupArgs)
    assert backup["daily_retention_days"] >= 35 and backup["monthly_retention_days"] >= 365
    assert backup["lock_changeable_for_days"] >= 3
    audit = defaults(AuditArgs)
    assert audit["object_lock_days"] >= 365 and audit["guardduty"] and audit["security_hub"]
    edge = defaults(EdgeArgs)
    assert edge["deletion_protection"] and edge["tls_policy"].startswith("ELBSecurityPolicy-TLS13")
    assert not defaults(SecureBucketArgs)["force_destroy"]
