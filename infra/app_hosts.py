"""App hosts: an auto-scaling group of billing app instances in the app tier.

IMDSv2 only, no public IP, volumes encrypted with the EBS key, administered through SSM
Session Manager (no SSH port is open anywhere: the topology has no SSH flow in AWS).
Instances register with the edge's target group; Ansible configures them over SSM. Every instance
carries its patch group in the `Patch Group` tag, so SSM patches it (infra/patching.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pulumi
import pulumi_aws as aws

from infra.common import IMDSV2, host_tags, tags


@dataclass
class AppHostsArgs:
    subnet_ids: list[pulumi.Input[str]]
    security_group_id: pulumi.Input[str]
    ami_id: pulumi.Input[str]
    ebs_key_arn: pulumi.Input[str]
    instance_profile_arn: pulumi.Input[str]
    target_group_arns: list[pulumi.Input[str]]
    # The instances' `Patch Group` tag (infra.patching.patch_group_name): no instance goes unpatched.
    patch_group: str
    base_tags: dict[str, str] = field(default_factory=dict)
    instance_type: str = "m6i.large"
    min_size: int = 2
    max_size: int = 6
    desired_capacity: int = 2
    root_volume_gb: int = 20


class AppHosts(pulumi.ComponentResource):
    def __init__(self, name: str, args: AppHostsArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("billkit:app_hosts:AppHosts", name, None, opts)
        if not args.min_size <= args.desired_capacity <= args.max_size:
            raise ValueError(f"need min ≤ desired ≤ max, got {args.min_size}/{args.desired_capacity}/{args.max_size}")
        child = pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(parent=self))
        t = tags(args.base_tags, billkit_component="app_hosts", billkit_role="app")
        instance_tags = host_tags(t, args.patch_group, f"{name}-app")

        self.launch_template = aws.ec2.LaunchTemplate(
            f"{name}-lt",
            image_id=args.ami_id,
            instance_type=args.instance_type,
            update_default_version=True,
            iam_instance_profile=aws.ec2.LaunchTemplateIamInstanceProfileArgs(arn=args.instance_profile_arn),
            metadata_options=aws.ec2.LaunchTemplateMetadataOptionsArgs(**IMDSV2),
            network_interfaces=[
                aws.ec2.LaunchTemplateNetworkInterfaceArgs(
                    associate_public_ip_address="false",
                    security_groups=[args.security_group_id],
                    delete_on_termination="true",
                )
            ],
            block_device_mappings=[
                aws.ec2.LaunchTemplateBlockDeviceMappingArgs(
                    device_name="/dev/xvda",
                    ebs=aws.ec2.LaunchTemplateBlockDeviceMappingEbsArgs(
                        encrypted="true",
                        kms_key_id=args.ebs_key_arn,
                        volume_size=args.root_volume_gb,
                        volume_type="gp3",
                        delete_on_termination="true",
                    ),  # fmt: skip
                )
            ],
            monitoring=aws.ec2.LaunchTemplateMonitoringArgs(enabled=True),
            tag_specifications=[
                aws.ec2.LaunchTemplateTagSpecificationArgs(
                    resource_type=kind, tags=instance_tags if kind == "instance" else tags(t, Name=f"{name}-app")
                )
                for kind in ("instance", "volume", "network-interface")
            ],
            tags=t,
            opts=child,
        )
        self.group = aws.autoscaling.Group(
            f"{name}-asg",
            vpc_zone_identifiers=args.subnet_ids,
            min_size=args.min_size,
            max_size=args.max_size,
            desired_capacity=args.desired_capacity,
            health_check_type="ELB",
            health_check_grace_period=300,
            target_group_arns=args.target_group_arns,
            launch_template=aws.autoscaling.GroupLaunchTemplateArgs(id=self.launch_template.id, version="$Latest"),
            instance_refresh=aws.autoscaling.GroupInstanceRefreshArgs(
                strategy="Rolling",
                preferences=aws.autoscaling.GroupInstanceRefreshPreferencesArgs(min_healthy_percentage=50),
            ),
            tags=[
                aws.autoscaling.GroupTagArgs(key=k, value=v, propagate_at_launch=True) for k, v in instance_tags.items()
            ],
            opts=child,
        )
        self.register_outputs({"asg_name": self.group.name, "launch_template_id": self.launch_template.id})
