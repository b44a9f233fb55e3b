"""The feature store: one Zarr v3 group per video, readable with plain `zarr` or `xarray`
(DESIGN.md). Its writer (`FeatureStore`, used by extraction) and its reader (`load_features`,
used by training, evaluation and prediction) live here, beside the layout they share.

Layout:
  root attrs   format_version (int), mespot_version, dataset, params (every extraction
               parameter), params_hash (str)
  videos/<video_id>/
    mdmo           (T-1, 12, 2) float32   row k: motion kept frame k -> k+1, landmarks of k+1
    landmarks      (T, 68, 2) float32     (x, y) px in the crop's grid
    face_box       (4,) int32             (left, top, right, bottom) in frame px, exclusive: the
                                          crop box of the face's first run (see crop_box)
    frame_numbers  (T,) int32             ORIGINAL 1-based number of each kept frame
    flow           (T-1, 2, H, W) float16 optional: (dx, dy) px
    alignment      (T, 2, 3) float32      with --align: the similarity taking each crop onto
                                          its run's first (flowcore/align.py); `landmarks`
                                          stay as fitted on the unregistered crops
    face_present   (T,) bool              the frame shows the tracked face (flowcore/tracking.py)
    fit_quality    (T,) float32           the face's per-frame quality (dlib: the detector's
                                          margin at the tracked box; NaN: nothing face-like)
    crop_box       (T, 4) int32           each frame's crop box in frame px, -1 without a face
    mdmo_valid     (T-1,) bool            row k was computed: frames k and k+1 show the face in
                                          one crop; False rows hold 0 (never background motion)
    attrs: subject, video_id, fps (after subsampling), n_frames, subsample, source, device
           (what it was extracted on: cpu, cuda, cuda:N; not part of the parameters hash), timings,
           landmark_repairs, frame_repairs ({"missing", "corrupt", "outlier"}: original frame
           numbers replaced by a neighbour), warnings (e.g. several faces), notes (e.g. frames
           without the face), no_face_frames ([first, last] original frame numbers of each
           stretch without the face, those before the first and after the last kept frame
           included), face_segments ([{first, last, crop_box}] of each run with the face),
           face_choice, faces_in_view, searched_frames, source_fingerprint
           (flowcore/fingerprint.py), and `status` written LAST: "complete", or "failed" with
           `error` and `stage`.
  Frames run from the face's first frame to its last; `landmarks` are NaN where there is no
  face. Stores written before faces were tracked have none of face_present, fit_quality,
  crop_box, mdmo_valid, no_face_frames: they mean no gap was recorded (every row valid).

A video counts only when its status is "complete". Anything else found when a run starts
(no status, "running", "failed", unreadable metadata after a kill) is deleted and redone.
Chunks: the per-video arrays are small and read whole, so each is one chunk (up to 65,536 rows);
flow is chunked by FLOW_CHUNK frames. Compression: Blosc zstd level 3 with byte shuffle.

Reading: `load_features(path)` loads the MDMO features and frame numbers of every complete video
into a `FeatureSet` (the others are listed in `FeatureSet.skipped`), checking their shapes;
`open_video(path, video_id)` opens one video's group as an `xarray.Dataset` (dimension names as
in DIMENSIONS, the group's attributes as the Dataset's).
"""

from __future__ import annotations

import hashlib
import json
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from flowcore.errors import UserError
from flowcore.locations import is_url, listing, location, remove_tree
from flowcore.locks import folder_lock
from flowcore.rois import N_ROIS

FORMAT_VERSION = 1
ROW_CHUNK = 65536  # rows per chunk of mdmo / landmarks / frame_numbers
FLOW_CHUNK = 16  # frames per chunk of the optional dense flow
VIDEOS = "videos"
# dimension names saved with each array (lets xarray open a video group without this package)
DIMENSIONS = {"mdmo": ("pair", "roi", "xy"), "landmarks": ("frame", "landmark", "xy"),
              "face_box": ("ltrb",), "frame_numbers": ("frame",),
              "flow": ("pair", "component", "y", "x"), "alignment": ("frame", "row", "column"),
              "face_present": ("frame",), "fit_quality": ("frame",),
              "crop_box": ("frame", "ltrb"), "mdmo_valid": ("pair",)}
COMPLETE, FAILED, RUNNING = "complete", "failed", "running"


class StoreMismatchError(ValueError):
    """The store on disk was written with other parameters (or is not a feature store)."""


def params_hash(params: dict) -> str:
    """Stable short hash of a JSON-able parameter dict (key order does not matter)."""
    text = json.dumps(params, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _compressors():
    from zarr.codecs import BloscCodec

    return [BloscCodec(cname="zstd", clevel=3, shuffle="shuffle")]


class FeatureStore:
    """A feature store at `path`, opened for writing with `params` (refused if they differ)."""

    def __init__(self, path: str | Path, params: dict, dataset: str):
        import zarr

        from flowcore.version import __version__

        self.path = location(path)  # a Path, or a UPath for a URL (s3://...: flowcore/locations.py)
        self.params = json.loads(json.dumps(params))  # exactly what JSON round-trips to
        self.hash = params_hash(self.params)
        if self.path.exists() and not self.path.is_dir():
            raise StoreMismatchError(f"{self.path}: exists and is not a folder; choose another "
                                     f"--out")
        if (self.path / "zarr.json").is_file():
            root = zarr.open_group(str(self.path), mode="r+")
            attrs = dict(root.attrs)
            if attrs.get("format_version") != FORMAT_VERSION or "params_hash" not in attrs:
                raise StoreMismatchError(
                    f"{self.path}: not a mespot feature store of format {FORMAT_VERSION} "
                    f"(format_version={attrs.get('format_version')!r}); choose another --out")
            if attrs["params_hash"] != self.hash:
                raise StoreMismatchError(
                    f"{self.path} was written with other extraction parameters "
                    f"({_differences(attrs.get('params', {}), self.params)}); use another --out, "
                    f"or the same parameters to resume")
            if attrs.get("dataset") != dataset:
                raise StoreMismatchError(f"{self.path} holds dataset {attrs.get('dataset')!r}, "
                                         f"not {dataset!r}; use another --out")
        elif self.path.exists() and any(self.path.iterdir()):
            raise StoreMismatchError(f"{self.path} exists and is not a Zarr store; choose another "
                                     f"--out")
        else:
            root = zarr.open_group(str(self.path), mode="w", zarr_format=3)
            root.attrs.update({"format_version": FORMAT_VERSION, "mespot_version": __version__,
                               "dataset": dataset, "params": self.params,
                               "params_hash": self.hash})
        if VIDEOS not in root:
            root.create_group(VIDEOS)
        self.root = root

    def status(self, video_id: str) -> str | None:
        """"complete", "failed", "running" or None (absent or unreadable)."""
        return self.status_at(self.path, video_id)

    @staticmethod
    def status_at(path: Path, video_id: str) -> str | None:
        """The status of a video of the store at `path`, without opening the store."""
        meta = location(path) / VIDEOS / video_id / "zarr.json"
        try:
            return json.loads(meta.read_text()).get("attributes", {}).get("status")
        except (OSError, ValueError):
            return None

    def fingerprint(self, video_id: str) -> dict | None:
        """The source fingerprint recorded for a video (flowcore/fingerprint.py), or None."""
        return self._video_attrs(video_id).get("source_fingerprint")

    def source(self, video_id: str) -> str:
        """Where a video's frames came from, as recorded ("" when not)."""
        return str(self._video_attrs(video_id).get("source", ""))

    def _video_attrs(self, video_id: str) -> dict:
        meta = self.path / VIDEOS / video_id / "zarr.json"
        try:
            return json.loads(meta.read_text()).get("attributes", {})
        except (OSError, ValueError):
            return {}

    def statuses(self) -> dict[str, str | None]:
        return video_statuses(self.path)

    @contextmanager
    def video_lock(self, video_id: str):
        """Yield True while this process holds the video's lock, False if another one does
        (flowcore.locks): it guards against two runs extracting the same video at once. On
        object storage a run waits up to one lease for a lock whose holder stopped renewing it
        (a task retried after its node was lost)."""
        from flowcore.locks import lease_seconds

        wait = 1.5 * lease_seconds() if is_url(self.path) else 0.0
        with folder_lock(self.path, video_id, wait) as holder:
            yield holder is None

    def begin(self, video_id: str, attrs: dict):
        """Delete whatever is at videos/<video_id> and create it afresh, status "running"."""
        import zarr

        remove_tree(self.path / VIDEOS / video_id)
        group = zarr.open_group(str(self.path), mode="r+")[VIDEOS].create_group(video_id)
        group.attrs.update({**attrs, "video_id": video_id, "status": RUNNING})
        return group

    def write_array(self, group, name: str, data: np.ndarray, chunk_rows: int = ROW_CHUNK):
        chunks = (max(1, min(chunk_rows, data.shape[0])),) + data.shape[1:]
        array = group.create_array(name, shape=data.shape, dtype=data.dtype, chunks=chunks,
                                   compressors=_compressors(), fill_value=0,
                                   dimension_names=DIMENSIONS.get(name))
        if data.size:
            array[...] = data
        return array

    def create_flow(self, group, n_pairs: int, height: int, width: int):
        """The optional dense flow array (T-1, 2, H, W) float16, filled batch by batch."""
        return group.create_array("flow", shape=(n_pairs, 2, height, width), dtype="float16",
                                  chunks=(FLOW_CHUNK, 2, height, width),
                                  compressors=_compressors(), fill_value=0,
                                  dimension_names=DIMENSIONS["flow"])

    def complete(self, group, attrs: dict) -> None:
        """Write the final attributes, then the status "complete" on its own, last."""
        group.attrs.update(attrs)
        group.attrs["status"] = COMPLETE

    def fail(self, video_id: str, stage: str, error: str, attrs: dict | None = None) -> None:
        """Record a failure: the arrays are dropped, the attributes say where and why."""
        group = self.begin(video_id, attrs or {})
        group.attrs.update({"error": error, "stage": stage})
        group.attrs["status"] = FAILED


def _differences(old: dict, new: dict, prefix: str = "") -> str:
    diffs = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            inner = _differences(a, b, f"{prefix}{key}.")
            if inner:
                diffs.append(inner)
        elif a != b:
            diffs.append(f"{prefix}{key}: stored {a!r}, now {b!r}")
    return "; ".join(diffs[:5]) if diffs else "parameters differ"


# ---- reading ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class VideoFeatures:
    """One video's features: `mdmo` (N, 12, 2) float32 pixels with N = T - 1 rows, and
    `frame_numbers` (T,) int64, the original 1-based frame number of each kept frame;
    `device`: what it was extracted on ("" for stores from before videos recorded it);
    `valid` (N,) bool: the rows computed from two frames showing the face in one crop (the
    others hold 0; None: all valid, a store from before faces were tracked); `no_face`: (first,
    last) original frame numbers of each stretch without the face."""

    video_id: str
    subject: str
    fps: float
    mdmo: np.ndarray
    frame_numbers: np.ndarray
    device: str = ""
    valid: np.ndarray | None = None
    no_face: tuple[tuple[int, int], ...] = ()

    @property
    def n_rows(self) -> int:
        return int(self.mdmo.shape[0])

    @property
    def row_valid(self) -> np.ndarray:
        """(N,) bool, True for every row of a video without gaps."""
        return np.ones(self.n_rows, bool) if self.valid is None else self.valid

    @property
    def segments(self) -> list[tuple[int, int]]:
        """(start, stop) rows, stop exclusive, of each run of valid rows: the stretches that
        windows and proposals stay inside. [(0, N)] for a video without gaps."""
        valid = self.row_valid
        edges = np.flatnonzero(np.diff(np.concatenate([[False], valid, [False]]).astype(np.int8)))
        return [(int(a), int(b)) for a, b in zip(edges[::2], edges[1::2])]


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

    path = location(path)
    if not path.exists():
        raise UserError(f"feature store not found: {path}")
    try:
        root = zarr.open_group(str(path), mode="r")
    except Exception as err:  # zarr raises several types for "not a group"
        raise UserError(f"not a Zarr feature store: {path} ({err})") from err
    attrs = dict(root.attrs)
    if "format_version" not in attrs:
        raise UserError(f"{path}: not a mespot feature store (no 'format_version' attribute)")
    if VIDEOS not in root:
        raise UserError(f"{path}: the store holds no {VIDEOS!r} group")
    videos: dict[str, VideoFeatures] = {}
    skipped: dict[str, str] = {}
    for name, group in sorted(root[VIDEOS].groups()):
        va = dict(group.attrs)
        status = va.get("status")
        if status != COMPLETE:
            skipped[name] = f"status {status!r}" + (f": {va['error']}" if "error" in va else "")
            continue
        mdmo = np.asarray(group["mdmo"][...], dtype=np.float32)
        frames = np.asarray(group["frame_numbers"][...], dtype=np.int64)
        if mdmo.ndim != 3 or mdmo.shape[1:] != (N_ROIS, 2):
            raise UserError(f"{path}: videos/{name}/mdmo has shape {mdmo.shape}, "
                            f"expected (T-1, 12, 2)")
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
            device=str(va.get("device", "")),
            valid=_row_validity(group, path, name, mdmo.shape[0]),
            no_face=tuple((int(a), int(b)) for a, b in va.get("no_face_frames", [])),
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


def _row_validity(group, path: Path, name: str, n_rows: int) -> np.ndarray | None:
    """The video's `mdmo_valid` (N,) bool, None when absent (a store from before faces were
    tracked: no gap recorded)."""
    if "mdmo_valid" not in group:
        return None
    valid = np.asarray(group["mdmo_valid"][...])
    if valid.shape != (n_rows,) or valid.dtype != bool:
        raise UserError(f"{path}: videos/{name}: mdmo_valid has shape {valid.shape} and dtype "
                        f"{valid.dtype}, expected ({n_rows},) bool = one per mdmo row")
    return valid


def video_statuses(path: str | Path) -> dict[str, str | None]:
    """{video id: status} of every video group of the store at `path` as it is now, read
    without opening the store ({} when it has none): a video being rewritten (its group deleted
    and created afresh) reads None, never an error, so this may be called while others write."""
    where = location(path)
    return {name: FeatureStore.status_at(where, name)
            for name in listing(where / VIDEOS, folders=True)}


def no_face_frames(path: str | Path) -> dict[str, list[tuple[int, int]]]:
    """{video id: [(first, last), ...]}: the original frame numbers of each stretch without the
    face, for every complete video of the store at `path` (empty lists for a store from before
    faces were tracked: no gap recorded)."""
    return {vid: list(v.no_face) for vid, v in load_features(path).videos.items()}


def open_video(path: str | Path, video_id: str):
    """One video's group of the store at `path` as an `xarray.Dataset`: variables mdmo
    (pair, roi, xy) float32 px, landmarks (frame, landmark, xy) float32 px, face_box (ltrb,)
    int32, frame_numbers (frame,) int32 (1-based original numbers), flow when saved; the group's
    attributes (subject, fps, status, ...) as the Dataset's. UserError for a missing video."""
    import xarray as xr
    import zarr

    path = location(path)
    try:
        zarr.open_group(str(path), mode="r")[f"{VIDEOS}/{video_id}"]
    except Exception as err:
        raise UserError(f"{path}: no video {video_id!r} in this store ({err})") from None
    return xr.open_zarr(str(path), group=f"{VIDEOS}/{video_id}", consolidated=False, zarr_format=3)
