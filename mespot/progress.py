"""How progress is drawn on a terminal (rich bars on stderr): the displays the commands pass to
the library, which reports through the protocol of flowcore.progress."""

from __future__ import annotations

import time


class RichProgress:
    """A bar per running video (frames/s shown) and one overall bar, on stderr."""

    def __init__(self, enabled: bool = True):
        from rich.console import Console
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                                   TimeElapsedColumn)

        self.console = Console(stderr=True)
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

    def update(self, video_id: str, phase: str, done: int, total: int) -> None:
        key = f"{video_id}:{phase}"
        if phase == "done" or video_id in self.finished:
            return  # late messages of a finished video
        now = time.perf_counter()
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
        for key in [k for k in self.tasks if k.startswith(result.video_id + ":")]:
            self.progress.remove_task(self.tasks.pop(key))
        self.progress.advance(self.overall)

    def note(self, text: str) -> None:
        """One line above the bars (e.g. the Ray cluster's size)."""
        self.progress.console.print(text)

    def close(self) -> None:
        self.progress.stop()


class RichTraining:
    """A LOSO run on a terminal: its log lines, and a bar per fold in training (epochs, loss),
    on stderr; implements flowcore.progress.TrainingProgress."""

    def __init__(self):
        from rich.console import Console

        self.console = Console(stderr=True)
        self.bar = None
        self.rows: dict[str, int] = {}  # key (a fold's subject) -> row
        self.epochs, self.n_folds = 0, 0

    def start(self, n_folds: int, epochs: int) -> None:
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                                   TimeElapsedColumn)

        self.n_folds, self.epochs = n_folds, epochs
        self.bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                            TextColumn("loss {task.fields[loss]}"), TimeElapsedColumn(),
                            console=self.console, transient=True)
        self.bar.start()

    def line(self, text: str) -> None:
        self.console.print(text, markup=False, highlight=False)

    def start_fold(self, label: str, k: int, key: str) -> None:
        """A new row for fold k (replacing the row of `key`: a fold's inner model, then itself)."""
        if self.bar is not None:
            if key in self.rows:
                self.bar.remove_task(self.rows[key])
            self.rows[key] = self.bar.add_task(f"fold {k + 1}/{self.n_folds} {label}",
                                               total=self.epochs, loss="-")

    def epoch(self, done: int, loss: float, key: str) -> None:
        if self.bar is not None and key in self.rows:
            self.bar.update(self.rows[key], completed=done, loss=f"{loss:.4f}")

    def end(self, key: str) -> None:
        if self.bar is not None and key in self.rows:
            self.bar.remove_task(self.rows.pop(key))

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None
