"""Extraction of one video: frames -> face crop -> landmarks -> flow -> MDMO -> store.

`plan_extraction` decides what to do (pure: no I/O beyond the statuses it is given);
`extract_video` does it for one video and returns a `VideoResult`; it never raises for a bad
video: the failure (stage and message) goes into the store and the result.

Two passes over the frames keep memory bounded whatever the video's length: pass 1 decodes,
crops and fits landmarks (small: (T, 68, 2)), then repairs the landmarks, which needs the whole
sequence; pass 2 computes flow and MDMO batch by batch, each batch sharing its first frame with
the previous batch's last. Pass 2 reuses pass 1's face crops when they fit in
`RunOptions.frame_cache_mb` (most videos) and decodes the video again otherwise; both give the
same bytes.
"""

from __future__ import annotations

import itertools
import time
import traceback
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Callable

import numpy as np

from flowcore import testhooks
from flowcore.align import AlignParams, register
from flowcore.faces import (FaceParams, face_crop, fit_frame, flag_bad_fits, load_models,
                            repair_landmarks)
from flowcore.mdmo import MDMOParams, mdmo
from flowcore.rois import ROI_NAMES
from flowcore.store import COMPLETE, FeatureStore
from flowcore.video import FrameError, FrameStream, VideoSpec, frame_signature, outlier_frames

STAGES = ("setup", "decode", "face", "landmarks", "flow", "mdmo", "write")  # setup: model loading
Progress = Callable[[str, str, int, int], None]  # (video_id, phase, done, total)


def _default_tvl1():
    from flowcore.flow import TVL1Params

    return TVL1Params()


@dataclass(frozen=True)
class ExtractParams:
    """Every parameter that changes what lands in the store (hashed into it)."""

    flow_backend: str = "opencv"
    tvl1: object = field(default_factory=_default_tvl1)  # flowcore.flow.TVL1Params
    faces: FaceParams = FaceParams()
    mdmo: MDMOParams = MDMOParams()
    subsample: int | None = None  # keep every n-th frame; None: the source's (SAMM-LV: 8)
    save_flow: bool = False  # also store the dense flow as float16
    align: AlignParams | None = None  # register crops to the first frame before the flow

    def to_dict(self) -> dict:
        """JSON-able parameters; `align` appears only when on, so stores written before the
        option existed keep their parameters' hash."""
        rois = self.mdmo.to_dict()
        compat = rois.pop("compat")
        rois["names"] = list(ROI_NAMES)
        d = {"flow_backend": self.flow_backend, "tvl1": self.tvl1.to_dict(), "rois": rois,
             "faces": self.faces.to_dict(), "subsample": self.subsample, "compat": compat,
             "save_flow": self.save_flow}
        if self.align is not None:
            d["align"] = self.align.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "ExtractParams":
        """The inverse of `to_dict` (e.g. a store's `params` attribute)."""
        from flowcore.flow import TVL1Params

        rois = {k: v for k, v in d["rois"].items() if k != "names"}
        rois["roi_landmarks"] = tuple(rois["roi_landmarks"])
        return cls(flow_backend=d["flow_backend"], tvl1=TVL1Params(**d["tvl1"]),
                   faces=FaceParams(**d["faces"]), mdmo=MDMOParams(**rois, compat=d["compat"]),
                   subsample=d["subsample"], save_flow=d["save_flow"],
                   align=AlignParams.from_value(d.get("align")))


@dataclass(frozen=True)
class RunOptions:
    """How to compute (results do not depend on these)."""

    device: str = "cpu"
    batch_size: int | None = None  # frame pairs per flow call; None: 16 on the CPU, 128 on a GPU
    frame_cache_mb: float = 512.0  # keep pass 1's face crops for pass 2 up to this size

    @property
    def pairs_per_batch(self) -> int:
        return self.batch_size or (16 if self.device == "cpu" else 128)


@dataclass
class VideoResult:
    video_id: str
    subject: str
    status: str  # "complete", "failed", "skipped" (complete before) or "busy" (another process)
    n_frames: int = 0
    seconds: float = 0.0
    timings: dict = field(default_factory=dict)
    landmark_repairs: int = 0
    frame_repairs: dict = field(default_factory=dict)
    stage: str = ""
    error: str = ""
    warnings: list = field(default_factory=list)  # said in the summary, kept in the store

    def to_dict(self) -> dict:
        return asdict(self)


def check_device(device: str) -> None:
    """ValueError, before any work, for a CUDA device this machine does not have."""
    if not device.startswith("cuda"):
        if device != "cpu":
            raise ValueError(f"--device must be cpu, cuda or cuda:N, got {device!r}")
        return
    import torch

    if not torch.cuda.is_available():
        raise ValueError(f"--device {device}: CUDA is not available on this machine")
    index = device.partition(":")[2]
    if index and (not index.isdigit() or int(index) >= torch.cuda.device_count()):
        raise ValueError(f"--device {device}: this machine has {torch.cuda.device_count()} GPU(s)")


def plan_extraction(videos, statuses: dict[str, str | None]) -> tuple[list, list]:
    """Split `videos` (VideoSpec) into (to_extract, already_complete) by their store status."""
    todo = [v for v in videos if statuses.get(v.video_id) != COMPLETE]
    done = [v for v in videos if statuses.get(v.video_id) == COMPLETE]
    return todo, done


class _Timer:
    def __init__(self):
        self.seconds = dict.fromkeys(STAGES, 0.0)

    @contextmanager
    def __call__(self, stage: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[stage] += time.perf_counter() - start

    def frames(self, stream):
        """Iterate over `stream`, counting the time spent inside it as decoding."""
        iterator = iter(stream)
        while True:
            with self("decode"):
                item = next(iterator, None)
            if item is None:
                return
            yield item


def extract_video(spec: VideoSpec, params: ExtractParams, store: FeatureStore,
                  options: RunOptions = RunOptions(),
                  progress: Progress | None = None) -> VideoResult:
    """Extract one video into `store`; failures are recorded there and in the result.

    Holds the video's lock meanwhile: a video another process is extracting is left to it
    (status "busy"), one that became complete since the plan was made is "skipped".
    """
    with store.video_lock(spec.video_id) as mine:
        if not mine:
            return VideoResult(spec.video_id, spec.subject, "busy",
                               error="being extracted by another process")
        if store.status(spec.video_id) == COMPLETE:
            return VideoResult(spec.video_id, spec.subject, "skipped")
        return _extract_video(spec, params, store, options, progress)


def _extract_video(spec, params, store, options, progress) -> VideoResult:
    started = time.perf_counter()
    timer = _Timer()
    attrs = {"subject": spec.subject, "source": str(spec.path), "subsample": spec.subsample,
             "fps": spec.fps_kept}
    result = VideoResult(spec.video_id, spec.subject, "failed")
    report = progress or (lambda *a: None)
    stage = "setup"
    try:
        with timer("setup"):  # once per process: the dlib models
            load_models(params.faces)
        stage = "decode"
        stream = FrameStream(spec)
        total = len(stream)
        stage = "face"
        with timer("face"):
            first = itertools.islice(stream, params.faces.search_frames)
            first_frames = (frame for _, frame in first)
            crop = face_crop(first_frames, params.faces, spec.video_id)
        if crop.faces_found > 1:
            result.warnings.append(
                f"{crop.faces_found} faces in frame {stream.frame_numbers[crop.found_in_frame]}; "
                f"the largest was taken (box {list(crop.box)}); crop the video to one face if it "
                f"is not the subject")

        stage = "landmarks"
        cache_bytes = int(options.frame_cache_mb * 2**20)
        numbers, landmarks, bad, crops, outliers = _landmark_pass(
            stream, crop, params.faces, timer, cache_bytes,
            lambda done: report(spec.video_id, "landmarks", done, total))
        repairs = {**stream.repairs, "outlier": [numbers[k] for k in outliers]}

        stage = "flow"
        group = store.begin(spec.video_id, attrs)
        testhooks.gate(f"extract-{spec.video_id}")  # a test may hold the video here
        flow_out = (store.create_flow(group, len(numbers) - 1, crop.size[1], crop.size[0])
                    if params.save_flow else None)
        if crops is None:  # not cached: decode again
            crops = _cropped(stream, crop, timer, set(outliers))
        flow_landmarks, transforms = landmarks, None
        if params.align is not None:  # registered crops, and the landmarks moved with them
            crops, flow_landmarks, transforms = register(crops, landmarks, params.align)
        features = _flow_and_mdmo(crops, flow_landmarks, params, options, timer, flow_out,
                                  lambda done: report(spec.video_id, "flow", done, len(numbers)))

        stage = "write"
        with timer("write"):
            store.write_array(group, "mdmo", features)
            store.write_array(group, "landmarks", landmarks)
            store.write_array(group, "face_box", np.asarray(crop.box, dtype=np.int32))
            store.write_array(group, "frame_numbers", np.asarray(numbers, dtype=np.int32))
            if transforms is not None:
                store.write_array(group, "alignment", transforms)
        result.timings = {k: round(v, 4) for k, v in timer.seconds.items()}
        result.n_frames = len(numbers)
        result.landmark_repairs = int(bad.sum())
        result.frame_repairs = repairs
        store.complete(group, {
            "n_frames": len(numbers), "timings": result.timings,
            "landmark_repairs": result.landmark_repairs,
            "landmark_repaired_frames": [numbers[i] for i in np.flatnonzero(bad)[:1000]],
            "frame_repairs": repairs, "crop_size": list(crop.size),
            "face_found_in_frame": numbers[crop.found_in_frame],
            "faces_in_that_frame": crop.faces_found, "warnings": result.warnings})
        result.status = COMPLETE
    except Exception as err:  # one bad video never stops a batch
        stage = "decode" if isinstance(err, FrameError) else stage
        result.stage, result.error = stage, _describe(err)
        result.timings = {k: round(v, 4) for k, v in timer.seconds.items()}
        try:
            store.fail(spec.video_id, stage, result.error, {**attrs, "timings": result.timings})
        except Exception as store_err:  # the store itself is broken: say both
            result.error += f" (and recording the failure failed: {_describe(store_err)})"
    result.seconds = round(time.perf_counter() - started, 4)
    report(spec.video_id, "done", result.n_frames, result.n_frames)
    return result


def _describe(err: Exception) -> str:
    text = str(err) or repr(err)
    if isinstance(err, (AssertionError, IndexError, KeyError, TypeError, AttributeError)):
        where = traceback.extract_tb(err.__traceback__)[-1]  # a bug: say where
        text += f" [{type(err).__name__} at {where.filename}:{where.lineno}]"
    return text


def _landmark_pass(stream, crop, faces: FaceParams, timer, cache_bytes: int, report):
    """Pass 1: frame numbers (T,), repaired landmarks (T, 68, 2) float32, flagged (T,) bool, the
    face crops when they fit in `cache_bytes` (else None: pass 2 decodes again), and the indices
    of outlier frames (`flowcore.video.outlier_frames` on the crops): their landmarks are
    interpolated and their crops replaced by the previous frame's, like unreadable frames."""
    raw, numbers, crops, cached, signatures = [], [], [], 0, []
    for number, frame in timer.frames(stream):
        with timer("decode"):
            face = crop.crop(frame)
            signatures.append(frame_signature(face))
        with timer("landmarks"):
            raw.append(fit_frame(face, crop))
        numbers.append(number)
        if crops is not None:
            cached += face.nbytes
            crops.append(face)
            if cached > cache_bytes:
                crops = None  # too long a video to keep: pass 2 streams it again
        if len(numbers) % 32 == 0:
            report(len(numbers))
    if len(numbers) < 2:
        raise ValueError(f"{stream.spec.path}: {len(numbers)} frame(s); at least 2 are needed")
    outliers = outlier_frames(np.stack(signatures))
    if crops is not None:
        crops = _replace_outliers(crops, set(outliers))
    with timer("landmarks"):
        raw = np.stack(raw)
        bad = flag_bad_fits(raw, crop.size, faces.jump_tolerance)
        bad[outliers] = True
        return numbers, repair_landmarks(raw, bad), bad, crops, outliers


def _replace_outliers(crops, outliers: set[int]):
    """`crops` with each outlier replaced by the frame before it (after it, for the first)."""
    crops = list(crops)
    for k in sorted(outliers):
        crops[k] = crops[k - 1] if k > 0 else crops[k + 1]
    return crops


def _cropped(stream, crop, timer, outliers: set[int] = frozenset()):
    """Pass 2 without a cache: decode and crop the frames again (outliers replaced as in pass 1)."""
    previous, first_outlier = None, 0 in outliers
    for k, (_, frame) in enumerate(timer.frames(stream)):
        with timer("decode"):
            face = crop.crop(frame)
        if k == 0 and first_outlier:
            continue  # the first frame is garbage: it becomes the second, sent twice below
        if k == 1 and first_outlier:
            yield face
        if k in outliers:
            face = previous
        previous = face
        yield face


def _flow_and_mdmo(crops, landmarks, params, options, timer, flow_out, report):
    """Pass 2 over `crops` ((h, w) uint8 face crops, cached or decoded again): (T-1, 12, 2)
    float32 MDMO; the flow (float16) is written to `flow_out` when given."""
    from flowcore.flow import compute_flow

    rows, batch, done = [], [], 0
    device = options.device

    def run(frames):
        nonlocal done
        with timer("flow"):
            stack = np.stack(frames)
            if device != "cpu":
                import torch

                stack = torch.from_numpy(stack).to(device)
            flow = compute_flow(stack[:-1], stack[1:], params=params.tvl1,
                                backend=params.flow_backend, device=device)
        with timer("mdmo"):
            lm = landmarks[done + 1 : done + len(frames)]
            if not isinstance(flow, np.ndarray):
                import torch

                lm = torch.from_numpy(lm).to(flow.device)
            features = mdmo(flow, lm, params.mdmo)
            if not isinstance(features, np.ndarray):
                features = features.cpu().numpy()
            rows.append(features)
        if flow_out is not None:
            with timer("write"):
                flow16 = (flow.astype(np.float16) if isinstance(flow, np.ndarray)
                          else flow.half().cpu().numpy())  # halve the transfer from a GPU
                flow_out[done : done + len(frames) - 1] = flow16
        done += len(frames) - 1
        report(done + 1)

    for face in crops:
        batch.append(face)
        if len(batch) == options.pairs_per_batch + 1:
            run(batch)
            batch = batch[-1:]
    if len(batch) > 1:
        run(batch)
    if done != len(landmarks) - 1:
        raise RuntimeError(f"pass 2 read {done + 1} frames, pass 1 read {len(landmarks)}; the "
                           f"frames changed during extraction")
    return np.concatenate(rows).astype(np.float32)
