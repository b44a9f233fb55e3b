"""Spotting metrics: match proposals to ground truth, count, and score (AUWGCN.md section 9).

MEGC protocol (default, `MEGC`): a proposal is a true positive when its IoU with a ground-truth
interval of the same type and video is >= 0.5, IoU on inclusive frame counts (|[s, e]| = e - s + 1);
each ground truth is matched at most once. Proposals are matched best score first, each to the
unmatched ground truth it overlaps most. TP, proposals N and ground truths M are summed over the
whole dataset; P = TP / N, R = TP / M, F1 = 2PR / (P + R) (0 where a denominator is 0).
"Overall" pools the ME and MaE counts; it is not the mean of two F1s.

`REFERENCE` is the reference implementation's variant: IoU > 0.5 on lengths e - s.

Interval columns `onset` and `offset` may be in any integer unit as long as proposals and truths
share it (rows or frames); other columns are carried into the match table.
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

    def iou(self, s: np.ndarray, e: np.ndarray, gs: int, ge: int) -> np.ndarray:
        extra = 1 if self.inclusive else 0
        inter = np.maximum(0, np.minimum(e, ge) - np.maximum(s, gs) + extra)
        union = (e - s + extra) + (ge - gs + extra) - inter
        return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)

    def passes(self, iou: float) -> bool:
        return iou > self.threshold if self.strict else iou >= self.threshold


MEGC = MatchRule("megc", inclusive=True, threshold=0.5, strict=False)
REFERENCE = MatchRule("reference", inclusive=False, threshold=0.5, strict=True)
RULES = {rule.name: rule for rule in (MEGC, REFERENCE)}


def match_intervals(
    proposals: pd.DataFrame, truths: pd.DataFrame, rule: MatchRule = MEGC
) -> pd.DataFrame:
    """Match the proposals of ONE video and type to its ground truths.

    Returns one row per TP (proposal and truth), FP (proposal only) and FN (truth only) with
    columns outcome, proposal, truth (index labels of the inputs, -1 where absent) and iou.
    """
    order = (
        proposals.sort_values("score", ascending=False, kind="stable").index
        if len(proposals)
        else []
    )
    gs, ge = truths["onset"].to_numpy(), truths["offset"].to_numpy()
    free = np.ones(len(truths), bool)
    rows = []
    for label in order:
        s, e = int(proposals.at[label, "onset"]), int(proposals.at[label, "offset"])
        ious = np.where(free, rule.iou(gs, ge, s, e), -1.0) if len(truths) else np.zeros(0)
        best = int(ious.argmax()) if len(ious) else -1
        if best >= 0 and free[best] and rule.passes(float(ious[best])):
            free[best] = False
            rows.append(("TP", label, truths.index[best], float(ious[best])))
        else:
            rows.append(("FP", label, -1, float(max(ious.max(), 0.0)) if len(ious) else 0.0))
    rows += [("FN", -1, truths.index[j], 0.0) for j in np.flatnonzero(free)]
    return pd.DataFrame(rows, columns=["outcome", "proposal", "truth", "iou"])


def match_all(
    proposals: pd.DataFrame, truths: pd.DataFrame, rule: MatchRule = MEGC
) -> pd.DataFrame:
    """Match every (video, type); one row per TP/FP/FN with the intervals of both sides.

    Both inputs have columns video, subject, type, onset, offset (proposals also score, apex).
    """
    keys = sorted(
        set(map(tuple, proposals[["video", "type"]].to_numpy().tolist()))
        | set(map(tuple, truths[["video", "type"]].to_numpy().tolist()))
    )
    parts = []
    for video, kind in keys:
        p = proposals[(proposals["video"] == video) & (proposals["type"] == kind)]
        t = truths[(truths["video"] == video) & (truths["type"] == kind)]
        m = match_intervals(p, t, rule)
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
    also per group (e.g. by=['subject'] or ['video'])."""
    groups = [((), matches)] if not by else list(matches.groupby(by, sort=True))
    rows = []
    for key, part in groups:
        key = key if isinstance(key, tuple) else (key,)
        for kind in (*TYPES, "overall"):
            sub = part if kind == "overall" else part[part["type"] == kind]
            tp = int((sub["outcome"] == "TP").sum())
            n = tp + int((sub["outcome"] == "FP").sum())
            m = tp + int((sub["outcome"] == "FN").sum())
            rows.append({**dict(zip(by or [], key)), "type": kind, **scores(tp, n, m)})
    return pd.DataFrame(rows)
