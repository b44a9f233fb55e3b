"""Score -> expected precision of a spotted interval, fitted on held-out predictions.

An interval's score (spotting/proposals.py) is a product of three probabilities; it ranks
intervals but says nothing of how often one of a given score is right. The map says that: per
expression type, a monotone (non-decreasing) step function from score to precision, fitted by
isotonic regression (pool adjacent violators) on held-out intervals labelled TP (1) or FP (0)
by the matching rule. Each step ("block") keeps its counts: the intervals it pools (`n`), how
many were right (`tp`) and its score range (`low`, `high`). Its precision is tp / n pulled
toward the type's share of right intervals p0 as PRIOR_STRENGTH intervals of it would,
(tp + 2 p0) / (n + 2): a block of 3 intervals all wrong says 0.27 when p0 is 0.4, not 0, since
3 intervals cannot show that none will ever be right.

Held out means: the intervals a fold's model spotted on its own test subject (LOSO), which no
model of that fold saw. For a fold's own test subject the map is fitted on the other folds'
test intervals only (`leave_one_out`), so no interval of the subject being spotted enters the
map applied to it; for a new subject (every fold together) on all of them.

Convention: scores in [0, 1]; a score below the lowest block gets the lowest block's
precision, one between two blocks the lower block's, one above the highest the highest's.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from spotting.channels import TYPES
from spotting.run_folder import read_json

DEFAULT_MIN_PRECISION = 0.5  # predict's default threshold: docs/quality.md says why
PRIOR_STRENGTH = 2.0  # pseudo-intervals pulling a block's precision to its type's overall share
RELIABILITY_EDGES = np.linspace(0.0, 1.0, 6)  # bins of predicted precision for the plot


@dataclass(frozen=True)
class PrecisionMap:
    """A monotone step function score -> precision with its counts (see the module docstring).
    `blocks`: each a dict low, high, n, tp, precision, sorted by score; empty: no data."""

    blocks: tuple[dict, ...] = ()

    @property
    def n(self) -> int:
        return sum(b["n"] for b in self.blocks)

    def at(self, scores) -> np.ndarray:
        """(M,) float64 expected precision of `scores`; NaN where the map has no data."""
        scores = np.asarray(scores, dtype=np.float64)
        if not self.blocks:
            return np.full(scores.shape, np.nan)
        lows = np.array([b["low"] for b in self.blocks])
        values = np.array([b["precision"] for b in self.blocks])
        return values[np.clip(np.searchsorted(lows, scores, side="right") - 1, 0, None)]

    def support(self, scores) -> np.ndarray:
        """(M,) int: how many held-out intervals the block of each score pools (0: no data)."""
        scores = np.asarray(scores, dtype=np.float64)
        if not self.blocks:
            return np.zeros(scores.shape, dtype=int)
        lows = np.array([b["low"] for b in self.blocks])
        counts = np.array([b["n"] for b in self.blocks])
        return counts[np.clip(np.searchsorted(lows, scores, side="right") - 1, 0, None)]

    def to_json(self) -> list[dict]:
        return [dict(b) for b in self.blocks]

    @classmethod
    def from_json(cls, blocks: list[dict]) -> "PrecisionMap":
        return cls(tuple({"low": float(b["low"]), "high": float(b["high"]), "n": int(b["n"]),
                          "tp": int(b["tp"]), "precision": float(b["precision"])}
                         for b in blocks))


def fit_isotonic(scores, hits, prior: float = PRIOR_STRENGTH) -> PrecisionMap:
    """The non-decreasing step function of `scores` (M,) that fits `hits` (M,) bool: pool
    adjacent violators (and equal neighbours) over the distinct scores, ascending; then each
    block's precision pulled toward the share of hits over all M, p0, as `prior` intervals of
    it would: (tp + prior p0) / (n + prior), blocks merged again wherever that breaks the
    order."""
    scores = np.asarray(scores, dtype=np.float64)
    hits = np.asarray(hits, dtype=bool)
    if len(scores) != len(hits):
        raise ValueError(f"scores and hits differ in length: {len(scores)} and {len(hits)}")
    groups = [[v, v, int((scores == v).sum()), int(hits[scores == v].sum())]
              for v in np.unique(scores)]  # [low, high, n, tp]
    blocks = _pooled(groups, lambda n, tp: tp / n)
    p0 = hits.mean() if len(hits) else 0.0
    shrunk = _pooled(blocks, lambda n, tp: (tp + prior * p0) / (n + prior))
    return PrecisionMap(tuple({"low": float(lo), "high": float(hi), "n": n, "tp": tp,
                               "precision": float((tp + prior * p0) / (n + prior))}
                              for lo, hi, n, tp in shrunk))


def _pooled(blocks: list[list], value) -> list[list]:
    """Pool adjacent violators: `blocks` [low, high, n, tp] ascending by score, merged while a
    block's value(n, tp) is not below the next one's (equal ones pooled too)."""
    out: list[list] = []
    for block in blocks:
        out.append(list(block))
        while len(out) > 1 and value(*out[-2][2:]) >= value(*out[-1][2:]):
            low, _, n, tp = out.pop(-2)
            out[-1] = [low, out[-1][1], n + out[-1][2], tp + out[-1][3]]
    return out


def fit_by_type(intervals: pd.DataFrame) -> dict[str, PrecisionMap]:
    """One map per expression type of `intervals` (columns type, score, hit)."""
    return {kind: fit_isotonic(part["score"], part["hit"])
            for kind in TYPES
            for part in [intervals[intervals["type"] == kind]]}


def leave_one_out(intervals: pd.DataFrame) -> dict[str, dict[str, PrecisionMap]]:
    """Per subject, the maps fitted on the intervals of every other subject (columns subject,
    type, score, hit): what a fold applies to its own test subject."""
    return {subject: fit_by_type(intervals[intervals["subject"] != subject])
            for subject in sorted(intervals["subject"].unique())}


def with_precision(intervals: pd.DataFrame, maps: dict[str, PrecisionMap]) -> pd.DataFrame:
    """`intervals` (columns type, score) with `precision` (expected, NaN without a map) and
    `precision_n` (held-out intervals its block pools) beside the score."""
    precision = np.full(len(intervals), np.nan)
    support = np.zeros(len(intervals), dtype=int)
    kinds = intervals["type"].to_numpy()
    scores = intervals["score"].to_numpy(dtype=np.float64)
    for kind, found in maps.items():
        at = kinds == kind
        precision[at], support[at] = found.at(scores[at]), found.support(scores[at])
    out = intervals.copy()
    column = list(out.columns).index("score") + 1 if "score" in out else len(out.columns)
    out.insert(column, "precision", precision)
    out.insert(column + 1, "precision_n", support)
    return out


def kept(intervals: pd.DataFrame, min_precision: float) -> pd.Series:
    """Which intervals reach `min_precision` (column precision): 0 keeps every one, the MEGC
    listing (NaN precisions, without a map, included); above 0 a NaN precision is not kept."""
    if min_precision <= 0:
        return pd.Series(True, index=intervals.index)
    return intervals["precision"] >= min_precision


def reliability(intervals: pd.DataFrame) -> pd.DataFrame:
    """Predicted against observed precision of held-out intervals (columns type, precision,
    hit), in bins of predicted precision (RELIABILITY_EDGES): type, low, high, n, predicted
    (mean), observed (TP share)."""
    rows = []
    known = intervals[intervals["precision"].notna()]
    for kind in (*TYPES, "overall"):
        part = known if kind == "overall" else known[known["type"] == kind]
        which = np.clip(np.digitize(part["precision"], RELIABILITY_EDGES[1:-1]), 0,
                        len(RELIABILITY_EDGES) - 2)
        for b in range(len(RELIABILITY_EDGES) - 1):
            inside = part[which == b]
            if len(inside):
                rows.append({"type": kind, "low": RELIABILITY_EDGES[b],
                             "high": RELIABILITY_EDGES[b + 1], "n": len(inside),
                             "predicted": float(inside["precision"].mean()),
                             "observed": float(inside["hit"].mean())})
    return pd.DataFrame(rows, columns=["type", "low", "high", "n", "predicted", "observed"])


def held_out(found: pd.DataFrame, matches: pd.DataFrame,
             subjects: list[str]) -> tuple[pd.DataFrame, dict]:
    """(`found` with hit, precision and precision_n columns, the record's maps) for the test
    intervals `found` (rows with subject, type, score; unique index) of LOSO folds `subjects`,
    matched in `matches` (column proposal: `found`'s index label of a TP). Each subject's
    intervals get the map fitted on the other subjects' (leave_one_out); the record holds
    those and the map of them all (for subjects no fold saw)."""
    tp = matches.loc[matches["outcome"] == "TP", "proposal"].to_numpy()
    labelled = found.assign(hit=found.index.isin(tp))
    folds = {s: fit_by_type(labelled[labelled["subject"] != s]) for s in subjects}
    parts = [with_precision(labelled[labelled["subject"] == s], folds[s]) for s in subjects]
    parts = [p for p in parts if len(p)] or [with_precision(labelled.iloc[:0], {})]
    shown = pd.concat(parts).reindex(labelled.index)
    maps = {"all": _maps_json(fit_by_type(labelled)),
            "folds": {s: _maps_json(m) for s, m in folds.items()}}
    return shown, maps


def _maps_json(maps: dict[str, PrecisionMap]) -> dict:
    return {kind: m.to_json() for kind, m in maps.items()}


def maps_from_json(record: dict, fold: str | None = None) -> dict[str, PrecisionMap] | None:
    """The maps of a precision record to apply: `fold`'s (its test subject's, fitted without
    it) or, for every fold together, those of all held-out intervals; None if it has none."""
    maps = record["maps"]["all"] if fold is None else record["maps"]["folds"].get(fold)
    if maps is None:
        return None
    return {kind: PrecisionMap.from_json(blocks) for kind, blocks in maps.items()}


def write_precision(path, key: dict, maps: dict, table: pd.DataFrame) -> None:
    """The run folder's precision record (RunFolder.precision_path), written whole or not at
    all: what the maps depend on (`key`), the maps, and the reliability `table`."""
    record = {"key": key,
              "method": "isotonic regression (pool adjacent violators) of TP=1 / FP=0 on the "
                        "score, per type, on held-out LOSO test intervals; blocks: low, high "
                        "score, n intervals, tp right, precision = tp / n",
              "folds_note": "folds.<subject>: fitted without that subject's intervals (applied "
                            "to its own test videos); all: every subject's (for new subjects)",
              "default_min_precision": DEFAULT_MIN_PRECISION,
              "maps": maps, "reliability": table.to_dict(orient="records")}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(record, indent=1))
    tmp.replace(path)


def read_precision(path) -> dict | None:
    """A precision record, None when there is none; UserError when it is not readable."""
    return read_json(Path(path), "run `mespot evaluate` again")
