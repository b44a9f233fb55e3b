"""Spotting metrics: match proposals to ground truth, count, and score (AUWGCN.md section 9).

Two rules, each with its interval scale (`MatchRule.scale`; the positions are computed by the
caller, spotting/evaluate.py):

`MEGC` (default): a proposal is a true positive when its IoU with a ground-truth interval of the
same type and video is >= 0.5, IoU on inclusive frame counts (|[s, e]| = e - s + 1), positions in
the video's ORIGINAL 1-based frame numbers (scale "frames"). One match per truth and one truth
per proposal: proposals are matched best score first, each to the unmatched ground truth it
overlaps most.

`REFERENCE`: the counting of the AUW-GCN code (utils/eval_utils.py `iou_for_tp` + `calc_metrics`,
pooled as calc_final_score.py). IoU on lengths e - s, a proposal is a true positive when its
best IoU with ANY ground truth of its video and type is > 0.5, whether or not another proposal
hit the same truth (so several proposals can count for one truth, and FN = M - TP can be
negative). The truth a TP row names is its best one (the first in annotation order on a tie).
Positions are the reference's rows (scale "rows"): proposal row + 1 against annotated frame // k
for frames kept 1 in k. (The reference also computes a truth-driven `find` column with
`iou_for_find`, but its counts never use it.)

Both: TP, proposals N and ground truths M are summed over the whole dataset; P = TP / N,
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


@dataclass(frozen=True)
class MatchRule:
    name: str
    inclusive: bool  # lengths e - s + 1 (True) or e - s (False)
    threshold: float
    strict: bool  # IoU > threshold (True) or >= threshold (False)
    one_to_one: bool
    scale: str  # "frames" (original numbering) or "rows" (the reference's: row + 1 vs frame // k)
    label: str  # one line for tables and reports

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
    one_to_one=True,
    scale="frames",
    label="MEGC: IoU >= 0.5 on inclusive frame counts, one match per truth",
)
REFERENCE = MatchRule(
    "reference",
    inclusive=False,
    threshold=0.5,
    strict=True,
    one_to_one=False,
    scale="rows",
    label="reference (AUW-GCN code): IoU > 0.5 on e - s, every proposal "
    "whose best truth passes counts",
)
RULES = {rule.name: rule for rule in (MEGC, REFERENCE)}


def match_intervals(
    proposals: pd.DataFrame,
    truths: pd.DataFrame,
    rule: MatchRule = MEGC,
    on: tuple[str, str] = ("onset", "offset"),
) -> pd.DataFrame:
    """Match the proposals of ONE video and type to its ground truths, on columns `on`.

    Returns one row per TP (proposal and truth), FP (proposal only) and FN (truth only) with
    columns outcome, proposal, truth (index labels of the inputs, -1 where absent) and iou,
    proposals best score first. Under a rule that is not one-to-one a truth can appear in
    several TP rows.
    """
    order = (
        proposals.sort_values("score", ascending=False, kind="stable").index
        if len(proposals)
        else []
    )
    gs, ge = truths[on[0]].to_numpy(), truths[on[1]].to_numpy()
    free = np.ones(len(truths), bool)
    rows = []
    for label in order:
        s, e = int(proposals.at[label, on[0]]), int(proposals.at[label, on[1]])
        ious = rule.iou(gs, ge, s, e) if len(truths) else np.zeros(0)
        if rule.one_to_one:
            ious = np.where(free, ious, -1.0)
        best = int(ious.argmax()) if len(ious) else -1  # the first truth on a tie
        if best >= 0 and rule.passes(float(ious[best])):
            free[best] = False
            rows.append(("TP", label, truths.index[best], float(ious[best])))
        else:
            rows.append(("FP", label, -1, float(max(ious.max(), 0.0)) if len(ious) else 0.0))
    rows += [("FN", -1, truths.index[j], 0.0) for j in np.flatnonzero(free)]
    return pd.DataFrame(rows, columns=["outcome", "proposal", "truth", "iou"])


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
