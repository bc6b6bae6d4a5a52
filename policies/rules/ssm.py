"""SSM patching: baselines that approve security updates, rollouts one host at a time that leave evidence,
and scans that never install or reboot on their own."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from pulumi_policy import ResourceValidationArgs, Severity

from policies.rules._base import as_list, items, number, resource_policy

PATCH_BASELINE = "aws:ssm/patchBaseline:PatchBaseline"
PATCH_GROUP = "aws:ssm/patchGroup:PatchGroup"
WINDOW = "aws:ssm/maintenanceWindow:MaintenanceWindow"
WINDOW_TARGET = "aws:ssm/maintenanceWindowTarget:MaintenanceWindowTarget"
WINDOW_TASK = "aws:ssm/maintenanceWindowTask:MaintenanceWindowTask"
ASSOCIATION = "aws:ssm/association:Association"
# apt-based systems: SSM supports no approval delay for them and filters on PRIORITY and SECTION.
APT_SYSTEMS = ("DEBIAN", "UBUNTU")
# The priorities a Debian security update most often has; a PRIORITY filter must keep them.
SECURITY_PRIORITIES = ("Required", "Important")
PATCH_DOCUMENTS = ("AWS-RunPatchBaseline", "AWS-RunPatchBaselineAssociation", "AWS-RunPatchBaselineWithHooks")


@resource_policy(
    "aws-ssm-maintenancewindowtask-configure-rate-control",
    description="A maintenance window task works on one host at a time, stops at the first failure, and lets a "
    "host it started on finish when the window closes.",
    resource_types=[WINDOW_TASK],
    controls=["PAT-04"],
    pci=["6.3.3", "6.5.1"],
    severity=Severity.HIGH,
    remediation="Set max_concurrency='1' (an absolute number, not a percentage), max_errors='0' and "
    "cutoff_behavior='CONTINUE_TASK'.",
    config={"maxConcurrency": 1},
)
def window_task_rate_control(props: Mapping[str, Any], args: ResourceValidationArgs) -> Iterable[str]:
    limit = int(number((args.get_config() or {}).get("maxConcurrency"), 1))
    concurrency = props.get("maxConcurrency")
    if concurrency is None:
        yield f"max_concurrency is not set: patch at most {limit} host(s) at a time"
    elif str(concurrency).endswith("%"):
        yield f"max_concurrency is {concurrency!r}, a share of the hosts: name an absolute number (at most {limit})"
    elif number(concurrency, limit + 1) > limit:
        yield f"max_concurrency is {concurrency!r}: patch at most {limit} host(s) at a time"
    errors = props.get("maxErrors")
    if errors is None or str(errors) != "0":
        yield f"max_errors is {errors!r}: stop the rollout at the first failure (max_errors '0')"
    if props.get("cutoffBehavior") == "CANCEL_TASK":
        yield "cutoff_behavior CANCEL_TASK stops a host in the middle of its rollout when the window closes"


@resource_policy(
    "aws-ssm-maintenancewindowtask-enable-output-evidence",
    description="A Run Command task of a maintenance window writes every host's output to S3: the evidence of "
    "what each patch run did.",
    resource_types=[WINDOW_TASK],
    controls=["PAT-07"],
    pci=["6.3.3", "6.5.1"],
    severity=Severity.MEDIUM,
    remediation="Set task_invocation_parameters.run_command_parameters.output_s3_bucket (the patching evidence "
    "bucket) and output_s3_key_prefix.",
)
def window_task_evidence(props: Mapping[str, Any], args: ResourceValidationArgs) -> Iterable[str]:
    if props.get("taskType") != "RUN_COMMAND":
        return
    run = (props.get("taskInvocationParameters") or {}).get("runCommandParameters") or {}
    if not run.get("outputS3Bucket"):
        yield "the task writes no output to S3 (output_s3_bucket): its runs leave no evidence"
    elif not run.get("outputS3KeyPrefix"):
        yield "the task's output has no key prefix (output_s3_key_prefix): runs of different roles mix"


@resource_policy(
    "aws-ssm-patchbaseline-configure-security-approval",
    description="A patch baseline names its operating system and approves security updates by rule, reports "
    "missing ones as critical or high, and never waits longer than the one month PCI DSS 6.3.3 allows.",
    resource_types=[PATCH_BASELINE],
    controls=["PAT-05"],
    pci=["6.3.3"],
    severity=Severity.HIGH,
    remediation="Set operating_system; add an approval rule (Debian: PRODUCT '*', every PRIORITY, "
    "enable_non_security False, no approve_after_days) with compliance_level CRITICAL or HIGH.",
    config={"maxApproveAfterDays": 30},
)
def baseline_security(props: Mapping[str, Any], args: ResourceValidationArgs) -> Iterable[str]:
    system = props.get("operatingSystem")
    if not system:
        yield "operating_system is not set: the baseline would apply to WINDOWS"
    rules = items(props.get("approvalRules"))
    if not rules:
        yield "the baseline has no approval rule: no security update is approved automatically"
    max_days = number((args.get_config() or {}).get("maxApproveAfterDays"), 30)
    for i, rule in enumerate(rules, start=1):
        delay = rule.get("approveAfterDays")
        if system in APT_SYSTEMS and (delay is not None or rule.get("approveUntilDate")):
            yield f"rule {i} sets an approval delay, which SSM does not support for {system}"
        elif delay is not None and number(delay) > max_days:
            yield f"rule {i} approves patches {number(delay):.0f} days after release; at most {max_days:.0f}"
        level = rule.get("complianceLevel") or "UNSPECIFIED"
        if level not in ("CRITICAL", "HIGH"):
            yield f"rule {i} reports missing patches as {level}: use CRITICAL or HIGH"
        for f in items(rule.get("patchFilters")):
            if system in APT_SYSTEMS and f.get("key") == "PRIORITY" and "*" not in as_list(f.get("values")):
                left_out = [p for p in SECURITY_PRIORITIES if p not in as_list(f.get("values"))]
                if left_out:
                    yield f"rule {i} leaves out priority {left_out}: security updates of that priority stay pending"


@resource_policy(
    "aws-ssm-association-configure-scan-only",
    description="Associations that run Patch Manager only scan: they never install or reboot, which belong to the "
    "rollout that drains and patches one host at a time.",
    resource_types=[ASSOCIATION],
    controls=["PAT-04"],
    pci=["6.3.3", "6.5.1"],
    severity=Severity.HIGH,
    remediation="Set parameters Operation='Scan' and RebootOption='NoReboot'; install through the maintenance "
    "windows of infra/patching.py.",
)
def association_scan_only(props: Mapping[str, Any], args: ResourceValidationArgs) -> Iterable[str]:
    if props.get("name") not in PATCH_DOCUMENTS:
        return
    params = props.get("parameters") or {}
    # The documents' defaults: Operation Scan, RebootOption RebootIfNeeded.
    operation = params.get("Operation", "Scan")
    reboot = params.get("RebootOption", "RebootIfNeeded")
    if operation != "Scan":
        yield f"the association installs patches (Operation {operation!r}) outside the one-host-at-a-time rollout"
    if reboot != "NoReboot":
        yield f"the association may reboot hosts (RebootOption {reboot!r}) outside the rollout"
