"""A trained network on windows: logits of the central rows, put back together per video, and the
probability curves people look at.

Shapes: windows x (W, L + 2C, 12, 2) float32 -> logits (W, 10, L) (channel layout in
spotting/channels.py) -> per video (N, 10) float32 for its N feature rows -> curves (N, 8).
Rows without a face (a gap: spotting/windows.py) have no logit: NaN, and so NaN curves.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from spotting.channels import (MAE_ACTION, MAE_APEX, MAE_START_END, ME_ACTION, ME_APEX,
                               ME_START_END, N_OUTPUTS)
from spotting.windows import WindowSet

if TYPE_CHECKING:  # imported where a network runs: reading a run needs no torch
    import torch

    from spotting.model import AUWGCN

CURVES = (
    "me_start",
    "me_end",
    "me_apex",
    "me_action",
    "mae_start",
    "mae_end",
    "mae_apex",
    "mae_action",
)


def predict_logits(model: AUWGCN, x: torch.Tensor, context: int, batch: int = 256) -> torch.Tensor:
    """(W, L + 2C, 12, 2) windows -> (W, 10, L) logits of the central rows, in eval mode."""
    import torch

    model.eval()
    with torch.no_grad():
        outs = [
            model(x[i : i + batch])[:, :, context : x.shape[1] - context]
            for i in range(0, len(x), batch)
        ]
    return (
        torch.cat(outs)
        if outs
        else torch.zeros(0, N_OUTPUTS, x.shape[1] - 2 * context, device=x.device)
    )


def video_logits(logits: np.ndarray, ws: WindowSet, mask: np.ndarray) -> dict[str, np.ndarray]:
    """Window logits -> per video. `logits` (W', 10, L) float32 for the windows selected by `mask`
    (W,) bool, in their order; returns {video id: (N, 10) logits of the video's N rows}: each
    row from the window whose central rows hold it inside its segment, NaN for rows of no
    segment (the face was missing: no logit was computed there)."""
    videos, first = ws.video[mask], ws.first_row[mask]
    if len(logits) != len(videos):
        raise ValueError(f"{len(logits)} logits for {len(videos)} selected windows")
    length = logits.shape[2]
    context = (ws.valid.shape[1] - length) // 2
    inside = ws.valid[mask][:, context : context + length]  # (W', L) central rows in a segment
    rows = first[:, None] + np.arange(length)[None, :]
    values = logits.transpose(0, 2, 1)  # (W', L, 10)
    out: dict[str, np.ndarray] = {}
    for v in np.unique(videos):
        sel = videos == v
        video = np.full((ws.n_rows[v], logits.shape[1]), np.nan, logits.dtype)
        keep = inside[sel]
        video[rows[sel][keep]] = values[sel][keep]
        out[ws.video_ids[v]] = video
    return out


def probability_curves(logits: np.ndarray) -> np.ndarray:
    """(N, 10) logits -> (N, 8) float32 probabilities in the order of CURVES."""
    import torch

    t = torch.from_numpy(np.asarray(logits, np.float32))
    me, mae = t[:, ME_START_END].softmax(-1), t[:, MAE_START_END].softmax(-1)
    return torch.stack(
        [
            me[:, 0],
            me[:, 1],
            t[:, ME_APEX].sigmoid(),
            t[:, ME_ACTION].sigmoid(),
            mae[:, 0],
            mae[:, 1],
            t[:, MAE_APEX].sigmoid(),
            t[:, MAE_ACTION].sigmoid(),
        ],
        dim=1,
    ).numpy()
