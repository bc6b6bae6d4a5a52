"""Backups in the lab: pgBackRest on db-1 into moto's S3 on backup-1 (TLS, object lock), Vault snapshots.

Every check works on the real thing: the timers and configuration on the hosts, the objects in the
store (read from the controller over HTTPS, the operator flow), a restore onto a scratch
PostgreSQL on backup-1, and a point-in-time drill. All but the timers' check write (a probe row,
backups, WAL switches, a store restart): they are the "backup" drill.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import subprocess
import time
from collections import Counter
from typing import Any

import pytest
from botocore.exceptions import ClientError

from billkit.lab import backups

pytestmark = pytest.mark.lab
DRILL = pytest.mark.drill(
    "backup",
    disrupts="writes a probe row, takes backups and a Vault snapshot into the store, forces WAL switches, restarts "
    "the store, restores onto a scratch PostgreSQL and drops a table to recover it",
)

# A marker that must never appear in clear in the store (no card-like digits: the card sweep).
MARKER = "BILLKIT-BACKUP-PLAINTEXT-MARKER"


@pytest.fixture(scope="module")
def store(lab_up: None) -> Any:
    return backups.s3_client()


def _versions(s3: Any, prefix: str = "") -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for page in s3.get_paginator("list_object_versions").paginate(Bucket=backups.BUCKET, Prefix=prefix):
        out += page.get("Versions", [])
    return out


def _sh(host: str, script: str) -> str:
    return backups.ssh(host, ["sh", "-c", script]).stdout


@pytest.fixture(scope="module")
def marker_backup(store: Any) -> str:
    """A row with the marker in the probe database, then a backup and an archived WAL segment."""
    backups.write_probe(MARKER)
    result = backups.take_backup("incr", snapshot=False)
    backups.wait_archived()
    return result.label


@pytest.mark.control("BAK-01")
def test_backups_run_on_timers_with_retention(store: Any) -> None:
    db = backups.db_host()
    for kind, calendar in (("full", "Sun"), ("incr", "Mon..Sat"), ("monthly", "*-*-01")):
        unit = f"billkit-pgbackrest-{kind}.timer"
        state = _sh(db, f"systemctl is-enabled {unit}; systemctl is-active {unit}; systemctl cat {unit}")
        assert state.startswith("enabled\nactive\n"), f"{unit} on {db}: {state[:200]}"
        assert f"OnCalendar={calendar}" in state
        unit_name = "billkit-pgbackrest-monthly.service" if kind == "monthly" else f"billkit-pgbackrest@{kind}.service"
        assert unit_name in state
    service = _sh(db, "systemctl cat billkit-pgbackrest@.service")
    assert "User=postgres" in service and "--type=%i backup" in service
    conf = _sh(db, "cat /etc/pgbackrest/pgbackrest.conf")
    assert "repo1-retention-full-type=time" in conf
    assert f"repo1-retention-full={backups.RETENTION_DAYS}" in conf
    assert backups.RETENTION_DAYS >= 35  # daily recovery points kept 35 days (the catalogue's figure)
    # Monthly full backups: a second repository, the last 12 kept (12 months).
    assert "repo2-retention-full-type=count" in conf and "repo2-retention-full=12" in conf
    assert "repo2-cipher-type=aes-256-cbc" in conf
    assert "--repo=2 --type=full backup" in _sh(db, "systemctl cat billkit-pgbackrest-monthly.service")
    info = backups.backup_info()
    for repo in (1, 2):
        fulls = [b for b in info["backup"] if b["type"] == "full" and b["database"]["repo-key"] == repo]
        assert fulls, f"no full backup in repository {repo}"


@DRILL
@pytest.mark.control("BAK-02")
def test_repository_is_encrypted_and_holds_no_plaintext(store: Any, marker_backup: str) -> None:
    info = backups.backup_info()
    assert info["cipher"] == "aes-256-cbc"
    assert info["backup"][-1]["label"] == marker_backup
    versions = [v for v in _versions(store, "pgbackrest/") if v["Size"] > 0]
    assert len(versions) > 10, "the repository holds suspiciously few objects"
    encrypted = 0
    for v in versions:
        body = store.get_object(Bucket=backups.BUCKET, Key=v["Key"], VersionId=v["VersionId"])["Body"].read()
        assert MARKER.encode() not in body, f"plaintext row data in {v['Key']}"
        assert b"restore_probe" not in body, f"plaintext catalogue data in {v['Key']}"
        assert body[:8] == b"Salted__", f"{v['Key']} is not aes-256-cbc encrypted by pgBackRest"
        encrypted += 1
    assert encrypted == len(versions)
    # The passphrase is in the configuration only, readable by root and postgres.
    mode = _sh(backups.db_host(), "stat -c '%a %U %G' /etc/pgbackrest/pgbackrest.conf").split()
    assert mode == ["640", "root", "postgres"]


@DRILL
@pytest.mark.control("BAK-03")
def test_locked_versions_cannot_be_deleted(store: Any, marker_backup: str) -> None:
    lock = store.get_object_lock_configuration(Bucket=backups.BUCKET)["ObjectLockConfiguration"]
    assert lock["ObjectLockEnabled"] == "Enabled"
    retention = lock["Rule"]["DefaultRetention"]
    assert (retention["Mode"], retention["Days"]) == ("COMPLIANCE", backups.RETENTION_DAYS)
    assert store.get_bucket_versioning(Bucket=backups.BUCKET)["Status"] == "Enabled"
    victim = next(v for v in _versions(store, "pgbackrest/backup/") if v["Key"].endswith("backup.manifest"))
    head = store.head_object(Bucket=backups.BUCKET, Key=victim["Key"], VersionId=victim["VersionId"])
    assert head["ObjectLockMode"] == "COMPLIANCE"
    with pytest.raises(ClientError) as refused:
        store.delete_object(Bucket=backups.BUCKET, Key=victim["Key"], VersionId=victim["VersionId"])
    assert refused.value.response["Error"]["Code"] == "AccessDenied"
    # Shortening the retention of a COMPLIANCE version is refused too.
    with pytest.raises(ClientError):
        store.put_object_retention(
            Bucket=backups.BUCKET, Key=victim["Key"], VersionId=victim["VersionId"],
            Retention={"Mode": "GOVERNANCE", "RetainUntilDate": "2020-01-01T00:00:00Z"},
            BypassGovernanceRetention=True,
        )  # fmt: skip
    still = {(v["Key"], v["VersionId"]) for v in _versions(store, victim["Key"])}
    assert (victim["Key"], victim["VersionId"]) in still


@DRILL
@pytest.mark.control("BAK-03", "BAK-04")
def test_store_restart_keeps_objects_and_locks(store: Any, marker_backup: str) -> None:
    def snapshot() -> Counter[tuple[str, int, str]]:
        return Counter((v["Key"], v["Size"], v["ETag"]) for v in _versions(store))

    before = snapshot()
    host = backups.store_host()
    _sh(host, "systemctl restart billkit-s3")
    deadline = time.monotonic() + 180
    while True:
        try:
            after = snapshot()
            break
        except Exception:  # noqa: BLE001 - the store is replaying its recorded writes
            if time.monotonic() > deadline:
                raise
            time.sleep(1)
    missing = before - after
    assert not missing, f"objects lost by a restart of the store: {list(missing)[:5]}"
    lock = store.get_object_lock_configuration(Bucket=backups.BUCKET)["ObjectLockConfiguration"]
    assert lock["Rule"]["DefaultRetention"]["Mode"] == "COMPLIANCE"
    victim = next(v for v in _versions(store, "pgbackrest/backup/") if v["Key"].endswith("backup.manifest"))
    with pytest.raises(ClientError):
        store.delete_object(Bucket=backups.BUCKET, Key=victim["Key"], VersionId=victim["VersionId"])
    backups.pgbackrest(backups.db_host(), "check")  # archiving works again through the restarted store


@DRILL
@pytest.mark.control("BAK-04")
def test_backups_live_on_another_host(store: Any, marker_backup: str) -> None:
    db, host = backups.db_host(), backups.store_host()
    conf = _sh(db, "cat /etc/pgbackrest/pgbackrest.conf")
    assert "repo1-type=s3" in conf and f"repo1-s3-endpoint={host}" in conf
    assert "repo1-storage-verify-tls=y" in conf
    assert "repo1-path=/var/lib/pgbackrest" not in conf
    local = _sh(db, "find /var/lib/pgbackrest -type f 2>/dev/null | wc -l").strip()
    assert local == "0", f"{db} keeps backup files locally"
    labels = {v["Key"].split("/")[3] for v in _versions(store, f"pgbackrest/backup/{backups.STANZA}/") if
              v["Key"].count("/") >= 4}  # fmt: skip
    assert marker_backup in labels, f"backup {marker_backup} is not in the store on {host}"


@DRILL
@pytest.mark.control("BAK-05")
def test_restore_test_passes_and_records_evidence(store: Any, marker_backup: str) -> None:
    ev = backups.restore_test()
    assert ev.result == "pass", ev.detail
    # The latest backup when the test started (others may back up the shared lab meanwhile).
    assert ev.backup_label in {b["label"] for b in backups.backup_info()["backup"]}
    assert ev.backup_label >= marker_backup
    probe = ev.tables[f"{backups.PROBE_DB}:restore_probe"]
    assert probe["primary"] == probe["restored"] and probe["restored"][0] >= 2
    saved = sorted(backups.evidence_dir().glob("restore-test-*.json"))[-1]
    recorded = json.loads(saved.read_text())
    assert recorded["result"] == "pass" and recorded["backup_label"] == ev.backup_label
    assert {"when", "backup_label", "duration_s", "result"} <= set(recorded)
    leftovers = _sh(backups.store_host(), f"ls -A {backups.RESTORE_ROOT}").split()
    assert not leftovers, f"the restore test left {leftovers} behind"


@DRILL
@pytest.mark.control("BAK-06")
def test_wal_archiving_within_60_seconds(store: Any) -> None:
    settings = dict(
        backups.psql(
            backups.db_host(),
            "SELECT name, setting FROM pg_settings WHERE name IN "
            "('archive_mode', 'archive_timeout', 'archive_command', 'wal_level')",
        )  # fmt: skip
    )
    assert settings["archive_mode"] == "on"
    assert 0 < int(settings["archive_timeout"]) <= 60
    assert settings["wal_level"] in ("replica", "logical")
    assert "pgbackrest" in settings["archive_command"] and "archive-push" in settings["archive_command"]
    segment = backups.wait_archived()
    names = [v["Key"].rsplit("/", 1)[-1] for v in _versions(store, f"pgbackrest/archive/{backups.STANZA}/")]
    assert any(n.startswith(segment) for n in names), f"segment {segment} is not in the store"
    failed = backups.psql(backups.db_host(), "SELECT failed_count, coalesce(last_failed_time > last_archived_time, "
                          "false) FROM pg_stat_archiver")[0]  # fmt: skip
    assert failed[1] == "f", f"archiving is failing on {backups.db_host()}"


@DRILL
@pytest.mark.control("BAK-06", "BAK-05")
def test_drill_point_in_time_recovery_brings_a_dropped_table_back(store: Any, marker_backup: str) -> None:
    drill = backups.pitr_drill(rows=1000)
    print(f"\nPITR drill: {drill.table} dropped, restored to {drill.target_time}: {drill.rows_restored} rows "
          f"(restore {drill.restore_s}s, whole drill {drill.total_s}s)")  # fmt: skip
    assert drill.rows_restored == drill.rows_before == 1000


@DRILL
@pytest.mark.control("BAK-08")
def test_raft_snapshots_are_stored_encrypted(store: Any) -> None:
    host = backups.store_host()
    timer = _sh(host, "systemctl is-enabled billkit-vault-snapshot.timer; systemctl is-active "
                "billkit-vault-snapshot.timer")  # fmt: skip
    assert timer.split() == ["enabled", "active"]
    key = backups.take_snapshot()
    assert key.startswith(backups.SNAPSHOT_PREFIX)
    obj = store.get_object(Bucket=backups.BUCKET, Key=key)
    body = obj["Body"].read()
    assert body.startswith(b"age-encryption.org/v1\n"), "the snapshot is not age-encrypted"
    assert b"\x1f\x8b\x08" not in body[:200]
    identity = backups.age_identity()
    decrypt = ["age", "--decrypt", "-i", str(identity)]
    plain = subprocess.run(decrypt, input=body, capture_output=True, check=True).stdout
    assert plain[:2] == b"\x1f\x8b", "the decrypted snapshot is not a raft snapshot (gzip)"
    assert hashlib.sha256(plain).hexdigest() == obj["Metadata"]["plaintext-sha256"]
    assert gzip.decompress(plain), "empty raft snapshot"
    with pytest.raises(ClientError):
        versions = _versions(store, key)
        store.delete_object(Bucket=backups.BUCKET, Key=key, VersionId=versions[0]["VersionId"])
