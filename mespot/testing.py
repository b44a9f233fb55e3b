"""Builders of small inputs for the tests, the benchmarks and examples (no dataset needed): the
one place the tests get their face videos, feature stores and annotated stores from.

Videos: frames are a 192 x 192 crop of scikit-image's astronaut photo (a frontal face dlib finds,
about 86 px wide), translated by a known sub-pixel drift per frame, written as JPEG, in the
datasets' layouts or as a video file. A "no face" video shows a smooth texture instead.

Stores: `create_store` and `write_video` write a feature store in the layout of flowcore.store
straight from arrays (no extraction); `write_tiny_store` and `write_subsampled_store` make small
annotated stores with motion where their ground truth says, to train and evaluate on in seconds.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from flowcore.store import VIDEOS

FACE_FRAME = 192  # px, side of the fixture frames
DRIFT = (0.4, 0.25)  # px per frame (dx, dy) of the whole picture


def face_frames(n: int, drift=DRIFT, face: bool = True) -> list[np.ndarray]:
    """n frames (192, 192) uint8 gray; frame k is the first translated by k * drift px."""
    import cv2
    from skimage import data

    if face:
        gray = cv2.cvtColor(data.astronaut()[..., ::-1], cv2.COLOR_BGR2GRAY)
        base = gray[40:232, 120:312]
    else:
        y, x = np.mgrid[:FACE_FRAME, :FACE_FRAME]
        base = (127 + 60 * np.sin(x / 9.0) * np.cos(y / 13.0)).astype(np.uint8)
    frames = []
    for k in range(n):
        shift = np.float32([[1, 0, k * drift[0]], [0, 1, k * drift[1]]])
        frames.append(cv2.warpAffine(base, shift, (FACE_FRAME, FACE_FRAME),
                                     flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT))
    return frames


def write_frames(folder: Path, frames, pattern: str, first: int = 1) -> list[Path]:
    """Write frames as JPEG files named pattern.format(number), numbers from `first`."""
    import cv2

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for k, frame in enumerate(frames):
        path = folder / pattern.format(first + k)
        cv2.imwrite(str(path), frame, [cv2.IMWRITE_JPEG_QUALITY, 95])
        paths.append(path)
    return paths


def write_casme2(root: Path, videos: dict[str, int], face: bool = True) -> Path:
    """A CAS(ME)^2-like copy: videos {"15_0101disgustingteeth": n_frames} under rawpic/sNN/."""
    for video, n in videos.items():
        subject = f"s{video.split('_')[0]}"
        write_frames(root / "rawpic" / subject / video, face_frames(n, face=face), "img{:03d}.jpg")
    return root


def write_samm(root: Path, videos: dict[str, int]) -> Path:
    """A SAMM-LV-like copy: videos {"006_1": n_frames} under SAMM_longvideos/ (200 fps)."""
    for video, n in videos.items():
        write_frames(root / "SAMM_longvideos" / video, face_frames(n), video + "_{:04d}.jpg")
    return root


def write_video_file(path: Path, n: int, fps: float = 25.0) -> Path:
    """An .avi (MJPG) video of n fixture frames (stored as BGR)."""
    import cv2

    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps,
                             (FACE_FRAME, FACE_FRAME))
    for frame in face_frames(n):
        writer.write(cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR))
    writer.release()
    return path


# ---- feature stores from arrays -------------------------------------------------------------


def write_video(root, video_id: str, subject: str, mdmo: np.ndarray, frame_numbers: np.ndarray,
                fps: float = 30.0, status: str = "complete") -> None:
    """Write one video group in the store layout (for tests and benchmarks; flowcore owns the
    real writer). `root` is an open zarr group; `mdmo` (T-1, 12, 2), `frame_numbers` (T,)."""
    t = len(frame_numbers)
    group = root.require_group(VIDEOS).create_group(video_id)
    group.create_array("mdmo", data=np.asarray(mdmo, dtype=np.float32))
    group.create_array("landmarks", data=np.zeros((t, 68, 2), np.float32))
    group.create_array("face_box", data=np.zeros(4, np.int32))
    group.create_array("frame_numbers", data=np.asarray(frame_numbers, dtype=np.int32))
    subsample = int(frame_numbers[1] - frame_numbers[0]) if t > 1 else 1
    group.attrs.update(dict(subject=subject, video_id=video_id, fps=fps, n_frames=t,
                            subsample=subsample, source=f"synthetic/{video_id}"))
    group.attrs["status"] = status


def create_store(path: str | Path, dataset: str = "synthetic"):
    """Create an empty store with the root attributes of the contract; returns the zarr group."""
    import zarr

    from flowcore.store import params_hash

    root = zarr.open_group(str(path), mode="w", zarr_format=3)
    root.attrs.update(dict(format_version=1, mespot_version="test", dataset=dataset,
                           params={}, params_hash=params_hash({})))  # as flowcore writes it
    root.create_group(VIDEOS)
    return root


def write_tiny_store(base: Path) -> Path:
    """base/store.zarr and base/gt.csv: 3 subjects (s1, s2, s3) x 1 video x 300 rows (2 windows
    each), a macro- and a micro-expression per video, plus a failed video; returns `base`."""
    rng = np.random.default_rng(0)
    root = create_store(base / "store.zarr", dataset="synthetic")
    lines = ["subject,video,onset,apex,offset,type,au"]
    for k, subject in enumerate(("s1", "s2", "s3")):
        video = f"{subject}_v"
        mdmo = rng.normal(0, 0.2, (300, 12, 2)).astype(np.float32)
        mdmo[40 + k: 70 + k, 8:12, 1] += 1.5
        mdmo[150: 162, 0:6, 1] -= 1.0
        write_video(root, video, subject, mdmo, np.arange(1, 302))
        lines.append(f"{subject},{video},{41 + k},{55 + k},{71 + k},mae,12+25")
        lines.append(f"{subject},{video},151,157,163,me,R1+R2")
    write_video(root, "broken", "s1", np.zeros((10, 12, 2)), np.arange(1, 12), status="failed")
    (base / "gt.csv").write_text("\n".join(lines) + "\n")
    return base


def write_subsampled_store(base: Path) -> Path:
    """base/store.zarr and base/gt.csv: 3 subjects x 1 video x 600 rows subsampled 1-in-2
    (frame numbers 1, 3, 5, ...), two macro- and one micro-expression each; returns `base`."""
    rng = np.random.default_rng(0)
    root = create_store(base / "store.zarr")
    lines = ["subject,video,onset,apex,offset,type,au"]
    frame_numbers = 1 + 2 * np.arange(601)  # original frames 1, 3, ..., 1201
    for k, subject in enumerate(("s1", "s2", "s3")):
        mdmo = rng.normal(0, 0.2, (600, 12, 2)).astype(np.float32)
        for row in (40 + k, 300 + 2 * k):
            mdmo[row: row + 30, 8:12, 1] += 1.5
            lines.append(f"{subject},{subject}_v,{frame_numbers[row]},{frame_numbers[row + 15]},"
                         f"{frame_numbers[row + 30]},mae,12+25")
        mdmo[150: 162, 0:6, 1] -= 1.0
        lines.append(f"{subject},{subject}_v,{frame_numbers[150]},{frame_numbers[156]},"
                     f"{frame_numbers[162]},me,R1")
        write_video(root, f"{subject}_v", subject, mdmo, frame_numbers)
    (base / "gt.csv").write_text("\n".join(lines) + "\n")
    return base


# ---- scenes: faces that come and go ------------------------------------------------------------

SCENE = (320, 200)  # (width, height) px of a scene frame
FACE_PATCH = (149, 53, 296, 200)  # astronaut photo px: her face (dlib's box 179, 83, 266, 170)
PATCH_FACE = (30, 30, 117, 117)  # that face's box inside the patch, patch px


def _face_patch(scale: float) -> np.ndarray:
    import cv2
    from skimage import data

    gray = cv2.cvtColor(data.astronaut()[..., ::-1], cv2.COLOR_BGR2GRAY)
    left, top, right, bottom = FACE_PATCH
    patch = gray[top:bottom, left:right]
    return patch if scale == 1 else cv2.resize(patch, None, fx=scale, fy=scale,
                                               interpolation=cv2.INTER_AREA)


def scene_frames(placements, size=SCENE) -> tuple[list[np.ndarray], list[list[tuple]]]:
    """Frames of faces that come and go: per frame a list of (x, y, scale) placements of the
    astronaut's face patch (its top-left corner at (x, y) px, any part outside the frame cut
    off; scale 1: a face box of 87 px) over a smooth texture. Returns the (H, W) uint8 frames
    and, per frame, the face boxes (left, top, right, bottom) of its placements in frame px."""
    width, height = size
    y, x = np.mgrid[:height, :width]
    ground = (120 + 50 * np.sin(x / 11.0) * np.cos(y / 17.0)).astype(np.uint8)
    patches: dict[float, np.ndarray] = {}
    frames, boxes = [], []
    for faces in placements:
        frame = ground.copy()
        here = []
        for px, py, scale in faces:
            patch = patches.setdefault(scale, _face_patch(scale))
            h, w = patch.shape
            x0, y0 = max(px, 0), max(py, 0)
            x1, y1 = min(px + w, width), min(py + h, height)
            if x1 > x0 and y1 > y0:
                frame[y0:y1, x0:x1] = patch[y0 - py : y1 - py, x0 - px : x1 - px]
            here.append(tuple(int(round(p + v * scale))
                              for p, v in zip((px, py, px, py), PATCH_FACE)))
        frames.append(frame)
        boxes.append(here)
    return frames, boxes


def outside_fraction(box, size=SCENE) -> float:
    """The fraction of a face box's area outside a frame of `size` (width, height)."""
    width, height = size
    left, top, right, bottom = box
    inside = max(0, min(right, width) - max(left, 0)) * max(0, min(bottom, height) - max(top, 0))
    return 1.0 - inside / ((right - left) * (bottom - top))
