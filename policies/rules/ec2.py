"""EC2 hosts: IMDSv2, no public IP, encrypted volumes with a customer-managed key, a patch group."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from pulumi_policy import ResourceValidationArgs, Severity

from infra.common import PATCH_GROUP_TAG
from policies.rules._base import items, resource_policy, truthy

INSTANCE = "aws:ec2/instance:Instance"
LAUNCH_TEMPLATE = "aws:ec2/launchTemplate:LaunchTemplate"
VOLUME = "aws:ebs/volume:Volume"
EBS_DEFAULT = "aws:ebs/encryptionByDefault:EncryptionByDefault"
SUBNET = "aws:ec2/subnet:Subnet"


def _imds(props: Mapping[str, Any]) -> Iterable[str]:
    meta = props.get("metadataOptions") or {}
    if meta.get("httpTokens") != "required":
        yield "instance metadata accepts IMDSv1: set metadata_options.http_tokens='required'"
    if float(meta.get("httpPutResponseHopLimit") or 1) > 1:
        yield "metadata hop limit above 1 lets containers reach the instance's credentials"


@resource_policy(
    "aws-ec2-instance-configure-imdsv2",
    description="Instances require IMDSv2 (session tokens) for the metadata service.",
    resource_types=[INSTANCE, LAUNCH_TEMPLATE],
    controls=["NET-09"],
    pci=["2.2.6", "1.3.1"],
    severity=Severity.HIGH,
    remediation="Set metadata_options http_tokens='required' and http_put_response_hop_limit=1.",
)
def ec2_imdsv2(props: Mapping[str, Any], args: ResourceValidationArgs) -> Iterable[str]:
    yield from _imds(props)


@resource_policy(
    "aws-ec2-instance-disallow-public-ip",
    description="No instance gets a public IP address; the internet reaches only the load balancer.",
    resource_types=[INSTANCE, LAUNCH_TEMPLATE],
    controls=["NET-03"],
    pci=["1.4.4", "1.3.1"],
    severity=Severity.CRITICAL,
    remediation="Set associate_public_ip_address=False (launch templates: on every network interface).",
)
def ec2_public_ip(props: Mapping[str, Any], args: ResourceValidationArgs) -> Iterable[str]:
    if truthy(props.get("associatePublicIpAddress")):
        yield "the instance gets a public IP address"
    for nic in items(props.get("networkInterfaces")):
        if truthy(nic.get("associatePublicIpAddress")):
            yield "a network interface of the template gets a public IP address"


@resource_policy(
    "aws-ec2-instance-enable-volume-encryption",
    description="Every volume of an instance or launch template is encrypted with a customer-managed key.",
    resource_types=[INSTANCE, LAUNCH_TEMPLATE],
    controls=["EAR-03"],
    pci=["3.5.1"],
    severity=Severity.HIGH,
    remediation="Set encrypted=True and kms_key_id (the EBS key) on the root and every EBS block device.",
)
def ec2_volume_encryption(props: Mapping[str, Any], args: ResourceValidationArgs) -> Iterable[str]:
    devices: list[tuple[str, Mapping[str, Any]]] = []
    if args.resource_type == INSTANCE:
        devices.append(("root volume", props.get("rootBlockDevice") or {}))
        devices.extend((f"volume {d.get('deviceName')}", d) for d in items(props.get("ebsBlockDevices")))
    else:
        mappings = items(props.get("blockDeviceMappings"))
        if not mappings:
            yield "the template declares no block device: the AMI's unencrypted defaults would apply"
        devices.extend((f"volume {m.get('deviceName')}", m.get("ebs") or {}) for m in mappings)
    for label, dev in devices:
        if not truthy(dev.get("encrypted")):
            yield f"{label} is not encrypted"
        elif not dev.get("kmsKeyId"):
            yield f"{label} uses the AWS-managed EBS key, not a customer-managed key"


@resource_policy(
    "aws-ebs-volume-enable-encryption",
    description="Standalone EBS volumes are encrypted with a customer-managed key.",
    resource_types=[VOLUME],
    controls=["EAR-03"],
    pci=["3.5.1"],
    severity=Severity.HIGH,
    remediation="Set encrypted=True and kms_key_id on the volume.",
)
def ebs_volume_encryption(props: Mapping[str, Any], args: ResourceValidationArgs) -> Iterable[str]:
    if not truthy(props.get("encrypted")):
        yield "the volume is not encrypted"
    elif not props.get("kmsKeyId"):
        yield "the volume uses the AWS-managed EBS key"


@resource_policy(
    "aws-ebs-encryptionbydefault-enable-encryption",
    description="EBS encryption by default is on in the region.",
    resource_types=[EBS_DEFAULT],
    controls=["EAR-03"],
    pci=["3.5.1"],
    severity=Severity.MEDIUM,
    remediation="Set enabled=True.",
)
def ebs_default(props: Mapping[str, Any], args: ResourceValidationArgs) -> Iterable[str]:
    if props.get("enabled") is False:
        yield "EBS encryption by default is turned off"


@resource_policy(
    "aws-ec2-subnet-disallow-public-ip-on-launch",
    description="No subnet hands out public IPs automatically.",
    resource_types=[SUBNET],
    controls=["NET-03"],
    pci=["1.4.4"],
    severity=Severity.HIGH,
    remediation="Set map_public_ip_on_launch=False; the load balancer and NAT get their addresses explicitly.",
)
def subnet_public_ip(props: Mapping[str, Any], args: ResourceValidationArgs) -> Iterable[str]:
    if truthy(props.get("mapPublicIpOnLaunch")):
        yield "instances launched in this subnet get a public IP"


@resource_policy(
    "aws-ec2-instance-configure-patch-group",
    description="Every instance, and every instance a launch template starts, carries a Patch Group tag: SSM "
    "patches, scans and schedules hosts by it, and an untagged host is never patched.",
    resource_types=[INSTANCE, LAUNCH_TEMPLATE],
    controls=["PAT-05"],
    pci=["6.3.3"],
    severity=Severity.HIGH,
    remediation=f"Tag the instance with '{PATCH_GROUP_TAG}' (launch templates: in the tag specification for "
    "'instance'); use infra.patching.patch_group_name for the value.",
)
def ec2_patch_group(props: Mapping[str, Any], args: ResourceValidationArgs) -> Iterable[str]:
    if args.resource_type == INSTANCE:
        if not (props.get("tags") or {}).get(PATCH_GROUP_TAG):
            yield f"the instance has no '{PATCH_GROUP_TAG}' tag: no maintenance window patches it"
        return
    specs = [s for s in items(props.get("tagSpecifications")) if s.get("resourceType") == "instance"]
    if not any((s.get("tags") or {}).get(PATCH_GROUP_TAG) for s in specs):
        yield f"instances started from the template get no '{PATCH_GROUP_TAG}' tag (tag_specifications 'instance')"
