"""Lazy frame decoding: a frame folder or a video file -> a stream of grayscale frames.

Frames come out one at a time as (H, W) uint8 grayscale, with their ORIGINAL 1-based frame
numbers; memory does not grow with the video's length. Temporal subsampling keeps every
`subsample`-th frame counted from the first (SAMM-LV by 8 keeps 1, 9, 17, ...).

Repairs (documented, recorded, never silent): a kept frame that is missing from a folder, or
whose file cannot be decoded (truncated JPEG without its end marker, garbage bytes, a JPEG that
libjpeg decodes only with a "Corrupt JPEG data" warning, a size that differs from the first
frame), is replaced by the previous good frame (the next good one when the video starts with bad
frames), so that feature rows stay one per kept frame and aligned in time. The frame numbers
repaired are listed in `FrameStream.repairs`. A video with no frame at all, or with more than
`max_repaired_fraction` of its kept frames repaired, fails with `FrameError`.

A frame that decodes without complaint can still be garbage (a video file's damaged frame, a JPEG
damaged where no decoder notices): `outlier_frames` finds the frames whose whole picture differs
from both neighbours far more than the neighbours differ from each other; the extraction repairs
them like unreadable frames and lists them as "outlier".
"""

from __future__ import annotations

import os
import re
import tempfile
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from flowcore.locations import local_file

FRAME_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")
VIDEO_SUFFIXES = (".avi", ".mp4", ".mov", ".mkv", ".mpg", ".mpeg", ".wmv")
_FRAME_NUMBER = re.compile(r"(\d+)$")  # trailing digits of the stem: img001, img_1, 006_1_0001
JPEG_END = b"\xff\xd9"  # the end-of-image marker a complete JPEG file carries


class FrameError(RuntimeError):
    """A video's frames cannot be read (no frames, too many bad frames, unreadable file)."""


@dataclass(frozen=True)
class VideoSpec:
    """One video of a source: where its frames are and how to read them (picklable, no I/O)."""

    video_id: str  # folder or file stem: "15_0101disgustingteeth", "006_1"
    subject: str  # "s15", "006"
    path: Path  # a frame folder or a video file
    fps: float  # native frame rate (before subsampling)
    subsample: int = 1  # keep every n-th frame

    @property
    def is_folder(self) -> bool:
        return self.path.is_dir()

    @property
    def fps_kept(self) -> float:
        return self.fps / self.subsample


def list_frame_files(folder: Path) -> dict[int, Path]:
    """Frame files of a folder by their 1-based number (trailing digits of the stem).

    Sorted numerically (img999 < img1000). Two files with the same number is an error.
    """
    frames: dict[int, Path] = {}
    for path in folder.iterdir():
        if path.suffix.lower() not in FRAME_SUFFIXES or not path.is_file():
            continue
        match = _FRAME_NUMBER.search(path.stem)
        if match is None:
            continue
        number = int(match.group(1))
        if number in frames:
            raise FrameError(f"{folder}: two files for frame {number}: "
                             f"{frames[number].name} and {path.name}")
        frames[number] = path
    return dict(sorted(frames.items()))


def _decode_file(path: Path) -> np.ndarray | None:
    """(H, W) uint8 gray, or None when the file is unreadable, a truncated JPEG or a JPEG whose
    data libjpeg finds corrupt (it decodes those with a warning only, into garbage)."""
    import cv2

    try:
        data = path.read_bytes()
    except OSError:
        return None
    if path.suffix.lower() not in (".jpg", ".jpeg"):
        return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_GRAYSCALE)
    if JPEG_END not in data[-64:]:
        return None  # truncated: libjpeg would fill the missing rows with grey and warn only
    with _c_stderr() as warnings:
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_GRAYSCALE)
    if any(marker in warnings[0] for marker in JPEG_CORRUPT):
        return None
    return image


JPEG_CORRUPT = ("Corrupt JPEG data", "Premature end of JPEG")  # libjpeg: decoded, but garbage
_STDERR = {"lock": threading.Lock(), "file": None, "pid": None}


@contextmanager
def _c_stderr():
    """Yield a list that receives what C code wrote on file descriptor 2 meanwhile (libjpeg warns
    there and nowhere else); anything that is not a JPEG warning is passed on to stderr."""
    with _STDERR["lock"]:
        if _STDERR["pid"] != os.getpid():  # one scratch file per process
            _STDERR["file"], _STDERR["pid"] = tempfile.TemporaryFile(), os.getpid()
        sink = _STDERR["file"]
        sink.seek(0)
        sink.truncate()
        saved = os.dup(2)
        os.dup2(sink.fileno(), 2)
        captured: list[str] = [""]
        try:
            yield captured
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            captured[0] = sink.read().decode(errors="replace")
        others = [line for line in captured[0].splitlines()
                  if line and not any(m in line for m in JPEG_CORRUPT)]
        if others:
            os.write(2, ("\n".join(others) + "\n").encode())


OUTLIER_RATIO = 4.0  # an outlier differs from both neighbours this many times more than they differ
OUTLIER_MIN = 0.05  # ... and by at least this much (1 - correlation; frame to frame is < 0.02)
SIGNATURE_SIDE = 16  # px: frames are compared as 16 x 16 thumbnails


def frame_signature(image: np.ndarray) -> np.ndarray:
    """(H, W) uint8 frame -> (256,) float64 thumbnail, zero mean and unit norm (so brightness
    changes do not count, only the picture's content)."""
    import cv2

    thumb = cv2.resize(image, (SIGNATURE_SIDE, SIGNATURE_SIDE), interpolation=cv2.INTER_AREA)
    v = thumb.astype(np.float64).ravel()
    v -= v.mean()
    return v / max(float(np.linalg.norm(v)), 1e-9)


def outlier_frames(signatures: np.ndarray) -> list[int]:
    """Indices of the frames of `signatures` (T, 256) whose picture differs from both neighbours
    (1 - correlation) more than OUTLIER_RATIO times as much as the neighbours differ from each
    other, and by at least OUTLIER_MIN: a garbage frame between two good ones, never smooth motion
    (where a frame is between its neighbours) nor a cut (where one side agrees). At the ends the
    two nearest frames on the one side are the neighbours. Single frames only."""
    s = np.asarray(signatures, dtype=np.float64)
    t = len(s)
    if t < 3:
        return []

    def d(a: int, b: int) -> float:
        return 1.0 - float(s[a] @ s[b])

    out = []
    for k in range(t):
        a, b = (k - 1, k + 1) if 0 < k < t - 1 else ((1, 2) if k == 0 else (t - 2, t - 3))
        apart = min(d(k, a), d(k, b))
        if apart > max(OUTLIER_RATIO * d(a, b), OUTLIER_MIN):
            out.append(k)
    return out


@dataclass
class FrameStream:
    """Iterate over the kept frames of one video: yields (frame_number, (H, W) uint8 gray).

    `frame_numbers` (known before decoding for folders; for video files, from the container's
    frame count, checked while decoding) and `repairs` (filled while iterating).
    """

    spec: VideoSpec
    max_repaired_fraction: float = 0.25
    frame_numbers: list[int] = field(init=False)
    repairs: dict[str, list[int]] = field(init=False)

    def __post_init__(self):
        self.repairs = {"missing": [], "corrupt": []}
        if not self.spec.path.exists():
            raise FrameError(f"{self.spec.path}: no such folder or file")
        if self.spec.is_folder:
            self._files = list_frame_files(self.spec.path)
            if not self._files:
                raise FrameError(f"{self.spec.path}: no frame images in the folder")
            first, last = min(self._files), max(self._files)
            self.frame_numbers = list(range(first, last + 1, self.spec.subsample))
        else:
            self._files = None
            count = video_frame_count(self.spec.path)
            self.frame_numbers = list(range(1, count + 1, self.spec.subsample))
            if not self.frame_numbers:
                raise FrameError(f"{self.spec.path}: the video holds no frames")

    def __len__(self) -> int:
        return len(self.frame_numbers)

    def __iter__(self) -> Iterator[tuple[int, np.ndarray]]:
        self.repairs = {"missing": [], "corrupt": []}
        raw = self._folder_frames() if self._files is not None else self._video_frames()
        previous = None
        pending: list[int] = []  # bad frames before the first good one
        for number, image in raw:
            if image is not None and previous is not None and image.shape != previous.shape:
                image = None
                self.repairs["corrupt"].append(number)
            if image is None:
                if previous is None:
                    pending.append(number)
                else:
                    yield number, previous
                continue
            for held in pending:
                yield held, image
            pending = []
            previous = image
            yield number, image
        if previous is None:
            raise FrameError(f"{self.spec.path}: none of its {len(self)} frames could be read")
        n_bad = len(self.repairs["missing"]) + len(self.repairs["corrupt"])
        if n_bad > self.max_repaired_fraction * len(self):
            raise FrameError(
                f"{self.spec.path}: {n_bad} of {len(self)} frames missing or unreadable "
                f"(more than {self.max_repaired_fraction:.0%}); first bad frames: "
                f"{sorted(self.repairs['missing'] + self.repairs['corrupt'])[:5]}")

    def _folder_frames(self):
        for number in self.frame_numbers:
            path = self._files.get(number)
            if path is None:
                self.repairs["missing"].append(number)
                yield number, None
                continue
            image = _decode_file(path)
            if image is None:
                self.repairs["corrupt"].append(number)
            yield number, image

    def _video_frames(self):
        import cv2

        capture = cv2.VideoCapture(str(local_file(self.spec.path)))
        if not capture.isOpened():
            raise FrameError(f"{self.spec.path}: OpenCV cannot open the video")
        try:
            wanted = iter(self.frame_numbers)
            target = next(wanted, None)
            number = 0
            while target is not None:
                if not capture.grab():
                    break
                number += 1
                if number != target:
                    continue
                ok, image = capture.retrieve()
                if ok and image is not None:
                    image = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) if image.ndim == 3 else image
                else:
                    self.repairs["corrupt"].append(number)
                    image = None
                yield number, image
                target = next(wanted, None)
        finally:
            capture.release()
        # the container promised more frames than it delivered: trim the plan, do not pad
        kept = [n for n in self.frame_numbers if n <= number]
        if len(kept) < len(self.frame_numbers):
            self.frame_numbers = kept


def video_frame_count(path: Path) -> int:
    """Frames a video file holds: its container's count, or counted by reading frame headers."""
    import cv2

    capture = cv2.VideoCapture(str(local_file(path)))
    if not capture.isOpened():
        raise FrameError(f"{path}: OpenCV cannot open the video")
    try:
        count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
        if count <= 0:  # some containers do not say: count by decoding headers
            count = 0
            while capture.grab():
                count += 1
        return count
    finally:
        capture.release()


def video_fps(path: Path, default: float = 30.0) -> float:
    """Frame rate a video file declares (default when it declares none)."""
    import cv2

    capture = cv2.VideoCapture(str(local_file(path)))
    try:
        fps = capture.get(cv2.CAP_PROP_FPS) if capture.isOpened() else 0.0
    finally:
        capture.release()
    return float(fps) if fps and fps > 0 else default
