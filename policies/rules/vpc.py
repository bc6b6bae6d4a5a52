"""Network rules: security groups and NACLs allow only the topology's flows; flow logs; endpoints.

The ports open to the internet and the administration ports come from infra.topology, the one
place where ports are written.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from pulumi_policy import ResourceValidationArgs, Severity

from infra import topology
from policies.rules._base import ADVISORY, items, number, resource_policy

SECURITY_GROUP = "aws:ec2/securityGroup:SecurityGroup"
SG_RULE = "aws:ec2/securityGroupRule:SecurityGroupRule"
SG_INGRESS = "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule"
SG_EGRESS = "aws:vpc/securityGroupEgressRule:SecurityGroupEgressRule"
DEFAULT_SG = "aws:ec2/defaultSecurityGroup:DefaultSecurityGroup"
NACL = "aws:ec2/networkAcl:NetworkAcl"
NACL_RULE = "aws:ec2/networkAclRule:NetworkAclRule"
FLOW_LOG = "aws:ec2/flowLog:FlowLog"
VPC_ENDPOINT = "aws:ec2/vpcEndpoint:VpcEndpoint"
VPC = "aws:ec2/vpc:Vpc"
ANYWHERE = ("0.0.0.0/0", "::/0")


def _ingress_rules(props: Mapping[str, Any], resource_type: str) -> list[dict[str, Any]]:
    """Normalise every flavour of ingress rule to {from, to, protocol, cidrs}."""
    out: list[dict[str, Any]] = []
    if resource_type == SECURITY_GROUP:
        for r in items(props.get("ingress")):
            out.append({"from": r.get("fromPort"), "to": r.get("toPort"), "protocol": str(r.get("protocol")),
                        "cidrs": items(r.get("cidrBlocks")) + items(r.get("ipv6CidrBlocks"))})  # fmt: skip
    elif resource_type == SG_RULE and props.get("type") == "ingress":
        out.append({"from": props.get("fromPort"), "to": props.get("toPort"), "protocol": str(props.get("protocol")),
                    "cidrs": items(props.get("cidrBlocks")) + items(props.get("ipv6CidrBlocks"))})  # fmt: skip
    elif resource_type == SG_INGRESS:
        out.append({"from": props.get("fromPort"), "to": props.get("toPort"), "protocol": str(props.get("ipProtocol")),
                    "cidrs": [c for c in (props.get("cidrIpv4"), props.get("cidrIpv6")) if c]})  # fmt: skip
    return out


def _port(value: Any) -> str:
    return str(int(number(value, -1)))


def _all_protocols(protocol: str) -> bool:
    return protocol in ("-1", "all")


def _covers(rule: Mapping[str, Any], port: int) -> bool:
    if _all_protocols(rule["protocol"]):
        return True
    return number(rule["from"], -1) <= port <= number(rule["to"], -1)


@resource_policy(
    "aws-ec2-securitygroup-disallow-admin-ports",
    description="No security group opens SSH (or any administration port): SSM Session Manager replaces it.",
    resource_types=[SECURITY_GROUP, SG_RULE, SG_INGRESS],
    controls=["NET-09"],
    pci=["2.2.6", "1.3.1"],
    severity=Severity.CRITICAL,
    remediation="Remove the rule; reach hosts with `aws ssm start-session`.",
)
def sg_admin_ports(props: Mapping[str, Any], args: ResourceValidationArgs) -> Iterable[str]:
    for rule in _ingress_rules(props, args.resource_type):
        for port in sorted(topology.admin_ports()):
            if _covers(rule, port):
                yield f"ingress opens administration port {port} (from {rule['cidrs'] or 'a security group'})"


@resource_policy(
    "aws-ec2-securitygroup-disallow-public-ingress",
    description="Only the topology's internet-facing ports may be open to 0.0.0.0/0 or ::/0.",
    resource_types=[SECURITY_GROUP, SG_RULE, SG_INGRESS],
    controls=["NET-02", "NET-03"],
    pci=["1.3.1", "1.3.2", "1.4.4"],
    severity=Severity.CRITICAL,
    remediation="Restrict the source to a security group or tier CIDR from infra/topology.py.",
)
def sg_public_ingress(props: Mapping[str, Any], args: ResourceValidationArgs) -> Iterable[str]:
    allowed = topology.internet_ports("aws")
    for rule in _ingress_rules(props, args.resource_type):
        if not any(c in ANYWHERE for c in rule["cidrs"]):
            continue
        single = number(rule["from"], -1) == number(rule["to"], -2)
        if (
            _all_protocols(rule["protocol"])
            or not single
            or (int(number(rule["from"])), rule["protocol"]) not in allowed
        ):
            ports = f"{_port(rule['from'])}-{_port(rule['to'])}" if not single else _port(rule["from"])
            public = sorted(p for p, _ in allowed)
            yield f"ingress from the internet on {rule['protocol']} {ports}; only {public} may be public"


@resource_policy(
    "aws-ec2-securitygroup-disallow-port-ranges",
    description="Security-group rules open single ports of one protocol, never all traffic or ranges.",
    resource_types=[SECURITY_GROUP, SG_RULE, SG_INGRESS, SG_EGRESS],
    controls=["NET-02"],
    pci=["1.2.1", "1.3.1"],
    severity=Severity.HIGH,
    remediation="Write one rule per port of the topology's flows.",
)
def sg_port_ranges(props: Mapping[str, Any], args: ResourceValidationArgs) -> Iterable[str]:
    rules: list[Mapping[str, Any]] = []
    if args.resource_type == SECURITY_GROUP:
        rules = items(props.get("ingress")) + items(props.get("egress"))
    else:
        rules = [props]
    for r in rules:
        protocol = str(r.get("ipProtocol") or r.get("protocol"))
        if _all_protocols(protocol):
            yield "a rule allows all protocols and ports"
        elif number(r.get("fromPort"), -1) != number(r.get("toPort"), -2):
            yield f"a rule opens the port range {_port(r.get('fromPort'))}-{_port(r.get('toPort'))}"


@resource_policy(
    "aws-ec2-defaultsecuritygroup-disallow-rules",
    description="The VPC's default security group allows no traffic at all.",
    resource_types=[DEFAULT_SG],
    controls=["NET-04"],
    pci=["1.2.1"],
    severity=Severity.MEDIUM,
    remediation="Manage the default security group with ingress=[] and egress=[].",
)
def default_sg(props: Mapping[str, Any], args: ResourceValidationArgs) -> Iterable[str]:
    if items(props.get("ingress")) or items(props.get("egress")):
        yield "the default security group has rules"


@resource_policy(
    "aws-ec2-networkaclrule-disallow-public-admin-ports",
    description="No NACL entry allows administration ports from the internet.",
    resource_types=[NACL_RULE],
    controls=["NET-02", "NET-09"],
    pci=["1.3.1", "1.3.2"],
    severity=Severity.HIGH,
    remediation="Remove the entry; NACL entries come from infra.topology.aws_nacl_rules.",
)
def nacl_admin(props: Mapping[str, Any], args: ResourceValidationArgs) -> Iterable[str]:
    if props.get("egress") is True or props.get("ruleAction") != "allow":
        return
    if props.get("cidrBlock") not in ANYWHERE and props.get("ipv6CidrBlock") not in ANYWHERE:
        return
    rule = {"from": props.get("fromPort"), "to": props.get("toPort"), "protocol": str(props.get("protocol"))}
    for port in sorted(topology.admin_ports()):
        if _covers(rule, port):
            yield f"the NACL allows port {port} from the internet"


@resource_policy(
    "aws-ec2-flowlog-configure-all-traffic",
    description="VPC flow logs record accepted and rejected traffic.",
    resource_types=[FLOW_LOG],
    controls=["LOG-03"],
    pci=["10.2.1"],
    severity=Severity.MEDIUM,
    remediation="Set traffic_type='ALL'.",
)
def flow_log_all(props: Mapping[str, Any], args: ResourceValidationArgs) -> Iterable[str]:
    if props.get("trafficType") != "ALL":
        yield f"flow logs record only {props.get('trafficType')} traffic"


@resource_policy(
    "aws-ec2-vpcendpoint-enable-private-dns",
    description="Interface endpoints resolve the service's public name privately, so SDKs use them unchanged.",
    resource_types=[VPC_ENDPOINT],
    controls=["NET-08"],
    pci=["1.3.2"],
    severity=Severity.LOW,
    remediation="Set private_dns_enabled=True on interface endpoints.",
    enforcement=ADVISORY,
)
def endpoint_dns(props: Mapping[str, Any], args: ResourceValidationArgs) -> Iterable[str]:
    if props.get("vpcEndpointType") == "Interface" and props.get("privateDnsEnabled") is not True:
        yield "private DNS is off: clients would still resolve the public endpoint"


@resource_policy(
    "aws-ec2-securitygroup-disallow-unlisted-ports",
    description="Security-group rules open only ports that a flow of infra/topology.py uses in AWS.",
    resource_types=[SECURITY_GROUP, SG_RULE, SG_INGRESS, SG_EGRESS],
    controls=["NET-02"],
    pci=["1.2.1", "1.3.1", "1.3.2"],
    severity=Severity.HIGH,
    remediation="Add the flow to infra/topology.py (with its purpose and controls) and generate the rule from it.",
)
def sg_unlisted_ports(props: Mapping[str, Any], args: ResourceValidationArgs) -> Iterable[str]:
    listed = {(f.port, f.protocol) for f in topology.flows("aws")}
    rules = (
        items(props.get("ingress")) + items(props.get("egress")) if args.resource_type == SECURITY_GROUP else [props]
    )
    for r in rules:
        protocol = str(r.get("ipProtocol") or r.get("protocol"))
        port = number(r.get("fromPort"), -1)
        if _all_protocols(protocol) or port != number(r.get("toPort"), -2):
            continue  # all-traffic rules and ranges: aws-ec2-securitygroup-disallow-port-ranges
        if int(port) in topology.admin_ports():
            continue  # reported by aws-ec2-securitygroup-disallow-admin-ports
        if (int(port), protocol) not in listed:
            yield f"{protocol} port {int(port)} is used by no flow of the topology"
