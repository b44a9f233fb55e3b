"""Read a flowcore feature store (Zarr v3) into memory, once.

Store layout (the contract with flowcore): root attrs `format_version`, `mespot_version`,
`dataset`, `params`, `params_hash`; one group per video at `videos/<video_id>` with arrays

    mdmo           (T-1, 12, 2) float32  row k = MDMO motion from kept frame k to k+1, pixels,
                                         ROI nodes in the order of AUWGCN.md section 3
    landmarks      (T, 68, 2) float32
    face_box       (4,) int32
    frame_numbers  (T,) int32            ORIGINAL 1-based frame number of each kept frame

and attrs `subject`, `video_id`, `fps`, `n_frames`, `subsample`, `source`, `status`. Only
videos whose status is "complete" are used; the others are listed in `FeatureSet.skipped`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from flowcore.errors import UserError

N_NODES = 12


@dataclass(frozen=True)
class VideoFeatures:
    """One video's features: `mdmo` (N, 12, 2) float32 pixels with N = T - 1 rows, and
    `frame_numbers` (T,) int64, the original 1-based frame number of each kept frame."""

    video_id: str
    subject: str
    fps: float
    mdmo: np.ndarray
    frame_numbers: np.ndarray

    @property
    def n_rows(self) -> int:
        return int(self.mdmo.shape[0])


@dataclass(frozen=True)
class FeatureSet:
    """Every complete video of a store, in memory, sorted by video id."""

    path: str
    dataset: str
    params_hash: str
    params: dict
    videos: dict[str, VideoFeatures]
    skipped: dict[str, str] = field(default_factory=dict)  # video id -> why

    @property
    def subjects(self) -> list[str]:
        return sorted({v.subject for v in self.videos.values()})

    def videos_of(self, subjects) -> list[VideoFeatures]:
        wanted = set(subjects)
        return [v for v in self.videos.values() if v.subject in wanted]


def load_features(path: str | Path) -> FeatureSet:
    """Load the MDMO features and frame numbers of every complete video of a store."""
    import zarr

    path = Path(path)
    if not path.exists():
        raise UserError(f"feature store not found: {path}")
    try:
        root = zarr.open_group(str(path), mode="r")
    except Exception as err:  # zarr raises several types for "not a group"
        raise UserError(f"not a Zarr feature store: {path} ({err})") from err
    attrs = dict(root.attrs)
    if "format_version" not in attrs:
        raise UserError(f"{path}: not a mespot feature store (no 'format_version' attribute)")
    if "videos" not in root:
        raise UserError(f"{path}: the store holds no 'videos' group")
    videos: dict[str, VideoFeatures] = {}
    skipped: dict[str, str] = {}
    for name, group in sorted(root["videos"].groups()):
        va = dict(group.attrs)
        status = va.get("status")
        if status != "complete":
            skipped[name] = f"status {status!r}" + (f": {va['error']}" if "error" in va else "")
            continue
        mdmo = np.asarray(group["mdmo"][...], dtype=np.float32)
        frames = np.asarray(group["frame_numbers"][...], dtype=np.int64)
        if mdmo.ndim != 3 or mdmo.shape[1:] != (N_NODES, 2):
            raise UserError(f"{path}: videos/{name}/mdmo has shape {mdmo.shape}, expected (T-1, 12, 2)")
        if frames.shape != (mdmo.shape[0] + 1,):
            raise UserError(
                f"{path}: videos/{name}: frame_numbers has shape {frames.shape}, expected "
                f"({mdmo.shape[0] + 1},) = mdmo rows + 1"
            )
        if frames.size > 1 and np.any(np.diff(frames) <= 0):
            raise UserError(f"{path}: videos/{name}: frame_numbers are not increasing")
        if not np.all(np.isfinite(mdmo)):
            raise UserError(f"{path}: videos/{name}: mdmo holds NaN or inf")
        videos[name] = VideoFeatures(
            video_id=str(va.get("video_id", name)),
            subject=str(va["subject"]),
            fps=float(va.get("fps", 0.0)),
            mdmo=mdmo,
            frame_numbers=frames,
        )
    if not videos:
        raise UserError(f"{path}: no complete video in the store")
    return FeatureSet(
        path=str(path),
        dataset=str(attrs.get("dataset", "")),
        params_hash=str(attrs.get("params_hash", "")),
        params=dict(attrs.get("params", {})),
        videos=videos,
        skipped=skipped,
    )


def write_video(root, video_id: str, subject: str, mdmo: np.ndarray, frame_numbers: np.ndarray,
                fps: float = 30.0, status: str = "complete") -> None:
    """Write one video group in the store layout (for tests and benchmarks; flowcore owns the
    real writer). `root` is an open zarr group; `mdmo` (T-1, 12, 2), `frame_numbers` (T,)."""
    t = len(frame_numbers)
    group = root.require_group("videos").create_group(video_id)
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

    root = zarr.open_group(str(path), mode="w", zarr_format=3)
    root.attrs.update(dict(format_version=1, mespot_version="test", dataset=dataset,
                           params={}, params_hash="test"))
    root.create_group("videos")
    return root
