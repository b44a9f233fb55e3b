"""The float MDMO: main-direction mean optical flow of 12 facial ROIs (AUWGCN.md section 3) by
the rules of flowcore.mdmo_rules, in float64, output float32 in pixels.

Three implementations, tested against each other: `mdmo_reference` (one frame, plain loops over
ROIs: the readable statement of the rules), and the vectorised `mdmo` for NumPy arrays (CPU) and
torch tensors (any device; used on the flow's own device). With `MDMOParams(compat=True)` both go
to the reference-compatible MDMO, flowcore.mdmo_compat (CPU only: torch tensors are moved there
and the result moved back).
"""

from __future__ import annotations

import math

import numpy as np

from flowcore.landmarks import N_LANDMARKS
from flowcore.mdmo_compat import (
    compat_main_direction_mean,
    compat_round_landmarks,
    compat_frame,
    mdmo_compat,
    quantise_flow,
)
from flowcore.mdmo_rules import (
    EYE_INNER_CORNERS,
    HEAD_SECTOR_EDGES,
    NORM_EPS,
    NOSE_GROW,
    NOSE_LANDMARKS,
    ROI_SECTOR_EDGES,
    MDMOParams,
    flow_angles,
    nose_rectangle,
    patch,
    roi_square,
    sector_index,
)

__all__ = ["MDMOParams", "HEAD_SECTOR_EDGES", "ROI_SECTOR_EDGES", "flow_angles", "sector_index",
           "main_direction_mean", "round_landmarks", "mdmo_reference", "mdmo", "quantise_flow"]

# ----------------------------------------------------------------------------------------------
# One frame, plain loops (the readable statement of the rules)


def main_direction_mean(
    vectors: np.ndarray, edges: tuple[float, float, float, float], keep: float, compat: bool = False
) -> np.ndarray:
    """(P, 2) float vectors (x, y) -> (2,) float64: the main-direction mean of the set (rule 4).

    The readable single-set version; the vectorised functions below must agree with it.
    compat: the reference's float32 arithmetic instead, (2,) float32 (see the compat section).
    """
    if compat:
        return compat_main_direction_mean(np.asarray(vectors, np.float32).reshape(-1, 2), edges,
                                          keep)
    vectors = np.asarray(vectors, dtype=np.float64).reshape(-1, 2)
    if len(vectors) == 0:
        return np.zeros(2)
    sectors = sector_index(flow_angles(vectors[:, 0], vectors[:, 1]), edges)
    counts = [int(np.sum(sectors == s)) for s in range(4)]
    main = counts.index(max(counts))  # ties: the earliest sector
    members = vectors[sectors == main]  # row-major order preserved
    n_keep = int(len(members) * keep)
    if n_keep == 0:
        return np.zeros(2)
    magnitudes = np.hypot(members[:, 0], members[:, 1])
    order = np.argsort(-magnitudes, kind="stable")  # largest first; equal: earliest first
    kept = members[order[:n_keep]]
    s = kept.sum(axis=0)
    return s / (np.hypot(s[0], s[1]) + NORM_EPS) * magnitudes[order[:n_keep]].mean()


def _nose_grow(landmarks: np.ndarray) -> int:
    """b = int(0.35 * (x[42] - x[39]) / 2) from rounded landmarks; negative counts as 0."""
    left, right = EYE_INNER_CORNERS
    return max(int(NOSE_GROW * (landmarks[right, 0] - landmarks[left, 0]) / 2), 0)


def round_landmarks(landmarks):
    """Landmarks (..., 68, 2) float -> nearest integer pixel (halves round up), same type."""
    if isinstance(landmarks, np.ndarray):
        return np.floor(landmarks.astype(np.float64) + 0.5).astype(np.int64)
    import torch

    return torch.floor(landmarks.to(torch.float64) + 0.5).to(torch.int64)


def mdmo_reference(flow: np.ndarray, landmarks: np.ndarray, params: MDMOParams = MDMOParams()):
    """One frame pair: flow (2, H, W) float px, landmarks (68, 2) -> (12, 2) float32.

    Plain loops over the ROIs; the statement of the rules that the fast versions are tested
    against. Compat goes to the one compat implementation (`mdmo` does the same).
    """
    if params.compat:
        return compat_frame(quantise_flow(flow), compat_round_landmarks(landmarks), params)
    flow = np.asarray(flow, dtype=np.float64)
    lm = round_landmarks(np.asarray(landmarks))
    head = main_direction_mean(patch(flow, nose_rectangle(lm, _nose_grow(lm))), HEAD_SECTOR_EDGES,
                               params.head_keep)
    out = np.zeros((len(params.roi_landmarks), 2))
    for i, index in enumerate(params.roi_landmarks):
        vectors = patch(flow, roi_square(lm[index], params.roi_radius)) - head
        out[i] = main_direction_mean(vectors, ROI_SECTOR_EDGES, params.roi_keep)
    return out.astype(np.float32)


# ----------------------------------------------------------------------------------------------
# Vectorised over frames and ROIs


def mdmo(flow, landmarks, params: MDMOParams = MDMOParams()):
    """MDMO of N frame pairs: flow (N, 2, H, W) float px (dx, dy), landmarks (N, 68, 2) of the
    second frame of each pair -> (N, R, 2) float32 (x, y), R = 12 ROIs by default.

    NumPy in -> NumPy out (computed on the CPU); torch in -> torch out on the flow's device.
    """
    _check_inputs(flow, landmarks)
    if isinstance(flow, np.ndarray):
        return _mdmo_numpy(flow, np.asarray(landmarks), params)
    import torch

    if params.compat:  # cartToPolar angles: CPU only (see the module docstring)
        out = _mdmo_numpy(flow.detach().cpu().numpy(), torch.as_tensor(landmarks).cpu().numpy(),
                          params)
        return torch.from_numpy(out).to(flow.device)
    return _mdmo_torch(flow, torch.as_tensor(landmarks, device=flow.device), params)


def _check_inputs(flow, landmarks) -> None:
    if flow.ndim != 4 or flow.shape[1] != 2:
        raise ValueError(f"flow must be (N, 2, H, W), got shape {tuple(flow.shape)}")
    expected = (flow.shape[0], N_LANDMARKS, 2)
    if tuple(landmarks.shape) != expected:
        raise ValueError(f"landmarks must be {expected}, got shape {tuple(landmarks.shape)}")


def _as_int64(values, xp):
    return values.astype(np.int64) if xp is np else values.to(xp.int64)


def _boxes(lm, radius: int, roi_landmarks, xp):
    """(N, 1 + R, 4) int64 inclusive boxes (x0, x1, y0, y1): the nose rectangle, then the R ROIs.

    `lm` is (N, 68, 2) int64 (rounded landmarks); `xp` is numpy or torch.
    """
    left, right = EYE_INNER_CORNERS
    diff = lm[:, right, 0] - lm[:, left, 0]
    grow = NOSE_GROW * (diff.astype(np.float64) if xp is np else diff.double()) / 2
    b = xp.clip(_as_int64(xp.trunc(grow), xp), 0, None)  # int() truncates toward zero
    nose = lm[:, list(NOSE_LANDMARKS)]  # (N, 2, 2)
    nose_box = xp.stack(
        [xp.amin(nose[..., 0], 1) - b, xp.amax(nose[..., 0], 1) + b,
         xp.amin(nose[..., 1], 1) - b, xp.amax(nose[..., 1], 1) + b], -1)[:, None, :]
    centres = lm[:, list(roi_landmarks)]  # (N, R, 2)
    roi_box = xp.stack(
        [centres[..., 0] - radius, centres[..., 0] + radius,
         centres[..., 1] - radius, centres[..., 1] + radius], -1)
    return xp.concatenate([nose_box, roi_box], 1)


def _gather_plan(boxes, height: int, width: int, xp, device=None):
    """Boxes (N, S, 4) -> flat indices (N, S, P) into H * W and a validity mask (N, S, P).

    P = largest box area in the batch; pixels outside the image or the box are masked out.
    """
    bw = boxes[..., 1] - boxes[..., 0] + 1
    bh = boxes[..., 3] - boxes[..., 2] + 1
    max_w = max(int(bw.max()), 1)
    max_h = max(int(bh.max()), 1)
    if xp is np:
        oy, ox = np.meshgrid(np.arange(max_h), np.arange(max_w), indexing="ij")
    else:
        oy, ox = xp.meshgrid(xp.arange(max_h, device=device), xp.arange(max_w, device=device),
                             indexing="ij")
    oy, ox = oy.reshape(-1), ox.reshape(-1)  # row-major offsets (P,)
    ys = boxes[..., 2, None] + oy
    xs = boxes[..., 0, None] + ox
    valid = ((oy < bh[..., None]) & (ox < bw[..., None])
             & (ys >= 0) & (ys < height) & (xs >= 0) & (xs < width))
    index = xp.clip(ys, 0, height - 1) * width + xp.clip(xs, 0, width - 1)
    return index, valid


def _main_direction_mean_np(vectors, valid, edges, keep):
    """Batched rule 4: vectors (..., P, 2) float64, valid (..., P) bool -> (..., 2) float64."""
    ang = flow_angles(vectors[..., 0], vectors[..., 1])
    sectors = sector_index(ang, edges)
    counts = np.stack([((sectors == s) & valid).sum(-1) for s in range(4)], -1)
    main = counts.argmax(-1)  # first maximum: ties go to the earliest sector
    members = valid & (sectors == main[..., None])
    n_keep = np.floor(counts.max(-1) * keep).astype(np.int64)  # int(n * keep), n * keep in f64
    mag = np.hypot(vectors[..., 0], vectors[..., 1])
    order = np.argsort(np.where(members, -mag, np.inf), axis=-1, kind="stable")
    rank = np.empty_like(order)
    np.put_along_axis(rank, order, np.arange(order.shape[-1]), axis=-1)
    kept = members & (rank < n_keep[..., None])
    s = (vectors * kept[..., None]).sum(-2)
    mean_mag = (mag * kept).sum(-1) / np.maximum(n_keep, 1)
    out = s / (np.hypot(s[..., 0], s[..., 1]) + NORM_EPS)[..., None] * mean_mag[..., None]
    return np.where((n_keep > 0)[..., None], out, 0.0)


def _gather_np(f, boxes, height, width):
    """f (N, 2, H * W), boxes (N, S, 4) -> vectors (N, S, P, 2) and valid (N, S, P)."""
    index, valid = _gather_plan(boxes, height, width, np)
    flat = index.reshape(index.shape[0], 1, -1)
    vectors = np.stack(
        [np.take_along_axis(f[:, c : c + 1], flat, -1).reshape(index.shape) for c in range(2)], -1
    )
    return vectors, valid


def _mdmo_numpy(flow: np.ndarray, landmarks: np.ndarray, params: MDMOParams) -> np.ndarray:
    if params.compat:
        return mdmo_compat(flow, landmarks, params)
    n, _, height, width = flow.shape
    f = flow.astype(np.float64).reshape(n, 2, height * width)
    boxes = _boxes(round_landmarks(landmarks), params.roi_radius, params.roi_landmarks, np)
    # the nose rectangle and the ROI squares are gathered apart: their sizes differ
    vectors, valid = _gather_np(f, boxes[:, :1], height, width)
    head = _main_direction_mean_np(
        vectors[:, 0], valid[:, 0], HEAD_SECTOR_EDGES, params.head_keep
    )  # (N, 2)
    vectors, valid = _gather_np(f, boxes[:, 1:], height, width)  # (N, R, P, 2)
    rois = vectors - head[:, None, None, :]
    out = _main_direction_mean_np(rois, valid, ROI_SECTOR_EDGES, params.roi_keep)
    return out.astype(np.float32)


def _main_direction_mean_torch(vectors, valid, edges, keep):
    """Batched rule 4 in torch (exact atan2): vectors (..., P, 2) float64, valid (..., P)."""
    import torch

    ang = torch.atan2(vectors[..., 1], vectors[..., 0])
    ang = torch.where(ang < 0, ang + 2 * math.pi, ang)
    sectors = sector_index(ang, edges)
    counts = torch.stack([((sectors == s) & valid).sum(-1) for s in range(4)], -1)
    main = counts.argmax(-1)  # first maximum (documented for torch.argmax)
    members = valid & (sectors == main[..., None])
    n_keep = torch.floor(counts.max(-1).values.double() * keep).long()
    mag = torch.hypot(vectors[..., 0], vectors[..., 1])
    key = torch.where(members, -mag, torch.full_like(mag, math.inf))
    order = torch.sort(key, dim=-1, stable=True).indices
    rank = torch.empty_like(order)
    rank.scatter_(-1, order, torch.arange(order.shape[-1], device=order.device).expand_as(order))
    kept = members & (rank < n_keep[..., None])
    s = (vectors * kept[..., None]).sum(-2)
    mean_mag = (mag * kept).sum(-1) / n_keep.clamp(min=1)
    out = s / (torch.hypot(s[..., 0], s[..., 1]) + NORM_EPS)[..., None] * mean_mag[..., None]
    return torch.where((n_keep > 0)[..., None], out, torch.zeros_like(out))


def _gather_torch(f, boxes, height, width):
    """f (N, 2, H * W), boxes (N, S, 4) -> vectors (N, S, P, 2) and valid (N, S, P)."""
    import torch

    index, valid = _gather_plan(boxes, height, width, torch, device=f.device)
    flat = index.reshape(index.shape[0], 1, -1)
    vectors = torch.stack(
        [torch.gather(f[:, c : c + 1], -1, flat).reshape(index.shape) for c in range(2)], -1
    )
    return vectors, valid


def _mdmo_torch(flow, landmarks, params: MDMOParams):
    import torch

    n, _, height, width = flow.shape
    f = flow.to(torch.float64).reshape(n, 2, height * width)
    boxes = _boxes(round_landmarks(landmarks), params.roi_radius, params.roi_landmarks, torch)
    vectors, valid = _gather_torch(f, boxes[:, :1], height, width)
    head = _main_direction_mean_torch(vectors[:, 0], valid[:, 0], HEAD_SECTOR_EDGES,
                                      params.head_keep)
    vectors, valid = _gather_torch(f, boxes[:, 1:], height, width)
    rois = vectors - head[:, None, None, :]
    out = _main_direction_mean_torch(rois, valid, ROI_SECTOR_EDGES, params.roi_keep)
    return out.to(torch.float32)
