"""The backup store's own guarantees, on loopback (no lab): persistence across restarts, COMPLIANCE locks.

The lab's store is `billkit.s3app` behind uvicorn; here the same app runs on loopback, is
stopped and started again, and must keep every object version, the bucket's lock
configuration and each version's COMPLIANCE lock.
"""

from __future__ import annotations

import datetime as dt
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from billkit.backup import free_port

BUCKET = "billkit-store-check"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Callable[[], Any]]:
    """A function that (re)starts the store on one port and returns a client; the store stops at the end."""
    port = free_port()
    env = dict(os.environ, MOTO_ENABLE_RECORDING="True", MOTO_RECORDER_FILEPATH=str(tmp_path / "requests.jsonl"))
    procs: list[subprocess.Popen[bytes]] = []

    def stop() -> None:
        for p in procs:
            if p.poll() is None:
                p.terminate()
                p.wait(15)

    def start() -> Any:
        stop()
        log = open(tmp_path / "store.log", "ab")  # noqa: SIM115 - handed to the child
        procs.append(subprocess.Popen(
            [str(Path(sys.executable).parent / "uvicorn"), "billkit.s3app:app", "--interface", "wsgi", "--host",
             "127.0.0.1", "--port", str(port), "--log-level", "warning"],
            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        ))  # fmt: skip
        log.close()
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if procs[-1].poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError((tmp_path / "store.log").read_text(errors="replace")[-2000:]) from None
                time.sleep(0.2)
        return boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}", region_name="us-east-1",
                            aws_access_key_id="check", aws_secret_access_key="check")  # noqa: S106  # fmt: skip

    try:
        yield start
    finally:
        stop()


def _locked_bucket(s3: Any) -> None:
    s3.create_bucket(Bucket=BUCKET, ObjectLockEnabledForBucket=True)
    s3.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
    s3.put_object_lock_configuration(Bucket=BUCKET, ObjectLockConfiguration={
        "ObjectLockEnabled": "Enabled", "Rule": {"DefaultRetention": {"Mode": "COMPLIANCE", "Days": 1}},
    })  # fmt: skip


@pytest.mark.control("BAK-03", "BAK-04")
def test_a_restart_keeps_objects_versions_and_locks(store: Callable[[], Any]) -> None:
    s3 = store()
    _locked_bucket(s3)
    payload = os.urandom(200_000)
    s3.put_object(Bucket=BUCKET, Key="repo/a", Body=payload)
    s3.put_object(Bucket=BUCKET, Key="repo/a", Body=b"second version")
    s3.put_object(Bucket=BUCKET, Key="repo/b", Body=b"other")
    s3.get_object(Bucket=BUCKET, Key="repo/a")  # reads are not replayed
    before = sorted((v["Key"], v["Size"], v["ETag"]) for v in s3.list_object_versions(Bucket=BUCKET)["Versions"])

    s3 = store()  # restart: a fresh process, state from the recorded writes
    versions = s3.list_object_versions(Bucket=BUCKET)["Versions"]
    assert sorted((v["Key"], v["Size"], v["ETag"]) for v in versions) == before
    oldest = next(v for v in versions if v["Key"] == "repo/a" and not v["IsLatest"])
    body = s3.get_object(Bucket=BUCKET, Key="repo/a", VersionId=oldest["VersionId"])["Body"].read()
    assert body == payload
    rule = s3.get_object_lock_configuration(Bucket=BUCKET)["ObjectLockConfiguration"]["Rule"]["DefaultRetention"]
    assert (rule["Mode"], rule["Days"]) == ("COMPLIANCE", 1)
    assert s3.head_object(Bucket=BUCKET, Key="repo/a", VersionId=oldest["VersionId"])["ObjectLockMode"] == "COMPLIANCE"
    with pytest.raises(ClientError) as refused:
        s3.delete_object(Bucket=BUCKET, Key="repo/a", VersionId=oldest["VersionId"])
    assert refused.value.response["Error"]["Code"] == "AccessDenied"


@pytest.mark.control("BAK-03")
def test_compliance_retention_can_be_extended_never_shortened(store: Callable[[], Any]) -> None:
    s3 = store()
    _locked_bucket(s3)
    version = s3.put_object(Bucket=BUCKET, Key="k", Body=b"x")["VersionId"]
    now = dt.datetime.now(dt.UTC)
    for weaker in ({"Mode": "GOVERNANCE", "RetainUntilDate": now - dt.timedelta(days=3000)},
                   {"Mode": "COMPLIANCE", "RetainUntilDate": now + dt.timedelta(hours=1)}):  # fmt: skip
        with pytest.raises(ClientError) as refused:
            s3.put_object_retention(Bucket=BUCKET, Key="k", VersionId=version, Retention=weaker,
                                    BypassGovernanceRetention=True)  # fmt: skip
        assert refused.value.response["Error"]["Code"] == "AccessDenied"
    longer = now + dt.timedelta(days=3)
    s3.put_object_retention(Bucket=BUCKET, Key="k", VersionId=version,
                            Retention={"Mode": "COMPLIANCE", "RetainUntilDate": longer})  # fmt: skip
    head = s3.head_object(Bucket=BUCKET, Key="k", VersionId=version)
    assert head["ObjectLockMode"] == "COMPLIANCE" and head["ObjectLockRetainUntilDate"] > now + dt.timedelta(days=2)
    with pytest.raises(ClientError):
        s3.delete_object(Bucket=BUCKET, Key="k", VersionId=version)


@pytest.mark.control("BAK-04")
def test_concurrent_uploads_all_survive_a_restart(store: Callable[[], Any]) -> None:
    """Large bodies written at the same time (pgBackRest runs parallel workers) are all recorded whole."""
    from concurrent.futures import ThreadPoolExecutor

    s3 = store()
    _locked_bucket(s3)
    bodies = {f"repo/part-{i}": os.urandom(300_000 + i) for i in range(8)}
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(lambda kv: s3.put_object(Bucket=BUCKET, Key=kv[0], Body=kv[1]), bodies.items()))
    s3 = store()
    for key, body in bodies.items():
        assert s3.get_object(Bucket=BUCKET, Key=key)["Body"].read() == body, f"{key} lost or damaged by a restart"
