"""An insecure stack: a test fixture for the policy pack, never deployed and not a Pulumi stack.

Every resource here repeats a classic mistake; `billkit plan` must refuse it.
"""

from __future__ import annotations

import json

import pulumi
import pulumi_aws as aws

CONFIG = {"aws:region": "eu-central-1"}

OPEN_TO_ALL = json.dumps({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]})
NO_MFA_TRUST = json.dumps(
    {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Action": "sts:AssumeRole", "Principal": {"AWS": "arn:aws:iam::123456789012:root"}}
        ],
    }
)

# The CI deployer's old shape: it may rewrite every role under its path, its own included, with no
# permissions boundary, and its deny list leaves the trail, log groups and key policies open.
CI_TRUST = json.dumps(
    {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Action": "sts:AssumeRoleWithWebIdentity",
                "Principal": {"Federated": "arn:aws:iam::123456789012:oidc-provider/ci.example.org"},
            }
        ],
    }
)
SELF_ESCALATING = json.dumps(
    {
        "Version": "2012-10-17",
        "Statement": [
            {"Sid": "ManageCiIam", "Effect": "Allow", "Action": ["iam:*Role*", "iam:*Policy*"],
             "Resource": "arn:aws:iam::123456789012:role/ci/*"},
            {"Sid": "Deploy", "Effect": "Allow", "Action": ["cloudtrail:*", "logs:*", "kms:*"], "Resource": "*"},
            {"Sid": "DenyDestructive", "Effect": "Deny",
             "Action": ["cloudtrail:StopLogging", "kms:ScheduleKeyDeletion"], "Resource": "*"},
        ],
    }
)  # fmt: skip
# Key administrators who may grant themselves use (kms:Create* covers CreateGrant) or rewrite the policy.
ADMIN_MAY_USE_KEY = json.dumps(
    {
        "Version": "2012-10-17",
        "Statement": [
            {"Sid": "AccountAdministersKey", "Effect": "Allow",
             "Principal": {"AWS": "arn:aws:iam::123456789012:root"},
             "Action": ["kms:Create*", "kms:Describe*", "kms:Enable*", "kms:Put*", "kms:Disable*",
                        "kms:ScheduleKeyDeletion"],
             "Resource": "*"},
        ],
    }
)  # fmt: skip


def fixed_200() -> aws.lb.ListenerDefaultActionArgs:
    response = aws.lb.ListenerDefaultActionFixedResponseArgs(content_type="text/plain", status_code="200")
    return aws.lb.ListenerDefaultActionArgs(type="fixed-response", fixed_response=response)


def program() -> None:
    key = aws.kms.Key("weak-key", deletion_window_in_days=7)  # no rotation, no key policy
    aws.rds.ParameterGroup("weak-params", family="postgres16", parameters=[])
    aws.rds.Instance(
        "public-db",
        engine="postgres",
        instance_class="db.t4g.micro",
        allocated_storage=20,
        username="admin",
        password="hunter2-in-state",  # noqa: S106 - the point of the fixture
        publicly_accessible=True,
        storage_encrypted=False,
        skip_final_snapshot=True,
        backup_retention_period=1,
        auto_minor_version_upgrade=False,
    )
    vpc = aws.ec2.Vpc("flat-vpc", cidr_block="10.99.0.0/16")
    aws.ec2.DefaultSecurityGroup(
        "default-open",
        vpc_id=vpc.id,
        ingress=[aws.ec2.DefaultSecurityGroupIngressArgs(protocol="-1", from_port=0, to_port=0, self=True)],
    )
    aws.ec2.Subnet("public-subnet", vpc_id=vpc.id, cidr_block="10.99.1.0/24", map_public_ip_on_launch=True)
    # The database subnet shares the public route table: a straight route to the internet.
    igw = aws.ec2.InternetGateway("igw", vpc_id=vpc.id)
    table = aws.ec2.RouteTable("shared-rt", vpc_id=vpc.id)
    aws.ec2.Route("to-internet", route_table_id=table.id, destination_cidr_block="0.0.0.0/0", gateway_id=igw.id)
    data = aws.ec2.Subnet("data-subnet", vpc_id=vpc.id, cidr_block="10.99.2.0/24", tags={"billkit:tier": "data"})
    aws.ec2.RouteTableAssociation("data-public", subnet_id=data.id, route_table_id=table.id)
    sg = aws.ec2.SecurityGroup("ssh-world", vpc_id=vpc.id, description="ssh from anywhere")
    aws.vpc.SecurityGroupIngressRule(
        "ssh-world-22", security_group_id=sg.id, ip_protocol="tcp", from_port=22, to_port=22, cidr_ipv4="0.0.0.0/0"
    )
    aws.vpc.SecurityGroupIngressRule(
        "redis-vpc", security_group_id=sg.id, ip_protocol="tcp", from_port=6379, to_port=6379, cidr_ipv4="10.99.0.0/16"
    )
    aws.vpc.SecurityGroupEgressRule("all-out", security_group_id=sg.id, ip_protocol="-1", cidr_ipv4="0.0.0.0/0")
    aws.ec2.Instance(
        "legacy-host",
        ami="ami-0123456789abcdef0",
        instance_type="t3.micro",
        associate_public_ip_address=True,
        metadata_options=aws.ec2.InstanceMetadataOptionsArgs(http_tokens="optional"),
        root_block_device=aws.ec2.InstanceRootBlockDeviceArgs(encrypted=False),
    )
    bucket = aws.s3.Bucket("open-bucket", acl="public-read")
    aws.s3.BucketPublicAccessBlock("open-bucket-pab", bucket=bucket.id, block_public_acls=False)
    aws.cloudwatch.LogGroup("short-logs", retention_in_days=7)
    aws.cloudtrail.Trail("local-trail", s3_bucket_name=bucket.bucket, is_multi_region_trail=False)
    aws.ec2.FlowLog("rejects-only", vpc_id=vpc.id, traffic_type="REJECT", log_destination_type="s3",
                    log_destination=bucket.arn)  # fmt: skip
    alb = aws.lb.LoadBalancer("naked-alb", internal=False, load_balancer_type="application")
    aws.lb.Listener(
        "plain-http",
        load_balancer_arn=alb.arn,
        port=80,
        protocol="HTTP",
        default_actions=[fixed_200()],
    )  # fmt: skip
    aws.lb.Listener(
        "old-tls",
        load_balancer_arn=alb.arn,
        port=443,
        protocol="HTTPS",
        ssl_policy="ELBSecurityPolicy-2016-08",
        certificate_arn="arn:aws:acm:eu-central-1:123456789012:certificate/x",
        default_actions=[fixed_200()],
    )  # fmt: skip
    aws.iam.AccountPasswordPolicy("weak-passwords", minimum_password_length=8)
    aws.iam.Policy("god-mode", policy=OPEN_TO_ALL)
    aws.iam.Role("ops", assume_role_policy=NO_MFA_TRUST)
    ci = aws.iam.Role("ci", path="/ci/", assume_role_policy=CI_TRUST)
    ci_policy = aws.iam.Policy("ci-deploy", path="/ci/", policy=SELF_ESCALATING)
    aws.iam.RolePolicyAttachment("ci-deploy", role=ci.name, policy_arn=ci_policy.arn)
    aws.kms.Key("admin-may-use", enable_key_rotation=True, deletion_window_in_days=30, policy=ADMIN_MAY_USE_KEY)
    user = aws.iam.User("deployer")
    aws.iam.AccessKey("deployer-key", user=user.name)
    aws.guardduty.Detector("sleepy", enable=False)
    aws.sns.Topic("plain-topic")
    # Patching the classic way: every host at once, errors ignored, no evidence, installs and reboots on a
    # schedule, a baseline that approves nothing by rule, and a host whose patch group nothing patches.
    aws.ec2.Instance("forgotten-host", ami="ami-0123456789abcdef0", instance_type="t3.micro",
                     tags={"Patch Group": "legacy"})  # fmt: skip
    aws.ssm.PatchBaseline("hand-picked", approved_patches=["openssl"])
    aws.ssm.PatchBaseline(
        "slow-approval",
        operating_system="AMAZON_LINUX_2023",
        approval_rules=[
            aws.ssm.PatchBaselineApprovalRuleArgs(
                approve_after_days=90,
                patch_filters=[aws.ssm.PatchBaselineApprovalRulePatchFilterArgs(key="PRODUCT", values=["*"])],
            )
        ],
    )
    window = aws.ssm.MaintenanceWindow("whenever", schedule="rate(1 day)", duration=2, cutoff=1)
    aws.ssm.MaintenanceWindowTask(
        "all-at-once",
        window_id=window.id,
        task_type="RUN_COMMAND",
        task_arn="AWS-RunPatchBaseline",
        max_concurrency="100%",
        max_errors="50%",
        cutoff_behavior="CANCEL_TASK",
    )
    aws.ssm.Association("install-and-reboot", name="AWS-RunPatchBaseline", parameters={"Operation": "Install"})
    pulumi.export("key", key.arn)
