"""Face box, crop and per-frame landmarks with repair ("align to the first frame").

The face box is detected once (by default dlib's frontal detector; the largest face; other
detectors plug in as a `FaceBackend`, see `face_backend`) on the first frame of a
video, made square, grown by a margin and kept inside the frame; every frame of the video is
cropped with that same box and optionally resized to `resize` x `resize` px. Landmarks (68, 2)
float32 (x, y) are fitted on every cropped frame, in the crop's pixel grid (the grid the flow is
computed on), inside the detected face box mapped into the crop.

Repair: a frame's fit is flagged when it has non-finite points or points far outside the crop
(a failed fit), or when it jumps: its mean point distance to the temporal median of the fits of
frames k-2..k+2 exceeds `jump_tolerance` x the median's outer-eye-corner distance (landmarks 36,
45). Flagged frames get landmarks linearly interpolated from the nearest good frames on each
side (copied from the nearest good frame at the ends of the video).
"""

from __future__ import annotations

import importlib
from dataclasses import asdict, dataclass, replace
from typing import Callable

import numpy as np

import flowcore.landmarks as dlib_faces
from flowcore.landmarks import FaceNotFoundError

OUTER_EYE_CORNERS = (36, 45)
JUMP_WINDOW = 5  # frames in the temporal median a fit is compared with


@dataclass(frozen=True)
class FaceParams:
    """How faces are found, cropped and landmarked; saved in every store's parameters."""

    backend: str = "dlib"  # see `face_backend`: "dlib" or "package.module:object"
    margin: float = 0.1  # the square box grows by this fraction of its side on every side
    resize: int | None = None  # px: crops resized to resize x resize (None: kept as cropped)
    search_frames: int = 10  # frames tried, from the first, until a face is found
    jump_tolerance: float = 0.15  # x outer-eye-corner distance (see the module docstring)

    def __post_init__(self):
        if self.margin < 0:
            raise ValueError(f"margin must be >= 0, got {self.margin}")
        if self.resize is not None and self.resize < 32:
            raise ValueError(f"resize must be at least 32 px, got {self.resize}")
        if self.search_frames < 1:
            raise ValueError(f"search_frames must be >= 1, got {self.search_frames}")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class FaceCrop:
    """Where the face is: `box` (left, top, right, bottom) int in frame pixels, right/bottom
    exclusive, the region every frame is cropped to; `face` the detector's box in the crop's
    (resized) grid, where landmarks are fitted; `size` (width, height) of the crop after resize."""

    box: tuple[int, int, int, int]
    face: tuple[int, int, int, int]
    size: tuple[int, int]
    found_in_frame: int  # index (0-based, among kept frames) of the frame the face was found in
    backend: str = "dlib"  # the face backend that fits the landmarks
    faces_found: int = 1  # faces detected in that frame (the largest is used)

    def crop(self, frame: np.ndarray) -> np.ndarray:
        """(H, W) uint8 frame -> (h, w) uint8 crop, resized when the params asked for it."""
        import cv2

        left, top, right, bottom = self.box
        patch = frame[top:bottom, left:right]
        if (patch.shape[1], patch.shape[0]) != self.size:
            patch = cv2.resize(patch, self.size, interpolation=cv2.INTER_AREA)
        return np.ascontiguousarray(patch)


@dataclass(frozen=True)
class FaceBackend:
    """A face detector and 68-point landmark fitter (iBUG 300-W order).

    largest_face: (H, W) uint8 gray -> (left, top, right, bottom) int, right/bottom exclusive, of
        the largest face; raises FaceNotFoundError when there is none.
    fit_landmarks: ((h, w) uint8 gray, box) -> (68, 2) float32 (x, y) px.
    load: loads the models now (called once per video before timing starts; should cache).
    all_faces: optional, (H, W) uint8 gray -> every face's box, largest first (empty: none); lets
        the extraction say that a frame held several faces and which one it took.
    """

    name: str
    largest_face: Callable
    fit_landmarks: Callable
    load: Callable[[], None]
    all_faces: Callable | None = None


def _load_dlib() -> None:
    dlib_faces._face_detector()
    dlib_faces._shape_predictor()


DLIB = FaceBackend("dlib", dlib_faces.largest_face, dlib_faces.fit_landmarks, _load_dlib,
                   dlib_faces.all_faces)


def face_backend(name: str) -> FaceBackend:
    """"dlib" (frontal detector + the 68-point model of face-recognition-models), or
    "package.module:object" naming a FaceBackend (for example one wrapping RetinaFace weights a
    user downloaded); being importable by name, it works in worker processes too."""
    if name == "dlib":
        return DLIB
    if ":" in name:
        module, attr = name.split(":", 1)
        backend = getattr(importlib.import_module(module), attr, None)
        if isinstance(backend, FaceBackend):
            return backend
        raise ValueError(f"face backend {name!r}: {module}.{attr} is not a "
                         f"flowcore.faces.FaceBackend")
    raise ValueError(f"unknown face backend {name!r}: use 'dlib' or 'package.module:object' naming "
                     f"a flowcore.faces.FaceBackend")


def load_models(params: "FaceParams") -> None:
    """Load the face backend's models now (cached per process)."""
    face_backend(params.backend).load()


def face_crop(frames, params: FaceParams, video: str = "") -> FaceCrop:
    """Find the face on the first of `frames` that has one (at most `search_frames` tried).

    frames: iterable of (H, W) uint8 gray images. Raises FaceNotFoundError naming the video.
    """
    backend = face_backend(params.backend)
    tried = 0
    for index, frame in enumerate(frames):
        if index >= params.search_frames:
            break
        tried += 1
        if backend.all_faces is not None:
            boxes = backend.all_faces(frame)
            if not boxes:
                continue
            face, found = boxes[0], len(boxes)
        else:
            try:
                face, found = backend.largest_face(frame), 1
            except FaceNotFoundError:
                continue
        crop = _crop_for(face, frame.shape, params, index, params.backend)
        return replace(crop, faces_found=found)
    raise FaceNotFoundError(f"{video}: no face found in the first {tried} frame(s)")


def _crop_for(face, shape, params: FaceParams, index: int, backend: str = "dlib") -> FaceCrop:
    height, width = shape[:2]
    left, top, right, bottom = face
    side = max(right - left, bottom - top)
    side = min(int(round(side * (1 + 2 * params.margin))), width, height)
    cx, cy = (left + right) / 2, (top + bottom) / 2
    x0 = int(np.clip(round(cx - side / 2), 0, width - side))  # shifted inside, never clipped
    y0 = int(np.clip(round(cy - side / 2), 0, height - side))
    box = (x0, y0, x0 + side, y0 + side)
    out = params.resize or side
    scale = out / side
    mapped = tuple(int(round((v - o) * scale)) for v, o in zip(face, (x0, y0, x0, y0)))
    return FaceCrop(box, mapped, (out, out), index, backend)


def fit_frame(crop: np.ndarray, face_crop_: FaceCrop) -> np.ndarray:
    """Landmarks (68, 2) float32 of one cropped frame, fitted inside the mapped face box."""
    return face_backend(face_crop_.backend).fit_landmarks(crop, face_crop_.face)


def flag_bad_fits(raw: np.ndarray, size: tuple[int, int], tolerance: float) -> np.ndarray:
    """raw (T, 68, 2) float32 fits -> (T,) bool, True where the fit failed or jumped."""
    t = len(raw)
    width, height = size
    finite = np.isfinite(raw).all(axis=(1, 2))
    safe = np.where(finite[:, None, None], raw, 0.0)
    outside = ((safe[..., 0] < -0.25 * width) | (safe[..., 0] > 1.25 * width)
               | (safe[..., 1] < -0.25 * height) | (safe[..., 1] > 1.25 * height)).any(axis=1)
    bad = ~finite | outside
    half = JUMP_WINDOW // 2
    for k in range(t):  # T is small (one fit per frame): a loop keeps the rule readable
        lo, hi = max(0, k - half), min(t, k + half + 1)
        neighbours = safe[lo:hi][~bad[lo:hi]]
        if bad[k] or len(neighbours) < 3:
            continue
        median = np.median(neighbours, axis=0)
        scale = np.linalg.norm(median[OUTER_EYE_CORNERS[1]] - median[OUTER_EYE_CORNERS[0]])
        deviation = np.linalg.norm(raw[k] - median, axis=1).mean()
        if deviation > tolerance * max(scale, 1.0):
            bad[k] = True
    return bad


def repair_landmarks(raw: np.ndarray, bad: np.ndarray) -> np.ndarray:
    """Replace flagged frames by linear interpolation between good ones: (T, 68, 2) float32.

    Raises ValueError when no frame is good.
    """
    good = np.flatnonzero(~bad)
    if len(good) == 0:
        raise ValueError("the landmark fit failed on every frame")
    if len(good) == len(raw):
        return raw.astype(np.float32)
    frames = np.arange(len(raw))
    flat = raw.reshape(len(raw), -1).astype(np.float64)
    out = np.empty_like(flat)
    for j in range(flat.shape[1]):
        out[:, j] = np.interp(frames, good, flat[good, j])  # ends: nearest good value
    return out.reshape(raw.shape).astype(np.float32)
