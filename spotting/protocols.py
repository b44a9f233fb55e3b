"""Evaluation protocols: which folds a run trains, and each fold's test and training units.

- `loso`: one fold per subject (over the union of every dataset's subjects in a pooled run),
  trained on every other subject; the fold is named for its subject.
- `cross-dataset`: one model trained on the subjects of every dataset but the `test_datasets`
  and tested on every subject of those (MEGC since 2022: train on CAS(ME)^2 and SAMM-LV, test on
  unseen data); the fold is named `cross-<names>`.
- `split`: a seeded random split of the videos (the reference's "cross" split: 24 % of the
  videos for testing, seed 42); one fold `split`, its units are videos, so a subject may have
  videos on both sides, as in the reference. The split is recorded in the fold's fold.json
  (`test_units`, and `train_subjects`: the training units) and in config.json (`split`).

The prior, the feature normalisation and the windows of a fold are always taken from its
training units only. A fold's units are subjects (`by` 'subject') or videos ('video').
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from flowcore.errors import UserError
from spotting.datasets import dataset_of

PROTOCOLS = ("loso", "cross-dataset", "split")


@dataclass(frozen=True)
class SplitParams:
    """The `split` protocol's draw: the share of videos tested and the seed (the reference's)."""

    test_fraction: float = 0.24
    seed: int = 42

    def __post_init__(self):
        if not (math.isfinite(self.test_fraction) and 0 < self.test_fraction < 1):
            raise UserError(f"split test_fraction must be in (0, 1), got {self.test_fraction}")


@dataclass(frozen=True)
class FoldUnits:
    """One fold: its name (its folder), test units, training units and what a unit is."""

    name: str
    test: tuple[str, ...]
    train: tuple[str, ...]
    by: str = "subject"  # or "video"


def fold_plan(protocol: str, subjects: dict[str, str], test_datasets=(),
              split: SplitParams = SplitParams()) -> list[FoldUnits]:
    """The folds of `protocol` over `subjects` ({video id: subject}, every video of the run)."""
    names = sorted(set(subjects.values()))
    if protocol == "loso":
        return [FoldUnits(s, (s,), tuple(o for o in names if o != s)) for s in names]
    if protocol == "cross-dataset":
        return [_cross(names, tuple(test_datasets))]
    if protocol == "split":
        return [_split(sorted(subjects), split)]
    raise UserError(f"protocol {protocol!r} is not supported (one of {', '.join(PROTOCOLS)})")


def _cross(subjects: list[str], tests: tuple[str, ...]) -> FoldUnits:
    datasets = sorted({dataset_of(s) for s in subjects})
    if not tests:
        raise UserError("--protocol cross-dataset needs the dataset(s) to test on: --test-on NAME")
    unknown = [t for t in tests if t not in datasets]
    if unknown or "_" not in "".join(subjects[:1]):
        raise UserError(f"--test-on {', '.join(unknown or tests)}: not a dataset of this run "
                        f"(its datasets: {', '.join(datasets)}; name stores --store NAME=PATH)")
    test = tuple(s for s in subjects if dataset_of(s) in tests)
    train = tuple(s for s in subjects if dataset_of(s) not in tests)
    if not train:
        raise UserError(f"--test-on {', '.join(tests)} leaves no dataset to train on")
    return FoldUnits("cross-" + "-".join(sorted(tests)), test, train)


def _split(videos: list[str], split: SplitParams) -> FoldUnits:
    n_test = int(round(split.test_fraction * len(videos)))
    if not 0 < n_test < len(videos):
        raise UserError(f"--protocol split: {len(videos)} video(s) cannot be split "
                        f"{split.test_fraction:g} / {1 - split.test_fraction:g}")
    rng = np.random.default_rng(split.seed)
    test = set(rng.choice(videos, size=n_test, replace=False).tolist())
    return FoldUnits("split", tuple(v for v in videos if v in test),
                     tuple(v for v in videos if v not in test), "video")


def run_plan(config, prep) -> list[FoldUnits]:
    """The folds of a run (a RunConfig or its config.json) over its prepared data."""
    get = config.get if isinstance(config, dict) else (lambda k, d=None: getattr(config, k, d))
    split = get("split") or SplitParams()
    split = SplitParams(**split) if isinstance(split, dict) else split
    subjects = {vid: v.subject for vid, v in prep.features.videos.items()}
    return fold_plan(get("protocol", "loso"), subjects, tuple(get("test_datasets") or ()), split)


def fold_of(plan: list[FoldUnits], name: str) -> FoldUnits:
    """The fold `name` of `plan`; for "" (pretraining: no test), every unit of the plan trains."""
    for fold in plan:
        if fold.name == name:
            return fold
    if name == "":
        units = sorted({u for f in plan for u in f.test + f.train})
        return FoldUnits("", (), tuple(units), plan[0].by if plan else "subject")
    raise UserError(f"no fold {name!r} in this run (its folds: "
                    f"{', '.join(f.name for f in plan)})")


# ---- selecting a fold's data --------------------------------------------------------------------


def video_units(ws, units, by: str) -> np.ndarray:
    """(V,) bool over a WindowSet's videos: those of `units` (subjects or video ids)."""
    wanted = set(units)
    keys = ws.video_ids if by == "video" else ws.subjects
    return np.array([k in wanted for k in keys], dtype=bool)


def window_units(ws, units, by: str) -> np.ndarray:
    """(W,) bool: the windows of the videos of `units`."""
    per_video = video_units(ws, units, by)
    return per_video[ws.video] if len(ws) else np.zeros(0, bool)


def table_units(frame, units, by: str):
    """The annotation rows of `units`."""
    return frame[frame["video_id" if by == "video" else "subject"].isin(list(units))]


def video_sums(prep, videos) -> dict:
    """{video: (count, sum (2,), sum of squares (2,))} of raw features (valid rows), as
    Prepared.sums holds per subject: the normalisation of a fold whose units are videos."""
    out = {}
    for vid in videos:
        v = prep.features.videos[vid]
        x = v.mdmo[v.row_valid].reshape(-1, 2).astype(np.float64)
        out[vid] = (x.shape[0], x.sum(0), (x * x).sum(0))
    return out


def tested_truths(truths, plan: list[FoldUnits]):
    """The truths (rows with video and subject) that the folds of `plan` test: every truth under
    LOSO, the test dataset's under cross-dataset, the test videos' under split."""
    subjects = {u for f in plan if f.by == "subject" for u in f.test}
    videos = {u for f in plan if f.by == "video" for u in f.test}
    return truths[truths["subject"].isin(subjects) | truths["video"].isin(videos)]
