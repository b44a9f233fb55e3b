"""The progress protocol: what long work tells a display, and nothing about how it is drawn.

The library reports through these methods; a display implements them: rich bars on a terminal
(mespot.progress), log lines, or the service's progress events. `None` wherever a display is
taken means silence. Both protocols are structural (typing.Protocol): any object with these
methods will do.
"""

from __future__ import annotations

from typing import Protocol


class ExtractionProgress(Protocol):
    """Progress of `flowcore.batch.run_extraction`: videos of a source into a store."""

    def start(self, todo) -> None:
        """Extraction of `todo` (VideoSpecs, the videos not complete yet) begins."""

    def update(self, video_id: str, phase: str, done: int, total: int) -> None:
        """`done` of `total` frames of a video's phase ("landmarks", "flow"; "done" at its end)."""

    def finish(self, result) -> None:
        """A video is over: its flowcore.extract.VideoResult (complete, failed, busy, skipped).
        An exception raised here stops the run: no further video starts, those begun finish."""

    def note(self, text: str) -> None:
        """One line worth showing above the bars (e.g. the Ray cluster's size)."""

    def close(self) -> None:
        """The run is over (also after an error or Ctrl-C)."""


class TrainingProgress(Protocol):
    """Progress of a LOSO run (spotting.loso.train_loso): its log lines and a row per fold in
    training. `key` names the row (the fold's subject)."""

    def start(self, n_folds: int, epochs: int) -> None:
        """Training of up to `n_folds` folds of `epochs` epochs each begins."""

    def line(self, text: str) -> None:
        """A line of the run's log worth showing (train.log gets every line anyway)."""

    def start_fold(self, label: str, k: int, key: str) -> None:
        """Fold number k (0-based; the inner model of a fold too) starts; `label` names it."""

    def epoch(self, done: int, loss: float, key: str) -> None:
        """The fold of row `key` finished epoch `done` with mean training loss `loss`."""

    def end(self, key: str) -> None:
        """The fold of row `key` is over."""

    def close(self) -> None:
        """The run is over (also after an error or Ctrl-C)."""
