"""Progress as plain lines when the output is not a terminal (a log file, a pipe, a batch job).

Rich's bars draw nothing there until the work ends, so a log of a long `mespot extract` or
`mespot train` would show nothing for minutes. `Heartbeat` prints one line saying where the work
is at least every PROGRESS_SECONDS (30 s; the environment variable MESPOT_PROGRESS_SECONDS sets
another period) from a daemon thread, whatever the work is doing meanwhile.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from typing import Callable

PROGRESS_SECONDS = 30.0  # s between two progress lines when the output is not a terminal
ENVIRONMENT = "MESPOT_PROGRESS_SECONDS"


def progress_period() -> float:
    """Seconds between progress lines: MESPOT_PROGRESS_SECONDS if set (> 0), else 30."""
    try:
        value = float(os.environ.get(ENVIRONMENT, PROGRESS_SECONDS))
    except ValueError:
        return PROGRESS_SECONDS
    return value if value > 0 else PROGRESS_SECONDS


class Heartbeat:
    """Print `describe()` as one time-stamped line on `stream` every `period` seconds between
    `start()` and `stop()` (a context manager too)."""

    def __init__(self, describe: Callable[[], str], period: float | None = None, stream=None):
        self.describe, self.period = describe, period or progress_period()
        self.stream = stream or sys.stderr
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.started = time.monotonic()

    def start(self) -> "Heartbeat":
        self._thread = threading.Thread(target=self._run, daemon=True, name="progress-lines")
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> "Heartbeat":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _run(self) -> None:
        while not self._stop.wait(self.period):
            try:
                text = self.describe()
            except Exception as err:  # a status read while it changes: skip this beat
                text = f"(progress unavailable: {type(err).__name__})"
            elapsed = int(time.monotonic() - self.started)
            print(f"{time.strftime('%H:%M:%S')} [{elapsed // 60}:{elapsed % 60:02d}] {text}",
                  file=self.stream, flush=True)
