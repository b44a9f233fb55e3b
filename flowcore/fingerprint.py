"""Source identity: a fingerprint of a video's frames, and the videos that look like copies.

A store records, per video, where it came from (`source`, its path) and a fingerprint of its
frames (`source_fingerprint`): how many frames the source holds (before subsampling), their
size, and the SHA-256 of SAMPLES frames spread evenly from the first to the last (a frame
folder: the bytes of the frame files; a video file: the decoded pixels of the frames at those
positions). Resuming skips a complete video only when the source's fingerprint equals the one
recorded (flowcore/batch.py); the path is not part of it, so a dataset moved elsewhere still
resumes.

Copies: videos whose fingerprints are equal (the same frames), and videos whose folder or file
name looks like a backup (`_old`, `copy`, ` (1)`, `.bak`, `backup`), are said at extraction;
they are extracted anyway, since only the user knows which one is the real video.
"""

from __future__ import annotations

import hashlib
import re

from flowcore.locations import local_file
from flowcore.video import VideoSpec, list_frame_files, video_frame_count

SAMPLES = 5  # frames hashed per video
COPY_NAME = re.compile(r"([ _.-]old$|copy|\(\d+\)$|[ _.-]bak$|backup)", re.IGNORECASE)


def source_fingerprint(spec: VideoSpec) -> dict:
    """{"frames": n, "size": [width, height], "sampled": [[frame number, sha256 hex[:16]], ...]}
    of the frames at `spec.path` (all of them, before subsampling). Raises OSError or ValueError
    when the source cannot be read (the extraction then says why, for this video alone)."""
    if spec.is_folder:
        return _folder_fingerprint(spec)
    return _file_fingerprint(spec)


def _spread(first: int, last: int, n: int = SAMPLES) -> list[int]:
    """Up to `n` distinct numbers evenly spread from `first` to `last`, both included."""
    if last <= first:
        return [first]
    return sorted({first + round(k * (last - first) / (n - 1)) for k in range(n)})


def _folder_fingerprint(spec: VideoSpec) -> dict:
    import cv2
    import numpy as np

    files = list_frame_files(spec.path)
    if not files:
        raise ValueError(f"{spec.path}: no frame images in the folder")
    numbers = sorted(files)
    sampled, size = [], None
    for number in _spread(0, len(numbers) - 1):
        data = files[numbers[number]].read_bytes()
        sampled.append([numbers[number], hashlib.sha256(data).hexdigest()[:16]])
        if size is None:
            image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
            size = [0, 0] if image is None else [int(image.shape[1]), int(image.shape[0])]
    return {"frames": len(numbers), "size": size, "sampled": sampled}


def _file_fingerprint(spec: VideoSpec) -> dict:
    import cv2

    count = video_frame_count(spec.path)
    capture = cv2.VideoCapture(str(local_file(spec.path)))
    try:
        size = [int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)),
                int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))]
        sampled = []
        for index in _spread(0, max(count - 1, 0)):
            capture.set(cv2.CAP_PROP_POS_FRAMES, index)
            ok, image = capture.read()
            digest = hashlib.sha256(image.tobytes()).hexdigest()[:16] if ok else "unreadable"
            sampled.append([index + 1, digest])
    finally:
        capture.release()
    return {"frames": count, "size": size, "sampled": sampled}


def same_frames(recorded: dict | None, now: dict | None) -> bool:
    """Whether two fingerprints say the same frames (False when either is missing)."""
    keys = ("frames", "size", "sampled")
    return bool(recorded and now) and all(recorded.get(k) == now.get(k) for k in keys)


def describe(fingerprint: dict | None) -> str:
    """'240 frames of 192x192' (or 'no fingerprint')."""
    if not fingerprint:
        return "no fingerprint"
    width, height = fingerprint.get("size") or (0, 0)
    return f"{fingerprint.get('frames')} frames of {width}x{height}"


def copy_warnings(videos, fingerprints: dict[str, dict]) -> list[str]:
    """One line per group of videos with identical frames (`fingerprints`: video id ->
    fingerprint) and per video whose name looks like a copy."""
    groups: dict[str, list[str]] = {}
    for spec in videos:
        print_ = fingerprints.get(spec.video_id)
        if print_:
            key = repr((print_["frames"], print_["size"], print_["sampled"]))
            groups.setdefault(key, []).append(spec.video_id)
    lines = [f"videos {', '.join(ids)} have identical frames ({describe(fingerprints[ids[0]])}, "
             f"the same sampled frames): one is probably a copy of the other; remove it, or "
             f"leave it out with --video" for ids in groups.values() if len(ids) > 1]
    for spec in videos:
        name = spec.path.name if spec.is_folder else spec.path.stem
        found = COPY_NAME.search(name)
        if found:
            lines.append(f"{spec.video_id} ({spec.path}) is named like a copy ('{found.group(0)}'"
                         f"): if it is one, remove it or leave it out with --video, else it "
                         f"counts as a video of its own")
    return lines
