"""Synthetic subjects: one real face photo, many identities.

The texture is NASA's portrait of astronaut Eileen Collins that ships with scikit-image
(`skimage.data.astronaut()`). A subject is that face with its geometry reshaped (eye spacing,
face width, nose length, mouth width, brow height), its skin tone, lighting and fine skin
texture changed, and possibly mirrored. Every subject is checked with dlib: the frontal
detector must find the face in the neutral frame and the 68 landmarks must lie inside it.

Convention: a subject's `canvas` is a larger float32 (Hc, Wc, 3) RGB image (0..255) in frame
pixel scale; the rendered frame is the window of `frame_size` px at `offset` (x, y) in it, so head
motion never reveals an empty border. Landmarks are (68, 2) float32 (x, y) in canvas pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from flowcore.landmarks import FaceNotFoundError, detect_faces, fit_landmarks
from mespot.synth.actions import eye_distance, gaussian_field

# The square of skimage.data.astronaut() (512 x 512) that becomes a subject's face of `face_size`
# px: chosen by hand when the generator was written, near but not equal to dlib's box on the photo
# (flowcore.flow.synthetic.ASTRONAUT_FACE_BOX). Every synthetic dataset, and so every feature
# store made from one, depends on it: changing it changes their bytes.
FRAMING_BOX = (175, 76, 265, 166)  # (left, top, right, bottom) photo px
CANVAS_PER_FACE = 2.6  # canvas side / face box side
MAX_IDENTITY_TRIES = 40


@dataclass(frozen=True)
class Subject:
    """A synthetic identity, ready to render."""

    index: int  # 0-based position in the dataset
    canvas: np.ndarray  # (Hc, Wc, 3) float32 RGB, 0..255
    landmarks: np.ndarray  # (68, 2) float32, canvas pixels, neutral face
    offset: tuple[int, int]  # (x, y) of the frame window's top-left corner in the canvas
    frame_size: int  # px, square frame
    traits: dict  # the identity changes drawn for this subject (for the record)

    @property
    def frame_landmarks(self) -> np.ndarray:
        """(68, 2) landmarks in frame pixels."""
        return self.landmarks - np.array(self.offset, np.float32)


def _astronaut_canvas(face_size: int) -> np.ndarray:
    """(Hc, Wc, 3) float32 RGB crop of the astronaut photo around her face, scaled to face_size."""
    from skimage.data import astronaut

    image = astronaut()  # (512, 512, 3) uint8 RGB
    left, top, right, bottom = FRAMING_BOX
    cx, cy = (left + right) / 2, (top + bottom) / 2
    scale = face_size / (right - left)  # output px per photo px
    side = int(round(CANVAS_PER_FACE * face_size))
    # Affine map canvas -> photo: photo = (canvas - side/2) / scale + centre.
    to_photo = np.array(
        [[1 / scale, 0, cx - side / 2 / scale], [0, 1 / scale, cy - side / 2 / scale]]
    )
    return cv2.warpAffine(
        image.astype(np.float32),
        to_photo,
        (side, side),
        flags=cv2.INTER_CUBIC | cv2.WARP_INVERSE_MAP,
        borderMode=cv2.BORDER_REFLECT,
    )


def _neutral_landmarks(canvas: np.ndarray, offset: tuple[int, int], frame_size: int) -> np.ndarray:
    """Landmarks of the face dlib finds in the frame window (canvas px); FaceNotFoundError if
    there is none."""
    x, y = offset
    frame = np.clip(canvas[y : y + frame_size, x : x + frame_size], 0, 255).astype(np.uint8)
    boxes = detect_faces(frame)
    if not boxes:
        raise FaceNotFoundError("dlib finds no face in the neutral frame")
    landmarks = fit_landmarks(frame, boxes[0])
    inside = (landmarks >= 0).all() and (landmarks < frame_size).all()
    if not inside:
        raise FaceNotFoundError("some of the 68 landmarks fall outside the frame")
    return landmarks + np.array(offset, np.float32)


def _reshape(canvas: np.ndarray, landmarks: np.ndarray, traits: dict) -> np.ndarray:
    """Warp the face geometry: every trait moves a landmark group, Gaussians spread it."""
    d = eye_distance(landmarks)
    mid_x = float(landmarks[27:31, 0].mean())
    points, vectors = [], []

    def push(indices, vector_of):
        for i in indices:
            points.append(landmarks[i])
            vectors.append(vector_of(landmarks[i]))

    side = lambda p: np.sign(p[0] - mid_x)  # noqa: E731 - -1 left of the midline, +1 right
    push(range(36, 48), lambda p: (traits["eye_spacing"] * d * side(p), 0.0))
    push(range(0, 17), lambda p: (traits["face_width"] * d * side(p), 0.0))
    push(range(31, 36), lambda p: (0.0, traits["nose_length"] * d))
    push((48, 54), lambda p: (traits["mouth_width"] * d * side(p), 0.0))
    push(range(17, 27), lambda p: (0.0, -traits["brow_height"] * d))
    forward = gaussian_field(
        canvas.shape[:2],
        np.array(points, np.float32),
        np.array(vectors, np.float32),
        sigma=0.35 * d,
    )
    grid_x, grid_y = np.meshgrid(
        np.arange(canvas.shape[1], dtype=np.float32), np.arange(canvas.shape[0], dtype=np.float32)
    )
    # Backward map of a smooth forward field: x = y - D(x), two fixed-point steps.
    src_x, src_y = grid_x.copy(), grid_y.copy()
    for _ in range(2):
        d_at = cv2.remap(forward, src_x, src_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        src_x, src_y = grid_x - d_at[..., 0], grid_y - d_at[..., 1]
    return cv2.remap(canvas, src_x, src_y, cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT)


def _recolour(canvas: np.ndarray, traits: dict, rng: np.random.Generator) -> np.ndarray:
    """Skin tone (channel gains, gamma), directional lighting and a fine skin texture."""
    height, width = canvas.shape[:2]
    toned = (
        255.0
        * (np.clip(canvas, 0, 255) / 255.0) ** traits["gamma"]
        * np.array(traits["tone"], np.float32)
    )
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    light = 1.0 + traits["light_x"] * (xs / width - 0.5) + traits["light_y"] * (ys / height - 0.5)
    texture = cv2.GaussianBlur(rng.standard_normal((height, width), dtype=np.float32), (0, 0), 0.8)
    texture *= traits["texture"] / max(float(texture.std()), 1e-6)
    return np.clip(toned * light[..., None] + texture[..., None], 0, 255).astype(np.float32)


def _draw_traits(rng: np.random.Generator) -> dict:
    skin_tones = [
        (1.0, 1.0, 1.0),
        (0.92, 0.82, 0.72),
        (0.78, 0.64, 0.52),
        (1.04, 0.95, 0.90),
        (0.62, 0.48, 0.38),
        (0.98, 0.88, 0.80),
    ]
    return {
        "eye_spacing": float(rng.uniform(-0.05, 0.05)),
        "face_width": float(rng.uniform(-0.08, 0.08)),
        "nose_length": float(rng.uniform(-0.06, 0.08)),
        "mouth_width": float(rng.uniform(-0.06, 0.06)),
        "brow_height": float(rng.uniform(-0.04, 0.06)),
        "tone": skin_tones[int(rng.integers(len(skin_tones)))],
        "gamma": float(rng.uniform(0.85, 1.15)),
        "light_x": float(rng.uniform(-0.35, 0.35)),
        "light_y": float(rng.uniform(-0.15, 0.15)),
        "texture": float(rng.uniform(2.0, 5.0)),
        "mirror": bool(rng.integers(2)),
    }


def make_subject(index: int, face_size: int, seed: int) -> Subject:
    """Subject `index` of a dataset with `seed`: deterministic, detected by dlib, 68 landmarks."""
    base = _astronaut_canvas(face_size)
    frame_size = 2 * face_size
    offset = ((base.shape[1] - frame_size) // 2, (base.shape[0] - frame_size) // 2)
    base_landmarks = _neutral_landmarks(base, offset, frame_size)
    rng = np.random.default_rng(np.random.SeedSequence([seed, 7919, index]))
    for _ in range(MAX_IDENTITY_TRIES):
        traits = _draw_traits(rng) if index > 0 else {**_draw_traits(rng), "mirror": False}
        canvas = base[:, ::-1].copy() if traits["mirror"] else base
        landmarks = base_landmarks.copy()
        if traits["mirror"]:
            landmarks = _neutral_landmarks(canvas, offset, frame_size)
        canvas = _recolour(_reshape(canvas, landmarks, traits), traits, rng)
        try:
            landmarks = _neutral_landmarks(canvas, offset, frame_size)
        except FaceNotFoundError:
            continue
        return Subject(index, canvas, landmarks, offset, frame_size, traits)
    raise FaceNotFoundError(
        f"could not make subject {index} detectable in {MAX_IDENTITY_TRIES} tries "
        f"at face size {face_size} px"
    )
