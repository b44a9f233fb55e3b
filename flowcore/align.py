"""Head-motion removal before the flow: register every face crop to its run's first frame (a
run: consecutive frames showing the face in one crop; a video without gaps is one run).

AUW-GCN crops every frame with the first frame's box and removes head motion only afterwards,
by subtracting the nose region's main motion from each ROI's flow (AUWGCN.md sections 1 and 3).
A head that turns or shifts by several pixels then still dominates the flow of that frame pair,
and what is left after the subtraction is the flow's error on large motion. With `--align`
(`AlignParams`), each crop is warped before the flow by the similarity transform (scale,
rotation, translation) that maps its stable landmarks onto the first frame's; the flow then
sees only what moved relative to the skull. The nose subtraction still follows as before.

Stable landmarks (0-based iBUG 300-W): the four eye corners 36, 39, 42, 45 and the nose bridge
27-30; expressions move them little (blinks move the lids, not the corners). Per-frame fits
jitter by a fraction of a pixel, which registering by raw fits would turn into motion as large as
a micro-expression; the transforms' parameters are therefore smoothed over time (a local
straight-line fit with Gaussian weights, sigma `smooth` frames), which keeps head movements
(0.3 s and longer) and steady drift and drops the jitter.

Shapes and units: landmarks (T, 68, 2) float32 px (x, y) in the crop's grid; transforms (T, 2, 3)
float32 affine matrices taking a frame's pixel coordinates to the first frame's
(`x_ref = M[:, :2] @ x + M[:, 2]`); crops (h, w) uint8.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

STABLE_POINTS = (36, 39, 42, 45, 27, 28, 29, 30)  # eye corners, nose bridge


@dataclass(frozen=True)
class AlignParams:
    """Registration to the first frame (a store parameter: it changes the features)."""

    points: tuple[int, ...] = STABLE_POINTS  # landmarks the similarity transform is fitted to
    smooth: float = 2.0  # frames: sigma of the Gaussian smoothing of the transforms (0: none)

    def __post_init__(self):
        if len(self.points) < 2 or any(not 0 <= p < 68 for p in self.points):
            raise ValueError(
                f"align points must be at least 2 landmark indices in 0..67, got {self.points}"
            )
        if self.smooth < 0:
            raise ValueError(f"align smooth must be >= 0 frames, got {self.smooth}")

    def to_dict(self) -> dict:
        return {**asdict(self), "points": list(self.points)}

    @classmethod
    def from_value(cls, value) -> "AlignParams | None":
        """None for off (None/False), defaults for True, or the fields of a mapping."""
        if value is None or value is False:
            return None
        if value is True:
            return cls()
        if isinstance(value, dict):
            values = dict(value)
            if "points" in values:
                values["points"] = tuple(int(p) for p in values["points"])
            return cls(**values)
        raise ValueError(f"align must be true, false or a mapping of points/smooth, got {value!r}")


def similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (no reflection) taking points `src` (P, 2) onto `dst` (P, 2):
    (2, 3) float64 matrix [s R | t] (Umeyama's closed form)."""
    src, dst = np.asarray(src, np.float64), np.asarray(dst, np.float64)
    mu_s, mu_d = src.mean(0), dst.mean(0)
    a, b = src - mu_s, dst - mu_d
    var = (a * a).sum() / len(src)
    cov = b.T @ a / len(src)
    u, d, vt = np.linalg.svd(cov)
    sign = np.diag([1.0, np.sign(np.linalg.det(u @ vt)) or 1.0])
    rot = u @ sign @ vt
    scale = float(np.trace(np.diag(d) @ sign) / var) if var > 0 else 1.0
    return np.hstack([scale * rot, (mu_d - scale * rot @ mu_s)[:, None]])


def _gaussian_smooth(values: np.ndarray, sigma: float) -> np.ndarray:
    """(T, K) smoothed along axis 0: at each t, the value at t of a straight line fitted with
    Gaussian weights (sigma frames) to the neighbours. Unlike a plain Gaussian average it keeps a
    steady drift exact, also at the video's ends."""
    if sigma <= 0 or len(values) < 3:
        return values
    radius = int(np.ceil(3 * sigma))
    n = len(values)
    out = np.empty_like(values)
    for t in range(n):  # T is one row per frame: a plain loop stays readable and fast enough
        lo, hi = max(0, t - radius), min(n, t + radius + 1)
        x = np.arange(lo, hi) - t
        w = np.exp(-0.5 * (x / sigma) ** 2)
        s0, s1, s2 = w.sum(), (w * x).sum(), (w * x * x).sum()
        y0, y1 = (w[:, None] * values[lo:hi]).sum(0), ((w * x)[:, None] * values[lo:hi]).sum(0)
        det = s0 * s2 - s1 * s1
        out[t] = (s2 * y0 - s1 * y1) / det if det > 1e-12 else y0 / s0
    return out


def transforms_to_first(landmarks: np.ndarray, params: AlignParams = AlignParams()) -> np.ndarray:
    """(T, 68, 2) landmarks -> (T, 2, 3) float32 similarity transforms taking each frame onto the
    first, smoothed over time (frame 0's transform is then near, not exactly, the identity)."""
    points = np.asarray(landmarks, np.float64)[:, list(params.points)]
    raw = np.stack([similarity(p, points[0]) for p in points])  # (T, 2, 3)
    # [[a, -b, tx], [b, a, ty]]: four numbers per frame, smoothed linearly
    flat = np.stack([raw[:, 0, 0], raw[:, 1, 0], raw[:, 0, 2], raw[:, 1, 2]], axis=1)
    a, b, tx, ty = _gaussian_smooth(flat, params.smooth).T
    out = np.empty_like(raw)
    out[:, 0, 0], out[:, 0, 1], out[:, 0, 2] = a, -b, tx
    out[:, 1, 0], out[:, 1, 1], out[:, 1, 2] = b, a, ty
    return out.astype(np.float32)


def apply_to_points(transforms: np.ndarray, points: np.ndarray) -> np.ndarray:
    """(T, 2, 3) transforms applied to (T, P, 2) points: (T, P, 2) float32."""
    m = np.asarray(transforms, np.float64)
    p = np.asarray(points, np.float64)
    return (np.einsum("tij,tpj->tpi", m[:, :, :2], p) + m[:, None, :, 2]).astype(np.float32)


def warp_crop(crop: np.ndarray, transform: np.ndarray) -> np.ndarray:
    """(h, w) uint8 crop resampled into the first frame's grid (bilinear, edges replicated)."""
    import cv2

    h, w = crop.shape[:2]
    return cv2.warpAffine(
        crop,
        np.asarray(transform, np.float64),
        (w, h),
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_REPLICATE,
    )


def register_runs(crops, landmarks: np.ndarray, runs, params: AlignParams):
    """(iterator of registered crops, (T, 68, 2) landmarks in the registered grid, (T, 2, 3)
    transforms) for a video's crops (an iterable of (h, w) uint8 or None, in frame order): each
    run of frames showing the face (`runs`: (first, last) indices, inclusive) registered onto its
    own first frame. Frames outside every run (no face) keep crop None, and get NaN landmarks
    and transforms."""
    transforms = np.full((len(landmarks), 2, 3), np.nan, np.float32)
    for a, b in runs:
        transforms[a : b + 1] = transforms_to_first(landmarks[a : b + 1], params)
    moved = apply_to_points(transforms, landmarks)
    warped = (None if c is None else warp_crop(c, transforms[t]) for t, c in enumerate(crops))
    return warped, moved, transforms
