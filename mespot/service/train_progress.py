"""A train job's progress: its live loss curves (losses.jsonl, read by mespot.service.runs) and,
for a run trained on a Ray cluster, its folds counted as they complete."""

from __future__ import annotations

import json
import threading
from pathlib import Path

LOSSES = "losses.jsonl"  # in a train job's folder: one line per epoch of a fold, as it ends


class LossRecorder:
    """flowcore's training progress protocol kept as JSON lines {"fold", "epoch", "loss"}: the
    live loss curves of a run in training (mespot.service.runs reads them)."""

    def __init__(self, path: Path):
        self.path = path
        self.labels: dict[str, str] = {}
        self.n_folds, self.epochs = 0, 0  # the run plan's, once training starts

    def start(self, n_folds: int, epochs: int) -> None:
        self.n_folds, self.epochs = n_folds, epochs

    def line(self, text: str) -> None:
        pass

    def start_fold(self, label: str, k: int, key: str) -> None:
        self.labels[key] = label

    def epoch(self, done: int, loss: float, key: str) -> None:
        with open(self.path, "a") as handle:
            handle.write(json.dumps({"fold": key, "label": self.labels.get(key, key),
                                     "epoch": done, "loss": loss}) + "\n")

    def end(self, key: str) -> None:
        pass

    def close(self) -> None:
        pass


def complete_folds(run: Path) -> list[str]:
    """The folds of run folder `run` trained to the end (their fold.json says complete)."""
    done = []
    for meta in sorted(run.glob("folds/*/fold.json")):
        if json.loads(meta.read_text()).get("status") == "complete":
            done.append(meta.parent.name)
    return done


class FoldPoller:
    """Progress of a run trained elsewhere (Ray): its complete folds, every 2 s, of the folds
    and epochs the recorder heard of at the start."""

    def __init__(self, run: Path, recorder: LossRecorder, ctx):  # ctx: a tasks.Context
        self._stop = threading.Event()

        def loop() -> None:
            while not self._stop.wait(2.0):
                done, epochs, n_folds = len(complete_folds(run)), recorder.epochs, recorder.n_folds
                if n_folds:
                    ctx.progress(done * epochs, float(n_folds * epochs), "epochs",
                                 f"{done} of {n_folds} folds complete")

        threading.Thread(target=loop, daemon=True).start()

    def stop(self) -> None:
        self._stop.set()
