"""Waiting in tests without racing: `wait_until` (a condition, a bounded deadline, a message
that says what was awaited), and `Gates`, the test side of the hook flowcore.testhooks, which
holds long work at named points (a video, an epoch, a job) until the test lets it through.

A test that interrupts work (Ctrl-C, kill -9, a cancel) holds the work first, so the work cannot
finish before the interruption whatever the machine's load; the deadlines are generous bounds on
waits, never asserted as durations.
"""

from __future__ import annotations

import fnmatch
import os
import time
from pathlib import Path

import pytest

from flowcore.testhooks import ENVIRONMENT

DEADLINE = 300.0  # s: the longest any test waits for one thing


def wait_until(condition, what: str, timeout: float = DEADLINE, process=None,
               every: float = 0.05):
    """Poll `condition()` until it returns something true, and return that. Fails the test,
    naming `what`, after `timeout` s, or as soon as `process` (a Popen) has ended."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if process is not None and process.poll() is not None:
            err = process.stderr.read()[-2000:] if process.stderr else ""
            pytest.fail(f"the command ended (code {process.returncode}) before {what}: {err}")
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:g} s waiting until {what}")
        time.sleep(every)


def finish(process, what: str, timeout: float = DEADLINE) -> tuple[str, str]:
    """`process.communicate()` within `timeout` s: its (stdout, stderr). When it does not end
    in time, fail the test naming `what`, with what was still there: the main process's state,
    the living processes of its group (a child holding its output pipes keeps communicate
    waiting) and, where Python's faulthandler is on (`PYTHONFAULTHANDLER` in the environment
    the test gave it, see `diagnosable`), every thread's stack of each, dumped by SIGABRT."""
    import signal
    import subprocess

    try:
        return process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        main = _described(process.pid)  # 'Z ...': it ended, something else holds its pipes
        group = [(pid, _described(pid)) for pid in group_of(process.pid)]
        for pid, _ in group:
            os.kill(pid, signal.SIGABRT)  # faulthandler prints the stacks, then it dies
        out, err = process.communicate(timeout=60)
        pytest.fail(f"timed out after {timeout:g} s waiting until {what}; main process: {main}; "
                    f"its group: {group}; its last output: {out[-1500:]} {err[-6000:]}")


def diagnosable(environ: dict | None = None) -> dict:
    """`environ` (default: this process's) with Python's faulthandler on, so `finish` can show
    where a process that did not end was stuck."""
    return {**(environ if environ is not None else os.environ), "PYTHONFAULTHANDLER": "1"}


def group_of(pgid: int) -> list[int]:
    """Living (not zombie) processes of process group `pgid`, from /proc."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            found.append(int(stat.parent.name))
    return found


def _described(pid: int) -> str:
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()[:200]
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "gone"
    return f"{state} {command}"


def alive(pid: int) -> bool:
    """Whether process `pid` runs (a zombie, killed but not yet reaped, does not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


class Gates:
    """A folder of gates (flowcore.testhooks): `hold("extract-*")` holds every point whose name
    matches, `let_through(point)` lets one point through once, `open_all()` removes every hold.
    Work sees the folder through `environ()` (a subprocess's environment) or the variable."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)

    def environ(self, **more: str) -> dict:
        """This process's environment with the gates on (and `more` variables)."""
        return {**os.environ, ENVIRONMENT: str(self.folder), **more}

    def hold(self, pattern: str) -> None:
        (self.folder / f"{pattern}.hold").touch()

    def let_through(self, point: str) -> None:
        (self.folder / f"{point}.pass").touch()

    def open_all(self) -> None:
        """Remove every hold and pass: held work goes on, nothing is held any more."""
        for path in [*self.folder.glob("*.hold"), *self.folder.glob("*.pass")]:
            path.unlink(missing_ok=True)

    def waiting(self, pattern: str = "*") -> dict[str, int]:
        """The points matching `pattern` where a living process is held now: point -> pid."""
        held = {}
        for path in self.folder.glob("*.waiting"):
            point = path.name[: -len(".waiting")]
            try:
                pid = int(path.read_text())
            except (OSError, ValueError):
                continue
            if fnmatch.fnmatchcase(point, pattern) and alive(pid):
                held[point] = pid
        return held

    def arrival(self, pattern: str = "*", process=None, not_pids=(), what: str = "") -> tuple:
        """(point, pid) of a process held at a point matching `pattern` (not one of `not_pids`),
        once there is one."""
        def found():
            return next(((p, pid) for p, pid in sorted(self.waiting(pattern).items())
                         if pid not in not_pids), None)

        return wait_until(found, what or f"work is held at a gate {pattern!r}", process=process)
