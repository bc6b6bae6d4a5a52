# ruff: noqa: E501 - the case table keeps each case on its own two lines, for reading side by side
"""Resource policies: each compliant baseline passes; each case changes one field and gets exactly
the expected violation.

Baselines are the resources the real program registers for the prod stack (one mock run per
session, billkit.plan.captured), so the pack is tested against what `pulumi up` would create.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

import pytest
from pulumi_policy import PolicyCustomTimeouts, PolicyResourceOptions, ResourceValidationArgs

from billkit.plan import Resource, captured
from policies.rules import REGISTRY, resource_policies

# pulumi_aws warns about its own deprecated aliases when a service module loads.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:pulumi_aws")

Props = dict[str, Any]


def baseline(kind: str, name_contains: str = "") -> Resource:
    for r in captured("prod"):
        if r.type == kind and name_contains in r.name:
            return r
    raise AssertionError(f"the prod stack has no {kind} named *{name_contains}*")


def violations(kind: str, props: Props, name: str = "billkit-test") -> set[tuple[str, str]]:
    """Every (policy, message) the pack reports for one resource."""
    found: set[tuple[str, str]] = set()
    opts = PolicyResourceOptions(False, [], None, [], PolicyCustomTimeouts(0, 0, 0), [], None)
    for policy in resource_policies():
        meta = REGISTRY[policy.name][1]
        args = ResourceValidationArgs(kind, props, f"urn:test::{name}", name, opts, None, dict(meta.config_defaults))
        policy.validate(args, lambda message, urn=None, p=policy.name: found.add((p, message)))
    return found


def set_doc(props: Props, key: str, change: Callable[[dict[str, Any]], None]) -> None:
    doc = json.loads(props[key])
    change(doc)
    props[key] = json.dumps(doc)


RDS = "aws:rds/instance:Instance"
PG = "aws:rds/parameterGroup:ParameterGroup"
EC2 = "aws:ec2/instance:Instance"
LT = "aws:ec2/launchTemplate:LaunchTemplate"
SGI = "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule"
SGE = "aws:vpc/securityGroupEgressRule:SecurityGroupEgressRule"
LB = "aws:lb/loadBalancer:LoadBalancer"
LISTENER = "aws:lb/listener:Listener"
ACL = "aws:wafv2/webAcl:WebAcl"
TASK = "aws:ssm/maintenanceWindowTask:MaintenanceWindowTask"
BASELINE = "aws:ssm/patchBaseline:PatchBaseline"
SCAN = "aws:ssm/association:Association"


def _params(props: Props, name: str, value: str | None) -> None:
    props["parameters"] = [p for p in props["parameters"] if p["name"] != name]
    if value is not None:
        props["parameters"].append({"name": name, "value": value})


def _rule(props: Props, group: str) -> dict[str, Any]:
    return next(r for r in props["rules"] if r["name"] == group)


def _sid(document: dict[str, Any], sid: str) -> dict[str, Any]:
    return next(s for s in document["Statement"] if s["Sid"] == sid)


def _run(props: Props) -> dict[str, Any]:
    return props["taskInvocationParameters"]["runCommandParameters"]


def _priority(props: Props) -> dict[str, Any]:
    return next(f for f in props["approvalRules"][0]["patchFilters"] if f["key"] == "PRIORITY")


def _undeny(props: Props, action: str) -> None:
    set_doc(props, "policy", lambda d: _sid(d, "DenyDestructive")["Action"].remove(action))


ROOT = "AWS:arn:aws:iam::123456789012:root"
CREATE_ROLES = json.dumps({"Version": "2012-10-17", "Statement": [
    {"Sid": "CreateRoles", "Effect": "Allow", "Action": "iam:CreateRole", "Resource": "*"}]})  # fmt: skip


# (policy, resource type, baseline name fragment, mutation, exact message)
CASES: list[tuple[str, str, str, Callable[[Props], Any], str]] = [
    # KMS
    ("aws-kms-key-enable-rotation", "aws:kms/key:Key", "database", lambda p: p.update(enableKeyRotation=False),
     "key rotation is off: set enable_key_rotation=True"),
    ("aws-kms-key-enable-rotation", "aws:kms/key:Key", "database", lambda p: p.update(rotationPeriodInDays=730.0),
     "key rotates every 730 days; rotate at least yearly (≤ 365)"),
    ("aws-kms-key-configure-deletion-window", "aws:kms/key:Key", "database",
     lambda p: p.update(deletionWindowInDays=7.0), "deletion window is 7 days; use 30"),
    ("aws-kms-key-configure-least-privilege-policy", "aws:kms/key:Key", "database", lambda p: p.pop("policy"),
     "the key has no explicit key policy (the default grants kms:* to the whole account)"),
    ("aws-kms-key-configure-least-privilege-policy", "aws:kms/key:Key", "database",
     lambda p: set_doc(p, "policy", lambda d: d["Statement"][1].update(Action="kms:*")),
     "statement RdsUsesKey grants ['kms:*']: list the key actions instead"),
    ("aws-kms-key-configure-least-privilege-policy", "aws:kms/key:Key", "audit",
     lambda p: set_doc(p, "policy", lambda d: d["Statement"][3].update(Principal="*")),
     "statement AuditorReads allows any principal ('*') without a condition"),
    ("aws-kms-key-disallow-admin-key-use", "aws:kms/key:Key", "database",
     lambda p: set_doc(p, "policy", lambda d: d["Statement"][0]["Action"].append("kms:Create*")),
     "statement AccountAdministersKey administers the key and may also use it or grant its use: ['kms:CreateGrant']"),
    ("aws-kms-key-disallow-admin-key-use", "aws:kms/key:Key", "database",
     lambda p: set_doc(p, "policy", lambda d: d["Statement"][0]["Action"].append("kms:Decrypt")),
     "statement AccountAdministersKey administers the key and may also use it or grant its use: ['kms:Decrypt']"),
    ("aws-kms-key-disallow-admin-key-use", "aws:kms/key:Key", "database",
     lambda p: set_doc(p, "policy", lambda d: d["Statement"][0]["Action"].append("kms:Put*")),
     f"statement AccountAdministersKey lets ['{ROOT}'] change the key policy; only the root user may "
     "(condition aws:PrincipalType = Account)"),
    ("aws-kms-key-disallow-admin-key-use", "aws:kms/key:Key", "database",
     lambda p: set_doc(p, "policy", lambda d: _sid(d, "RootUserSetsKeyPolicy").pop("Condition")),
     f"statement RootUserSetsKeyPolicy lets ['{ROOT}'] change the key policy; only the root user may "
     "(condition aws:PrincipalType = Account)"),
    ("aws-kms-key-configure-unseal-key-users", "aws:kms/key:Key", "vault-unseal",
     lambda p: set_doc(p, "policy", lambda d: d["Statement"][1]["Action"].append("kms:CreateGrant")),
     "statement VaultUnseals allows ['kms:CreateGrant'] on the unseal key"),
    ("aws-kms-key-configure-unseal-key-users", "aws:kms/key:Key", "vault-unseal",
     lambda p: set_doc(p, "policy", lambda d: d["Statement"][1].update(Principal={"Service": "ec2.amazonaws.com"})),
     "statement VaultUnseals lets ['Service:ec2.amazonaws.com'] use the unseal key; name the Vault role only"),
    # RDS
    ("aws-rds-instance-enable-storage-encryption", RDS, "", lambda p: p.update(storageEncrypted=False),
     "storage is not encrypted: set storage_encrypted=True"),
    ("aws-rds-instance-enable-storage-encryption", RDS, "", lambda p: p.pop("kmsKeyId"),
     "storage uses the AWS-managed key: set kms_key_id to a customer-managed key"),
    ("aws-rds-instance-disallow-public-access", RDS, "", lambda p: p.update(publiclyAccessible=True),
     "the database is publicly accessible"),
    ("aws-rds-instance-enable-multi-az", RDS, "", lambda p: p.update(multiAz=False),
     "the database is single-AZ (multi_az is off)"),
    ("aws-rds-instance-enable-deletion-protection", RDS, "", lambda p: p.update(deletionProtection=False),
     "deletion protection is off"),
    ("aws-rds-instance-configure-final-snapshot", RDS, "", lambda p: p.update(skipFinalSnapshot=True),
     "skip_final_snapshot is on: deleting the database would keep no final snapshot"),
    ("aws-rds-instance-configure-backup-retention", RDS, "", lambda p: p.update(backupRetentionPeriod=7.0),
     "backups are kept 7 days; keep at least 35"),
    ("aws-rds-instance-enable-iam-authentication", RDS, "", lambda p: p.update(iamDatabaseAuthenticationEnabled=False),
     "IAM database authentication is off"),
    ("aws-rds-instance-configure-managed-master-password", RDS, "", lambda p: p.update(manageMasterUserPassword=False),
     "manage_master_user_password is off"),
    ("aws-rds-instance-enable-performance-insights-encryption", RDS, "", lambda p: p.pop("performanceInsightsKmsKeyId"),
     "Performance Insights uses the AWS-managed key"),
    ("aws-rds-instance-enable-log-exports", RDS, "", lambda p: p.update(enabledCloudwatchLogsExports=["upgrade"]),
     'the "postgresql" log is not exported to CloudWatch Logs'),
    ("aws-rds-instance-enable-minor-version-upgrade", RDS, "", lambda p: p.update(autoMinorVersionUpgrade=False),
     "automatic minor version upgrades are off"),
    ("aws-rds-instance-enable-copy-tags-to-snapshot", RDS, "", lambda p: p.update(copyTagsToSnapshot=False),
     "snapshots do not carry the instance's tags"),
    ("aws-rds-parametergroup-enable-force-ssl", PG, "", lambda p: _params(p, "rds.force_ssl", "0"),
     "rds.force_ssl is not 1: clients may connect without TLS"),
    ("aws-rds-parametergroup-enable-force-ssl", PG, "", lambda p: _params(p, "ssl_min_protocol_version", "TLSv1"),
     "ssl_min_protocol_version is not TLSv1.2 or newer"),
    ("aws-rds-parametergroup-enable-audit-logging", PG, "", lambda p: _params(p, "log_connections", None),
     "log_connections is not 1"),
    ("aws-rds-parametergroup-enable-audit-logging", PG, "", lambda p: _params(p, "pgaudit.log", "ddl"),
     "pgaudit.log does not cover role, write"),
    ("aws-rds-parametergroup-enable-audit-logging", PG, "",
     lambda p: _params(p, "shared_preload_libraries", "pg_stat_statements"), "pgaudit is not in shared_preload_libraries"),
    # EC2
    ("aws-ec2-instance-configure-imdsv2", EC2, "", lambda p: p["metadataOptions"].update(httpTokens="optional"),
     "instance metadata accepts IMDSv1: set metadata_options.http_tokens='required'"),
    ("aws-ec2-instance-configure-imdsv2", LT, "", lambda p: p["metadataOptions"].update(httpPutResponseHopLimit=2.0),
     "metadata hop limit above 1 lets containers reach the instance's credentials"),
    ("aws-ec2-instance-disallow-public-ip", EC2, "", lambda p: p.update(associatePublicIpAddress=True),
     "the instance gets a public IP address"),
    ("aws-ec2-instance-disallow-public-ip", LT, "", lambda p: p["networkInterfaces"][0].update(associatePublicIpAddress="true"),
     "a network interface of the template gets a public IP address"),
    ("aws-ec2-instance-enable-volume-encryption", EC2, "", lambda p: p["rootBlockDevice"].update(encrypted=False),
     "root volume is not encrypted"),
    ("aws-ec2-instance-enable-volume-encryption", LT, "", lambda p: p["blockDeviceMappings"][0]["ebs"].pop("kmsKeyId"),
     "volume /dev/xvda uses the AWS-managed EBS key, not a customer-managed key"),
    ("aws-ec2-instance-configure-patch-group", EC2, "", lambda p: p["tags"].pop("Patch Group"),
     "the instance has no 'Patch Group' tag: no maintenance window patches it"),
    ("aws-ec2-instance-configure-patch-group", LT, "", lambda p: p["tagSpecifications"][0]["tags"].pop("Patch Group"),
     "instances started from the template get no 'Patch Group' tag (tag_specifications 'instance')"),
    ("aws-ebs-volume-enable-encryption", "aws:ebs/volume:Volume", "", lambda p: p.update(encrypted=False),
     "the volume is not encrypted"),
    ("aws-ebs-encryptionbydefault-enable-encryption", "aws:ebs/encryptionByDefault:EncryptionByDefault", "",
     lambda p: p.update(enabled=False), "EBS encryption by default is turned off"),
    ("aws-ec2-subnet-disallow-public-ip-on-launch", "aws:ec2/subnet:Subnet", "edge",
     lambda p: p.update(mapPublicIpOnLaunch=True), "instances launched in this subnet get a public IP"),
    # VPC
    ("aws-ec2-securitygroup-disallow-admin-ports", SGI, "app-ingress",
     lambda p: p.update(fromPort=22.0, toPort=22.0), "ingress opens administration port 22 (from a security group)"),
    ("aws-ec2-securitygroup-disallow-unlisted-ports", SGE, "app-egress-tcp5432",
     lambda p: p.update(fromPort=6379.0, toPort=6379.0), "tcp port 6379 is used by no flow of the topology"),
    ("aws-ec2-securitygroup-disallow-public-ingress", SGI, "waf-ingress-tcp443",
     lambda p: p.update(fromPort=8443.0, toPort=8443.0),
     "ingress from the internet on tcp 8443; only [80, 443] may be public"),
    ("aws-ec2-securitygroup-disallow-port-ranges", SGE, "app-egress-tcp5432", lambda p: p.update(toPort=9000.0),
     "a rule opens the port range 5432-9000"),
    ("aws-ec2-defaultsecuritygroup-disallow-rules", "aws:ec2/defaultSecurityGroup:DefaultSecurityGroup", "",
     lambda p: p.update(egress=[{"protocol": "-1", "fromPort": 0, "toPort": 0, "cidrBlocks": ["0.0.0.0/0"]}]),
     "the default security group has rules"),
    ("aws-ec2-networkaclrule-disallow-public-admin-ports", "aws:ec2/networkAclRule:NetworkAclRule", "edge-in-110",
     lambda p: p.update(fromPort=22.0, toPort=22.0), "the NACL allows port 22 from the internet"),
    ("aws-ec2-flowlog-configure-all-traffic", "aws:ec2/flowLog:FlowLog", "", lambda p: p.update(trafficType="REJECT"),
     "flow logs record only REJECT traffic"),
    ("aws-ec2-vpcendpoint-enable-private-dns", "aws:ec2/vpcEndpoint:VpcEndpoint", "kms",
     lambda p: p.update(privateDnsEnabled=False), "private DNS is off: clients would still resolve the public endpoint"),
    # S3
    ("aws-s3-bucketpublicaccessblock-enable-all-blocks", "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock", "",
     lambda p: p.update(restrictPublicBuckets=False), "restrictPublicBuckets is off"),
    ("aws-s3-bucket-disallow-public-acl", "aws:s3/bucket:Bucket", "", lambda p: p.update(acl="public-read"),
     "the bucket's ACL is public-read"),
    ("aws-s3-bucketownershipcontrols-configure-owner-enforced", "aws:s3/bucketOwnershipControls:BucketOwnershipControls",
     "", lambda p: p["rule"].update(objectOwnership="ObjectWriter"), "ACLs still apply to this bucket's objects"),
    ("aws-s3-bucketserversideencryptionconfiguration-enable-kms-encryption",
     "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration", "trail",
     lambda p: p["rules"][0]["applyServerSideEncryptionByDefault"].update(sseAlgorithm="AES256"),
     "default encryption is 'AES256', not a customer-managed KMS key"),
    ("aws-s3-bucketversioning-enable-versioning", "aws:s3/bucketVersioning:BucketVersioning", "",
     lambda p: p["versioningConfiguration"].update(status="Suspended"), "versioning is not enabled"),
    ("aws-s3-bucketobjectlockconfiguration-configure-compliance-mode",
     "aws:s3/bucketObjectLockConfiguration:BucketObjectLockConfiguration", "",
     lambda p: p["rule"]["defaultRetention"].update(mode="GOVERNANCE"), "object lock mode is 'GOVERNANCE', not COMPLIANCE"),
    ("aws-s3-bucketpolicy-enable-tls-only", "aws:s3/bucketPolicy:BucketPolicy", "trail",
     lambda p: set_doc(p, "policy", lambda d: d["Statement"].pop(0)),
     "no statement denies requests without TLS (aws:SecureTransport = false)"),
    ("aws-s3-bucketpolicy-disallow-public-principal", "aws:s3/bucketPolicy:BucketPolicy", "trail",
     lambda p: set_doc(p, "policy", lambda d: d["Statement"][1].update(Principal="*")),
     "statement ServiceWrites0 allows anyone"),
    # CloudTrail, CloudWatch, SNS
    ("aws-cloudtrail-trail-enable-multi-region", "aws:cloudtrail/trail:Trail", "",
     lambda p: p.update(isMultiRegionTrail=False), "the trail records only its own region"),
    ("aws-cloudtrail-trail-enable-log-file-validation", "aws:cloudtrail/trail:Trail", "",
     lambda p: p.update(enableLogFileValidation=False), "log-file validation is off"),
    ("aws-cloudtrail-trail-enable-kms-encryption", "aws:cloudtrail/trail:Trail", "", lambda p: p.pop("kmsKeyId"),
     "trail logs are not encrypted with a customer-managed key"),
    ("aws-cloudtrail-trail-enable-cloudwatch-delivery", "aws:cloudtrail/trail:Trail", "",
     lambda p: p.pop("cloudWatchLogsGroupArn"), "the trail does not deliver to CloudWatch Logs: no alarm can fire"),
    ("aws-cloudwatch-loggroup-enable-kms-encryption", "aws:cloudwatch/logGroup:LogGroup", "", lambda p: p.pop("kmsKeyId"),
     "the log group is not encrypted with a customer-managed key"),
    ("aws-cloudwatch-loggroup-configure-retention", "aws:cloudwatch/logGroup:LogGroup", "",
     lambda p: p.update(retentionInDays=90.0), "events are kept 90 days; keep at least 365"),
    ("aws-cloudwatch-metricalarm-configure-notification", "aws:cloudwatch/metricAlarm:MetricAlarm", "",
     lambda p: p.update(alarmActions=[]), "the alarm notifies nobody"),
    ("aws-cloudwatch-metricalarm-configure-notification", "aws:cloudwatch/metricAlarm:MetricAlarm", "app-lockouts",
     lambda p: p.update(actionsEnabled=False), "the alarm notifies nobody"),
    ("aws-cloudwatch-metricalarm-configure-notification", "aws:cloudwatch/metricAlarm:MetricAlarm", "app-detokenizations",
     lambda p: p.update(alarmActions=["arn:aws:automate:eu-central-1:ec2:stop"]),
     "alarmActions arn:aws:automate:eu-central-1:ec2:stop is not an SNS topic: nobody is told"),
    ("aws-cloudwatch-metricalarm-configure-notification", "aws:cloudwatch/metricAlarm:MetricAlarm", "app-role-grants",
     lambda p: p.update(okActions=["arn:aws:swf:eu-central-1:123456789012:action/actions/AWS_EC2.InstanceId.Reboot/1.0"]),
     "okActions arn:aws:swf:eu-central-1:123456789012:action/actions/AWS_EC2.InstanceId.Reboot/1.0 is not an SNS topic: "
     "nobody is told"),
    ("aws-sns-topic-enable-kms-encryption", "aws:sns/topic:Topic", "",
     lambda p: p.update(kmsMasterKeyId="alias/aws/sns"), "the topic uses the AWS-managed SNS key"),
    # Backup
    ("aws-backup-vault-enable-kms-encryption", "aws:backup/vault:Vault", "", lambda p: p.pop("kmsKeyArn"),
     "the vault uses the AWS-managed backup key"),
    ("aws-backup-vaultlockconfiguration-configure-compliance-mode",
     "aws:backup/vaultLockConfiguration:VaultLockConfiguration", "", lambda p: p.pop("changeableForDays"),
     "the lock is in governance mode (no changeable_for_days): privileged users can remove it"),
    ("aws-backup-vaultpolicy-disallow-recovery-point-deletion", "aws:backup/vaultPolicy:VaultPolicy", "",
     lambda p: set_doc(p, "policy", lambda d: d["Statement"][0].update(Action=["backup:DeleteBackupVault"])),
     "nothing denies backup:DeleteRecoveryPoint"),
    ("aws-backup-plan-configure-retention", "aws:backup/plan:Plan", "",
     lambda p: p["rules"][1]["lifecycle"].update(deleteAfter=90.0),
     "no rule keeps recovery points 365 days (monthly, 12 months)"),
    ("aws-backup-plan-enable-cross-region-copy", "aws:backup/plan:Plan", "", lambda p: p["rules"][0].pop("copyActions"),
     "rule daily copies nothing off-site"),
    # Load balancers
    ("aws-elb-listener-configure-modern-tls", LISTENER, "https",
     lambda p: p.update(sslPolicy="ELBSecurityPolicy-2016-08"),
     "TLS policy 'ELBSecurityPolicy-2016-08' allows old protocols or weak ciphers"),
    ("aws-elb-listener-disallow-plaintext", LISTENER, "http-redirect",
     lambda p: p.update(defaultActions=[{"type": "forward", "targetGroupArn": "tg"}]),
     "the HTTP listener serves content instead of redirecting to HTTPS"),
    ("aws-elb-listener-disallow-plaintext", LISTENER, "vault-tls", lambda p: p.update(protocol="TCP"),
     "a TCP listener carries traffic in clear text"),
    ("aws-elb-targetgroup-configure-tls", "aws:lb/targetGroup:TargetGroup", "app-tg", lambda p: p.update(protocol="HTTP"),
     "targets are reached over HTTP, not TLS"),
    ("aws-elb-loadbalancer-enable-drop-invalid-headers", LB, "alb", lambda p: p.update(dropInvalidHeaderFields=False),
     "invalid header fields are passed to the app"),
    ("aws-elb-loadbalancer-enable-access-logs", LB, "alb", lambda p: p["accessLogs"].update(enabled=False),
     "access logs are off"),
    # WAF
    ("aws-wafv2-webacl-enable-managed-rules", ACL, "",
     lambda p: p.update(rules=[r for r in p["rules"] if r["name"] != "AWSManagedRulesSQLiRuleSet"]),
     "managed rule group AWSManagedRulesSQLiRuleSet is missing"),
    ("aws-wafv2-webacl-enable-managed-rules", ACL, "",
     lambda p: _rule(p, "AWSManagedRulesCommonRuleSet").update(overrideAction={"count": {}}),
     "managed rule group AWSManagedRulesCommonRuleSet only counts (override_action count)"),
    ("aws-wafv2-webacl-configure-login-rate-limit", ACL, "",
     lambda p: _rule(p, "login-rate-limit").update(action={"count": {}}), "no blocking rate-based rule on the login path"),
    ("aws-wafv2-webacl-enable-metrics", ACL, "",
     lambda p: p["visibilityConfig"].update(sampledRequestsEnabled=False), "web ACL does not publish metrics and samples"),
    ("aws-wafv2-webaclloggingconfiguration-configure-redaction",
     "aws:wafv2/webAclLoggingConfiguration:WebAclLoggingConfiguration", "",
     lambda p: p["redactedFields"].pop(1), "the cookie header is logged in clear"),
    # IAM
    ("aws-iam-accountpasswordpolicy-configure-pci-requirements", "aws:iam/accountPasswordPolicy:AccountPasswordPolicy",
     "", lambda p: p.update(minimumPasswordLength=8.0), "minimum length 8 is below 12"),
    ("aws-iam-accountpasswordpolicy-configure-pci-requirements", "aws:iam/accountPasswordPolicy:AccountPasswordPolicy",
     "", lambda p: p.update(maxPasswordAge=365.0), "passwords need not change every 90 days"),
    ("aws-iam-policy-disallow-admin-wildcards", "aws:iam/policy:Policy", "platform-admin",
     lambda p: set_doc(p, "policy", lambda d: d["Statement"][0].update(Action="*")),
     "statement OperateServices allows ['*'] on every resource"),
    ("aws-iam-policy-disallow-admin-wildcards", "aws:iam/policy:Policy", "platform-admin",
     lambda p: set_doc(p, "policy", lambda d: _sid(d, "AdministerKeys").update(Action=["kms:*"])),
     "statement AdministerKeys allows ['kms:*'] on every resource"),
    ("aws-iam-policy-enable-permissions-boundary", "aws:iam/policy:Policy", "ci-deployer",
     lambda p: set_doc(p, "policy", lambda d: _sid(d, "CreateRolesWithinBoundary").pop("Condition")),
     "statement CreateRolesWithinBoundary allows ['iam:AttachRolePolicy', 'iam:CreateRole', "
     "'iam:PutRolePermissionsBoundary', 'iam:PutRolePolicy'] without requiring a permissions boundary "
     "(condition iam:PermissionsBoundary)"),
    ("aws-iam-policy-enable-permissions-boundary", "aws:iam/policy:Policy", "ci-deployer",
     lambda p: set_doc(p, "policy", lambda d: _sid(d, "ManageKitRoles")["Action"].append("iam:DeleteRole*")),
     "statement ManageKitRoles lets principals remove a permissions boundary: ['iam:DeleteRolePermissionsBoundary']"),
    ("aws-iam-policy-enable-permissions-boundary", "aws:iam/role:Role", "ci-deployer",
     lambda p: p.update(inlinePolicies=[{"name": "create-roles", "policy": CREATE_ROLES}]),
     "statement CreateRoles allows ['iam:CreateRole'] without requiring a permissions boundary "
     "(condition iam:PermissionsBoundary)"),
    ("aws-iam-role-enable-permissions-boundary", "aws:iam/role:Role", "auditor", lambda p: p.pop("permissionsBoundary"),
     "the role has no permissions boundary"),
    ("aws-iam-policy-disallow-evidence-destruction", "aws:iam/policy:Policy", "platform-admin",
     lambda p: _undeny(p, "cloudtrail:UpdateTrail"),
     "statement OperateServices allows ['cloudtrail:UpdateTrail'] and no statement of the policy denies it"),
    ("aws-iam-policy-disallow-evidence-destruction", "aws:iam/policy:Policy", "ci-deployer",
     lambda p: _undeny(p, "logs:DeleteLogGroup"),
     "statement DeployServices allows ['logs:DeleteLogGroup'] and no statement of the policy denies it"),
    ("aws-iam-policy-disallow-evidence-destruction", "aws:iam/policy:Policy", "boundary",
     lambda p: _undeny(p, "kms:ScheduleKeyDeletion"),
     "statement Keys allows ['kms:ScheduleKeyDeletion'] and no statement of the policy denies it"),
    ("aws-iam-rolepolicyattachment-disallow-admin-policies", "aws:iam/rolePolicyAttachment:RolePolicyAttachment",
     "platform-admin", lambda p: p.update(policyArn="arn:aws:iam::aws:policy/AdministratorAccess"),
     "attaches arn:aws:iam::aws:policy/AdministratorAccess"),
    ("aws-iam-role-configure-mfa-for-humans", "aws:iam/role:Role", "auditor",
     lambda p: set_doc(p, "assumeRolePolicy", lambda d: d["Statement"][0].pop("Condition")),
     "trust statement AssumeWithMfa lets account principals assume the role without MFA"),
    # SSM patching
    ("aws-ssm-maintenancewindowtask-configure-rate-control", TASK, "app", lambda p: p.update(maxConcurrency="2"),
     "max_concurrency is '2': patch at most 1 host(s) at a time"),
    ("aws-ssm-maintenancewindowtask-configure-rate-control", TASK, "app", lambda p: p.update(maxConcurrency="25%"),
     "max_concurrency is '25%', a share of the hosts: name an absolute number (at most 1)"),
    ("aws-ssm-maintenancewindowtask-configure-rate-control", TASK, "vault", lambda p: p.update(maxErrors="1"),
     "max_errors is '1': stop the rollout at the first failure (max_errors '0')"),
    ("aws-ssm-maintenancewindowtask-configure-rate-control", TASK, "vault", lambda p: p.pop("maxErrors"),
     "max_errors is None: stop the rollout at the first failure (max_errors '0')"),
    ("aws-ssm-maintenancewindowtask-configure-rate-control", TASK, "app",
     lambda p: p.update(cutoffBehavior="CANCEL_TASK"),
     "cutoff_behavior CANCEL_TASK stops a host in the middle of its rollout when the window closes"),
    ("aws-ssm-maintenancewindowtask-enable-output-evidence", TASK, "app", lambda p: _run(p).pop("outputS3Bucket"),
     "the task writes no output to S3 (output_s3_bucket): its runs leave no evidence"),
    ("aws-ssm-maintenancewindowtask-enable-output-evidence", TASK, "vault", lambda p: _run(p).pop("outputS3KeyPrefix"),
     "the task's output has no key prefix (output_s3_key_prefix): runs of different roles mix"),
    ("aws-ssm-patchbaseline-configure-security-approval", BASELINE, "", lambda p: p.pop("operatingSystem"),
     "operating_system is not set: the baseline would apply to WINDOWS"),
    ("aws-ssm-patchbaseline-configure-security-approval", BASELINE, "", lambda p: p.update(approvalRules=[]),
     "the baseline has no approval rule: no security update is approved automatically"),
    ("aws-ssm-patchbaseline-configure-security-approval", BASELINE, "",
     lambda p: p["approvalRules"][0].update(approveAfterDays=7.0),
     "rule 1 sets an approval delay, which SSM does not support for DEBIAN"),
    ("aws-ssm-patchbaseline-configure-security-approval", BASELINE, "",
     lambda p: p["approvalRules"][0].update(complianceLevel="LOW"), "rule 1 reports missing patches as LOW: use CRITICAL or HIGH"),
    ("aws-ssm-patchbaseline-configure-security-approval", BASELINE, "", lambda p: _priority(p)["values"].remove("Important"),
     "rule 1 leaves out priority ['Important']: security updates of that priority stay pending"),
    ("aws-ssm-association-configure-scan-only", SCAN, "scan", lambda p: p["parameters"].update(Operation="Install"),
     "the association installs patches (Operation 'Install') outside the one-host-at-a-time rollout"),
    ("aws-ssm-association-configure-scan-only", SCAN, "scan", lambda p: p["parameters"].pop("RebootOption"),
     "the association may reboot hosts (RebootOption 'RebootIfNeeded') outside the rollout"),
    # Detection
    ("aws-guardduty-detector-enable-detector", "aws:guardduty/detector:Detector", "", lambda p: p.update(enable=False),
     "the detector is disabled"),
    ("aws-securityhub-standardssubscription-configure-pci-standard",
     "aws:securityhub/standardsSubscription:StandardsSubscription", "",
     lambda p: p.update(standardsArn="arn:aws:securityhub:eu-central-1::standards/pci-dss/v/3.2.1"),
     "subscribes to PCI DSS v3.2.1; use v4.0.1"),
]  # fmt: skip


def _controls(policy: str) -> tuple[str, ...]:
    return REGISTRY[policy][1].controls


@pytest.mark.parametrize(
    ("policy", "kind", "pick", "mutate", "message"),
    [
        pytest.param(*c, id=f"{c[0]}:{i}", marks=pytest.mark.control(*_controls(c[0]), "CMP-02"))
        for i, c in enumerate(CASES)
    ],
)
def test_one_change_gives_exactly_one_violation(
    policy: str, kind: str, pick: str, mutate: Callable[[Props], Any], message: str
) -> None:
    base = baseline(kind, pick)
    assert violations(kind, base.inputs, base.name) == set(), "the baseline must be compliant"
    props = copy.deepcopy(base.inputs)
    mutate(props)
    assert violations(kind, props, base.name) == {(policy, message)}


# Resources the stack must never contain: any instance is a violation (no baseline exists).
FORBIDDEN = [
    ("aws-iam-user-disallow-direct-policies", "aws:iam/userPolicyAttachment:UserPolicyAttachment",
     {"user": "alice", "policyArn": "arn:aws:iam::123456789012:policy/billkit/ops"}, "a policy is attached directly to a user"),
    ("aws-iam-user-disallow-direct-policies", "aws:iam/userPolicy:UserPolicy",
     {"user": "alice", "policy": '{"Statement": []}'}, "a policy is attached directly to a user"),
    ("aws-iam-accesskey-disallow-access-keys", "aws:iam/accessKey:AccessKey", {"user": "ci"},
     "an IAM access key is created"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("policy", "kind", "props", "message"),
    [pytest.param(*c, marks=pytest.mark.control(*_controls(c[0]), "CMP-02")) for c in FORBIDDEN],
)
def test_forbidden_resources_are_refused(policy: str, kind: str, props: Props, message: str) -> None:
    assert not [r for r in captured("prod") if r.type == kind]
    assert violations(kind, props) == {(policy, message)}


def test_every_resource_policy_has_a_case() -> None:
    covered = {c[0] for c in CASES} | {c[0] for c in FORBIDDEN}
    assert [p.name for p in resource_policies() if p.name not in covered] == []


@pytest.mark.control("EAR-06", "CMP-02")
def test_the_sse_s3_waiver_covers_only_the_alb_log_bucket() -> None:
    kind = "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration"
    alb = baseline(kind, "alb-logs")
    assert alb.inputs["rules"][0]["applyServerSideEncryptionByDefault"]["sseAlgorithm"] == "AES256"
    assert violations(kind, alb.inputs, alb.name) == set()
    assert violations(kind, alb.inputs, "billkit-audit-trail-sse") == {
        ("aws-s3-bucketserversideencryptionconfiguration-enable-kms-encryption",
         "default encryption is 'AES256', not a customer-managed KMS key")
    }  # fmt: skip


@pytest.mark.control("NET-09", "NET-02")
def test_legacy_inline_security_group_rules_are_checked_too() -> None:
    kind = "aws:ec2/securityGroup:SecurityGroup"
    props = {"ingress": [{"protocol": "tcp", "fromPort": 22.0, "toPort": 22.0, "cidrBlocks": ["0.0.0.0/0"]}]}
    assert violations(kind, props) == {
        ("aws-ec2-securitygroup-disallow-admin-ports", "ingress opens administration port 22 (from ['0.0.0.0/0'])"),
        ("aws-ec2-securitygroup-disallow-public-ingress",
         "ingress from the internet on tcp 22; only [80, 443] may be public"),
    }  # fmt: skip
    props = {"ingress": [{"protocol": "-1", "fromPort": 0.0, "toPort": 0.0, "cidrBlocks": ["10.0.0.0/8"]}]}
    assert ("aws-ec2-securitygroup-disallow-port-ranges", "a rule allows all protocols and ports") in violations(
        kind, props
    )
