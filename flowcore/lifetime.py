"""Worker processes that never outlive the process that started them.

A worker calls `die_with_parent(parent_pid)` first thing (a pool's initializer): on Linux the
kernel then sends it SIGKILL the moment its parent dies, however the parent died (kill -9
included), so no orphan goes on extracting, training or writing into a folder that a rerun is
already redoing. Elsewhere the worker watches its parent from a daemon thread instead.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
import time

PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>
WATCH_SECONDS = 1.0  # polling period of the fallback watcher (s)


def die_with_parent(parent_pid: int) -> None:
    """End this process when `parent_pid` (the process that started it) dies."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) == 0:
            if os.getppid() != parent_pid:  # the parent died before the call: too late to be told
                os._exit(1)
            return
    threading.Thread(target=_watch, args=(parent_pid,), daemon=True, name="parent-watch").start()


def _watch(parent_pid: int) -> None:
    while os.getppid() == parent_pid:
        time.sleep(WATCH_SECONDS)
    os._exit(1)
