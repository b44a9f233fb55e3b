"""Tiny face-video fixtures in the datasets' layouts, for tests and examples (no dataset needed).

Frames are a 192 x 192 crop of scikit-image's astronaut photo (a frontal face dlib finds, about
86 px wide), translated by a known sub-pixel drift per frame, written as JPEG. A "no face" video
shows a smooth texture instead.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

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
