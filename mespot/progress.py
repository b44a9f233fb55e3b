"""How progress is drawn (on stderr): the displays the commands pass to the library, which
reports through the protocol of flowcore.progress.

On a terminal: rich bars. When the output is not a terminal (a log file, a pipe, a batch job)
rich draws nothing until the work ends, so a log of a long `mespot extract` or `mespot train`
would show nothing for minutes: there a `Heartbeat` prints one line saying where the work is at
least every PROGRESS_SECONDS (30 s; the environment variable MESPOT_PROGRESS_SECONDS sets another
period) from a daemon thread, whatever the work is doing meanwhile.
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


class RichProgress:
    """A bar per running video (frames/s shown) and one overall bar, on stderr; progress lines
    instead when stderr is not a terminal. Implements flowcore.progress.ExtractionProgress."""

    def __init__(self, enabled: bool = True):
        from rich.console import Console
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                                   TimeElapsedColumn)

        self.console = Console(stderr=True)
        self.enabled = enabled
        self.heartbeat: Heartbeat | None = None
        self.todo, self.done = 0, 0
        self.phases: dict[str, str] = {}  # video -> "phase done/total" of the videos in progress
        self.progress = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), console=self.console,
            disable=not enabled, transient=False)
        self.tasks: dict[str, int] = {}
        self.frames = 0
        self.started = time.perf_counter()
        self._last_done: dict[str, int] = {}
        self.started_at: dict[str, float] = {}
        self.finished: set[str] = set()

    def start(self, todo) -> None:
        self.progress.start()
        self.overall = self.progress.add_task("all videos", total=len(todo), rate="")
        self.todo, self.done = len(todo), 0
        if self.enabled and not self.console.is_terminal:  # a log: plain lines instead of bars
            self.heartbeat = Heartbeat(self.status_line).start()

    def status_line(self) -> str:
        """Where the extraction is, in one line (for logs)."""
        running = "; ".join(f"{video} {phase}" for video, phase in list(self.phases.items())[:4])
        rate = self.frames / max(time.perf_counter() - self.started, 1e-9)
        return (f"extract: {self.done}/{self.todo} videos done, flow {rate:.1f} frames/s"
                + (f"; running: {running}" if running else ""))

    def update(self, video_id: str, phase: str, done: int, total: int) -> None:
        key = f"{video_id}:{phase}"
        if phase == "done" or video_id in self.finished:
            return  # late messages of a finished video
        now = time.perf_counter()
        self.phases[video_id] = f"{phase} {done}/{total}"
        if key not in self.tasks:
            self.tasks[key] = self.progress.add_task(f"{video_id} {phase}", total=total, rate="")
            self.started_at[key] = now
        if phase == "flow":
            self.frames += done - self._last_done.get(key, 0)
            self._last_done[key] = done
        rate = done / max(now - self.started_at[key], 1e-9)
        self.progress.update(self.tasks[key], completed=done, rate=f"{rate:.1f} frames/s")
        overall_rate = self.frames / max(now - self.started, 1e-9)
        self.progress.update(self.overall, rate=f"flow {overall_rate:.1f} frames/s")

    def finish(self, result) -> None:
        self.finished.add(result.video_id)
        self.phases.pop(result.video_id, None)
        self.done += 1
        for key in [k for k in self.tasks if k.startswith(result.video_id + ":")]:
            self.progress.remove_task(self.tasks.pop(key))
        self.progress.advance(self.overall)

    def note(self, text: str) -> None:
        """One line above the bars (e.g. the Ray cluster's size)."""
        self.progress.console.print(text)

    def close(self) -> None:
        if self.heartbeat is not None:
            self.heartbeat.stop()
            self.heartbeat = None
        self.progress.stop()


class RichTraining:
    """A LOSO run on a terminal: its log lines, and a bar per fold in training (epochs, loss),
    on stderr; progress lines too when stderr is not a terminal. Implements
    flowcore.progress.TrainingProgress."""

    def __init__(self):
        from rich.console import Console

        self.console = Console(stderr=True)
        self.bar = None
        self.rows: dict[str, int] = {}  # key (a fold's subject) -> row
        self.states: dict[str, list] = {}  # key -> [label, epochs done, loss] (for log lines)
        self.heartbeat: Heartbeat | None = None
        self.epochs, self.n_folds = 0, 0

    def status_line(self) -> str:
        """Where training is, in one line (for logs)."""
        rows = [f"{label} epoch {done}/{self.epochs} loss {loss}"
                for label, done, loss in list(self.states.values())]
        return "train: " + ("; ".join(rows) if rows else "preparing")

    def start(self, n_folds: int, epochs: int) -> None:
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                                   TimeElapsedColumn)

        self.n_folds, self.epochs = n_folds, epochs
        if not self.console.is_terminal:  # a log: plain lines instead of bars
            self.heartbeat = Heartbeat(self.status_line).start()
        self.bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                            TextColumn("loss {task.fields[loss]}"), TimeElapsedColumn(),
                            console=self.console, transient=True)
        self.bar.start()

    def line(self, text: str) -> None:
        self.console.print(text, markup=False, highlight=False)

    def start_fold(self, label: str, k: int, key: str) -> None:
        """A new row for fold k (replacing the row of `key`: a fold's inner model, then itself)."""
        self.states[key] = [f"fold {k + 1}/{self.n_folds} {label}", 0, "-"]
        if self.bar is not None:
            if key in self.rows:
                self.bar.remove_task(self.rows[key])
            self.rows[key] = self.bar.add_task(f"fold {k + 1}/{self.n_folds} {label}",
                                               total=self.epochs, loss="-")

    def epoch(self, done: int, loss: float, key: str) -> None:
        if key in self.states:
            self.states[key][1:] = [done, f"{loss:.4f}"]
        if self.bar is not None and key in self.rows:
            self.bar.update(self.rows[key], completed=done, loss=f"{loss:.4f}")

    def end(self, key: str) -> None:
        self.states.pop(key, None)
        if self.bar is not None and key in self.rows:
            self.bar.remove_task(self.rows.pop(key))

    def close(self) -> None:
        if self.heartbeat is not None:
            self.heartbeat.stop()
            self.heartbeat = None
        if self.bar is not None:
            self.bar.stop()
            self.bar = None
