"""Network outputs -> proposals -> NMS (AUWGCN.md section 8), batched over windows.

Input per video: logits (N, 10) float32 for its N feature rows (channels as in spotting/model.py:
0-2 ME start/end/none, 3-5 MaE start/end/none, 6 ME apex, 7 MaE apex, 8-9 action). The video is
cut into windows of L = 256 rows, as the network saw it; every search stays inside its window.
Rows without a face hold NaN logits (spotting/inference.py): the rows between are segments,
each cut into windows from its first row, so no proposal spans a gap.

Per window and type:
- apex candidates: rows w with sigmoid(apex) > 0.5;
- start s = the row of highest start probability among w - d, d in [dmin, dmax], clipped at the
  window's first row; end e = the row of highest end probability among w + d, clipped at the
  window's last row (and at the video's last row). Ties: see the variants below;
- kept when p_start(s) > p_end(s), p_start(e) < p_end(e) and min_len <= e - s <= max_len;
- score = p_start(s) * p_end(e) * p_apex(w).
NMS per (video, type): take the best remaining proposal (stop at score 0), drop the others whose
IoU with it exceeds 0.5 (IoU on lengths e - s), until K are kept. Equal scores keep apex-row
order.

Arithmetic variants (`ProposalParams.variant`), which differ only where outputs saturate:
- `mespot`: probabilities in float64; start ties go to the earliest row, end ties to the row
  nearest the apex.
- `reference`: as the AUW-GCN code (utils/eval_utils.py): softmax and sigmoid in float32 with
  torch, comparisons and argmax on those float32 values, start AND end ties to the row nearest
  the apex (its argmax over d ascending), score = the product in float64 of each float32
  probability as its text form reads back (the reference writes them through a text array and
  a CSV). Saturated logits make many float32 probabilities exactly 1.0 or 0.0, so the chosen
  starts, the kept candidates (p_start(s) > p_end(s) fails on 0.0 > 0.0) and the apex
  candidates (sigmoid of a logit below ~6e-8 is exactly 0.5) change.
Differences that remain with the reference in both variants: its last window runs past the
video's end on zero-padded features, so its ends there may lie after the video's last row
(mespot clips them at the last row); its order among EQUAL scores comes from its file listing
and an unstable sort (mespot: apex-row order); and a reference run on a GPU may differ from
torch on the CPU in the last bit of a probability.

Units: rows (0-based feature rows). `frames = rows_to_frames(rows)` turns them into the video's
1-based original frame numbers for people (spotting/windows.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from spotting.channels import APEX as APEX_CHANNEL
from spotting.channels import START_END as START_END_CHANNELS
from spotting.channels import TYPES

PROPOSAL_COLUMNS = ["type", "start", "apex", "end", "score"]
PROPOSAL_VARIANTS = {  # ProposalParams.variant -> what it means, for tables and reports
    "mespot": "mespot arithmetic (float64; start ties to the earliest row)",
    "reference": "reference arithmetic (float32 as AUW-GCN; "
                 "start ties to the row nearest the apex)",
}


@dataclass(frozen=True)
class ProposalParams:
    """Every range and threshold of section 8 (rows); defaults are the CAS(ME)^2 preset."""

    window: int = 256
    apex_threshold: float = 0.5
    me_distance: tuple[int, int] = (2, 7)  # d range from apex to start/end
    mae_distance: tuple[int, int] = (7, 29)
    me_length: tuple[int, int] = (5, 30)  # allowed e - s
    mae_length: tuple[int, int] = (15, 88)
    nms_iou: float = 0.5
    me_top_k: int = 5
    mae_top_k: int = 5
    variant: str = "mespot"  # arithmetic, a key of PROPOSAL_VARIANTS

    def __post_init__(self):
        if self.variant not in PROPOSAL_VARIANTS:
            raise ValueError(
                f"proposal variant must be one of {', '.join(PROPOSAL_VARIANTS)}, "
                f"got {self.variant!r}"
            )

    def distance(self, kind: str) -> tuple[int, int]:
        return self.me_distance if kind == "me" else self.mae_distance

    def length(self, kind: str) -> tuple[int, int]:
        return self.me_length if kind == "me" else self.mae_length

    def top_k(self, kind: str) -> int:
        return self.me_top_k if kind == "me" else self.mae_top_k


PRESETS = {
    "casme2": ProposalParams(),
    "samm": ProposalParams(
        mae_distance=(6, 27), me_length=(4, 13), mae_length=(12, 81), mae_top_k=6
    ),
}


def _softmax(x: np.ndarray) -> np.ndarray:
    z = np.exp(x - x.max(axis=-1, keepdims=True))
    return z / z.sum(axis=-1, keepdims=True)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _check_logits(logits: np.ndarray, dtype=np.float64) -> np.ndarray:
    logits = np.asarray(logits, dtype=dtype)
    if logits.ndim != 2 or logits.shape[1] != 10:
        raise ValueError(f"expected logits of shape (N, 10), got {logits.shape}")
    return logits


def probabilities(logits: np.ndarray, kind: str, variant: str = "mespot") -> tuple[np.ndarray, ...]:
    """(p_start, p_end, p_apex), each (N,), of one type: float64 (`mespot`) or, for `reference`,
    float32 from torch's softmax over the 3 start/end/none channels laid out (1, 3, N) as the
    reference's (B, 3, T), and torch's sigmoid."""
    if variant == "reference":
        import torch  # only here: the float64 path needs numpy alone

        t = torch.from_numpy(np.ascontiguousarray(_check_logits(logits, np.float32)))
        start_end = torch.softmax(t[:, START_END_CHANNELS[kind]].T[None], dim=1)[0].numpy()
        return start_end[0], start_end[1], torch.sigmoid(t[:, APEX_CHANNEL[kind]]).numpy()
    logits = _check_logits(logits)
    probs = _softmax(logits[:, START_END_CHANNELS[kind]])
    return probs[:, 0], probs[:, 1], _sigmoid(logits[:, APEX_CHANNEL[kind]])


def _as_text_reads_back(p: np.ndarray) -> np.ndarray:
    """float32 values -> float64 as their shortest text form reads back (the reference's path)."""
    return (
        np.array([str(v) for v in p], dtype=str).astype(np.float64)
        if len(p)
        else p.astype(np.float64)
    )


def segment_bounds(logits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(first, last) (N,) int64: the first and last row of each row's segment, the run of rows
    with finite logits it lies in (spotting/windows.py); meaningless for NaN rows."""
    finite = np.isfinite(np.asarray(logits)).all(axis=1)
    rows = np.arange(len(finite))
    starts = finite & ~np.concatenate([[False], finite[:-1]])
    ends = finite & ~np.concatenate([finite[1:], [False]])
    first = np.maximum.accumulate(np.where(starts, rows, 0)) if len(rows) else rows
    last = np.minimum.accumulate(np.where(ends, rows, len(rows))[::-1])[::-1] if len(rows) else rows
    return first, last


def candidates(
    logits: np.ndarray, kind: str, params: ProposalParams = ProposalParams()
) -> pd.DataFrame:
    """All proposals of one type before NMS, columns type, start, apex, end, score (rows).
    Rows with NaN logits (no face) are never candidates, and no search crosses them: the
    windows are laid from each segment's first row, as spotting/windows.py cut them."""
    p_start, p_end, p_apex = probabilities(logits, kind, params.variant)
    apex = np.flatnonzero(p_apex > params.apex_threshold)  # NaN compares False
    seg_first, seg_last = segment_bounds(logits)
    seg_first, seg_last = seg_first[apex], seg_last[apex]
    # first row of each candidate's window, counted from its segment's first row
    first = seg_first + ((apex - seg_first) // params.window) * params.window
    last = np.minimum(first + params.window - 1, seg_last)
    dmin, dmax = params.distance(kind)
    steps = np.arange(dmin, dmax + 1)
    start_steps = steps if params.variant == "reference" else steps[::-1]  # argmax: first of a tie
    start_rows = np.maximum(apex[:, None] - start_steps[None, :], first[:, None])
    end_rows = np.minimum(apex[:, None] + steps[None, :], last[:, None])
    pick = np.arange(len(apex))
    start = start_rows[pick, p_start[start_rows].argmax(axis=1)] if len(apex) else apex
    end = end_rows[pick, p_end[end_rows].argmax(axis=1)] if len(apex) else apex
    low, high = params.length(kind)
    keep = (
        (p_start[start] > p_end[start])
        & (p_start[end] < p_end[end])
        & (end - start >= low)
        & (end - start <= high)
    )
    s, e, a = start[keep], end[keep], apex[keep]
    if params.variant == "reference":
        score = (
            _as_text_reads_back(p_start[s])
            * _as_text_reads_back(p_end[e])
            * _as_text_reads_back(p_apex[a])
        )
    else:
        score = p_start[s] * p_end[e] * p_apex[a]
    return pd.DataFrame(
        {"type": kind, "start": s, "apex": a, "end": e, "score": score}, columns=PROPOSAL_COLUMNS
    )


def length_iou(start: np.ndarray, end: np.ndarray, s: int, e: int) -> np.ndarray:
    """IoU of intervals [start, end] with [s, e] measured on lengths end - start (section 8)."""
    inter = np.maximum(0, np.minimum(end, e) - np.maximum(start, s))
    union = (end - start) + (e - s) - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def nms(proposals: pd.DataFrame, iou_threshold: float, top_k: int) -> pd.DataFrame:
    """Greedy NMS of one (video, type): the kept proposals, best first."""
    ordered = proposals.sort_values("score", ascending=False, kind="stable").reset_index(drop=True)
    start, end = ordered["start"].to_numpy(), ordered["end"].to_numpy()
    score = ordered["score"].to_numpy()
    alive = np.ones(len(ordered), bool)
    kept: list[int] = []
    for i in range(len(ordered)):
        if len(kept) == top_k or score[i] <= 0:
            break
        if not alive[i]:
            continue
        kept.append(i)
        alive &= ~(length_iou(start, end, start[i], end[i]) > iou_threshold)
    return ordered.iloc[kept].reset_index(drop=True)


def spot_video(logits: np.ndarray, params: ProposalParams = ProposalParams()) -> pd.DataFrame:
    """Kept proposals of both types for one video (rows), best first within each type."""
    parts = [
        nms(candidates(logits, kind, params), params.nms_iou, params.top_k(kind)) for kind in TYPES
    ]
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=PROPOSAL_COLUMNS)
