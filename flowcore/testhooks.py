"""A test hook, off unless the environment variable MESPOT_TEST_GATES names a folder: named
points in long work (a video being extracted, a training epoch, a synthetic video, a service
job) where a test can hold the work, so that a test which interrupts it (Ctrl-C, kill -9, a
cancel) knows the work cannot finish first. Never set the variable outside tests.

The folder's files (the test suite's side is tests/waiting.py):
    PATTERN.hold    the points whose names match PATTERN (fnmatch: `extract-*`) are held
    POINT.waiting   written by a process held at POINT: its process id ('/' in POINT: '_')
    POINT.pass      lets POINT through once (the process passing removes it)
The points: `extract-VIDEO` (flowcore.extract: the video's group begun, nothing computed
written), `train-SUBJECT[-inner]-epoch-N` (spotting.fold: epoch N saved, resume point
included), `synth-VIDEO` (mespot.synth: the video's first frame written), `job-ID`
(mespot.service.runner: the job claimed, its runner started, nothing done), `end-job-ID` (the
job's work over, its final state not yet written).
A held process waits until its hold is removed or a pass comes, at most HOLD_SECONDS (then
TimeoutError: a test that forgot a gate must not leave work hanging for ever).
"""

from __future__ import annotations

import fnmatch
import os
import time
from pathlib import Path

ENVIRONMENT = "MESPOT_TEST_GATES"
HOLD_SECONDS = 600.0  # the longest a point is held
POLL_SECONDS = 0.02  # how often a held process looks again


def gate(point: str) -> None:
    """Test hook: wait here while the test suite holds `point` (see the module docstring);
    returns at once when MESPOT_TEST_GATES is not set."""
    folder = os.environ.get(ENVIRONMENT)
    if not folder:
        return
    folder = Path(folder)
    if not _held(folder, point):
        return
    name = point.replace(os.sep, "_")  # a file name, whatever the point's name holds
    waiting, ticket = folder / f"{name}.waiting", folder / f"{name}.pass"
    written = folder / f".{name}.{os.getpid()}"
    written.write_text(str(os.getpid()))
    os.replace(written, waiting)  # whole, never half-written; over a killed process's own
    deadline = time.monotonic() + HOLD_SECONDS
    while _held(folder, point):
        try:
            ticket.unlink()
            break  # let through once
        except FileNotFoundError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"test gate {point!r} held for {HOLD_SECONDS:g} s ({folder})")
        time.sleep(POLL_SECONDS)
    waiting.unlink(missing_ok=True)


def _held(folder: Path, point: str) -> bool:
    return any(fnmatch.fnmatchcase(point, hold.name[: -len(".hold")])
               for hold in folder.glob("*.hold"))
