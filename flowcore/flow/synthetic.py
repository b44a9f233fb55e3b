"""Image pairs with known ground-truth flow, built from a real face photo; for tests and
benchmarks/flow_accuracy.py.

Convention: flows (2, H, W) float32 pixels holding (dx, dy), y down, from the first image to the
second: second(p + u(p)) = first(p). Images (H, W) float32 grey 0..255.

The face is the astronaut photo shipped with scikit-image (Eileen Collins, public domain). The
second image is rendered by inverting the forward flow (fixed point p = q - u(p), exact for
smooth fields with |grad u| < 1) and sampling the first image there with cubic splines.
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np

# dlib's box of the face in skimage.data.astronaut() as (left, top, right, bottom), photo px
# (detect_faces gives it, largest first; the detector also fires on the mission patch, so the
# box is fixed here). The synthetic generator frames its subjects by mespot.synth.faces.FRAMING_BOX.
ASTRONAUT_FACE_BOX = (179, 83, 266, 170)
# dlib's 68 landmarks (x, y) of the astronaut's face, photo px, shipped so that machines without
# dlib or its model (the GPU image) build the same test cases. Remake:
#   python -c "import flowcore.flow.synthetic as s; print(s.fit_astronaut_landmarks().tolist())"
# (tests/test_flow.py checks the two agree where dlib is installed).
ASTRONAUT_LANDMARKS = (
    (179, 104), (179, 116), (180, 127), (182, 139), (185, 151), (191, 161), (200, 169), (209, 176),
    (221, 178), (232, 177), (243, 171), (253, 164), (260, 154), (265, 143), (268, 132), (270, 120),
    (272, 108), (186, 94), (192, 88), (200, 87), (208, 89), (216, 92), (236, 93), (244, 91),
    (253, 90), (260, 92), (265, 99), (225, 103), (225, 111), (225, 119), (225, 127), (214, 131),
    (219, 132), (224, 134), (229, 133), (234, 132), (195, 101), (200, 98), (207, 98), (212, 104),
    (206, 104), (199, 104), (238, 105), (243, 100), (250, 101), (255, 104), (250, 107), (244, 106),
    (201, 140), (209, 139), (218, 139), (224, 141), (229, 140), (237, 140), (246, 141), (237, 151),
    (229, 155), (222, 156), (216, 155), (208, 150), (204, 141), (218, 143), (223, 144), (229, 144),
    (243, 142), (229, 150), (223, 151), (217, 150),
)
CROP_MARGIN = 1.6  # crop side / face box side
CASE_CLASSES = ("translation", "rotation_zoom", "micro_deform", "macro_deform", "noise_brightness")


@dataclasses.dataclass(frozen=True)
class FlowCase:
    """One pair with its truth: first, second (H, W) float32 0..255, flow (2, H, W) float32."""

    name: str
    kind: str  # one of CASE_CLASSES
    first: np.ndarray
    second: np.ndarray
    flow: np.ndarray


def _crop_box(size: int) -> tuple[int, int, int]:
    """(left, top, side) of the square crop around the astronaut's face."""
    left, top, right, bottom = ASTRONAUT_FACE_BOX
    side = int(round(max(right - left, bottom - top) * CROP_MARGIN))
    cx, cy = (left + right) // 2, (top + bottom) // 2
    return cx - side // 2, cy - side // 2, side


@functools.lru_cache(maxsize=8)
def face_texture(size: int = 256) -> np.ndarray:
    """(size, size) float32 grey 0..255: the astronaut's face, a square crop resized to size."""
    import cv2
    from skimage.data import astronaut

    grey = astronaut().astype(np.float32) @ np.float32([0.299, 0.587, 0.114])
    left, top, side = _crop_box(size)
    crop = grey[top : top + side, left : left + side]
    interpolation = cv2.INTER_AREA if side > size else cv2.INTER_CUBIC
    out = cv2.resize(crop, (size, size), interpolation=interpolation)
    out = np.clip(out, 0, 255).astype(np.float32)
    out.flags.writeable = False
    return out


def fit_astronaut_landmarks() -> np.ndarray:
    """(68, 2) float32 (x, y) landmarks dlib fits to the astronaut photo in ASTRONAUT_FACE_BOX
    (needs dlib and the landmark model; `ASTRONAUT_LANDMARKS` holds the result)."""
    from skimage.data import astronaut

    from flowcore.landmarks import fit_landmarks

    return fit_landmarks(astronaut(), ASTRONAUT_FACE_BOX)


def face_landmarks(size: int = 256) -> np.ndarray:
    """(68, 2) float32 (x, y) landmarks of `face_texture(size)`: the shipped dlib fit on the photo,
    brought into the crop."""
    left, top, side = _crop_box(size)
    points = np.float32(ASTRONAUT_LANDMARKS)
    return ((points - np.float32([left, top])) * np.float32(size / side)).astype(np.float32)


def roi_mask(landmarks: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """(H, W) bool: union of the 12 AUW-GCN ROI squares (11 x 11 px) around their landmarks."""
    from flowcore.rois import ROI_LANDMARKS, ROI_RADIUS

    mask = np.zeros(shape, bool)
    for index in ROI_LANDMARKS:
        x, y = np.round(landmarks[index]).astype(int)
        rows = slice(max(y - ROI_RADIUS, 0), y + ROI_RADIUS + 1)
        cols = slice(max(x - ROI_RADIUS, 0), x + ROI_RADIUS + 1)
        mask[rows, cols] = True
    return mask


def end_point_error(flow: np.ndarray, truth: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Mean |flow - truth| (px) over (2, H, W) fields, optionally over an (H, W) bool mask."""
    error = np.sqrt(((np.asarray(flow, np.float64) - truth) ** 2).sum(axis=0))
    return float(error[mask].mean() if mask is not None else error.mean())


def render_second(first: np.ndarray, flow: np.ndarray, n_iter: int = 30) -> np.ndarray:
    """(H, W) image and forward flow (2, H, W) -> second (H, W) with second(p + u(p)) = first(p).

    For each pixel q of the second image, p solves p + u(p) = q (fixed point p <- q - u(p),
    u sampled bilinearly), then second(q) = first(p) by cubic-spline interpolation (reflected
    border).
    """
    from scipy.ndimage import map_coordinates

    h, w = first.shape
    qy, qx = np.mgrid[0:h, 0:w].astype(np.float64)
    py, px = qy.copy(), qx.copy()
    for _ in range(n_iter):
        coords = np.stack((py, px))
        ux = map_coordinates(flow[0].astype(np.float64), coords, order=1, mode="nearest")
        uy = map_coordinates(flow[1].astype(np.float64), coords, order=1, mode="nearest")
        py, px = qy - uy, qx - ux
    second = map_coordinates(first.astype(np.float64), np.stack((py, px)), order=3, mode="reflect")
    return second.astype(np.float32)


def translation_flow(shape: tuple[int, int], dx: float, dy: float) -> np.ndarray:
    """(2, H, W) float32 constant flow."""
    flow = np.empty((2, *shape), np.float32)
    flow[0], flow[1] = dx, dy
    return flow


def affine_flow(shape: tuple[int, int], angle_deg: float, zoom: float, dx: float = 0.0,
                dy: float = 0.0) -> np.ndarray:
    """(2, H, W) float32 flow of a rotation by angle_deg and zoom about the image centre, then
    a translation (dx, dy)."""
    h, w = shape
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    cx, cy = (w - 1) / 2, (h - 1) / 2
    a = np.deg2rad(angle_deg)
    c, s = zoom * np.cos(a), zoom * np.sin(a)
    x2 = c * (x - cx) - s * (y - cy) + cx + dx
    y2 = s * (x - cx) + c * (y - cy) + cy + dy
    return np.stack((x2 - x, y2 - y)).astype(np.float32)


def bump_flow(shape: tuple[int, int], centres, vectors, sigma: float) -> np.ndarray:
    """(2, H, W) float32 sum of Gaussian bumps: at (x, y) centre k the flow is about vectors[k].

    A smooth local deformation, like a brow raise or a lip-corner pull; its peak magnitude is
    the largest |vector| when bumps do not overlap.
    """
    h, w = shape
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    flow = np.zeros((2, h, w))
    for (cx, cy), (vx, vy) in zip(centres, vectors):
        g = np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * sigma**2))
        flow[0] += vx * g
        flow[1] += vy * g
    return flow.astype(np.float32)


def face_pairs(shape: tuple[int, int], n: int) -> tuple[np.ndarray, np.ndarray]:
    """(n, H, W) uint8 face pairs with a small local motion (about 1 px) and a slight head drift,
    as between video frames (the speed benchmarks' input)."""
    h, w = shape
    side = max(h, w)
    top, left = (side - h) // 2, (side - w) // 2
    first = np.array(face_texture(side))[top: top + h, left: left + w]
    flow = bump_flow(first.shape, [(w * 0.4, h * 0.6), (w * 0.6, h * 0.4)],
                     [(0.8, -0.5), (-0.3, 0.9)], sigma=0.05 * side)
    flow[0] += 0.2
    second = render_second(first, flow)
    to_u8 = lambda x: np.clip(np.round(x), 0, 255).astype(np.uint8)  # noqa: E731
    return np.repeat(to_u8(first)[None], n, 0), np.repeat(to_u8(second)[None], n, 0)


def _random_vectors(rng, n, low, high):
    angle = rng.uniform(0, 2 * np.pi, n)
    magnitude = rng.uniform(low, high, n)
    return np.stack((magnitude * np.cos(angle), magnitude * np.sin(angle)), axis=1)


def make_cases(size: int = 256, landmarks: np.ndarray | None = None, per_class: int = 4,
               seed: int = 0) -> list[FlowCase]:
    """Pairs of every class in CASE_CLASSES, `per_class` each, from face_texture(size).

    landmarks: (68, 2) centres for the local deformations (e.g. face_landmarks(size)); random
    positions inside the central half of the image when None. Deterministic for a seed.
    translation: (0.05 .. 5 px, spread on a log scale, random direction); rotation_zoom: up to
    2 degrees and 3 % zoom; micro_deform: bumps of 0.1 .. 1.5 px; macro_deform: 2 .. 8 px;
    noise_brightness: a 0.1 .. 1.5 px deformation plus 2 % gain, +2 grey levels and Gaussian
    noise of 1.5 grey levels on the second image (TV-L1 without its gamma term reads a
    larger brightness change as motion, in every backend alike).
    """
    from flowcore.rois import ROI_LANDMARKS

    rng = np.random.default_rng(seed)
    first = np.array(face_texture(size))
    shape = first.shape
    scale = size / 256  # sizes below are for a 256 px face crop

    def centres(n):
        if landmarks is not None:
            chosen = rng.choice(ROI_LANDMARKS, n, replace=False)
            return [tuple(landmarks[i]) for i in chosen]
        return [tuple(rng.uniform(size / 4, 3 * size / 4, 2)) for _ in range(n)]

    cases = []
    magnitudes = np.geomspace(0.05, 5.0, per_class)
    for k in range(per_class):
        (vx, vy), = _random_vectors(rng, 1, magnitudes[k], magnitudes[k])
        flow = translation_flow(shape, vx, vy)
        cases.append(("translation", f"shift {magnitudes[k]:.2f}px", flow))
    for k in range(per_class):
        angle, zoom = rng.uniform(-2, 2), 1 + rng.uniform(-0.03, 0.03)
        flow = affine_flow(shape, angle, zoom, *rng.uniform(-1, 1, 2))
        cases.append(("rotation_zoom", f"rot {angle:.2f}deg zoom {zoom:.3f}", flow))
    for kind, low, high, sigma in (("micro_deform", 0.1, 1.5, 10), ("macro_deform", 2.0, 8.0, 24)):
        for k in range(per_class):
            flow = bump_flow(shape, centres(3), _random_vectors(rng, 3, low, high), sigma * scale)
            cases.append((kind, f"{kind} max {np.abs(flow).max():.2f}px", flow))
    for k in range(per_class):
        flow = bump_flow(shape, centres(3), _random_vectors(rng, 3, 0.1, 1.5), 10 * scale)
        cases.append(("noise_brightness", f"noisy bright {np.abs(flow).max():.2f}px", flow))

    out = []
    for kind, name, flow in cases:
        second = render_second(first, flow)
        if kind == "noise_brightness":
            second = second * 1.02 + 2.0 + rng.normal(0, 1.5, shape)
        out.append(FlowCase(name, kind, first, np.clip(second, 0, 255).astype(np.float32), flow))
    return out
