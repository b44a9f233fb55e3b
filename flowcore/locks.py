"""Locks that keep two processes on one machine from working on the same thing at once.

An advisory `flock` on a file in the temporary folder, keyed by the locked folder's absolute path
and a name (outside the folder, so plain zarr never sees it and --overwrite can delete the
folder): the kernel frees it when its process dies, even by SIGKILL. The holder writes its
process id into the file, so a refused process can say who holds it.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from pathlib import Path

LOCK_FOLDER = "mespot-locks"  # under the temporary folder


@contextlib.contextmanager
def folder_lock(folder: Path, name: str):
    """Yield None while this process holds the `name` lock of `folder`, else the process id of
    the holder (a string; "unknown" when it has not written it yet)."""
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
