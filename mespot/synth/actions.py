"""Facial actions as smooth displacement fields driven by the 68 landmarks.

Each action unit (AU) moves a few anchor points of the face; the displacement spreads to the
skin around them as a sum of Gaussians. A field is built at unit peak (max |D| = 1 px over the
image) and scaled by the requested amplitude, so "peak motion" means exactly that.

Convention: fields are (H, W, 2) float32 holding (dx, dy) in pixels, y pointing down; the
displacement is *forward*: the skin at x moves to x + D(x). Anchor directions are written in
face terms, (out, up): `out` points away from the face's midline (so mirrored on the two sides),
`up` towards the brows.
"""

from __future__ import annotations

import re

import numpy as np

# An anchor is a landmark index, or a blend (a, b, t) = (1 - t) L[a] + t L[b] for skin between
# landmarks (the cheeks have none of their own).
CHEEK_R, CHEEK_L = (41, 2, 0.45), (46, 14, 0.45)
CHEEK_LOW_R, CHEEK_LOW_L = (40, 48, 0.45), (47, 54, 0.45)

# AU number -> [(anchor, (out, up), weight)]. 0-based iBUG indices: brows 17-26, eyes 36-47
# (upper lids 37, 38, 43, 44; lower lids 40, 41, 46, 47), nose 27-35, mouth corners 48 and 54,
# upper lip 49-53, lower lip 55-59, jaw 0-16.
ACTIONS: dict[int, list[tuple]] = {
    1: [(20, (0.0, 1.0), 0.6), (21, (0.1, 1.0), 1.0), (22, (0.1, 1.0), 1.0), (23, (0.0, 1.0), 0.6)],
    2: [(17, (0.0, 1.0), 1.0), (18, (0.0, 1.0), 0.8), (25, (0.0, 1.0), 0.8), (26, (0.0, 1.0), 1.0)],
    4: [
        (19, (-0.3, -1.0), 0.7),
        (20, (-0.5, -1.0), 1.0),
        (21, (-0.7, -0.7), 1.0),
        (22, (-0.7, -0.7), 1.0),
        (23, (-0.5, -1.0), 1.0),
        (24, (-0.3, -1.0), 0.7),
    ],
    5: [(37, (0.0, 1.0), 1.0), (38, (0.0, 1.0), 1.0), (43, (0.0, 1.0), 1.0), (44, (0.0, 1.0), 1.0)],
    6: [
        (CHEEK_R, (0.1, 1.0), 1.0),
        (CHEEK_L, (0.1, 1.0), 1.0),
        (CHEEK_LOW_R, (0.0, 1.0), 0.7),
        (CHEEK_LOW_L, (0.0, 1.0), 0.7),
        (40, (0.0, 1.0), 0.4),
        (41, (0.0, 1.0), 0.4),
        (46, (0.0, 1.0), 0.4),
        (47, (0.0, 1.0), 0.4),
    ],
    7: [
        (40, (0.0, 1.0), 1.0),
        (41, (0.0, 1.0), 1.0),
        (46, (0.0, 1.0), 1.0),
        (47, (0.0, 1.0), 1.0),
        (37, (0.0, -1.0), 0.4),
        (38, (0.0, -1.0), 0.4),
        (43, (0.0, -1.0), 0.4),
        (44, (0.0, -1.0), 0.4),
    ],
    9: [
        (31, (0.2, 1.0), 1.0),
        (32, (0.0, 1.0), 0.7),
        (34, (0.0, 1.0), 0.7),
        (35, (0.2, 1.0), 1.0),
        (28, (0.0, 1.0), 0.4),
        (21, (0.0, -1.0), 0.5),
        (22, (0.0, -1.0), 0.5),
    ],
    10: [
        (49, (0.0, 1.0), 0.8),
        (50, (0.0, 1.0), 1.0),
        (51, (0.0, 1.0), 1.0),
        (52, (0.0, 1.0), 1.0),
        (53, (0.0, 1.0), 0.8),
        (31, (0.0, 1.0), 0.3),
        (35, (0.0, 1.0), 0.3),
    ],
    12: [
        (48, (0.7, 0.7), 1.0),
        (54, (0.7, 0.7), 1.0),
        (49, (0.3, 0.4), 0.5),
        (53, (0.3, 0.4), 0.5),
        (59, (0.3, 0.3), 0.5),
        (55, (0.3, 0.3), 0.5),
        (CHEEK_LOW_R, (0.2, 1.0), 0.4),
        (CHEEK_LOW_L, (0.2, 1.0), 0.4),
    ],
    14: [
        (48, (0.9, 0.1), 1.0),
        (54, (0.9, 0.1), 1.0),
        (49, (0.4, 0.0), 0.4),
        (53, (0.4, 0.0), 0.4),
    ],
    15: [
        (48, (0.2, -1.0), 1.0),
        (54, (0.2, -1.0), 1.0),
        (59, (0.0, -1.0), 0.5),
        (55, (0.0, -1.0), 0.5),
    ],
    17: [(8, (0.0, 1.0), 1.0), (7, (0.0, 1.0), 0.6), (9, (0.0, 1.0), 0.6), (57, (0.0, 1.0), 0.6)],
    18: [  # lip pucker (talking: rounded lips): the corners towards the midline
        (48, (-1.0, 0.0), 1.0),
        (54, (-1.0, 0.0), 1.0),
        (49, (-0.5, 0.0), 0.5),
        (53, (-0.5, 0.0), 0.5),
        (59, (-0.5, 0.0), 0.5),
        (55, (-0.5, 0.0), 0.5),
    ],
    20: [  # lip stretcher (talking: stretched lips): the corners out and a little down
        (48, (1.0, -0.2), 1.0),
        (54, (1.0, -0.2), 1.0),
        (49, (0.4, 0.0), 0.4),
        (53, (0.4, 0.0), 0.4),
        (59, (0.4, -0.2), 0.4),
        (55, (0.4, -0.2), 0.4),
    ],
    24: [
        (50, (0.0, -1.0), 0.8),
        (51, (0.0, -1.0), 0.8),
        (52, (0.0, -1.0), 0.8),
        (56, (0.0, 1.0), 0.8),
        (57, (0.0, 1.0), 0.8),
        (58, (0.0, 1.0), 0.8),
        (48, (-1.0, 0.0), 0.3),
        (54, (-1.0, 0.0), 0.3),
    ],
    25: [
        (56, (0.0, -1.0), 1.0),
        (57, (0.0, -1.0), 1.0),
        (58, (0.0, -1.0), 1.0),
        (50, (0.0, 1.0), 0.4),
        (51, (0.0, 1.0), 0.4),
        (52, (0.0, 1.0), 0.4),
    ],
    26: [
        (7, (0.0, -1.0), 0.7),
        (8, (0.0, -1.0), 1.0),
        (9, (0.0, -1.0), 0.7),
        (57, (0.0, -1.0), 0.8),
        (56, (0.0, -1.0), 0.7),
        (58, (0.0, -1.0), 0.7),
    ],
    43: [
        (37, (0.0, -1.0), 1.0),
        (38, (0.0, -1.0), 1.0),
        (43, (0.0, -1.0), 1.0),
        (44, (0.0, -1.0), 1.0),
    ],
}
SUPPORTED_AUS = tuple(sorted(ACTIONS))
SIGMA_PER_EYE_DISTANCE = 0.2  # Gaussian spread of an anchor, in inter-ocular distances
BLINK_SIGMA_PER_EYE_DISTANCE = 0.09  # a blink moves the lids only
_TOKEN = re.compile(r"^(?P<side>[LR]?)(?P<number>\d+)(?P<intensity>[A-E]?)$")


def parse_token(token: str) -> tuple[str, int]:
    """'L12' -> ('L', 12); '4' -> ('', 4); intensity letters are ignored here."""
    match = _TOKEN.match(token.strip())
    if not match or int(match["number"]) not in ACTIONS:
        raise ValueError(f"unknown action token {token!r}; supported AUs: {SUPPORTED_AUS}")
    return match["side"], int(match["number"])


def anchor_point(landmarks: np.ndarray, anchor) -> np.ndarray:
    """(2,) position of an anchor (a landmark index or a blend (a, b, t))."""
    if isinstance(anchor, tuple):
        a, b, t = anchor
        return (1 - t) * landmarks[a] + t * landmarks[b]
    return landmarks[anchor]


def eye_distance(landmarks: np.ndarray) -> float:
    """Distance between the two eye centres (landmarks 36-41 and 42-47), px."""
    return float(np.linalg.norm(landmarks[42:48].mean(0) - landmarks[36:42].mean(0)))


def action_anchors(landmarks: np.ndarray, tokens: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Anchor points (K, 2) and their displacement vectors (K, 2) in image terms for AU tokens.

    A side prefix keeps the anchors of that side of the subject (L = subject's left = image
    right); anchors on the midline count half.
    """
    mid_x = float(landmarks[27:31, 0].mean())
    near_midline = 0.05 * eye_distance(landmarks)
    points, vectors = [], []
    for token in tokens:
        side, number = parse_token(token)
        for anchor, (out, up), weight in ACTIONS[number]:
            p = anchor_point(landmarks, anchor)
            offset = p[0] - mid_x
            on_midline = abs(offset) < near_midline
            if side and not on_midline and (offset > 0) != (side == "L"):
                continue
            w = weight * (0.5 if side and on_midline else 1.0)
            sign = 0.0 if on_midline else np.sign(offset)
            points.append(p)
            vectors.append(w * np.array([out * sign, -up]))
    return np.array(points, np.float32).reshape(-1, 2), np.array(vectors, np.float32).reshape(-1, 2)


def gaussian_field(
    shape: tuple[int, int], points: np.ndarray, vectors: np.ndarray, sigma: float
) -> np.ndarray:
    """(H, W, 2) float32: sum over anchors of vector_k * exp(-|x - p_k|^2 / (2 sigma^2))."""
    height, width = shape
    field = np.zeros((height, width, 2), np.float32)
    reach = int(np.ceil(3.5 * sigma))
    for (px, py), v in zip(points, vectors):
        x0, x1 = max(int(px) - reach, 0), min(int(px) + reach + 1, width)
        y0, y1 = max(int(py) - reach, 0), min(int(py) + reach + 1, height)
        if x0 >= x1 or y0 >= y1:
            continue
        gx = np.exp(-((np.arange(x0, x1) - px) ** 2) / (2 * sigma**2)).astype(np.float32)
        gy = np.exp(-((np.arange(y0, y1) - py) ** 2) / (2 * sigma**2)).astype(np.float32)
        bump = gy[:, None] * gx[None, :]
        field[y0:y1, x0:x1] += bump[..., None] * v
    return field


def unit_field(
    shape: tuple[int, int], points: np.ndarray, vectors: np.ndarray, sigma: float
) -> np.ndarray:
    """gaussian_field scaled so that its largest displacement is exactly 1 px."""
    field = gaussian_field(shape, points, vectors, sigma)
    peak = float(np.sqrt((field**2).sum(-1)).max())
    if peak == 0:
        raise ValueError("the action moves nothing inside the image")
    return field / peak


def expression_field(
    shape: tuple[int, int], landmarks: np.ndarray, tokens: list[str]
) -> np.ndarray:
    """Unit-peak (H, W, 2) field of an expression made of AU tokens, on a face with `landmarks`."""
    points, vectors = action_anchors(landmarks, tokens)
    return unit_field(shape, points, vectors, SIGMA_PER_EYE_DISTANCE * eye_distance(landmarks))


def blink_field(shape: tuple[int, int], landmarks: np.ndarray) -> np.ndarray:
    """(H, W, 2) field closing both eyes: at 1.0 the upper lids reach the lower lids."""
    points, vectors = action_anchors(landmarks, ["43"])
    opening = float(
        np.mean(
            [
                landmarks[41, 1] - landmarks[37, 1],
                landmarks[40, 1] - landmarks[38, 1],
                landmarks[47, 1] - landmarks[43, 1],
                landmarks[46, 1] - landmarks[44, 1],
            ]
        )
    )
    field = unit_field(
        shape, points, vectors, BLINK_SIGMA_PER_EYE_DISTANCE * eye_distance(landmarks)
    )
    return field * max(opening, 1.0) * 0.9
