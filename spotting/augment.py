"""The mirrored face, in feature space: test-time flip and mirror augmentation.

Mirroring a face video left/right turns its MDMO features (N, 12, 2) into those of the mirrored
video: the ROI nodes of the two sides swap (right brow <-> left brow, mouth corners) and the
horizontal motion changes sign; the vertical motion and the nose and lip-midline nodes stay.
The AU prior is symmetric under that swap (AU1 and AU2 take both brows, AU12/14 both mouth
corners, AU25/26 both lip midpoints), so the same network applies to both.

- `--flip` (evaluation and prediction, on by default): the logits of the original and the
  mirrored windows are averaged before proposals.
- `--augment mirror` (training): each training window is mirrored with probability 1/2 in every
  epoch; the targets (timing only) do not change.

Node order (flowcore/rois.py): 0-2 right brow outer/middle/inner (landmarks 18, 19, 20),
3-5 left brow inner/middle/outer (23, 24, 25), 6-7 nose, 8 right mouth corner (48), 9 upper lip,
10 left mouth corner (54), 11 lower lip. Landmark mirror pairs: 18-25, 19-24, 20-23, 48-54.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # imported where tensors are made: reading a run needs no torch
    import torch

MIRROR_NODES = (5, 4, 3, 2, 1, 0, 6, 7, 10, 9, 8, 11)  # node i of the mirror = node MIRROR_NODES[i]


def flip_by_default(compat: bool) -> bool:
    """Whether evaluation and prediction use the test-time flip when not told: yes (worth about
    +0.03 overall F1 on both quality benchmark sets, docs/quality.md), except for `--compat`
    features and reference checkpoints, which reproduce the reference's numbers."""
    return not compat


def mirror_features(x):
    """Raw MDMO features (..., 12, 2) (numpy or torch) of the mirrored face: nodes swapped, x
    negated."""
    out = x[..., list(MIRROR_NODES), :]
    sign = np.array([-1.0, 1.0], dtype=np.float32)
    if isinstance(out, np.ndarray):
        return out * sign.astype(out.dtype)
    import torch

    return out * torch.as_tensor(sign, dtype=out.dtype, device=out.device)


def mirror_normalised(x: torch.Tensor, valid: torch.Tensor, mean, std) -> torch.Tensor:
    """Normalised windows (W, T, 12, 2) -> those of the mirrored face, normalised the same way;
    `valid` (W, T) bool marks rows inside the video (the others stay 0, as padding)."""
    import torch

    m = torch.as_tensor(np.asarray(mean, np.float32), device=x.device)
    s = torch.as_tensor(np.asarray(std, np.float32), device=x.device)
    raw = x * s + m
    return (mirror_features(raw) - m) / s * valid[:, :, None, None].to(x.dtype)


def mirror_batch(
    data: dict, mirrored: torch.Tensor, idx: torch.Tensor, generator: torch.Generator
) -> dict:
    """The windows `idx` of `data` (window_tensors' dict), each replaced by its mirror
    (`mirrored`, the same windows mirrored) with probability 1/2, drawn from `generator`."""
    import torch

    flip = (torch.rand(len(idx), generator=generator) < 0.5).to(idx.device)
    x = torch.where(flip[:, None, None, None], mirrored[idx], data["x"][idx])
    return {"x": x, **{k: v[idx] for k, v in data.items() if k != "x"}}
