"""Calibrated proposals: per fold, the apex threshold, the number kept after NMS and a minimum
score of each type, chosen on the fold's inner-validation subjects (never its test subject).

AUW-GCN's proposal rules (spotting/proposals.py) use fixed numbers: apex probability > 0.5,
K = 5 proposals kept per video and type, no score floor. Whether 0.5 suits a network depends on
its training (label smoothing and the focal terms shift its probabilities), and K = 5 proposals
per video for at most a few true expressions sets the precision. `mespot evaluate --calibrate`
chooses them per fold: the fold's inner model (`mespot train --inner-val K`, trained without
the K inner-validation subjects) spots those subjects at the epoch the selection uses, and the
combination of one (threshold, K, floor) per type with the best overall F1 on them (pooled
counts of the evaluation's rule, MEGC by default) is then applied to the fold's main model on
its test subject.

Search: for each apex threshold the candidates and NMS are computed once with the largest K;
keeping K proposals above a score floor then keeps a prefix of that list (NMS is greedy in score
order), and greedy matching in score order gives the true positives of every prefix at once, so
the whole grid costs one matching per (video, type, threshold) (for the reference's per-truth
counting, whose answer for a prefix is not a prefix of its answer, one per prefix). Ties go to
the earliest grid point; the grids start at the reference's values, which therefore win every
tie.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from statistics import median_low

import numpy as np
import pandas as pd

from spotting.proposals import TYPES, ProposalParams, candidates, nms

THRESHOLDS = (0.5, 0.4, 0.6, 0.3, 0.7, 0.2, 0.8)
TOP_K = (5, 1, 2, 3, 4, 6, 8, 10)  # 5: the reference's (the MaE preset's value is put first)
MIN_SCORES = (0.0, 0.02, 0.05, 0.1, 0.2, 0.3)


@dataclass(frozen=True)
class Calibrated:
    """Proposal rules per type: `params[t]` (apex threshold, K) and `min_score[t]`, t in TYPES."""

    params: tuple[ProposalParams, ProposalParams]
    min_score: tuple[float, float] = (0.0, 0.0)

    def spot(self, logits: np.ndarray) -> pd.DataFrame:
        """Like proposals.spot_video: kept proposals of both types (rows), best first per type."""
        parts = []
        for t, kind in enumerate(TYPES):
            p = self.params[t]
            kept = nms(candidates(logits, kind, p), p.nms_iou, p.top_k(kind))
            parts.append(kept[kept["score"] >= self.min_score[t]])
        return pd.concat(parts, ignore_index=True)

    @classmethod
    def from_json(cls, base: ProposalParams, rules: dict) -> "Calibrated":
        """The rules `to_json` wrote, on the ranges and arithmetic of `base`."""
        params, floors = [], []
        for kind in TYPES:
            chosen = rules[kind]
            field = "me_top_k" if kind == "me" else "mae_top_k"
            params.append(dataclasses.replace(base, apex_threshold=float(chosen["apex_threshold"]),
                                              **{field: int(chosen["top_k"])}))
            floors.append(float(chosen["min_score"]))
        return cls((params[0], params[1]), (floors[0], floors[1]))

    @classmethod
    def combined(cls, folds: list["Calibrated"]) -> "Calibrated":
        """The rules of several folds' models spotting together (their logits averaged): per
        type, the lower median of the folds' apex thresholds, of their K and of their score
        floors, each taken on its own (values of the folds' own grids; for one fold, its rules)."""
        params, floors = [], []
        for t, kind in enumerate(TYPES):
            field = "me_top_k" if kind == "me" else "mae_top_k"
            chosen = [f.params[t] for f in folds]
            params.append(dataclasses.replace(
                chosen[0], apex_threshold=median_low([p.apex_threshold for p in chosen]),
                **{field: median_low([p.top_k(kind) for p in chosen])}))
            floors.append(median_low([f.min_score[t] for f in folds]))
        return cls((params[0], params[1]), (floors[0], floors[1]))

    def to_json(self) -> dict:
        return {
            kind: {
                "apex_threshold": self.params[t].apex_threshold,
                "top_k": self.params[t].top_k(kind),
                "min_score": self.min_score[t],
            }
            for t, kind in enumerate(TYPES)
        }


def _grid(base: ProposalParams, kind: str) -> tuple[list[int], list[float]]:
    top_k = [base.top_k(kind)] + [k for k in TOP_K if k != base.top_k(kind)]
    return top_k, list(MIN_SCORES)


def _prefix_tp(kept: pd.DataFrame, video: str, true_positives, prefix_stable: bool) -> np.ndarray:
    """(len(kept) + 1,) the true positives among the first n proposals of `kept`, n = 0..len:
    a cumulative sum where the rule's answer for a prefix is the prefix of its answer, else
    the rule asked again for each prefix."""
    if prefix_stable:
        is_tp = np.asarray(true_positives(kept, video), dtype=float)
        return np.concatenate([[0.0], np.cumsum(is_tp)])
    return np.array([0.0] + [float(np.sum(true_positives(kept.iloc[:n], video)))
                             for n in range(1, len(kept) + 1)])


def _counts(
    per_video: dict[str, np.ndarray], base: ProposalParams, kind: str, true_positives,
    prefix_stable: bool = True,
) -> np.ndarray:
    """(thresholds, top_k, min_scores, 2) summed (TP, proposals) of one type over the videos."""
    top_k, floors = _grid(base, kind)
    out = np.zeros((len(THRESHOLDS), len(top_k), len(floors), 2))
    widest = max(top_k)
    for i, threshold in enumerate(THRESHOLDS):
        params = dataclasses.replace(base, apex_threshold=threshold)
        for video, logits in per_video.items():
            kept = nms(candidates(logits, kind, params), params.nms_iou, widest)
            if kept.empty:
                continue
            cum_tp = _prefix_tp(kept, video, true_positives, prefix_stable)  # TP per prefix
            scores = kept["score"].to_numpy()
            for k, keep in enumerate(top_k):
                for f, floor in enumerate(floors):
                    n = min(keep, int((scores >= floor).sum()))
                    out[i, k, f] += (cum_tp[n], n)
    return out


def calibrate(
    per_video: dict[str, np.ndarray], n_truths: int, base: ProposalParams, true_positives,
    prefix_stable: bool = True,
) -> tuple[Calibrated, float]:
    """(rules with the best overall F1 on these videos, that F1).

    `per_video`: {video: (N, 10) logits} of the inner model on the inner-validation subjects;
    `n_truths`: their number of ground truths (both types); `true_positives(found, video)`:
    which proposals of `found` (one type of one video, as `nms` returns them, best first; rows)
    are true positives under the evaluation's rule, (len(found),) bool. `prefix_stable`: the
    answer for a prefix of `found` is the prefix of the answer (greedy one-to-one matching in
    score order, per-proposal counting; spotting.metrics.MatchRule.prefix_stable); otherwise
    each prefix is counted on its own (per-truth counting: a truth's best proposal may lie
    beyond the prefix)."""
    me, mae = (_counts(per_video, base, kind, true_positives, prefix_stable).reshape(-1, 2)
               for kind in TYPES)
    tp = me[:, None, 0] + mae[None, :, 0]
    n = me[:, None, 1] + mae[None, :, 1]
    f1 = np.where(n + n_truths > 0, 2 * tp / np.maximum(n + n_truths, 1), 0.0)
    best = int(np.argmax(f1))  # first maximum: the earliest grid point of ME, then of MaE
    chosen = []
    for flat, kind in zip(np.unravel_index(best, f1.shape), TYPES):
        top_k, floors = _grid(base, kind)
        i, k, f = np.unravel_index(flat, (len(THRESHOLDS), len(top_k), len(floors)))
        field = "me_top_k" if kind == "me" else "mae_top_k"
        chosen.append(
            (
                dataclasses.replace(base, apex_threshold=THRESHOLDS[i], **{field: top_k[k]}),
                floors[f],
            )
        )
    return Calibrated((chosen[0][0], chosen[1][0]), (chosen[0][1], chosen[1][1])), float(
        f1.flat[best]
    )
