"""MDMO features: the main-direction mean optical flow of 12 facial ROIs (AUWGCN.md section 3).

Input per frame pair k: flow (2, H, W) float32 holding (dx, dy) in pixels from frame k to k + 1,
and the 68 landmarks (68, 2) of frame k + 1 in the same pixel grid. Output per pair: (12, 2)
float32 holding (x, y), in pixels (or in the reference's "20 px" units with `compat=True`).

Convention: image coordinates, x to the right, y pointing down; angles are atan2(dy, dx) mapped
to [0, 2 pi), a zero vector has angle 0.

The rules, in the order they are applied:
1. Landmark coordinates are rounded to the nearest integer pixel (dlib gives integers already;
   interpolated landmarks may not be).
2. Head motion: the nose rectangle is the bounding box of landmarks 29 and 30 grown on every side
   by b = int(0.35 * (x[42] - x[39]) / 2) px (negative b counts as 0), inclusive bounds. Its flow
   vectors give one vector by the main-direction mean with the head sectors and keep 0.88.
3. Each ROI is the (2r + 1) x (2r + 1) patch centred on its landmark (r = 5). The head vector is
   subtracted from every flow vector of the patch, then the main-direction mean with the ROI
   sectors and keep 0.6 gives the ROI's feature.
4. Main-direction mean of a set of vectors: assign each vector to its sector; take the most
   populated sector (ties: the earliest); keep the int(n * keep) of its vectors with the largest
   magnitude (equal magnitudes: the earliest in row-major order of the patch); return
   s / (|s| + 1e-6) * mean(|v|) over the kept vectors, s their sum.

Border rule (ours; the reference never met it): pixels of a patch or of the nose rectangle that
fall outside the image are dropped, not padded. A set left with no kept vector (empty, or
int(n * keep) == 0) gives the zero vector.

Compat (`compat=True`) computes the reference's numbers (AUW-GCN's feature extraction as it ran:
NumPy 1.x, OpenCV 4.x), in its arithmetic step by step:
- flow (float32 px) -> the 8-bit code denseflow stored: 255 above 10 px, 0 below -10 px, else
  round-half-even(255 * (f + 10) / 20) in float64; read back as float32(float32(q / 255) - 0.5).
  The JPEG loss of the stored images is not reproduced.
- landmarks rounded half to even (NumPy's `round`, as the reference's landmark files were made);
  b = int((x[42] - x[39]) / 2 * 0.35), a negative b shrinks the nose rectangle as it did there.
- each set (nose rectangle, ROI patch) in row-major order: angles from one `cv2.cartToPolar` call
  on the whole set in float32 (OpenCV's result for a vector depends on the call's length: calls
  of fewer than 16 values take a scalar path that differs in the last bit), compared in float32
  with the sector edges rounded to float32; ROI vectors are float32(v - head).
- the kept vectors: float32 norms sqrt(x * x + y * y), ordered as NumPy 1.x's `np.argsort`
  (introsort) ordered them, ascending, the last int(n * keep) kept; s = their float32 sum added
  one by one in that order; feature = s / float32(float64(|s|) + 1e-6) * float32(float64(sum of
  the kept norms) / k), the norm sum being NumPy's pairwise float32 sum. (NumPy 1.x added the
  1e-6 to a float32 scalar in float64; NumPy 2 would do it in float32.) |s| is
  float32(sqrt(float32(x * x) + float32(y * y))), what NumPy's OpenBLAS dot gave; a BLAS that
  fuses the multiply-add would differ in the last bit.
Checked bit for bit against the reference's rules run under NumPy 1.24.4 and OpenCV 4.6.0 on
300 near-still and moving frames, and against the plain-loop restatement in
tests/test_mdmo_compat.py; OpenCV 4.6.0 and the 5.0.0 installed here give identical float32
angles (all 65,536 8-bit vectors and 200,000 random ones, both call paths), on this x86-64
machine with AVX2/FMA: another CPU family may round OpenCV's angles differently.
Equal norms of different vectors (frequent on near-still faces: mirror codes) are ordered as
NumPy 1.x did, so they are broken the reference's way; a reference run with NumPy 2 or a
SIMD-sorting NumPy 1.25+ would have ordered them otherwise. Where the reference failed (a set
leaving nothing kept gave NaN or an error, patches past the border wrapped or failed), compat
uses the border and zero rules above. Compat runs on the CPU (torch tensors are moved there
and the result moved back), one frame and one set at a time (a few ms per frame).

Three implementations, tested against each other: `mdmo_reference` (one frame, plain loops over
ROIs: the readable statement of the rules), and the vectorised `mdmo` for NumPy arrays (CPU) and
torch tensors (any device; used on the flow's own device). Compat has one implementation
(`_compat_frame`), which both `mdmo` and `mdmo_reference` use; tests/test_mdmo_compat.py checks
it against an independent restatement.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from flowcore.landmarks import N_LANDMARKS
from flowcore.rois import ROI_LANDMARKS, ROI_RADIUS

# Sector tables, as the four left edges in radians: sectors [e0, e1), [e1, e2), [e2, e3) and the
# wrap-around [e3, 2 pi) U [0, e0).
HEAD_SECTOR_EDGES = (math.pi / 4, 3 * math.pi / 4, 5 * math.pi / 4, 7 * math.pi / 4)
ROI_SECTOR_EDGES = (math.pi / 6, 5 * math.pi / 6, 7 * math.pi / 6, 11 * math.pi / 6)
HEAD_KEEP = 0.88  # fraction of the main sector's vectors kept for the head motion
ROI_KEEP = 0.6  # fraction kept for each ROI
NOSE_LANDMARKS = (29, 30)  # the nose rectangle is their bounding box ...
EYE_INNER_CORNERS = (39, 42)  # ... grown by NOSE_GROW * (x[42] - x[39]) / 2 px
NOSE_GROW = 0.35
NORM_EPS = 1e-6  # s / (|s| + NORM_EPS)
COMPAT_CLIP_PX = 10.0  # the reference clipped flow to [-10, 10] px before 8-bit storage
COMPAT_LEVELS = 255  # ... as 8-bit codes 0..255
NP1_SMALL_PARTITION = 15  # NumPy 1.x quicksort: partitions this small are insertion-sorted


@dataclass(frozen=True)
class MDMOParams:
    """How MDMO features are computed; saved in every store's parameters."""

    roi_landmarks: tuple[int, ...] = ROI_LANDMARKS
    roi_radius: int = ROI_RADIUS  # px; patches are (2 r + 1) px wide
    head_keep: float = HEAD_KEEP
    roi_keep: float = ROI_KEEP
    compat: bool = False  # the reference's numbers: its 8-bit flow and float32 arithmetic

    def __post_init__(self):
        if not all(0 <= i < N_LANDMARKS for i in self.roi_landmarks):
            raise ValueError(f"roi_landmarks must be landmark indices 0..67, got "
                             f"{self.roi_landmarks}")
        if self.roi_radius < 0:
            raise ValueError(f"roi_radius must be >= 0, got {self.roi_radius}")
        if not (0 < self.head_keep <= 1 and 0 < self.roi_keep <= 1):
            raise ValueError(f"head_keep and roi_keep must lie in (0, 1], got {self.head_keep}, "
                             f"{self.roi_keep}")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["roi_landmarks"] = list(self.roi_landmarks)
        return d


# ----------------------------------------------------------------------------------------------
# Building blocks (NumPy)


def compat_codes(flow) -> np.ndarray:
    """Compat: (..., H, W) flow in px -> (..., H, W) uint8, the 8-bit value the reference stored.

    As denseflow's 8-bit writer (bound 10 px): 255 above 10 px, 0 below -10 px, otherwise
    round-half-even(255 * (f + 10) / 20) computed in float64 from the float32 flow value.
    """
    f = np.asarray(flow, dtype=np.float32).astype(np.float64)
    q = np.rint(COMPAT_LEVELS * (f + COMPAT_CLIP_PX) / (2 * COMPAT_CLIP_PX))
    q = np.where(f > COMPAT_CLIP_PX, COMPAT_LEVELS, np.where(f < -COMPAT_CLIP_PX, 0, q))
    return np.nan_to_num(q).astype(np.uint8)  # NaN flow (never produced) reads as code 0


def compat_read_back(codes) -> np.ndarray:
    """Compat: uint8 codes -> float32 values q / 255 - 0.5 ("20 px" units), both steps rounded
    to float32 as the reference's `codes / np.float32(255) - 0.5` does."""
    q = np.asarray(codes, dtype=np.uint8).astype(np.float32)
    return (q / np.float32(COMPAT_LEVELS)) - np.float32(0.5)


def quantise_flow(flow) -> np.ndarray:
    """Compat: (..., H, W) float flow in px -> float32 values the reference read back.

    `compat_read_back(compat_codes(flow))`: clip to [-10, 10] px, 8 bits, q / 255 - 0.5.
    """
    return compat_read_back(compat_codes(flow))


def flow_angles(dx: np.ndarray, dy: np.ndarray, compat: bool = False) -> np.ndarray:
    """Angles in [0, 2 pi] (radians) of vectors (dx, dy); y points down; 0 for (0, 0).

    Exact: float64 atan2 mapped to [0, 2 pi). compat: OpenCV's `cartToPolar` on the vectors cast
    to float32, one call for the whole set (its result for a vector depends on the length of the
    call, see the module docstring), float32 angles as the reference used.
    """
    if compat:
        import cv2

        dx = np.ascontiguousarray(dx, dtype=np.float32)
        dy = np.ascontiguousarray(dy, dtype=np.float32)
        if dx.size == 0:
            return np.zeros(dx.shape, np.float32)
        _, ang = cv2.cartToPolar(dx.reshape(-1), dy.reshape(-1))
        return ang.reshape(dx.shape)
    dx = np.asarray(dx, dtype=np.float64)
    dy = np.asarray(dy, dtype=np.float64)
    ang = np.arctan2(dy, dx)
    return np.where(ang < 0, ang + 2 * np.pi, ang)


def sector_index(angles, edges: tuple[float, float, float, float]):
    """Sector 0..3 of each angle (NumPy or torch): [e0, e1) -> 0, [e1, e2) -> 1, [e2, e3) -> 2,
    everything else (the wrap-around sector, and an angle rounded up to 2 pi) -> 3.

    float32 NumPy angles (compat) are compared in float32 with the edges rounded to float32, as
    the reference's comparisons of float32 angles with Python floats are done.
    """
    if isinstance(angles, np.ndarray) and angles.dtype == np.float32:
        edges = tuple(np.float32(e) for e in edges)
    e0, e1, e2, e3 = edges
    s0 = (angles >= e0) & (angles < e1)
    s1 = (angles >= e1) & (angles < e2)
    s2 = (angles >= e2) & (angles < e3)
    return 3 - 3 * s0 - 2 * s1 - 1 * s2  # exactly one of s0, s1, s2 or none is true


def main_direction_mean(
    vectors: np.ndarray, edges: tuple[float, float, float, float], keep: float, compat: bool = False
) -> np.ndarray:
    """(P, 2) float vectors (x, y) -> (2,) float64: the main-direction mean of the set (rule 4).

    The readable single-set version; the vectorised functions below must agree with it.
    compat: the reference's float32 arithmetic instead, (2,) float32 (see the compat section).
    """
    if compat:
        return _compat_main_direction_mean(np.asarray(vectors, np.float32).reshape(-1, 2), edges,
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
        return _compat_frame(quantise_flow(flow), compat_round_landmarks(landmarks), params)
    flow = np.asarray(flow, dtype=np.float64)
    _, height, width = flow.shape
    lm = round_landmarks(np.asarray(landmarks))

    def patch(x0, x1, y0, y1):  # inclusive bounds, clipped to the image, row-major (P, 2)
        x0, y0 = max(x0, 0), max(y0, 0)
        x1, y1 = min(x1, width - 1), min(y1, height - 1)
        if x1 < x0 or y1 < y0:
            return np.zeros((0, 2))
        return flow[:, y0 : y1 + 1, x0 : x1 + 1].reshape(2, -1).T

    b = _nose_grow(lm)
    nose = lm[list(NOSE_LANDMARKS)]
    head_vectors = patch(
        nose[:, 0].min() - b, nose[:, 0].max() + b, nose[:, 1].min() - b, nose[:, 1].max() + b
    )
    head = main_direction_mean(head_vectors, HEAD_SECTOR_EDGES, params.head_keep)

    r = params.roi_radius
    out = np.zeros((len(params.roi_landmarks), 2))
    for i, index in enumerate(params.roi_landmarks):
        x, y = lm[index]
        vectors = patch(x - r, x + r, y - r, y + r) - head
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
        return _mdmo_compat(flow, landmarks, params)
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



# ----------------------------------------------------------------------------------------------
# Compat: the reference's arithmetic, step by step (NumPy, one frame and one set at a time)


def compat_round_landmarks(landmarks) -> np.ndarray:
    """Compat: landmarks (..., 68, 2) float -> int64, halves to even (NumPy's `round`, as the
    reference rounded its detector's float landmarks before writing them)."""
    return np.rint(np.asarray(landmarks, dtype=np.float64)).astype(np.int64)


def _mdmo_compat(flow: np.ndarray, landmarks: np.ndarray, params: MDMOParams) -> np.ndarray:
    """Compat MDMO of N frame pairs: flow (N, 2, H, W) px, landmarks (N, 68, 2) -> (N, R, 2)
    float32 in "20 px" units; one frame at a time through `_compat_frame`."""
    values = quantise_flow(flow)  # (N, 2, H, W) float32
    lm = compat_round_landmarks(landmarks)
    out = np.zeros((len(values), len(params.roi_landmarks), 2), np.float32)
    for i in range(len(values)):
        out[i] = _compat_frame(values[i], lm[i], params)
    return out


def _compat_frame(values: np.ndarray, lm: np.ndarray, params: MDMOParams) -> np.ndarray:
    """One frame: read-back flow (2, H, W) float32, rounded landmarks (68, 2) int -> (R, 2)
    float32. The nose grow b may be negative here (the reference shrinks the rectangle then)."""
    _, height, width = values.shape

    def patch(x0, x1, y0, y1):  # inclusive bounds clipped to the image, row-major (P, 2) float32
        x0, y0 = max(int(x0), 0), max(int(y0), 0)
        x1, y1 = min(int(x1), width - 1), min(int(y1), height - 1)
        if x1 < x0 or y1 < y0:
            return np.zeros((0, 2), np.float32)
        return values[:, y0 : y1 + 1, x0 : x1 + 1].reshape(2, -1).T

    left, right = EYE_INNER_CORNERS
    b = int((lm[right, 0] - lm[left, 0]) / 2 * NOSE_GROW)  # float64, truncated toward zero
    nose = lm[list(NOSE_LANDMARKS)]
    head = _compat_main_direction_mean(
        patch(nose[:, 0].min() - b, nose[:, 0].max() + b, nose[:, 1].min() - b,
              nose[:, 1].max() + b), HEAD_SECTOR_EDGES, params.head_keep)
    r = params.roi_radius
    out = np.zeros((len(params.roi_landmarks), 2), np.float32)
    for i, index in enumerate(params.roi_landmarks):
        x, y = lm[index]
        vectors = patch(x - r, x + r, y - r, y + r) - head  # float32 - float32
        out[i] = _compat_main_direction_mean(vectors, ROI_SECTOR_EDGES, params.roi_keep)
    return out


def _compat_main_direction_mean(vectors: np.ndarray, edges, keep: float) -> np.ndarray:
    """Rule 4 in the reference's float32 arithmetic: (P, 2) float32 -> (2,) float32.

    Angles by one `cartToPolar` call on the set; sectors by float32 comparisons; n = size of the
    first most populated sector, k = int(n * keep); members sorted by their float32 norms with
    NumPy 1.x's quicksort (`np1_argsort`) and the last k kept; s = their float32 sum, added in
    kept order; feature = s / float32(float64(|s|) + 1e-6) * float32(pairwise sum of the kept
    norms / k), the pairwise sum being NumPy's for a float32 array. Nothing kept: (0, 0).
    """
    zero = np.zeros(2, np.float32)
    if len(vectors) == 0:
        return zero
    sectors = sector_index(flow_angles(vectors[:, 0], vectors[:, 1], compat=True), edges)
    main = int(np.argmax(np.bincount(sectors, minlength=4)))  # ties: the earliest sector
    members = vectors[sectors == main]  # set order preserved
    n = len(members)
    k = int(n * keep)
    if k == 0:
        return zero
    norms = _norms32(members)
    order = _ascending_order(norms, members)[n - k :]
    kept, kept_norms = members[order], norms[order]
    s = np.cumsum(kept, axis=0, dtype=np.float32)[-1]  # one float32 rounding per addition
    denom = np.float32(float(_norms32(s[None])[0]) + NORM_EPS)  # the + 1e-6 happens in float64
    mean = np.float32(float(_pairwise_sum32(kept_norms)) / k)  # float64 division, then float32
    return (s / denom) * mean


def _norms32(v: np.ndarray) -> np.ndarray:
    """(M, 2) float32 -> (M,) float32 sqrt(x * x + y * y), each step rounded to float32."""
    return np.sqrt(v[:, 0] * v[:, 0] + v[:, 1] * v[:, 1])


def _pairwise_sum32(a: np.ndarray) -> np.float32:
    """NumPy's pairwise sum of a contiguous float32 array (what `np.sum` does there): below 8
    values one by one from 0; up to 128 values 8 running partial sums combined as
    ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7)), then the rest one by one; longer arrays
    split at n2 = n // 2 rounded down to a multiple of 8 and the two sums added."""
    n = len(a)
    if n < 8:
        res = np.float32(0)
        for value in a:
            res = np.float32(res + value)
        return res
    if n <= 128:
        whole = n - n % 8
        r = np.cumsum(a[:whole].reshape(-1, 8), axis=0, dtype=np.float32)[-1]
        res = np.float32(np.float32(r[0] + r[1]) + np.float32(r[2] + r[3]))
        res = np.float32(res + np.float32(np.float32(r[4] + r[5]) + np.float32(r[6] + r[7])))
        for value in a[whole:]:
            res = np.float32(res + value)
        return res
    n2 = n // 2
    n2 -= n2 % 8
    return np.float32(_pairwise_sum32(a[:n2]) + _pairwise_sum32(a[n2:]))


def _ascending_order(norms: np.ndarray, members: np.ndarray) -> np.ndarray:
    """Indices sorting `norms` ascending as NumPy 1.x's `np.argsort` did. Equal norms of equal
    vectors can be ordered any way without changing a result, so a stable sort stands in unless
    some equal norms belong to different vectors; then `np1_argsort` gives the exact order."""
    order = np.argsort(norms, kind="stable")
    same_norm = norms[order[1:]] == norms[order[:-1]]
    differ = np.any(members[order[1:]] != members[order[:-1]], axis=1)
    if not np.any(same_norm & differ):
        return order
    return np1_argsort(norms)


def np1_argsort(values: np.ndarray) -> np.ndarray:
    """(n,) float -> (n,) int64: `np.argsort(values)` as NumPy 1.x computed it (its default
    introsort, which the reference ran; NumPy 2 sorts float32 with SIMD code and orders equal
    values differently). Median-of-3 quicksort; partitions of at most 16 values are
    insertion-sorted; the larger part waits on a stack with the depth budget 2 * floor(log2 n)
    counted down per partition, and a waiting part whose budget is below 0 is heap-sorted."""
    v = [float(x) for x in values]
    idx = list(range(len(v)))
    if len(v) < 2:
        return np.array(idx, dtype=np.int64)
    stack = [(0, len(v) - 1, 2 * (len(v).bit_length() - 1))]
    while stack:
        lo, hi, depth = stack.pop()
        if depth < 0:
            _np1_heapsort(v, idx, lo, hi)
            continue
        while hi - lo > NP1_SMALL_PARTITION:
            p = _np1_partition(v, idx, lo, hi)
            depth -= 1
            if p - lo < hi - p:
                stack.append((p + 1, hi, depth))
                hi = p - 1
            else:
                stack.append((lo, p - 1, depth))
                lo = p + 1
        for i in range(lo + 1, hi + 1):  # insertion sort
            moving, j = idx[i], i
            while j > lo and v[moving] < v[idx[j - 1]]:
                idx[j] = idx[j - 1]
                j -= 1
            idx[j] = moving
    return np.array(idx, dtype=np.int64)


def _np1_partition(v, idx, lo, hi) -> int:
    """One quicksort partition of idx[lo..hi] (in place); returns the pivot's final place."""
    mid = lo + ((hi - lo) >> 1)
    if v[idx[mid]] < v[idx[lo]]:
        idx[mid], idx[lo] = idx[lo], idx[mid]
    if v[idx[hi]] < v[idx[mid]]:
        idx[hi], idx[mid] = idx[mid], idx[hi]
    if v[idx[mid]] < v[idx[lo]]:
        idx[mid], idx[lo] = idx[lo], idx[mid]
    pivot = v[idx[mid]]
    i, j = lo, hi - 1
    idx[mid], idx[j] = idx[j], idx[mid]
    while True:
        i += 1
        while v[idx[i]] < pivot:
            i += 1
        j -= 1
        while pivot < v[idx[j]]:
            j -= 1
        if i >= j:
            break
        idx[i], idx[j] = idx[j], idx[i]
    idx[i], idx[hi - 1] = idx[hi - 1], idx[i]
    return i


def _np1_heapsort(v, idx, lo, hi) -> None:
    """NumPy 1.x's heap sort of idx[lo..hi] by v (in place), 1-based heap over the range."""
    n = hi - lo + 1
    a = lambda i: idx[lo + i - 1]  # noqa: E731 -- 1-based view of the range

    def sift(i, n, moving):
        j = 2 * i
        while j <= n:
            if j < n and v[a(j)] < v[a(j + 1)]:
                j += 1
            if not v[moving] < v[a(j)]:
                break
            idx[lo + i - 1] = a(j)
            i, j = j, 2 * j
        idx[lo + i - 1] = moving

    for start in range(n >> 1, 0, -1):
        sift(start, n, a(start))
    while n > 1:
        moving = a(n)
        idx[lo + n - 1] = a(1)
        n -= 1
        sift(1, n, moving)
