"""Network: VPC over 2–3 AZs, one subnet per tier and AZ, routes, NACLs, security groups,
flow logs and VPC endpoints.

Every security-group rule and NACL entry comes from infra.topology (flows("aws")); no port is
written here. The data and management tiers have no route to the internet; the app tier
leaves through NAT; only the edge tier is routed to the internet gateway.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pulumi
import pulumi_aws as aws

from infra import topology
from infra.common import policy_json, tags, write_logs_statement

# Interface endpoints: the AWS APIs the private tiers call (SSM replaces SSH; Alertmanager publishes to SNS).
INTERFACE_ENDPOINTS = ("kms", "ssm", "ssmmessages", "ec2messages", "logs", "secretsmanager", "sts", "sns")


@dataclass
class NetworkArgs:
    region: str
    availability_zones: list[str]
    logs_key_arn: pulumi.Input[str]
    flow_logs_role_arn: pulumi.Input[str]
    flow_logs_role_name: pulumi.Input[str]
    vpc_cidr: str = topology.VPC_CIDR_DEFAULT
    base_tags: dict[str, str] = field(default_factory=dict)
    # One NAT gateway per AZ (an AZ outage keeps the others' egress); False: one shared NAT.
    nat_per_az: bool = True
    flow_log_retention_days: int = 365
    # "ALL": accepted and rejected flows (LOG-03).
    flow_log_traffic_type: str = "ALL"


class Network(pulumi.ComponentResource):
    subnets: dict[str, list[aws.ec2.Subnet]]
    security_groups: dict[str, aws.ec2.SecurityGroup]

    def __init__(self, name: str, args: NetworkArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("billkit:network:Network", name, None, opts)
        if not 2 <= len(args.availability_zones) <= 3:
            raise ValueError(f"use 2 or 3 availability zones, got {args.availability_zones}")
        child = pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(parent=self))
        az_count = len(args.availability_zones)
        t = tags(args.base_tags, billkit_component="network")

        self.vpc = aws.ec2.Vpc(
            f"{name}-vpc",
            cidr_block=args.vpc_cidr,
            enable_dns_hostnames=True,
            enable_dns_support=True,
            tags=tags(t, Name=f"{name}-vpc"),
            opts=child,
        )
        # NET-04: the default security group allows nothing (no ingress, no egress).
        self.default_sg = aws.ec2.DefaultSecurityGroup(
            f"{name}-default-sg", vpc_id=self.vpc.id, ingress=[], egress=[], tags=tags(t, Name="default-deny"),
            opts=child,
        )  # fmt: skip
        self.igw = aws.ec2.InternetGateway(
            f"{name}-igw", vpc_id=self.vpc.id, tags=tags(t, Name=f"{name}-igw"), opts=child
        )

        cidrs = topology.aws_subnets(args.vpc_cidr, az_count)
        self.subnets = {}
        for tier in topology.TIERS:
            self.subnets[tier.name] = [
                aws.ec2.Subnet(
                    f"{name}-{tier.name}-{i}",
                    vpc_id=self.vpc.id,
                    cidr_block=cidr,
                    availability_zone=az,
                    map_public_ip_on_launch=False,  # NET-03: nothing gets a public IP by default
                    tags=tags(t, Name=f"{name}-{tier.name}-{az}", billkit_tier=tier.name),
                    opts=child,
                )
                for i, (az, cidr) in enumerate(zip(args.availability_zones, cidrs[tier.name], strict=True))
            ]

        # Routes. Public (edge): default route to the internet gateway.
        self.route_tables: dict[str, list[aws.ec2.RouteTable]] = {}
        public_tiers = [tr for tr in topology.TIERS if tr.public]
        egress_tiers = [tr for tr in topology.TIERS if tr.egress]
        private_tiers = [tr for tr in topology.TIERS if not tr.public and not tr.egress]
        public_rt = aws.ec2.RouteTable(
            f"{name}-public-rt", vpc_id=self.vpc.id, tags=tags(t, Name=f"{name}-public", billkit_tier="edge"),
            opts=child,
        )  # fmt: skip
        self.public_default_route = aws.ec2.Route(
            f"{name}-public-default",
            route_table_id=public_rt.id,
            destination_cidr_block=topology.ANY_IPV4,
            gateway_id=self.igw.id,
            opts=child,
        )
        self.associations: list[aws.ec2.RouteTableAssociation] = []
        for tr in public_tiers:
            self.route_tables[tr.name] = [public_rt]
            for i, sn in enumerate(self.subnets[tr.name]):
                self.associations.append(
                    aws.ec2.RouteTableAssociation(
                        f"{name}-{tr.name}-{i}-rta", subnet_id=sn.id, route_table_id=public_rt.id, opts=child
                    )
                )

        # NAT in the public subnets, used only by the egress tier (app).
        nat_count = az_count if args.nat_per_az else 1
        edge_subnets = self.subnets[public_tiers[0].name]
        self.nat_gateways: list[aws.ec2.NatGateway] = []
        for i in range(nat_count):
            eip = aws.ec2.Eip(f"{name}-nat-{i}-eip", domain="vpc", tags=tags(t, Name=f"{name}-nat-{i}"), opts=child)
            self.nat_gateways.append(
                aws.ec2.NatGateway(
                    f"{name}-nat-{i}",
                    allocation_id=eip.allocation_id,
                    subnet_id=edge_subnets[i].id,
                    connectivity_type="public",
                    tags=tags(t, Name=f"{name}-nat-{i}"),
                    opts=pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(depends_on=[self.igw])),
                )
            )
        for tr in egress_tiers:
            self.route_tables[tr.name] = []
            for i, sn in enumerate(self.subnets[tr.name]):
                rt = aws.ec2.RouteTable(
                    f"{name}-{tr.name}-{i}-rt", vpc_id=self.vpc.id,
                    tags=tags(t, Name=f"{name}-{tr.name}-{i}", billkit_tier=tr.name), opts=child,
                )  # fmt: skip
                aws.ec2.Route(
                    f"{name}-{tr.name}-{i}-nat",
                    route_table_id=rt.id,
                    destination_cidr_block=topology.ANY_IPV4,
                    nat_gateway_id=self.nat_gateways[i % nat_count].id,
                    opts=child,
                )
                self.route_tables[tr.name].append(rt)
                self.associations.append(
                    aws.ec2.RouteTableAssociation(
                        f"{name}-{tr.name}-{i}-rta", subnet_id=sn.id, route_table_id=rt.id, opts=child
                    )
                )
        # NET-01: data and management have only the local route (and the S3 gateway endpoint).
        for tr in private_tiers:
            rt = aws.ec2.RouteTable(
                f"{name}-{tr.name}-rt", vpc_id=self.vpc.id,
                tags=tags(t, Name=f"{name}-{tr.name}", billkit_tier=tr.name), opts=child,
            )  # fmt: skip
            self.route_tables[tr.name] = [rt]
            for i, sn in enumerate(self.subnets[tr.name]):
                self.associations.append(
                    aws.ec2.RouteTableAssociation(
                        f"{name}-{tr.name}-{i}-rta", subnet_id=sn.id, route_table_id=rt.id, opts=child
                    )
                )

        # NET-02: network ACLs per tier, from the topology.
        self.nacls: dict[str, aws.ec2.NetworkAcl] = {}
        for tier_name, rules in topology.aws_nacl_rules(args.vpc_cidr, az_count).items():
            acl = aws.ec2.NetworkAcl(
                f"{name}-{tier_name}-nacl",
                vpc_id=self.vpc.id,
                subnet_ids=[sn.id for sn in self.subnets[tier_name]],
                tags=tags(t, Name=f"{name}-{tier_name}", billkit_tier=tier_name),
                opts=child,
            )
            self.nacls[tier_name] = acl
            for r in rules:
                aws.ec2.NetworkAclRule(
                    f"{name}-{tier_name}-{'out' if r.egress else 'in'}-{r.rule_number}",
                    network_acl_id=acl.id,
                    rule_number=r.rule_number,
                    egress=r.egress,
                    protocol=r.protocol,
                    rule_action="allow",
                    cidr_block=r.cidr,
                    from_port=r.from_port,
                    to_port=r.to_port,
                    opts=child,
                )

        # NET-02: one security group per role; rules only from the topology.
        self.security_groups = {
            sg: aws.ec2.SecurityGroup(
                f"{name}-{sg}-sg",
                vpc_id=self.vpc.id,
                description=f"billkit {sg}: only the topology's flows",
                revoke_rules_on_delete=True,
                tags=tags(t, Name=f"{name}-{sg}"),
                opts=child,
            )
            for sg in topology.aws_security_groups()
        }
        self.s3_endpoint = aws.ec2.VpcEndpoint(
            f"{name}-s3-endpoint",
            vpc_id=self.vpc.id,
            service_name=f"com.amazonaws.{args.region}.s3",
            vpc_endpoint_type="Gateway",
            route_table_ids=[rt.id for tr in topology.TIERS if not tr.public for rt in self.route_tables[tr.name]],
            tags=tags(t, Name=f"{name}-s3"),
            opts=child,
        )
        for r in topology.aws_sg_rules(args.vpc_cidr, az_count):
            group = self.security_groups[r.sg]
            # Exactly one peer per rule: a group, the S3 prefix list, or one CIDR.
            peers: list[tuple[pulumi.Input[str] | None, pulumi.Input[str] | None, str | None]]
            if r.peer_sg:
                peers = [(self.security_groups[r.peer_sg].id, None, None)]
            elif r.peer_prefix_list:
                peers = [(None, self.s3_endpoint.prefix_list_id, None)]
            else:
                peers = [(None, None, c) for c in r.peer_cidrs]
            rule_cls = aws.vpc.SecurityGroupIngressRule if r.direction == "ingress" else aws.vpc.SecurityGroupEgressRule
            for j, (peer_sg, prefix_list, cidr) in enumerate(peers):
                rule_cls(
                    f"{name}-{r.key}" + (f"-{j}" if len(peers) > 1 else ""),
                    security_group_id=group.id,
                    ip_protocol=r.protocol,
                    from_port=r.port,
                    to_port=r.port,
                    referenced_security_group_id=peer_sg,
                    prefix_list_id=prefix_list,
                    cidr_ipv4=cidr,
                    description=r.description[:255],
                    tags=tags(t, billkit_controls=" ".join(r.controls)),
                    opts=child,
                )

        # NET-08: interface endpoints in the management tier, reachable from the private tiers.
        self.interface_endpoints = [
            aws.ec2.VpcEndpoint(
                f"{name}-{svc}-endpoint",
                vpc_id=self.vpc.id,
                service_name=f"com.amazonaws.{args.region}.{svc}",
                vpc_endpoint_type="Interface",
                private_dns_enabled=True,
                subnet_ids=[sn.id for sn in self.subnets["management"]],
                security_group_ids=[self.security_groups["endpoints"].id],
                tags=tags(t, Name=f"{name}-{svc}"),
                opts=child,
            )
            for svc in INTERFACE_ENDPOINTS
        ]

        # LOG-03: VPC flow logs, accepted and rejected, to an encrypted log group kept ≥ 365 days.
        self.flow_log_group = aws.cloudwatch.LogGroup(
            f"{name}-flow-logs",
            name=f"/billkit/{name}/vpc-flow-logs",
            retention_in_days=args.flow_log_retention_days,
            kms_key_id=args.logs_key_arn,
            tags=t,
            opts=child,
        )
        self.flow_log_policy = aws.iam.RolePolicy(
            f"{name}-flow-logs-write",
            role=args.flow_logs_role_name,
            policy=policy_json(write_logs_statement("WriteFlowLogs", self.flow_log_group.arn)),
            opts=child,
        )
        self.flow_log = aws.ec2.FlowLog(
            f"{name}-flow-log",
            vpc_id=self.vpc.id,
            traffic_type=args.flow_log_traffic_type,
            log_destination_type="cloud-watch-logs",
            log_destination=self.flow_log_group.arn,
            iam_role_arn=args.flow_logs_role_arn,
            max_aggregation_interval=60,
            tags=t,
            opts=child,
        )

        self.register_outputs(
            {
                "vpc_id": self.vpc.id,
                "subnet_ids": {k: [s.id for s in v] for k, v in self.subnets.items()},
                "security_group_ids": {k: v.id for k, v in self.security_groups.items()},
            }
        )

    def subnet_ids(self, tier: str) -> list[pulumi.Output[str]]:
        return [s.id for s in self.subnets[tier]]
