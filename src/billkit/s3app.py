"""moto's S3 (and friends) as a WSGI app: the lab's S3-compatible backup store.

Served by uvicorn with TLS (``uvicorn billkit.s3app:app --interface wsgi --ssl-certfile …``):
moto's own development server drops TLS connections without a close_notify, which pgBackRest
(rightly) treats as an error.

Persistence: moto keeps its store in memory. With ``MOTO_ENABLE_RECORDING`` and
``MOTO_RECORDER_FILEPATH`` set, moto's recorder appends every request to that file; when the app
starts it first replays the recorded writes into the fresh backend, in process, before serving,
so a restart keeps every bucket, object version, lock configuration and retention. Replayed
writes are applied again at start: object-lock retention then runs from the replay, never less
than it was. Reads (GET, HEAD) are never replayed, and dropped from the file at start.
Replayed versions get new version IDs, so a recorded request that names an old version ID
(deleting an expired version, extending one version's retention) finds nothing on replay and
is skipped: the version stays, under the bucket's default retention counted from the replay.

Object lock: moto refuses to delete a locked version but lets anyone shorten a COMPLIANCE
retention or turn it into GOVERNANCE (and then delete it). Real S3 refuses both; so does this
store (``put_object_retention`` below), so the lab's bucket is as immutable as the real one.

This file imports only moto, werkzeug and the standard library: the backup host runs it as a
standalone module from the bundle shipped by the backup role (the billkit package is not there).
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import threading
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from moto.moto_api import recorder
from moto.moto_api._internal.recorder.models import Recorder
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
from moto.s3.exceptions import AccessDeniedByLock
from moto.s3.models import S3Backend
from werkzeug.test import Client

WRITES = ("PUT", "POST", "DELETE")

# moto's recorder appends each request with buffered writes: requests served at the same time
# (uvicorn runs WSGI apps in a thread pool) would interleave their lines past the buffer size.
_record_lock = threading.Lock()
_moto_record_request = Recorder._record_request


def _record_request(self: Recorder, request: Any, body: bytes | None = None) -> None:
    with _record_lock:
        _moto_record_request(self, request, body)


Recorder._record_request = _record_request  # type: ignore[method-assign]


def _instant(value: str) -> dt.datetime:
    parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


_moto_put_object_retention = S3Backend.put_object_retention


def put_object_retention(self: S3Backend, bucket_name: str, key_name: str, version_id: str | None,
                         retention: tuple[str | None, str | None]) -> None:  # fmt: skip
    """As S3: a COMPLIANCE version's retention can be extended, never shortened nor changed to another mode."""
    key: Any = self.get_object(bucket_name, key_name, version_id=version_id)
    if key is not None and key.lock_mode == "COMPLIANCE" and key.lock_until:
        current = _instant(key.lock_until)
        mode, until = retention
        if current > dt.datetime.now(dt.UTC) and (mode != "COMPLIANCE" or not until or _instant(until) < current):
            raise AccessDeniedByLock
    _moto_put_object_retention(self, bucket_name, key_name, version_id, retention)


S3Backend.put_object_retention = put_object_retention  # type: ignore[method-assign]


def replay(application: DomainDispatcherApplication, path: Path) -> int:
    """Apply the recorded write requests in `path` to `application`; returns how many."""
    if not path.exists():
        return 0
    client = Client(application)
    count = 0
    kept: list[str] = []  # the writes: the file is compacted to them (reads are never needed again)
    recorder.stop_recording()  # the replay itself is not recorded again
    try:
        with path.open(encoding="utf-8") as fh:
            for n, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    entry = json.loads(line)
                except json.JSONDecodeError:
                    # A torn last line (power cut mid-write): the request never got its answer either.
                    print(f"s3app: skipping an unreadable recorded request at line {n} of {path}", flush=True)
                    continue
                if entry.get("method") not in WRITES:
                    continue
                kept.append(line if line.endswith("\n") else line + "\n")
                body = entry.get("body") or b""
                if entry.get("body_encoded"):
                    body = base64.b64decode(body)
                url = urlsplit(entry["url"])
                headers = {k: v for k, v in entry.get("headers", {}).items() if k.lower() != "transfer-encoding"}
                try:
                    client.open(
                        url.path, base_url=f"{url.scheme}://{url.netloc}", query_string=url.query,
                        method=entry["method"], headers=headers, data=body,
                    )  # fmt: skip
                except Exception as exc:  # noqa: BLE001 - one bad request must not lose the rest of the store
                    # Replayed writes get new version IDs: a request naming an old one finds no version.
                    print(f"s3app: recorded request at line {n} failed on replay: {type(exc).__name__}", flush=True)
                    continue
                count += 1
    finally:
        recorder.start_recording()
    compacted = path.with_name(path.name + ".compact")
    compacted.write_text("".join(kept), encoding="utf-8")
    os.replace(compacted, path)
    return count


app = DomainDispatcherApplication(create_backend_app)

if os.environ.get("MOTO_ENABLE_RECORDING") and os.environ.get("MOTO_RECORDER_FILEPATH"):
    _replayed = replay(app, Path(os.environ["MOTO_RECORDER_FILEPATH"]))
    print(f"s3app: replayed {_replayed} recorded writes from {os.environ['MOTO_RECORDER_FILEPATH']}", flush=True)
