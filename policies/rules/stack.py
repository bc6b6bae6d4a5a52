"""Stack policies: properties of the whole environment that no single resource shows.

They follow references between resources through the engine's property dependencies (the
resources an input was computed from), so they work in preview, where IDs are unknown.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Mapping
from typing import Any

from pulumi_policy import PolicyResource, Severity, StackValidationArgs

from infra import topology
from infra.common import PATCH_GROUP_TAG
from policies.rules import cloudwatch, ec2, elb, iam, rds, ssm
from policies.rules._base import as_list, grants, items, stack_policy, statements, truthy

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
# The app's security events (app_stub/audit.py's actions) that must each raise an alarm.
REQUIRED_APP_ALARM_ACTIONS = {
    "failed sign-ins": "auth.login",
    "lockouts": "auth.lockout",
    "failed step-ups": "auth.step_up",
    "detokenizations": "card.detokenize",
    "role grants": "role.grant",
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


def _notifying_metrics(args: StackValidationArgs) -> set[tuple[Any, Any]]:
    """(namespace, metric name) of every enabled alarm whose actions notify through SNS."""
    return {
        (a.props.get("namespace"), a.props.get("metricName"))
        for a in _of(args, cloudwatch.ALARM)
        if a.props.get("actionsEnabled") is not False
        and items(a.props.get("alarmActions"))
        and all(cloudwatch.is_topic(x) for x in items(a.props.get("alarmActions")))
    }


def _alarmed_patterns(args: StackValidationArgs) -> list[str]:
    """The patterns of the metric filters whose metric an enabled, notifying alarm watches."""
    alarmed = _notifying_metrics(args)
    out: list[str] = []
    for f in _of(args, METRIC_FILTER):
        t = f.props.get("metricTransformation") or {}
        if (t.get("namespace"), t.get("name")) in alarmed:
            out.append(str(f.props.get("pattern", "")))
    return out


@stack_policy(
    "aws-cloudwatch-stack-enable-security-alarms",
    description="Metric filters and alarms watch root use, unauthorised calls, console login without MFA, "
    "IAM policy, KMS key, security-group, NACL and network changes.",
    controls=["LOG-02"],
    pci=["10.4.1", "10.4.1.1"],
    severity=Severity.HIGH,
    remediation="Add a LogMetricFilter on the trail's log group and a MetricAlarm with an action for each event.",
)
def security_alarms(args: StackValidationArgs) -> Iterable[str]:
    watched = _alarmed_patterns(args)
    for what, event in REQUIRED_ALARM_EVENTS.items():
        if not any(event in p for p in watched):
            yield f"no alarm on {what} (no metric filter naming {event} with an alarm that notifies)"


@stack_policy(
    "aws-cloudwatch-stack-enable-app-security-alarms",
    description="The app's security events raise alarms in real time: a metric filter on the app's audit log "
    "group for failed sign-ins, lockouts, failed step-ups, detokenizations and role grants, each with an "
    "enabled alarm that notifies through SNS.",
    controls=["MON-01"],
    pci=["10.4.1", "10.4.1.1", "10.2.1"],
    severity=Severity.HIGH,
    remediation="Build infra.monitoring.Monitoring: a LogMetricFilter per event on the app's audit log group and "
    "a MetricAlarm on its metric with alarm_actions the alarm topic.",
)
def app_security_alarms(args: StackValidationArgs) -> Iterable[str]:
    watched = _alarmed_patterns(args)
    for what, action in REQUIRED_APP_ALARM_ACTIONS.items():
        if not any(f'"{action}"' in p for p in watched):
            yield f'no alarm on the app\'s {what} (no metric filter naming "{action}" with an alarm that notifies)'


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
    pci=["2.2.1"],
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


def _patch_group(r: PolicyResource) -> str | None:
    """The Patch Group an instance carries, or that a launch template gives the instances it starts."""
    if r.resource_type == ec2.INSTANCE:
        return (r.props.get("tags") or {}).get(PATCH_GROUP_TAG)
    for spec in items(r.props.get("tagSpecifications")):
        if spec.get("resourceType") == "instance" and (spec.get("tags") or {}).get(PATCH_GROUP_TAG):
            return spec["tags"][PATCH_GROUP_TAG]
    return None


def _targets_group(r: PolicyResource, group: str) -> bool:
    return any(
        t.get("key") == f"tag:{PATCH_GROUP_TAG}" and group in as_list(t.get("values"))
        for t in items(r.props.get("targets"))
    )


@stack_policy(
    "aws-ssm-stack-enable-patch-coverage",
    description="Every patch group a host carries has a patch baseline, a maintenance window with a task that "
    "rolls it out, and a scan that reports its pending updates.",
    controls=["PAT-04", "PAT-05"],
    pci=["6.3.3"],
    severity=Severity.HIGH,
    remediation="Build the patch groups with infra.patching.Patching: a PatchGroup, a MaintenanceWindowTarget on "
    f"tag:{PATCH_GROUP_TAG} with a MaintenanceWindowTask in its window, and the daily scan association.",
)
def patch_coverage(args: StackValidationArgs) -> Iterable[str]:
    registered = {str(g.props.get("patchGroup")) for g in _of(args, ssm.PATCH_GROUP)}
    windows_with_task = {w.urn for t in _of(args, ssm.WINDOW_TASK) for w in _deps(t, "windowId")}
    scans = [a for a in _of(args, ssm.ASSOCIATION) if a.props.get("name") in ssm.PATCH_DOCUMENTS]
    for host in _of(args, ec2.INSTANCE, ec2.LAUNCH_TEMPLATE):
        group = _patch_group(host)
        if group is None:
            continue  # an untagged host is aws-ec2-instance-configure-patch-group's finding
        if group not in registered:
            yield f"{host.urn}: patch group {group!r} of {host.name} is registered with no patch baseline"
        rolled_out = any(
            _targets_group(t, group) and any(w.urn in windows_with_task for w in _deps(t, "windowId"))
            for t in _of(args, ssm.WINDOW_TARGET)
        )
        if not rolled_out:
            yield f"{host.urn}: patch group {group!r} of {host.name} is in no maintenance window with a task"
        if not any(_targets_group(a, group) for a in scans):
            yield f"{host.urn}: patch group {group!r} of {host.name} is scanned by no patch association"


# What a role could do to itself to widen its own permissions.
ROLE_SELF_CHANGES = (
    "iam:PutRolePolicy", "iam:AttachRolePolicy", "iam:DetachRolePolicy", "iam:DeleteRolePolicy",
    "iam:UpdateAssumeRolePolicy", "iam:PutRolePermissionsBoundary", "iam:DeleteRolePermissionsBoundary",
)  # fmt: skip
POLICY_SELF_CHANGES = ("iam:CreatePolicyVersion", "iam:SetDefaultPolicyVersion")


def _iam_ids(r: PolicyResource, kind: str) -> set[str]:
    """The resource part of an IAM ARN ("role/<path>/<name>") from the resource's inputs.

    Both the path form AWS uses and the path-less form are returned, so a statement naming either
    (a constructed ARN, or the mock runtime's ARN output) is matched.
    """
    name = str(r.props.get("name") or r.name)
    path = str(r.props.get("path") or "/")
    return {f"{kind}{path}{name}", f"{kind}/{name}"}


def _arn_resource(arn: Any) -> str | None:
    """The resource part of an IAM ARN or ARN pattern; "*" for "*"; None for other services' ARNs."""
    text = str(arn)
    if text == "*":
        return "*"
    parts = text.split(":", 5)
    return parts[5] if len(parts) == 6 and parts[2] in ("iam", "*") else None


def _on(stmt: Mapping[str, Any], ids: set[str], *, allow: bool) -> bool:
    """Whether the statement applies to the IAM resource; a Deny's NotResource is never trusted."""

    def hit(patterns: Any) -> bool:
        return any(
            (res := _arn_resource(p)) is not None and any(fnmatch.fnmatchcase(i, res) for i in ids)
            for p in as_list(patterns)
        )

    if stmt.get("Resource") is not None:
        return hit(stmt.get("Resource"))
    return allow and stmt.get("NotResource") is not None and not hit(stmt.get("NotResource"))


@stack_policy(
    "aws-iam-stack-disallow-role-self-escalation",
    description="No role may change its own permissions: its policies never allow rewriting the role, the "
    "policies attached to it or its permissions boundary, unless an unconditional Deny takes that back.",
    controls=["RBAC-03"],
    pci=["7.2.1", "7.2.2", "7.2.5"],
    severity=Severity.CRITICAL,
    remediation="Add a Deny statement for iam:Put*, iam:Attach*, iam:Detach*, iam:Delete*, iam:Update*, "
    "iam:CreatePolicyVersion and iam:SetDefaultPolicyVersion on the role's own ARN, its policies' ARNs and its "
    "boundary's ARN (infra/identity.py, DenyChangingItself).",
)
def role_self_escalation(args: StackValidationArgs) -> Iterable[str]:
    policies = _of(args, iam.POLICY)
    by_id = {i: p for p in policies for i in _iam_ids(p, "policy")}
    roles = _of(args, iam.ROLE)
    # Per role: the documents that grant it permissions, its boundary's, and the ids of its own policies.
    grants_of: dict[str, list[Any]] = {
        r.urn: [p.get("policy") for p in items(r.props.get("inlinePolicies"))] for r in roles
    }
    denies_of: dict[str, list[Any]] = {r.urn: [] for r in roles}
    own_policies: dict[str, list[set[str]]] = {r.urn: [] for r in roles}

    def attach(role: PolicyResource, policy: PolicyResource, *, boundary: bool = False) -> None:
        own_policies[role.urn].append(_iam_ids(policy, "policy"))
        (denies_of if boundary else grants_of)[role.urn].append(policy.props.get("policy"))

    for role in roles:
        for policy in _deps(role, "managedPolicyArns"):
            if policy.resource_type == iam.POLICY:
                attach(role, policy)
        boundary = [p for p in _deps(role, "permissionsBoundary") if p.resource_type == iam.POLICY]
        named = by_id.get(_arn_resource(role.props.get("permissionsBoundary")) or "")
        for policy in boundary or ([named] if named else []):
            attach(role, policy, boundary=True)
    for a in _of(args, iam.ROLE_ATTACH):
        for role in _deps(a, "role"):
            for policy in _deps(a, "policyArn"):
                if role.urn in grants_of and policy.resource_type == iam.POLICY:
                    attach(role, policy)
    for rp in _of(args, iam.ROLE_POLICY):
        for role in _deps(rp, "role"):
            if role.urn in grants_of:
                grants_of[role.urn].append(rp.props.get("policy"))

    for role in roles:
        allows = [s for d in grants_of[role.urn] for s in statements(d) if s.get("Effect") == "Allow"]
        # Denies count from the role's own policies and from its boundary; conditional ones may not hold.
        every = [s for d in grants_of[role.urn] + denies_of[role.urn] for s in statements(d)]
        denies = [s for s in every if s.get("Effect") == "Deny" and not s.get("Condition")]
        targets = [(ROLE_SELF_CHANGES, _iam_ids(role, "role"))]
        targets += [(POLICY_SELF_CHANGES, ids) for ids in own_policies[role.urn]]
        found = {
            action
            for actions, ids in targets
            for action in actions
            if any(grants(s, action) and _on(s, ids, allow=True) for s in allows)
            and not any(grants(s, action) and _on(s, ids, allow=False) for s in denies)
        }
        if found:
            yield f"{role.urn}: role {role.name} may change its own permissions: {sorted(found)}"
