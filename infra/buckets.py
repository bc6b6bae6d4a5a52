"""A private S3 bucket with every guardrail on: the one way the stack makes buckets.

Owner-enforced object ownership (no ACLs), all four public-access blocks, default
encryption with a customer-managed key, versioning, a bucket policy that refuses any
request not over TLS, a lifecycle that keeps objects for the retention period, and
optionally Object Lock in compliance mode (audit trails).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pulumi
import pulumi_aws as aws

from infra.common import policy_json, statement, tags


@dataclass
class SecureBucketArgs:
    account_id: pulumi.Input[str]
    base_tags: dict[str, str] = field(default_factory=dict)
    # None means SSE-S3 (AES256): only for writers that cannot use a customer key (ELB access logs).
    kms_key_arn: pulumi.Input[str] | None = None
    expire_after_days: int = 365
    # Service principals allowed to write objects (under writer_prefix), e.g. {"Service": "..."}.
    writers: list[dict[str, Any]] = field(default_factory=list)
    writer_prefix: str = ""
    writer_conditions: dict[str, Any] | None = None
    # Extra statements needing the bucket ARN (a function of it), e.g. CloudTrail's ACL check.
    extra_statements: list[Any] = field(default_factory=list)
    # Object Lock in COMPLIANCE mode for this many days (None: no lock).
    object_lock_days: int | None = None
    force_destroy: bool = False


class SecureBucket(pulumi.ComponentResource):
    def __init__(self, name: str, args: SecureBucketArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("billkit:buckets:SecureBucket", name, None, opts)
        child = pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(parent=self))
        t = tags(args.base_tags, billkit_bucket=name)
        self.bucket = aws.s3.Bucket(
            f"{name}",
            bucket_prefix=f"{name[:30]}-",
            object_lock_enabled=args.object_lock_days is not None,
            force_destroy=args.force_destroy,
            tags=t,
            opts=child,
        )
        self.ownership = aws.s3.BucketOwnershipControls(
            f"{name}-ownership",
            bucket=self.bucket.id,
            rule=aws.s3.BucketOwnershipControlsRuleArgs(object_ownership="BucketOwnerEnforced"),
            opts=child,
        )
        self.public_access_block = aws.s3.BucketPublicAccessBlock(
            f"{name}-public-access-block",
            bucket=self.bucket.id,
            block_public_acls=True,
            block_public_policy=True,
            ignore_public_acls=True,
            restrict_public_buckets=True,
            opts=child,
        )
        default = aws.s3.BucketServerSideEncryptionConfigurationRuleApplyServerSideEncryptionByDefaultArgs(
            sse_algorithm="aws:kms" if args.kms_key_arn is not None else "AES256",
            kms_master_key_id=args.kms_key_arn,
        )
        self.encryption = aws.s3.BucketServerSideEncryptionConfiguration(
            f"{name}-sse",
            bucket=self.bucket.id,
            rules=[
                aws.s3.BucketServerSideEncryptionConfigurationRuleArgs(
                    apply_server_side_encryption_by_default=default,
                    bucket_key_enabled=args.kms_key_arn is not None,
                )
            ],
            opts=child,
        )
        self.versioning = aws.s3.BucketVersioning(
            f"{name}-versioning",
            bucket=self.bucket.id,
            versioning_configuration=aws.s3.BucketVersioningVersioningConfigurationArgs(status="Enabled"),
            opts=child,
        )
        if args.object_lock_days is not None:
            self.object_lock = aws.s3.BucketObjectLockConfiguration(
                f"{name}-object-lock",
                bucket=self.bucket.id,
                rule=aws.s3.BucketObjectLockConfigurationRuleArgs(
                    default_retention=aws.s3.BucketObjectLockConfigurationRuleDefaultRetentionArgs(
                        mode="COMPLIANCE", days=args.object_lock_days
                    )
                ),
                opts=pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(depends_on=[self.versioning])),
            )
        self.lifecycle = aws.s3.BucketLifecycleConfiguration(
            f"{name}-lifecycle",
            bucket=self.bucket.id,
            rules=[
                aws.s3.BucketLifecycleConfigurationRuleArgs(
                    id="retention",
                    status="Enabled",
                    filter=aws.s3.BucketLifecycleConfigurationRuleFilterArgs(prefix=""),
                    expiration=aws.s3.BucketLifecycleConfigurationRuleExpirationArgs(days=args.expire_after_days),
                    noncurrent_version_expiration=aws.s3.BucketLifecycleConfigurationRuleNoncurrentVersionExpirationArgs(
                        noncurrent_days=args.expire_after_days
                    ),
                    abort_incomplete_multipart_upload=aws.s3.BucketLifecycleConfigurationRuleAbortIncompleteMultipartUploadArgs(
                        days_after_initiation=7
                    ),
                )
            ],
            opts=pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(depends_on=[self.versioning])),
        )  # fmt: skip
        arn = self.bucket.arn
        stmts = [
            # EAR-08: refuse every request that is not over TLS.
            statement(
                "DenyInsecureTransport",
                ["s3:*"],
                [arn, pulumi.Output.concat(arn, "/*")],
                effect="Deny",
                principal="*",
                condition={"Bool": {"aws:SecureTransport": "false"}},
            )
        ]
        for i, writer in enumerate(args.writers):
            stmts.append(
                statement(
                    f"ServiceWrites{i}",
                    ["s3:PutObject"],
                    [pulumi.Output.concat(arn, "/", args.writer_prefix, "AWSLogs/", args.account_id, "/*")],
                    principal=writer,
                    condition=args.writer_conditions,
                )
            )
        for make in args.extra_statements:
            stmts.append(make(arn))
        self.policy = aws.s3.BucketPolicy(
            f"{name}-policy",
            bucket=self.bucket.id,
            policy=policy_json(*stmts),
            opts=pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(depends_on=[self.public_access_block])),
        )
        self.register_outputs({"bucket": self.bucket.bucket, "arn": self.bucket.arn})
