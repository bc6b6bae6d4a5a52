"""Vault: a 3-node OpenBao/Vault cluster in the data tier, one node per AZ.

Pulumi provisions the machines; Ansible (playbooks/) configures raft storage, TLS listeners
and the KMS auto-unseal seal. Each node: IMDSv2 only, no public IP, root and raft volumes
encrypted with the EBS key, an instance role that may use only the unseal key, the patch group in
its `Patch Group` tag (infra/patching.py). Clients reach the cluster through an internal network
load balancer that speaks TLS.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pulumi
import pulumi_aws as aws

from infra import topology
from infra.common import BACKUP_TAG_KEY, BACKUP_TAG_VALUE, HostArgs, hardened_instances, policy_json, statement, tags

MODERN_TLS_POLICY = "ELBSecurityPolicy-TLS13-1-2-Res-2021-06"


@dataclass(kw_only=True)
class VaultClusterArgs(HostArgs):
    vpc_id: pulumi.Input[str]
    unseal_key_arn: pulumi.Input[str]
    role_name: pulumi.Input[str]
    certificate_arn: pulumi.Input[str]
    base_tags: dict[str, str] = field(default_factory=dict)
    node_count: int = 3
    raft_volume_gb: int = 50
    tls_policy: str = MODERN_TLS_POLICY


class VaultCluster(pulumi.ComponentResource):
    def __init__(self, name: str, args: VaultClusterArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("billkit:vault:VaultCluster", name, None, opts)
        if args.node_count < 3 or args.node_count % 2 == 0:
            raise ValueError(f"a raft cluster needs an odd number of nodes, at least 3 (got {args.node_count})")
        child = pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(parent=self))
        t = tags(args.base_tags, billkit_component="vault", billkit_role="vault")

        # EAR-07: the instance role may use the unseal key and nothing else of KMS.
        self.unseal_policy = aws.iam.RolePolicy(
            f"{name}-unseal",
            role=args.role_name,
            policy=policy_json(
                statement("AutoUnseal", ["kms:Encrypt", "kms:Decrypt", "kms:DescribeKey"], [args.unseal_key_arn])
            ),
            opts=child,
        )
        self.nodes = hardened_instances(name, args, args.node_count, t, child)
        self.raft_volumes: list[aws.ebs.Volume] = []
        for i, node in enumerate(self.nodes):
            volume = aws.ebs.Volume(
                f"{name}-{i + 1}-raft",
                availability_zone=node.availability_zone,
                size=args.raft_volume_gb,
                type="gp3",
                encrypted=True,
                kms_key_id=args.ebs_key_arn,
                tags=tags({**t, BACKUP_TAG_KEY: BACKUP_TAG_VALUE}, Name=f"{name}-{i + 1}-raft"),
                opts=child,
            )
            aws.ec2.VolumeAttachment(
                f"{name}-{i + 1}-raft-attach", device_name="/dev/sdf", volume_id=volume.id, instance_id=node.id,
                opts=child,
            )  # fmt: skip
            self.raft_volumes.append(volume)

        # ENC-03: clients reach Vault through an internal NLB with a TLS listener; targets speak TLS too.
        self.load_balancer = aws.lb.LoadBalancer(
            f"{name}-nlb",
            internal=True,
            load_balancer_type="network",
            subnets=args.subnet_ids,
            security_groups=[args.security_group_id],
            enable_cross_zone_load_balancing=True,
            enable_deletion_protection=True,
            tags=t,
            opts=child,
        )
        self.target_group = aws.lb.TargetGroup(
            f"{name}-tg",
            port=topology.VAULT_API,
            protocol="TLS",
            target_type="instance",
            vpc_id=args.vpc_id,
            health_check=aws.lb.TargetGroupHealthCheckArgs(
                protocol="HTTPS",
                path="/v1/sys/health?standbyok=true",
                port=str(topology.VAULT_API),
                matcher="200",
            ),  # fmt: skip
            tags=t,
            opts=child,
        )
        self.listener = aws.lb.Listener(
            f"{name}-tls",
            load_balancer_arn=self.load_balancer.arn,
            port=topology.VAULT_API,
            protocol="TLS",
            ssl_policy=args.tls_policy,
            certificate_arn=args.certificate_arn,
            default_actions=[aws.lb.ListenerDefaultActionArgs(type="forward", target_group_arn=self.target_group.arn)],
            tags=t,
            opts=child,
        )
        for i, node in enumerate(self.nodes):
            aws.lb.TargetGroupAttachment(
                f"{name}-{i + 1}-target", target_group_arn=self.target_group.arn, target_id=node.id,
                port=topology.VAULT_API, opts=child,
            )  # fmt: skip
        self.register_outputs(
            {
                "address": self.load_balancer.dns_name,
                "node_ids": [n.id for n in self.nodes],
                "node_private_ips": [n.private_ip for n in self.nodes],
            }
        )
