"""Load balancers: TLS everywhere with a modern policy, HTTP only to redirect, headers, logs."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from pulumi_policy import ResourceValidationArgs, Severity

from policies.rules._base import items, resource_policy, truthy

LOAD_BALANCER = "aws:lb/loadBalancer:LoadBalancer"
LISTENER = "aws:lb/listener:Listener"
TARGET_GROUP = "aws:lb/targetGroup:TargetGroup"
# TLS 1.2+ with forward-secret AEAD ciphers only (the TLS13 "Res" policies and FS-1-2-Res).
MODERN_TLS_POLICIES = (
    "ELBSecurityPolicy-TLS13-1-2-Res-2021-06",
    "ELBSecurityPolicy-TLS13-1-2-2021-06",
    "ELBSecurityPolicy-TLS13-1-3-2021-06",
    "ELBSecurityPolicy-TLS13-1-2-Res-PQ-2025-09",
    "ELBSecurityPolicy-TLS13-1-3-PQ-2025-09",
    "ELBSecurityPolicy-FS-1-2-Res-2020-10",
)


@resource_policy(
    "aws-elb-listener-configure-modern-tls",
    description="TLS listeners use a TLS 1.2+ policy with strong ciphers and a certificate.",
    resource_types=[LISTENER],
    controls=["ENC-01", "ENC-03"],
    pci=["4.2.1"],
    severity=Severity.CRITICAL,
    remediation=f"Set ssl_policy to one of {', '.join(MODERN_TLS_POLICIES)} and certificate_arn.",
)
def listener_tls(props: Mapping[str, Any], args: ResourceValidationArgs) -> Iterable[str]:
    if props.get("protocol") not in ("HTTPS", "TLS"):
        return
    if props.get("sslPolicy") not in MODERN_TLS_POLICIES:
        yield f"TLS policy {props.get('sslPolicy')!r} allows old protocols or weak ciphers"
    if not props.get("certificateArn"):
        yield "the TLS listener has no certificate"


@resource_policy(
    "aws-elb-listener-disallow-plaintext",
    description="Plain listeners exist only to redirect HTTP to HTTPS; no plain TCP/UDP listener.",
    resource_types=[LISTENER],
    controls=["ENC-04", "ENC-03"],
    pci=["4.2.1"],
    severity=Severity.HIGH,
    remediation="Make port 80 a redirect to HTTPS (status HTTP_301); use TLS listeners for everything else.",
)
def listener_plaintext(props: Mapping[str, Any], args: ResourceValidationArgs) -> Iterable[str]:
    protocol = props.get("protocol")
    if protocol in ("HTTPS", "TLS"):
        return
    if protocol != "HTTP":
        yield f"a {protocol} listener carries traffic in clear text"
        return
    for action in items(props.get("defaultActions")):
        redirect = action.get("redirect") or {}
        if action.get("type") != "redirect" or redirect.get("protocol") != "HTTPS":
            yield "the HTTP listener serves content instead of redirecting to HTTPS"


@resource_policy(
    "aws-elb-targetgroup-configure-tls",
    description="Load balancers talk to their targets over TLS too (WAF to app, clients to Vault).",
    resource_types=[TARGET_GROUP],
    controls=["ENC-01", "ENC-03"],
    pci=["4.2.1"],
    severity=Severity.HIGH,
    remediation="Set protocol='HTTPS' (application) or 'TLS' (network) and an HTTPS health check.",
)
def target_group_tls(props: Mapping[str, Any], args: ResourceValidationArgs) -> Iterable[str]:
    if props.get("targetType") == "lambda":
        return
    if props.get("protocol") not in ("HTTPS", "TLS"):
        yield f"targets are reached over {props.get('protocol')}, not TLS"


@resource_policy(
    "aws-elb-loadbalancer-enable-drop-invalid-headers",
    description="The application load balancer drops invalid HTTP headers (request smuggling).",
    resource_types=[LOAD_BALANCER],
    controls=["NET-06"],
    pci=["6.4.2"],
    severity=Severity.MEDIUM,
    remediation="Set drop_invalid_header_fields=True.",
)
def lb_headers(props: Mapping[str, Any], args: ResourceValidationArgs) -> Iterable[str]:
    if props.get("loadBalancerType", "application") == "application" and not truthy(
        props.get("dropInvalidHeaderFields")
    ):
        yield "invalid header fields are passed to the app"


@resource_policy(
    "aws-elb-loadbalancer-enable-access-logs",
    description="Internet-facing load balancers write access logs.",
    resource_types=[LOAD_BALANCER],
    controls=["LOG-13"],
    pci=["10.2.1"],
    severity=Severity.MEDIUM,
    remediation="Set access_logs with enabled=True and the access-log bucket.",
)
def lb_access_logs(props: Mapping[str, Any], args: ResourceValidationArgs) -> Iterable[str]:
    if truthy(props.get("internal")):
        return
    logs = props.get("accessLogs") or {}
    if not truthy(logs.get("enabled")) or not logs.get("bucket"):
        yield "access logs are off"
