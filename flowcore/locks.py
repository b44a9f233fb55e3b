"""Locks that keep two processes from working on the same thing at once.

On a local folder: an advisory `flock` on a file in the temporary folder, keyed by the locked
folder's absolute path and a name (outside the folder, so plain zarr never sees it and
--overwrite can delete the folder): the kernel frees it when its process dies, even by SIGKILL.
The holder writes its process id into the file, so a refused process can say who holds it.

On object storage (a folder given as a URL, flowcore.locations), where processes on several
machines share the folder, the lock is an object beside the folder, `<folder>.locks/<name>.lock`,
holding who holds it and until when: a lease. It is taken by an atomic create (S3's conditional
write, `If-None-Match: *`, which S3, MinIO and moto honour), renewed by a thread every third of
the lease while held, and deleted on release. A holder killed with SIGKILL renews it no more: once
its lease has run out (LEASE_SECONDS, MESPOT_LOCK_LEASE in the environment) the next taker
replaces it, by a write conditional on the stale object's ETag (`If-Match`), so of two takers
only one wins. On a filesystem without conditional writes the take-over deletes then creates
(two takers within the same instant could both win). `wait`: how long a taker waits for a
lease held by another to be released or run out (a retried task whose first attempt was killed).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
import tempfile
import threading
import time
import uuid
from pathlib import Path

from flowcore.locations import filesystem, is_url

LOCK_FOLDER = "mespot-locks"  # under the temporary folder
LEASE_SECONDS = 60.0  # an object-storage lock not renewed for this long is free (see above)
LEASE_ENV = "MESPOT_LOCK_LEASE"


@contextlib.contextmanager
def folder_lock(folder, name: str, wait: float = 0.0):
    """Yield None while this process holds the `name` lock of `folder`, else the process id of
    the holder (a string; "unknown" when it has not written it yet; on object storage
    "host:pid"). `wait`: on object storage, seconds to wait for another holder's lease."""
    if is_url(folder):
        with object_lock(f"{str(folder).rstrip('/')}.locks/{name}.lock", wait) as holder:
            yield holder
        return
    import fcntl

    locks = Path(tempfile.gettempdir()) / LOCK_FOLDER
    locks.mkdir(exist_ok=True)
    key = hashlib.sha256(str(Path(folder).resolve()).encode()).hexdigest()[:16]
    with open(locks / f"{key}-{name}.lock", "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            yield handle.read().strip() or "unknown"
            return
        try:
            handle.seek(0)
            handle.truncate()
            handle.write(str(os.getpid()))
            handle.flush()
            yield None
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def lease_seconds() -> float:
    return float(os.environ.get(LEASE_ENV) or LEASE_SECONDS)


@contextlib.contextmanager
def object_lock(url: str, wait: float = 0.0):
    """The lease lock of the object at `url` (see the module docstring): yield None while held
    here, else the holder ("host:pid")."""
    fs, path = filesystem(url)
    me = f"{socket.gethostname()}:{os.getpid()}"
    token = uuid.uuid4().hex
    deadline = time.monotonic() + wait
    while True:  # the last try begins at the deadline or after: a lease that ran out by then
        holder = _take(fs, path, me, token)  # is taken, however slow the tries before it were
        left = deadline - time.monotonic()
        if holder is None or left <= 0:
            break
        time.sleep(min(1.0, lease_seconds() / 4, left))
    if holder is not None:
        yield holder
        return
    stop = threading.Event()
    renewer = threading.Thread(target=_renew, args=(fs, path, me, token, stop), daemon=True,
                               name="mespot-lease")
    renewer.start()
    try:
        yield None
    finally:
        stop.set()
        renewer.join()
        with contextlib.suppress(Exception):  # unreachable: the lease runs out by itself
            if _read(fs, path)[0].get("token") == token:
                fs.rm_file(path)


def _lease(me: str, token: str) -> bytes:
    return json.dumps({"holder": me, "token": token,
                       "expires": time.time() + lease_seconds()}).encode()


def _read(fs, path: str) -> tuple[dict, str | None]:
    """The lock object's content ({} when unreadable) and its ETag (None where none is kept)."""
    fs.invalidate_cache(path)
    etag = fs.info(path).get("ETag")
    try:
        return json.loads(fs.cat_file(path)), etag
    except ValueError:
        return {}, etag


def _take(fs, path: str, me: str, token: str) -> str | None:
    """Take the lock (None), or say who holds it."""
    try:
        fs.pipe_file(path, _lease(me, token), mode="create")
        return None
    except FileExistsError:
        pass
    try:
        held, etag = _read(fs, path)
    except FileNotFoundError:  # released meanwhile: try again at once
        return _take(fs, path, me, token)
    if held.get("expires", 0) > time.time():
        return str(held.get("holder", "unknown"))
    return None if _replace(fs, path, etag, _lease(me, token)) else "unknown"


def _replace(fs, path: str, etag: str | None, body: bytes) -> bool:
    """Overwrite the lock object only if it is still the version `etag`; False if it is not."""
    if etag is not None and hasattr(fs, "call_s3"):
        bucket, key = path.split("/", 1)
        try:
            fs.call_s3("put_object", Bucket=bucket, Key=key, Body=body, IfMatch=etag)
        except OSError:  # 412 precondition failed: another taker was first
            return False
        fs.invalidate_cache(path)
        return True
    with contextlib.suppress(FileNotFoundError):
        fs.rm_file(path)
    try:
        fs.pipe_file(path, body, mode="create")
    except FileExistsError:
        return False
    return True


def _renew(fs, path: str, me: str, token: str, stop: threading.Event) -> None:
    """Extend the lease every third of it until `stop`, while the lock is still ours."""
    while not stop.wait(lease_seconds() / 3):
        try:
            held, etag = _read(fs, path)
            if held.get("token") != token or not _replace(fs, path, etag, _lease(me, token)):
                return
        except Exception:  # noqa: BLE001 - storage unreachable: the lease runs out, the work
            return  # itself fails on its next write and says so
