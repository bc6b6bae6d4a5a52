"""Helpers shared by the components: tags, IAM policy documents, and the hardened EC2 host.

Every EC2 host of the kit is made the same way (`hardened_instances`, or a launch template with the
same `IMDSV2` settings): Debian's AMI, IMDSv2 only with one hop, no public IP, the root volume
encrypted with the EBS key, an instance profile, detailed monitoring, and its `Patch Group` tag, so
SSM patches it (infra/patching.py).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_aws as aws

# The tag AWS Backup selects on: every resource that must be backed up carries it.
BACKUP_TAG_KEY = "billkit:backup"
BACKUP_TAG_VALUE = "daily-monthly"
# The tag SSM Patch Manager reads to pick a host's patch baseline; maintenance windows target it too.
PATCH_GROUP_TAG = "Patch Group"
# Debian's official AMIs (Debian 12 "bookworm"), published by the Debian cloud team's account.
DEBIAN_AMI_OWNER = "136693071363"
DEBIAN_AMI_NAME = "debian-12-amd64-*"
# NET-09: the metadata service answers only session-token (IMDSv2) requests, one hop away (no container on
# the host reaches the instance's credentials), and does not expose the instance's tags.
IMDSV2: dict[str, Any] = {
    "http_endpoint": "enabled",
    "http_tokens": "required",
    "http_put_response_hop_limit": 1,
    "instance_metadata_tags": "disabled",
}


def tags(base: Mapping[str, str], **extra: str) -> dict[str, str]:
    """The stack's common tags plus the component's own (keys are sorted for stable diffs).

    Keyword names map to tag keys: the first "_" becomes ":", the others "-"
    (billkit_key_purpose -> billkit:key-purpose).
    """
    merged = {**base, **{_key(k): v for k, v in extra.items()}}
    return dict(sorted(merged.items()))


def _key(name: str) -> str:
    head, sep, rest = name.partition("_")
    return f"{head}:{rest.replace('_', '-')}" if sep else head


def statement(
    sid: str,
    actions: Sequence[str],
    resources: Sequence[Any] | str | None = "*",
    *,
    effect: str = "Allow",
    principal: Mapping[str, Any] | str | None = None,
    condition: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """One IAM policy statement; values may be Outputs (resolved by policy_json)."""
    out: dict[str, Any] = {"Sid": sid, "Effect": effect, "Action": list(actions)}
    if principal is not None:
        out["Principal"] = principal
    if resources is not None:  # trust policies name no resource
        out["Resource"] = resources if isinstance(resources, str) else list(resources)
    if condition:
        out["Condition"] = condition
    return out


def policy_json(*statements: dict[str, Any]) -> pulumi.Output[str]:
    """A policy document as JSON, resolving any Outputs inside the statements."""
    return pulumi.Output.json_dumps({"Version": "2012-10-17", "Statement": list(statements)})


def static_policy_json(*statements: dict[str, Any]) -> str:
    """A policy document without Outputs, as a plain string."""
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)})


def write_logs_statement(sid: str, log_group_arn: pulumi.Input[str]) -> dict[str, Any]:
    """Writing one log group's streams, nothing else of CloudWatch Logs."""
    actions = ["logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams"]
    return statement(sid, actions, [log_group_arn, pulumi.Output.concat(log_group_arn, ":*")])


def assume_role_policy(service: str, *, conditions: Mapping[str, Any] | None = None) -> str:
    """A trust policy that lets one AWS service assume the role."""
    return static_policy_json(
        statement("ServiceAssume", ["sts:AssumeRole"], None, principal={"Service": service}, condition=conditions)
    )


# --- the hardened EC2 host ----------------------------------------------------------------------


def debian_ami(ami_id: str | None = None) -> pulumi.Input[str]:
    """The AMI of every host: the one configured, else Debian's newest official bookworm image."""
    if ami_id:
        return ami_id
    ami = aws.ec2.get_ami_output(
        most_recent=True,
        owners=[DEBIAN_AMI_OWNER],
        filters=[aws.ec2.GetAmiFilterArgs(name="name", values=[DEBIAN_AMI_NAME])],
    )
    return ami.id


def host_tags(base: Mapping[str, str], patch_group: str, name: str) -> dict[str, str]:
    """An instance's tags: the component's, its `Patch Group` (no host goes unpatched) and its Name."""
    return tags({**base, PATCH_GROUP_TAG: patch_group}, Name=name)


@dataclass(kw_only=True)
class HostArgs:
    """What every group of hardened EC2 hosts takes; a component's args extend it."""

    # The tier's private subnets (hosts are spread over them) and the role's security group.
    subnet_ids: list[pulumi.Input[str]]
    security_group_id: pulumi.Input[str]
    ami_id: pulumi.Input[str]
    ebs_key_arn: pulumi.Input[str]
    instance_profile_name: pulumi.Input[str]
    # The hosts' `Patch Group` tag (infra.patching.patch_group_name): no host goes unpatched.
    patch_group: str
    instance_type: str = "m6i.large"
    root_volume_gb: int = 20


def hardened_instances(
    name: str, args: HostArgs, count: int, base_tags: Mapping[str, str], opts: pulumi.ResourceOptions
) -> list[aws.ec2.Instance]:
    """`count` hosts named <name>-1, <name>-2, … one per subnet in turn: IMDSv2 only, no public IP, the root
    volume encrypted with the EBS key (EAR-03), detailed monitoring, termination protection."""
    return [
        aws.ec2.Instance(
            f"{name}-{i + 1}",
            ami=args.ami_id,
            instance_type=args.instance_type,
            subnet_id=args.subnet_ids[i % len(args.subnet_ids)],
            vpc_security_group_ids=[args.security_group_id],
            associate_public_ip_address=False,
            iam_instance_profile=args.instance_profile_name,
            metadata_options=aws.ec2.InstanceMetadataOptionsArgs(**IMDSV2),
            root_block_device=aws.ec2.InstanceRootBlockDeviceArgs(
                encrypted=True,
                kms_key_id=args.ebs_key_arn,
                volume_size=args.root_volume_gb,
                volume_type="gp3",
                delete_on_termination=True,
            ),  # fmt: skip
            monitoring=True,
            disable_api_termination=True,
            tags=host_tags(base_tags, args.patch_group, f"{name}-{i + 1}"),
            volume_tags=tags(base_tags, Name=f"{name}-{i + 1}-root"),
            opts=opts,
        )
        for i in range(count)
    ]
