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
