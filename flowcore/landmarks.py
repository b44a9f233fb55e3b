"""Faces and 68-point landmarks with dlib.

Convention: landmarks are (68, 2) float32 arrays of (x, y) pixel coordinates, y pointing down,
0-based indices in the iBUG 300-W order that dlib's `shape_predictor_68_face_landmarks` produces.
Face boxes are (left, top, right, bottom) integers, right/bottom exclusive.

The landmark model ships inside the `face-recognition-models` package; nothing is downloaded.
That package's `__init__` imports `pkg_resources` (gone from current setuptools), so its
`models/` folder is located with `importlib.util.find_spec` instead of importing it.
"""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path

import numpy as np

N_LANDMARKS = 68
LANDMARK_MODEL_FILE = "shape_predictor_68_face_landmarks.dat"


class FaceNotFoundError(RuntimeError):
    """No face was detected where one was required."""


def landmark_model_path() -> Path:
    """Path of the 68-point dlib model inside the installed `face-recognition-models` package."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or spec.origin is None:
        raise FileNotFoundError(
            "the package 'face-recognition-models' is not installed; it ships the 68-point "
            "landmark model (pip install face-recognition-models)"
        )
    path = Path(spec.origin).parent / "models" / LANDMARK_MODEL_FILE
    if not path.is_file():
        raise FileNotFoundError(f"landmark model missing from face-recognition-models: {path}")
    return path


@functools.lru_cache(maxsize=1)
def _face_detector():
    import dlib

    return dlib.get_frontal_face_detector()


@functools.lru_cache(maxsize=1)
def _shape_predictor():
    import dlib

    return dlib.shape_predictor(str(landmark_model_path()))


def _to_gray_uint8(image: np.ndarray) -> np.ndarray:
    """(H, W) or (H, W, 3) RGB/BGR uint8 -> contiguous (H, W) uint8."""
    if image.dtype != np.uint8:
        raise TypeError(f"expected a uint8 image, got {image.dtype}")
    if image.ndim == 3:
        image = image.mean(axis=2).round().astype(np.uint8)
    elif image.ndim != 2:
        raise ValueError(f"expected an (H, W) or (H, W, 3) image, got shape {image.shape}")
    return np.ascontiguousarray(image)


def detect_faces(image: np.ndarray, upsample: int = 0) -> list[tuple[int, int, int, int]]:
    """All frontal faces dlib finds in `image`, largest first, as (left, top, right, bottom)."""
    rects = _face_detector()(_to_gray_uint8(image), upsample)
    boxes = [(r.left(), r.top(), r.right(), r.bottom()) for r in rects]
    return sorted(boxes, key=lambda b: (b[2] - b[0]) * (b[3] - b[1]), reverse=True)


def all_faces(image: np.ndarray, upsample: int = 0) -> list[tuple[int, int, int, int]]:
    """Every detected face, largest first (retried with upsampling when none is found)."""
    return detect_faces(image, upsample) or detect_faces(image, upsample + 1)


def largest_face(image: np.ndarray, upsample: int = 0) -> tuple[int, int, int, int]:
    """The largest detected face; FaceNotFoundError if there is none (retries with upsampling)."""
    boxes = detect_faces(image, upsample) or detect_faces(image, upsample + 1)
    if not boxes:
        raise FaceNotFoundError("no frontal face detected")
    return boxes[0]


def fit_landmarks(image: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """68 landmarks (68, 2) float32 (x, y) fitted inside `box` of `image`."""
    import dlib

    shape = _shape_predictor()(_to_gray_uint8(image), dlib.rectangle(*map(int, box)))
    return np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float32)


SCORE_FACE_PX = 84  # px: the tracked face is scored with its box rescaled to this width
SCORE_PAD = 0.15  # the scored patch is the box grown by this fraction of its side on each side
SCORE_FLOOR = -1.5  # detections scoring below this are not reported (dlib's own threshold is 0)
SCORE_MATCH_IOU = 0.5  # a detection is the tracked face when its box overlaps it this much


def box_iou(a, b) -> float:
    """Intersection over union of two (left, top, right, bottom) boxes."""
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    if w <= 0 or h <= 0:
        return 0.0
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def face_score(image: np.ndarray, box: tuple[int, int, int, int]) -> float:
    """The frontal detector's score (its SVM margin: > 0 is a detection at dlib's threshold) of
    the face at `box` of `image`, NaN when nothing face-like scoring above SCORE_FLOOR overlaps
    the box by IoU >= SCORE_MATCH_IOU.

    Only the box's neighbourhood is searched, rescaled so that the face is SCORE_FACE_PX wide
    (about 1.5 ms a frame, whatever the frame's size): the per-frame quality of a tracked face."""
    import cv2

    gray = _to_gray_uint8(image)
    left, top, right, bottom = (int(v) for v in box)
    side = max(right - left, bottom - top, 1)
    pad = int(round(side * SCORE_PAD))
    x0, y0 = max(0, left - pad), max(0, top - pad)
    x1, y1 = min(gray.shape[1], right + pad), min(gray.shape[0], bottom + pad)
    if x1 - x0 < side // 2 or y1 - y0 < side // 2:
        return float("nan")  # the box has left the image
    scale = SCORE_FACE_PX / side
    patch = cv2.resize(gray[y0:y1, x0:x1], None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    rects, scores, _ = _face_detector().run(patch, 0, SCORE_FLOOR)
    matching = [score for rect, score in zip(rects, scores)
                if box_iou((rect.left() / scale + x0, rect.top() / scale + y0,
                            rect.right() / scale + x0, rect.bottom() / scale + y0),
                           box) >= SCORE_MATCH_IOU]
    return float(max(matching)) if matching else float("nan")
