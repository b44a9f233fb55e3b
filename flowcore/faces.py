"""Face boxes, crops and per-frame landmarks with repair.

A video's face is tracked (flowcore/tracking.py): detected (by default dlib's frontal detector;
other detectors plug in as a `FaceBackend`, see `face_backend`), then followed frame by frame
while it stays where it was found. Each run of frames showing the face in one place (a
*segment*) is cropped with one box: the detected face box made square, grown by a margin and
kept inside the frame (`crop_for`), resized to `resize` x `resize` px, or, without `resize`, to
the size of the video's first crop, so that every frame of a video shares one pixel grid.
Landmarks (68, 2) float32 (x, y) are fitted on every cropped frame, in the crop's pixel grid
(the grid the flow is computed on), inside the detected face box mapped into the crop.

Several faces in a frame: `FaceParams.choose` picks one: "largest" (the widest box), "center"
(the box whose centre is nearest the frame's), or "N" (0-based, the N-th face counted from the
left by box centre).

Repair: a frame's fit is flagged when it has non-finite points or points far outside the crop
(a failed fit), or when it jumps: its mean point distance to the temporal median of the fits of
frames k-2..k+2 exceeds `jump_tolerance` x the median's outer-eye-corner distance (landmarks 36,
45). Flagged frames get landmarks linearly interpolated from the nearest good frames on each
side (copied from the nearest good frame at the ends of the run). Repairs stay inside one
segment: frames on the other side of a gap never lend their landmarks.
"""

from __future__ import annotations

import importlib
from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np

import flowcore.landmarks as dlib_faces
from flowcore.landmarks import FaceNotFoundError, box_iou

OUTER_EYE_CORNERS = (36, 45)
JUMP_WINDOW = 5  # frames in the temporal median a fit is compared with


@dataclass(frozen=True)
class FaceParams:
    """How faces are found, cropped and landmarked; saved in every store's parameters."""

    backend: str = "dlib"  # see `face_backend`: "dlib" or "package.module:object"
    margin: float = 0.1  # the square box grows by this fraction of its side on every side
    resize: int | None = None  # px: crops resized to resize x resize (None: the first crop's size)
    jump_tolerance: float = 0.15  # x outer-eye-corner distance (see the module docstring)
    choose: str = "largest"  # which of several faces: "largest", "center" or "N" (see above)
    keep_score: float = -0.5  # a tracked face stays while its quality is >= this (tracking.py)
    redetect_every: int = 30  # frames: the whole frame is searched again this often
    search_every: int = 8  # frames: while no face is tracked, whole frames are searched this often

    def __post_init__(self):
        if self.margin < 0:
            raise ValueError(f"margin must be >= 0, got {self.margin}")
        if self.resize is not None and self.resize < 32:
            raise ValueError(f"resize must be at least 32 px, got {self.resize}")
        choose = str(self.choose)
        if choose not in ("largest", "center") and not choose.isdigit():
            raise ValueError(f"face choice must be largest, center or a face index 0, 1, ... "
                             f"(counted from the left), got {self.choose!r}")
        object.__setattr__(self, "choose", choose)
        if self.redetect_every < 1 or self.search_every < 1:
            raise ValueError(f"redetect_every and search_every must be >= 1 frame, got "
                             f"{self.redetect_every} and {self.search_every}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "FaceParams":
        """The inverse of `to_dict`; a store written before faces were tracked also holds
        `search_frames` (frames searched for the first face), which tracking replaced."""
        return cls(**{k: v for k, v in d.items() if k != "search_frames"})


@dataclass(frozen=True)
class FaceCrop:
    """Where the face is in one segment of a video: `box` (left, top, right, bottom) int in frame
    pixels, right/bottom exclusive, the region its frames are cropped to; `face` the detector's
    box in the crop's (resized) grid, where landmarks are fitted; `size` (width, height) of the
    crop after resize; `detected` the detector's box in frame pixels (where the face is scored)."""

    box: tuple[int, int, int, int]
    face: tuple[int, int, int, int]
    size: tuple[int, int]
    detected: tuple[int, int, int, int]
    backend: str = "dlib"  # the face backend that fits the landmarks

    def crop(self, frame: np.ndarray) -> np.ndarray:
        """(H, W) uint8 frame -> (h, w) uint8 crop, resized to `size` when it differs."""
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
        the extraction choose among several faces and say which it took.
    face_score: optional, ((H, W) uint8 gray, box) -> float, how surely the face at `box` is
        still there (NaN: not there); compared with FaceParams.keep_score, whose default suits
        dlib's detector margin. Without it a tracked face is checked by a detection on the whole
        frame (score 1.0 where a detection overlaps the box by IoU >= 0.5, else NaN): slower.
    """

    name: str
    largest_face: Callable
    fit_landmarks: Callable
    load: Callable[[], None]
    all_faces: Callable | None = None
    face_score: Callable | None = None

    def detect(self, frame: np.ndarray) -> list[tuple[int, int, int, int]]:
        """Every face of `frame` (one at most without `all_faces`), largest first."""
        if self.all_faces is not None:
            return [tuple(int(v) for v in b) for b in self.all_faces(frame)]
        try:
            return [tuple(int(v) for v in self.largest_face(frame))]
        except FaceNotFoundError:
            return []

    def score(self, frame: np.ndarray, box) -> float:
        """`face_score`, or its slower stand-in (see the class docstring)."""
        if self.face_score is not None:
            return float(self.face_score(frame, box))
        found = any(box_iou(b, box) >= 0.5 for b in self.detect(frame))
        return 1.0 if found else float("nan")


def _load_dlib() -> None:
    dlib_faces._face_detector()
    dlib_faces._shape_predictor()


DLIB = FaceBackend("dlib", dlib_faces.largest_face, dlib_faces.fit_landmarks, _load_dlib,
                   dlib_faces.all_faces, dlib_faces.face_score)


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


def choose_face(boxes, shape, choose: str):
    """The box of `boxes` (largest first) that the rule `choose` picks (see the module
    docstring) in a frame of `shape` (H, W); None when there is none (no face, or fewer faces
    than the index asks for)."""
    if not boxes:
        return None
    if choose == "largest":
        return max(boxes, key=lambda b: (b[2] - b[0]) * (b[3] - b[1]))
    centre = lambda b: ((b[0] + b[2]) / 2, (b[1] + b[3]) / 2)  # noqa: E731
    if choose == "center":
        height, width = shape[:2]
        return min(boxes, key=lambda b: np.hypot(centre(b)[0] - width / 2,
                                                 centre(b)[1] - height / 2))
    ordered = sorted(boxes, key=lambda b: centre(b)[0])
    index = int(choose)
    return ordered[index] if index < len(ordered) else None


def crop_for(face, shape, params: FaceParams, size: int | None = None,
             backend: str = "dlib") -> FaceCrop:
    """The crop of a face detected at `face` (frame px) in a frame of `shape` (H, W): square,
    grown by the margin, shifted (never clipped) inside the frame, resized to `params.resize`,
    else to `size` when given (a later segment takes its video's first crop size), else kept."""
    height, width = shape[:2]
    left, top, right, bottom = face
    side = max(right - left, bottom - top)
    side = min(int(round(side * (1 + 2 * params.margin))), width, height)
    cx, cy = (left + right) / 2, (top + bottom) / 2
    x0 = int(np.clip(round(cx - side / 2), 0, width - side))  # shifted inside, never clipped
    y0 = int(np.clip(round(cy - side / 2), 0, height - side))
    box = (x0, y0, x0 + side, y0 + side)
    out = params.resize or size or side
    scale = out / side
    mapped = tuple(int(round((v - o) * scale)) for v, o in zip(face, (x0, y0, x0, y0)))
    return FaceCrop(box, mapped, (out, out), tuple(int(v) for v in face), backend)


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
