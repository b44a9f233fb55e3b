"""Spotting metrics: match proposals to ground truth, count, and score (AUWGCN.md section 9).

Three rules (`--rule`), each with its interval scale (`MatchRule.scale`; the positions are
computed by the caller, spotting/evaluate.py) and its way of counting (`MatchRule.counting`):

`megc` (default): a proposal is a true positive when its IoU with a ground-truth interval of the
same type and video is >= 0.5, IoU on inclusive frame counts (|[s, e]| = e - s + 1), positions in
the video's ORIGINAL 1-based frame numbers (scale "frames"). One match per truth and one truth
per proposal (counting "one-to-one"): proposals are matched best score first, each to the
unmatched ground truth it overlaps most.

`reference`: the counting of the AUW-GCN code as it is today, since its commit a15701b
(2025-02-25, "fix bug in evaluation code", utils/eval_utils.py): `calc_metrics` counts the
`find` column of `iou_for_find` (counting "per-truth"). For each ground truth of a video and
type, its highest-IoU proposal (the first in score order on a tie) if that IoU is > 0.5; a
proposal chosen by two truths counts once. So TP <= min(N, M).

`reference-2023`: the counting behind the published AUW-GCN numbers (papers up to 2024), the
reference's `iou_for_tp` + `calc_metrics` before that commit (counting "per-proposal"): a
proposal is a true positive when its best IoU with ANY ground truth of its video and type is
> 0.5, whether or not another proposal hit the same truth (so several proposals can count for
one truth, and FN = M - TP can be negative).

Both reference rules: IoU on lengths e - s, pooled as calc_final_score.py, positions the
reference's rows (scale "rows": proposal row + 1 against annotated frame // k for frames kept 1
in k). On random proposal sets reference-2023 counts about 1.4x the TP of reference.

The match table (`match_intervals`) has one row per TP (proposal and truth), FP (proposal only)
and FN (truth only). A TP row names: under `megc` the truth it took; under `reference-2023` its
best truth (the first in annotation order on a tie; a truth may be in several TP rows); under
`reference` the first truth (annotation order) that chose it, and every other truth that chose
the same proposal is an FN row (the proposal counts once).

All: TP, proposals N and ground truths M are summed over the whole dataset; P = TP / N,
R = TP / M, F1 = 2PR / (P + R) (0 where a denominator is 0). "Overall" pools the ME and MaE
counts; it is not the mean of two F1s.

Interval columns (`onset`, `offset` by default, see `match_all`'s `on`) may be in any integer
unit as long as proposals and truths share it; other columns are carried into the match table.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from spotting.channels import TYPES

COUNTINGS = ("one-to-one", "per-proposal", "per-truth")  # MatchRule.counting


@dataclass(frozen=True)
class MatchRule:
    name: str
    inclusive: bool  # lengths e - s + 1 (True) or e - s (False)
    threshold: float
    strict: bool  # IoU > threshold (True) or >= threshold (False)
    counting: str  # one of COUNTINGS (see the module docstring)
    scale: str  # "frames" (original numbering) or "rows" (the reference's: row + 1 vs frame // k)
    label: str  # one line for tables and reports

    def __post_init__(self):
        if self.counting not in COUNTINGS:
            raise ValueError(f"counting must be one of {COUNTINGS}, got {self.counting!r}")

    @property
    def prefix_stable(self) -> bool:
        """Whether the true positives among the first n proposals (in score order) are the
        first n of those among all: true for greedy one-to-one matching and per-proposal
        counting, not per-truth (a truth's best proposal may lie beyond the prefix)."""
        return self.counting != "per-truth"

    def iou(self, s: np.ndarray, e: np.ndarray, gs: int, ge: int) -> np.ndarray:
        extra = 1 if self.inclusive else 0
        inter = np.maximum(0, np.minimum(e, ge) - np.maximum(s, gs) + extra)
        union = (e - s + extra) + (ge - gs + extra) - inter
        return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)

    def passes(self, iou: float) -> bool:
        return iou > self.threshold if self.strict else iou >= self.threshold


MEGC = MatchRule(
    "megc",
    inclusive=True,
    threshold=0.5,
    strict=False,
    counting="one-to-one",
    scale="frames",
    label="MEGC: IoU >= 0.5 on inclusive frame counts, one match per truth",
)
REFERENCE = MatchRule(
    "reference",
    inclusive=False,
    threshold=0.5,
    strict=True,
    counting="per-truth",
    scale="rows",
    label="reference (AUW-GCN code since a15701b, 2025-02-25: iou_for_find): IoU > 0.5 on "
    "e - s, each truth's best proposal counts, once",
)
REFERENCE_2023 = MatchRule(
    "reference-2023",
    inclusive=False,
    threshold=0.5,
    strict=True,
    counting="per-proposal",
    scale="rows",
    label="reference-2023 (AUW-GCN code before a15701b: iou_for_tp, the published numbers): "
    "IoU > 0.5 on e - s, every proposal whose best truth passes counts",
)
RULES = {rule.name: rule for rule in (MEGC, REFERENCE, REFERENCE_2023)}


def match_intervals(
    proposals: pd.DataFrame,
    truths: pd.DataFrame,
    rule: MatchRule = MEGC,
    on: tuple[str, str] = ("onset", "offset"),
) -> pd.DataFrame:
    """Match the proposals of ONE video and type to its ground truths, on columns `on`.

    Returns one row per TP (proposal and truth), FP (proposal only) and FN (truth only) with
    columns outcome, proposal, truth (index labels of the inputs, -1 where absent) and iou,
    proposals best score first (equal scores in their input order). Under `reference-2023` a
    truth can appear in several TP rows.
    """
    order = (
        proposals.sort_values("score", ascending=False, kind="stable").index
        if len(proposals)
        else pd.Index([])
    )
    starts = proposals.loc[order, on[0]].to_numpy(np.int64) if len(order) else np.zeros(0, int)
    ends = proposals.loc[order, on[1]].to_numpy(np.int64) if len(order) else np.zeros(0, int)
    gs, ge = truths[on[0]].to_numpy(np.int64), truths[on[1]].to_numpy(np.int64)
    # iou[i, j]: proposal i (score order) with truth j (annotation order)
    iou = np.zeros((len(order), len(truths)))
    for j in range(len(truths)):
        iou[:, j] = rule.iou(starts, ends, int(gs[j]), int(ge[j]))
    counted = _per_truth if rule.counting == "per-truth" else _per_proposal
    found = counted(iou, rule)  # proposal i -> truth j of its TP row
    rows = []
    for i, label in enumerate(order):
        if i in found:
            rows.append(("TP", label, truths.index[found[i]], float(iou[i, found[i]])))
        else:
            rows.append(("FP", label, -1, float(iou[i].max()) if len(truths) else 0.0))
    named = set(found.values())
    rows += [("FN", -1, truths.index[j], 0.0) for j in range(len(truths)) if j not in named]
    return pd.DataFrame(rows, columns=["outcome", "proposal", "truth", "iou"])


def _per_proposal(iou: np.ndarray, rule: MatchRule) -> dict[int, int]:
    """{proposal: truth} of the TP rows, proposals taken in score order: each to its best truth
    (the first on a tie), among the truths still free under one-to-one counting."""
    free = np.ones(iou.shape[1], bool)
    found = {}
    for i in range(iou.shape[0]):
        ious = np.where(free, iou[i], -1.0) if rule.counting == "one-to-one" else iou[i]
        best = int(ious.argmax()) if len(ious) else -1
        if best >= 0 and rule.passes(float(ious[best])):
            free[best] = False
            found[i] = best
    return found


def _per_truth(iou: np.ndarray, rule: MatchRule) -> dict[int, int]:
    """{proposal: truth} of the TP rows under per-truth counting (the reference's
    `iou_for_find`): each truth in annotation order chooses its best proposal (the first in
    score order on a tie) if it passes; a proposal chosen by several truths is one TP, named
    for the first of them."""
    found: dict[int, int] = {}
    if not iou.shape[0]:
        return found
    for j in range(iou.shape[1]):
        best = int(iou[:, j].argmax())
        if rule.passes(float(iou[best, j])):
            found.setdefault(best, j)
    return found


def match_all(
    proposals: pd.DataFrame,
    truths: pd.DataFrame,
    rule: MatchRule = MEGC,
    on: tuple[str, str] = ("onset", "offset"),
) -> pd.DataFrame:
    """Match every (video, type) on columns `on`; one row per TP/FP/FN with the intervals of both
    sides (their onset, apex, offset columns, whatever `on` is).

    Both inputs have columns video, subject, type, onset, offset and the `on` pair (proposals also
    score, apex). Index labels must be unique within each input.
    """
    keys = sorted(
        set(map(tuple, proposals[["video", "type"]].to_numpy().tolist()))
        | set(map(tuple, truths[["video", "type"]].to_numpy().tolist()))
    )
    parts = []
    for video, kind in keys:
        p = proposals[(proposals["video"] == video) & (proposals["type"] == kind)]
        t = truths[(truths["video"] == video) & (truths["type"] == kind)]
        m = match_intervals(p, t, rule, on)
        subject = p["subject"].iloc[0] if len(p) else t["subject"].iloc[0]
        m.insert(0, "type", kind)
        m.insert(0, "subject", subject)
        m.insert(0, "video", video)
        for side, frame in (("proposal", p), ("truth", t)):
            for column in ("onset", "apex", "offset") + (("score",) if side == "proposal" else ()):
                values = frame[column] if column in frame else pd.Series(dtype=float)
                m[f"{side}_{column}"] = [
                    values.get(i, np.nan) if i != -1 else np.nan for i in m[side]
                ]
        parts.append(m)
    columns = ["video", "subject", "type", "outcome", "proposal", "truth", "iou"]
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=columns)


def scores(tp: int, n: int, m: int) -> dict:
    precision = tp / n if n else 0.0
    recall = tp / m if m else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "TP": tp,
        "FP": n - tp,
        "FN": m - tp,
        "proposals": n,
        "truths": m,
    }


def summarise(matches: pd.DataFrame, by: list[str] | None = None) -> pd.DataFrame:
    """Pooled counts and P/R/F1 per type and overall (rows 'me', 'mae', 'overall'), optionally
    also per group (e.g. by=['subject'] or ['video']). N = proposal rows, TP = TP rows, M =
    distinct truths (a truth in several TP rows counts once)."""
    groups = [((), matches)] if not by else list(matches.groupby(by, sort=True))
    rows = []
    for key, part in groups:
        key = key if isinstance(key, tuple) else (key,)
        for kind in (*TYPES, "overall"):
            sub = part if kind == "overall" else part[part["type"] == kind]
            tp = int((sub["outcome"] == "TP").sum())
            n = int((sub["outcome"] != "FN").sum())
            m = len(sub.loc[sub["outcome"] != "FP", ["video", "type", "truth"]].drop_duplicates())
            rows.append({**dict(zip(by or [], key)), "type": kind, **scores(tp, n, m)})
    return pd.DataFrame(rows)
