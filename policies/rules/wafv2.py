"""WAFv2: managed rule groups, a login rate limit, metrics, logs with credentials redacted."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from pulumi_policy import ResourceValidationArgs, Severity

from policies.rules._base import items, resource_policy

WEB_ACL = "aws:wafv2/webAcl:WebAcl"
LOGGING = "aws:wafv2/webAclLoggingConfiguration:WebAclLoggingConfiguration"
REQUIRED_GROUPS = (
    "AWSManagedRulesCommonRuleSet",
    "AWSManagedRulesKnownBadInputsRuleSet",
    "AWSManagedRulesSQLiRuleSet",
    "AWSManagedRulesAmazonIpReputationList",
)
REDACTED_HEADERS = ("authorization", "cookie")


@resource_policy(
    "aws-wafv2-webacl-enable-managed-rules",
    description="The web ACL runs AWS's common, known-bad-inputs, SQL-injection and IP-reputation rule groups, "
    "blocking (not only counting).",
    resource_types=[WEB_ACL],
    controls=["NET-06"],
    pci=["6.4.2"],
    severity=Severity.CRITICAL,
    remediation=f"Add managed rule groups {', '.join(REQUIRED_GROUPS)} with override_action none.",
)
def waf_managed(props: Mapping[str, Any], args: ResourceValidationArgs) -> Iterable[str]:
    present: dict[str, Mapping[str, Any]] = {}
    for rule in items(props.get("rules")):
        group = ((rule.get("statement") or {}).get("managedRuleGroupStatement") or {}).get("name")
        if group:
            present[group] = rule
    for group in REQUIRED_GROUPS:
        if group not in present:
            yield f"managed rule group {group} is missing"
        elif (present[group].get("overrideAction") or {}).get("count") is not None:
            yield f"managed rule group {group} only counts (override_action count)"


@resource_policy(
    "aws-wafv2-webacl-configure-login-rate-limit",
    description="A rate-based rule blocks clients that hammer the login path.",
    resource_types=[WEB_ACL],
    controls=["NET-07"],
    pci=["6.4.2", "8.3.4"],
    severity=Severity.MEDIUM,
    remediation="Add a rate_based_statement (aggregate by IP, action block) scoped down to the login path.",
)
def waf_rate_limit(props: Mapping[str, Any], args: ResourceValidationArgs) -> Iterable[str]:
    for rule in items(props.get("rules")):
        rate = (rule.get("statement") or {}).get("rateBasedStatement")
        if not rate or (rule.get("action") or {}).get("block") is None:
            continue
        scope = (rate.get("scopeDownStatement") or {}).get("byteMatchStatement") or {}
        if "uriPath" in (scope.get("fieldToMatch") or {}) and "login" in str(scope.get("searchString", "")):
            return
    yield "no blocking rate-based rule on the login path"


@resource_policy(
    "aws-wafv2-webacl-enable-metrics",
    description="The web ACL and each rule publish CloudWatch metrics and keep sampled requests.",
    resource_types=[WEB_ACL],
    controls=["LOG-13"],
    pci=["10.2.1"],
    severity=Severity.LOW,
    remediation="Set cloudwatch_metrics_enabled and sampled_requests_enabled in every visibility_config.",
)
def waf_metrics(props: Mapping[str, Any], args: ResourceValidationArgs) -> Iterable[str]:
    configs = [("web ACL", props.get("visibilityConfig") or {})]
    configs += [(f"rule {r.get('name')}", r.get("visibilityConfig") or {}) for r in items(props.get("rules"))]
    for label, vc in configs:
        if vc.get("cloudwatchMetricsEnabled") is not True or vc.get("sampledRequestsEnabled") is not True:
            yield f"{label} does not publish metrics and samples"


@resource_policy(
    "aws-wafv2-webaclloggingconfiguration-configure-redaction",
    description="WAF logs redact the Authorization and Cookie headers.",
    resource_types=[LOGGING],
    controls=["LOG-13"],
    pci=["10.2.1", "3.3.1"],
    severity=Severity.HIGH,
    remediation="Add redacted_fields single_header for 'authorization' and 'cookie'.",
)
def waf_redaction(props: Mapping[str, Any], args: ResourceValidationArgs) -> Iterable[str]:
    redacted = {str((f.get("singleHeader") or {}).get("name", "")).lower() for f in items(props.get("redactedFields"))}
    for header in REDACTED_HEADERS:
        if header not in redacted:
            yield f"the {header} header is logged in clear"
