"""S3 buckets: private, encrypted with a customer key, TLS only, versioned, audit buckets locked."""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Mapping
from typing import Any

from pulumi_policy import ResourceValidationArgs, Severity

from policies.rules._base import as_list, items, number, resource_policy, statements, truthy

BUCKET = "aws:s3/bucket:Bucket"
PUBLIC_ACCESS_BLOCK = "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock"
SSE = "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration"
VERSIONING = "aws:s3/bucketVersioning:BucketVersioning"
OBJECT_LOCK = "aws:s3/bucketObjectLockConfiguration:BucketObjectLockConfiguration"
BUCKET_POLICY = "aws:s3/bucketPolicy:BucketPolicy"
OWNERSHIP = "aws:s3/bucketOwnershipControls:BucketOwnershipControls"
PUBLIC_ACLS = ("public-read", "public-read-write", "authenticated-read")
# Writers that support only SSE-S3 (AES256): ELB access-log delivery. The waiver is data: the
# pattern of the logical names allowed to use it, visible here and in the policy's config.
SSE_S3_WAIVER = ("*-alb-logs-sse",)


@resource_policy(
    "aws-s3-bucketpublicaccessblock-enable-all-blocks",
    description="All four S3 public-access blocks are on for the bucket.",
    resource_types=[PUBLIC_ACCESS_BLOCK],
    controls=["EAR-08"],
    pci=["1.4.4"],
    severity=Severity.CRITICAL,
    remediation="Set block_public_acls, block_public_policy, ignore_public_acls and restrict_public_buckets to True.",
)
def s3_public_access_block(props: Mapping[str, Any], args: ResourceValidationArgs) -> Iterable[str]:
    for key in ("blockPublicAcls", "blockPublicPolicy", "ignorePublicAcls", "restrictPublicBuckets"):
        if not truthy(props.get(key)):
            yield f"{key} is off"


@resource_policy(
    "aws-s3-bucket-disallow-public-acl",
    description="No bucket is created with a public canned ACL.",
    resource_types=[BUCKET],
    controls=["EAR-08"],
    pci=["1.4.4"],
    severity=Severity.CRITICAL,
    remediation="Remove the acl argument; object ownership is enforced by the bucket owner.",
)
def s3_public_acl(props: Mapping[str, Any], args: ResourceValidationArgs) -> Iterable[str]:
    if props.get("acl") in PUBLIC_ACLS:
        yield f"the bucket's ACL is {props.get('acl')}"


@resource_policy(
    "aws-s3-bucketownershipcontrols-configure-owner-enforced",
    description="ACLs are disabled on every bucket (object ownership: bucket owner enforced).",
    resource_types=[OWNERSHIP],
    controls=["EAR-08"],
    pci=["1.4.4", "7.2.2"],
    severity=Severity.MEDIUM,
    remediation="Set rule.object_ownership='BucketOwnerEnforced'.",
)
def s3_ownership(props: Mapping[str, Any], args: ResourceValidationArgs) -> Iterable[str]:
    if (props.get("rule") or {}).get("objectOwnership") != "BucketOwnerEnforced":
        yield "ACLs still apply to this bucket's objects"


@resource_policy(
    "aws-s3-bucketserversideencryptionconfiguration-enable-kms-encryption",
    description="Buckets are encrypted by default with a customer-managed KMS key.",
    resource_types=[SSE],
    controls=["EAR-06"],
    pci=["3.5.1", "10.3.2"],
    severity=Severity.HIGH,
    remediation="Use sse_algorithm='aws:kms' and kms_master_key_id. Only writers that support nothing else "
    "(ELB access logs) may use AES256, via the sseS3Waiver config.",
    config={"sseS3Waiver": list(SSE_S3_WAIVER)},
)
def s3_encryption(props: Mapping[str, Any], args: ResourceValidationArgs) -> Iterable[str]:
    rules = items(props.get("rules"))
    if not rules:
        yield "no default encryption rule"
    waiver = as_list(args.get_config().get("sseS3Waiver", list(SSE_S3_WAIVER)))
    waived = any(fnmatch.fnmatch(args.name, pattern) for pattern in waiver)
    for rule in rules:
        default = rule.get("applyServerSideEncryptionByDefault") or {}
        algorithm = default.get("sseAlgorithm")
        if algorithm == "AES256" and waived:
            continue
        if algorithm not in ("aws:kms", "aws:kms:dsse"):
            yield f"default encryption is {algorithm!r}, not a customer-managed KMS key"
        elif not default.get("kmsMasterKeyId"):
            yield "default encryption uses the AWS-managed S3 key, not a customer-managed key"


@resource_policy(
    "aws-s3-bucketversioning-enable-versioning",
    description="Buckets keep every object version (overwrites and deletes are recoverable).",
    resource_types=[VERSIONING],
    controls=["BAK-03"],
    pci=["12.10.1", "10.3.3"],
    severity=Severity.MEDIUM,
    remediation="Set versioning_configuration.status='Enabled'.",
)
def s3_versioning(props: Mapping[str, Any], args: ResourceValidationArgs) -> Iterable[str]:
    if (props.get("versioningConfiguration") or {}).get("status") != "Enabled":
        yield "versioning is not enabled"


@resource_policy(
    "aws-s3-bucketobjectlockconfiguration-configure-compliance-mode",
    description="Object Lock runs in COMPLIANCE mode for at least 365 days (nobody can shorten it).",
    resource_types=[OBJECT_LOCK],
    controls=["LOG-01", "LOG-04"],
    pci=["10.3.2", "10.3.3", "10.5.1"],
    severity=Severity.HIGH,
    remediation="Set rule.default_retention mode='COMPLIANCE' and days ≥ 365.",
)
def s3_object_lock(props: Mapping[str, Any], args: ResourceValidationArgs) -> Iterable[str]:
    retention = (props.get("rule") or {}).get("defaultRetention") or {}
    if retention.get("mode") != "COMPLIANCE":
        yield f"object lock mode is {retention.get('mode')!r}, not COMPLIANCE"
    days = number(retention.get("days")) or 365 * number(retention.get("years"))
    if days < 365:
        yield f"objects are locked {days:.0f} days; lock audit logs at least 365"


@resource_policy(
    "aws-s3-bucketpolicy-enable-tls-only",
    description="The bucket policy denies every request that is not made over TLS.",
    resource_types=[BUCKET_POLICY],
    controls=["EAR-08"],
    pci=["4.2.1"],
    severity=Severity.HIGH,
    remediation='Add a Deny statement for s3:* with Condition {"Bool": {"aws:SecureTransport": "false"}}.',
)
def s3_tls_only(props: Mapping[str, Any], args: ResourceValidationArgs) -> Iterable[str]:
    for s in statements(props.get("policy")):
        cond = (s.get("Condition") or {}).get("Bool") or {}
        if s.get("Effect") == "Deny" and str(cond.get("aws:SecureTransport")).lower() == "false":
            return
    yield "no statement denies requests without TLS (aws:SecureTransport = false)"


@resource_policy(
    "aws-s3-bucketpolicy-disallow-public-principal",
    description="No bucket policy allows the anonymous principal.",
    resource_types=[BUCKET_POLICY],
    controls=["EAR-08"],
    pci=["1.4.4", "7.2.2"],
    severity=Severity.CRITICAL,
    remediation="Name the principals (accounts, roles, services) that need access.",
)
def s3_public_principal(props: Mapping[str, Any], args: ResourceValidationArgs) -> Iterable[str]:
    for s in statements(props.get("policy")):
        p = s.get("Principal")
        anyone = p == "*" or (isinstance(p, Mapping) and "*" in as_list(p.get("AWS")))
        if s.get("Effect") == "Allow" and anyone:
            yield f"statement {s.get('Sid', '?')} allows anyone"
