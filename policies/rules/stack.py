"""Stack policies: properties of the whole environment that no single resource shows.

They follow references between resources through the engine's property dependencies (the
resources an input was computed from), so they work in preview, where IDs are unknown.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from pulumi_policy import PolicyResource, Severity, StackValidationArgs

from infra import topology
from policies.rules import cloudwatch, elb, rds
from policies.rules._base import items, resource_policy, stack_policy, truthy

del resource_policy  # stack policies only in this module

SUBNET = "aws:ec2/subnet:Subnet"
ROUTE = "aws:ec2/route:Route"
ROUTE_TABLE = "aws:ec2/routeTable:RouteTable"
RTA = "aws:ec2/routeTableAssociation:RouteTableAssociation"
WAF_ASSOC = "aws:wafv2/webAclAssociation:WebAclAssociation"
SELECTION = "aws:backup/selection:Selection"
RESTORE_PLAN = "aws:backup/restoreTestingPlan:RestoreTestingPlan"
RESTORE_SELECTION = "aws:backup/restoreTestingSelection:RestoreTestingSelection"
KEY = "aws:kms/key:Key"
METRIC_FILTER = "aws:cloudwatch/logMetricFilter:LogMetricFilter"
DETECTOR = "aws:guardduty/detector:Detector"
STANDARDS = "aws:securityhub/standardsSubscription:StandardsSubscription"
TRAIL = "aws:cloudtrail/trail:Trail"
BUCKET = "aws:s3/bucket:Bucket"
TIER_TAG = "billkit:tier"
# What each required alarm must watch: an event name that its metric filter pattern must name.
REQUIRED_ALARM_EVENTS = {
    "root use": "Root",
    "unauthorised API calls": "UnauthorizedOperation",
    "console login without MFA": "MFAUsed",
    "IAM policy changes": "PutRolePolicy",
    "KMS key disabling or deletion": "ScheduleKeyDeletion",
    "security-group changes": "AuthorizeSecurityGroupIngress",
    "NACL changes": "CreateNetworkAclEntry",
    "network changes": "CreateRoute",
}


def _of(args: StackValidationArgs, *types: str) -> list[PolicyResource]:
    return [r for r in args.resources if r.resource_type in types]


def _deps(r: PolicyResource, prop: str) -> list[PolicyResource]:
    return list(r.property_dependencies.get(prop, []))


@stack_policy(
    "aws-ec2-stack-disallow-private-tier-internet-route",
    description="Only public tiers route to the internet gateway; only egress tiers (app) route to NAT; "
    "the data and management tiers have no internet route at all.",
    controls=["NET-01"],
    pci=["1.3.1", "1.3.2", "1.4.4"],
    severity=Severity.CRITICAL,
    remediation="Associate data/management subnets with a route table that has only local routes "
    "(and the S3 gateway endpoint); tag every subnet with billkit:tier.",
)
def private_tier_routes(args: StackValidationArgs) -> Iterable[str]:
    tiers = {t.name: t for t in topology.TIERS}
    routes_by_table: dict[str, list[PolicyResource]] = {}
    for route in _of(args, ROUTE):
        for table in _deps(route, "routeTableId"):
            routes_by_table.setdefault(table.urn, []).append(route)
    for table in _of(args, ROUTE_TABLE):
        for inline in items(table.props.get("routes")):
            routes_by_table.setdefault(table.urn, []).append(
                PolicyResource(ROUTE, inline, table.urn + "#inline", table.name, table.opts, None, None, [], {})
            )
    for assoc in _of(args, RTA):
        for subnet in _deps(assoc, "subnetId"):
            tier_name = (subnet.props.get("tags") or {}).get(TIER_TAG)
            tier = tiers.get(str(tier_name))
            if tier is None:
                yield f"{subnet.urn}: subnet has no {TIER_TAG} tag naming a tier of the topology"
                continue
            for table in _deps(assoc, "routeTableId"):
                for route in routes_by_table.get(table.urn, []):
                    via_igw = bool(route.props.get("gatewayId")) and not str(route.props.get("gatewayId")).startswith(
                        "vpce-"
                    )
                    via_nat = bool(route.props.get("natGatewayId"))
                    if via_igw and not tier.public:
                        yield f"{subnet.urn}: {tier.name}-tier subnet is routed to the internet gateway"
                    if via_nat and not tier.egress:
                        yield f"{subnet.urn}: {tier.name}-tier subnet is routed to a NAT gateway"


@stack_policy(
    "aws-elb-stack-enable-waf-association",
    description="Every internet-facing application load balancer is protected by a WAF web ACL.",
    controls=["NET-06"],
    pci=["6.4.2"],
    severity=Severity.CRITICAL,
    remediation="Add an aws.wafv2.WebAclAssociation for the load balancer.",
)
def waf_association(args: StackValidationArgs) -> Iterable[str]:
    protected = {lb.urn for a in _of(args, WAF_ASSOC) for lb in _deps(a, "resourceArn")}
    for lb in _of(args, elb.LOAD_BALANCER):
        public = not truthy(lb.props.get("internal"))
        if public and lb.props.get("loadBalancerType", "application") == "application" and lb.urn not in protected:
            yield f"{lb.urn}: internet-facing load balancer {lb.name} has no WAF web ACL"


def _tags_match(tags: Mapping[str, Any], selection: PolicyResource) -> bool:
    for cond in items(selection.props.get("selectionTags")):
        if cond.get("type", "STRINGEQUALS") == "STRINGEQUALS" and tags.get(cond.get("key")) == cond.get("value"):
            return True
    return False


@stack_policy(
    "aws-backup-stack-enable-database-coverage",
    description="Every RDS instance is covered by an AWS Backup selection (by tag or by ARN).",
    controls=["BAK-01", "BAK-02"],
    pci=["12.10.1"],
    severity=Severity.HIGH,
    remediation="Tag the instance with the backup selection's tag, or list its ARN in the selection.",
)
def database_coverage(args: StackValidationArgs) -> Iterable[str]:
    selections = _of(args, SELECTION)
    for db in _of(args, rds.INSTANCE):
        tags = db.props.get("tags") or {}
        listed = any(db in _deps(s, "resources") for s in selections)
        if not listed and not any(_tags_match(tags, s) for s in selections):
            yield f"{db.urn}: database {db.name} is in no backup selection"


@stack_policy(
    "aws-backup-stack-enable-restore-testing",
    description="A restore-testing plan with at least one selection restores backups regularly.",
    controls=["BAK-05"],
    pci=["12.10.2"],
    severity=Severity.MEDIUM,
    remediation="Add an aws.backup.RestoreTestingPlan and a RestoreTestingSelection for the database.",
)
def restore_testing(args: StackValidationArgs) -> Iterable[str]:
    if not _of(args, rds.INSTANCE):
        return
    if not _of(args, RESTORE_PLAN) or not _of(args, RESTORE_SELECTION):
        yield "no restore-testing plan with a selection: restores are never tested"


KEY_INPUTS = ("kmsKeyId", "kmsKeyArn", "kmsMasterKeyId", "keyArn", "performanceInsightsKmsKeyId")


@stack_policy(
    "aws-kms-stack-enable-rotation-for-keys-in-use",
    description="Every KMS key that encrypts something in the stack rotates automatically.",
    controls=["EAR-02"],
    pci=["3.6.1", "3.7.4"],
    severity=Severity.HIGH,
    remediation="Set enable_key_rotation=True on the key.",
)
def keys_in_use_rotate(args: StackValidationArgs) -> Iterable[str]:
    seen: set[str] = set()
    for r in args.resources:
        for prop in KEY_INPUTS:
            for key in _deps(r, prop):
                if key.resource_type == KEY and key.urn not in seen:
                    seen.add(key.urn)
                    if key.props.get("enableKeyRotation") is not True:
                        yield f"{key.urn}: key {key.name} is used by {r.name} but does not rotate"


@stack_policy(
    "aws-cloudwatch-stack-enable-security-alarms",
    description="Metric filters and alarms watch root use, unauthorised calls, console login without MFA, "
    "IAM policy, KMS key, security-group, NACL and network changes.",
    controls=["LOG-02"],
    pci=["10.4.1", "10.7.2"],
    severity=Severity.HIGH,
    remediation="Add a LogMetricFilter on the trail's log group and a MetricAlarm with an action for each event.",
)
def security_alarms(args: StackValidationArgs) -> Iterable[str]:
    alarmed = {
        (a.props.get("namespace"), a.props.get("metricName"))
        for a in _of(args, cloudwatch.ALARM)
        if items(a.props.get("alarmActions"))
    }
    watched: list[str] = []
    for f in _of(args, METRIC_FILTER):
        t = f.props.get("metricTransformation") or {}
        if (t.get("namespace"), t.get("name")) in alarmed:
            watched.append(str(f.props.get("pattern", "")))
    for what, event in REQUIRED_ALARM_EVENTS.items():
        if not any(event in p for p in watched):
            yield f"no alarm on {what} (no metric filter naming {event} with an alarm that notifies)"


@stack_policy(
    "aws-cloudtrail-stack-enable-trail",
    description="The account has a multi-region CloudTrail trail with log-file validation.",
    controls=["LOG-01"],
    pci=["10.2.1", "10.3.3"],
    severity=Severity.CRITICAL,
    remediation="Add an aws.cloudtrail.Trail (see infra/audit.py).",
)
def trail_exists(args: StackValidationArgs) -> Iterable[str]:
    if not any(
        t.props.get("isMultiRegionTrail") is True and t.props.get("enableLogFileValidation") is True
        for t in _of(args, TRAIL)
    ):
        yield "no multi-region trail with log-file validation"


@stack_policy(
    "aws-guardduty-stack-enable-detector",
    description="GuardDuty runs in the stack's region.",
    controls=["LOG-11"],
    pci=["11.5.1"],
    severity=Severity.MEDIUM,
    remediation="Add an aws.guardduty.Detector with enable=True.",
)
def detector_exists(args: StackValidationArgs) -> Iterable[str]:
    if not any(d.props.get("enable") is not False for d in _of(args, DETECTOR)):
        yield "no enabled GuardDuty detector"


@stack_policy(
    "aws-securityhub-stack-enable-pci-standard",
    description="Security Hub runs the PCI DSS standard continuously.",
    controls=["CMP-01"],
    pci=["12.4.2", "11.5.1"],
    severity=Severity.MEDIUM,
    remediation="Add aws.securityhub.Account and a StandardsSubscription to standards/pci-dss/v/4.0.1.",
)
def pci_standard_exists(args: StackValidationArgs) -> Iterable[str]:
    if not any("pci-dss" in str(s.props.get("standardsArn", "")) for s in _of(args, STANDARDS)):
        yield "Security Hub does not run the PCI DSS standard"


BUCKET_GUARDRAILS = {
    "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock": "public access block",
    "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration": "default encryption",
    "aws:s3/bucketPolicy:BucketPolicy": "bucket policy (TLS only)",
    "aws:s3/bucketVersioning:BucketVersioning": "versioning",
}


@stack_policy(
    "aws-s3-stack-enable-bucket-guardrails",
    description="Every bucket has its public access block, default encryption, TLS-only policy and versioning.",
    controls=["EAR-08", "EAR-06"],
    pci=["1.4.4", "3.5.1", "4.2.1"],
    severity=Severity.HIGH,
    remediation="Create buckets with infra.buckets.SecureBucket.",
)
def bucket_guardrails(args: StackValidationArgs) -> Iterable[str]:
    have: dict[str, set[str]] = {}
    for r in args.resources:
        if r.resource_type in BUCKET_GUARDRAILS:
            for bucket in _deps(r, "bucket"):
                have.setdefault(bucket.urn, set()).add(r.resource_type)
    for bucket in _of(args, BUCKET):
        missing = [label for t, label in BUCKET_GUARDRAILS.items() if t not in have.get(bucket.urn, set())]
        if missing:
            yield f"{bucket.urn}: bucket {bucket.name} has no {', '.join(missing)}"
