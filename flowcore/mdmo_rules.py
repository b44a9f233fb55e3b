"""What the two MDMOs share (AUWGCN.md section 3): the parameters, the sector tables, angles and
sectors, and the geometry of the sets (the nose rectangle, the ROI squares, patches clipped to
the image). `flowcore.mdmo` computes the float MDMO with these, `flowcore.mdmo_compat` the
reference's numbers.

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


def flow_angles(dx: np.ndarray, dy: np.ndarray, compat: bool = False) -> np.ndarray:
    """Angles in [0, 2 pi] (radians) of vectors (dx, dy); y points down; 0 for (0, 0).

    Exact: float64 atan2 mapped to [0, 2 pi). compat: OpenCV's `cartToPolar` on the vectors cast
    to float32, one call for the whole set (its result for a vector depends on the length of the
    call, see flowcore.mdmo_compat), float32 angles as the reference used.
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


def nose_rectangle(lm: np.ndarray, grow) -> tuple:
    """Rounded landmarks (68, 2) of one frame, grow b px -> the nose rectangle's inclusive bounds
    (x0, x1, y0, y1): landmarks 29 and 30's bounding box grown by b on every side."""
    nose = lm[list(NOSE_LANDMARKS)]
    return (nose[:, 0].min() - grow, nose[:, 0].max() + grow,
            nose[:, 1].min() - grow, nose[:, 1].max() + grow)


def roi_square(centre, radius: int) -> tuple:
    """A landmark (x, y) and r -> the (2r + 1) px square's inclusive bounds (x0, x1, y0, y1)."""
    x, y = centre
    return x - radius, x + radius, y - radius, y + radius


def patch(values: np.ndarray, bounds) -> np.ndarray:
    """Flow (2, H, W), inclusive bounds (x0, x1, y0, y1) -> the (P, 2) vectors inside the image,
    row-major, in the flow's dtype (the border rule: pixels outside are dropped)."""
    _, height, width = values.shape
    x0, x1, y0, y1 = (int(v) for v in bounds)
    x0, y0 = max(x0, 0), max(y0, 0)
    x1, y1 = min(x1, width - 1), min(y1, height - 1)
    if x1 < x0 or y1 < y0:
        return np.zeros((0, 2), values.dtype)
    return values[:, y0 : y1 + 1, x0 : x1 + 1].reshape(2, -1).T
