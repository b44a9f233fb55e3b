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
