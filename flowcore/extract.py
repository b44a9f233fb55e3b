"""Extraction of one video: frames -> face track -> landmarks -> flow -> MDMO -> store.

`plan_extraction` decides what to do (pure: no I/O beyond the statuses it is given);
`extract_video` does it for one video and returns a `VideoResult`; it never raises for a bad
video: the failure (stage and message) goes into the store and the result.

Two passes over the frames keep memory bounded whatever the video's length: pass 1 decodes,
tracks the face (flowcore/tracking.py: which frames show it, cropped where) and fits landmarks
(small: (T, 68, 2)), then repairs the landmarks run by run, which needs the whole sequence; pass
2 computes flow and MDMO batch by batch, each batch sharing its first frame with the previous
batch's last, never across a frame without the face or a change of crop (those feature rows
stay 0 and are marked invalid in `mdmo_valid`). The video's frames run from the face's first
frame to its last. Pass 2 reuses pass 1's face crops when they fit in
`RunOptions.frame_cache_mb` (most videos) and decodes the video again otherwise; both give the
same bytes.
"""

from __future__ import annotations

import copy
import time
import traceback
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Callable

import numpy as np

from flowcore import testhooks
from flowcore.align import AlignParams, register_runs
from flowcore.faces import FaceParams, load_models
from flowcore.fingerprint import same_frames, source_fingerprint
from flowcore.flow.backends import DEFAULT_BACKEND
from flowcore.flow.params import TVL1Params
from flowcore.mdmo import MDMOParams, mdmo
from flowcore.rois import ROI_NAMES
from flowcore.store import COMPLETE, FeatureStore
from flowcore.tracking import face_frames, track_face
from flowcore.video import FrameError, FrameStream, VideoSpec

STAGES = ("setup", "decode", "face", "landmarks", "flow", "mdmo", "write")  # setup: model loading
Progress = Callable[[str, str, int, int], None]  # (video_id, phase, done, total)


@dataclass(frozen=True)
class ExtractParams:
    """Every parameter that changes what lands in the store (hashed into it)."""

    flow_backend: str = DEFAULT_BACKEND  # flowcore/flow/backends.py says why
    tvl1: TVL1Params = TVL1Params()
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
        rois = {k: v for k, v in d["rois"].items() if k != "names"}
        rois["roi_landmarks"] = tuple(rois["roi_landmarks"])
        return cls(flow_backend=d["flow_backend"], tvl1=TVL1Params(**d["tvl1"]),
                   faces=FaceParams.from_dict(d["faces"]),
                   mdmo=MDMOParams(**rois, compat=d["compat"]),
                   subsample=d["subsample"], save_flow=d["save_flow"],
                   align=AlignParams.from_value(d.get("align")))


def extract_params(base: "ExtractParams | dict | None" = None,
                   changes: dict | None = None) -> ExtractParams:
    """The one way ExtractParams are made from outside (the CLI, mespot.api, the service):
    `base` (an ExtractParams; or a mapping shaped as its `to_dict()`, e.g. a --config file merged
    over the defaults; None: the defaults) with each value of `changes` set, keyed as in
    `to_dict()` with a dot into a section: "flow_backend", "subsample", "compat", "save_flow",
    "align" (True: on with the default AlignParams, False: off), "faces.resize", "faces.choose",
    "tvl1.lambda_", ... A None value leaves the base's. ValueError naming what is out of range."""
    values = copy.deepcopy(base) if isinstance(base, dict) else (base or ExtractParams()).to_dict()
    values.setdefault("align", None)  # to_dict leaves it out when off
    for key, value in (changes or {}).items():
        if value is None:
            continue
        section, _, name = key.rpartition(".")
        into = values[section] if section else values
        if name not in into:
            raise ValueError(f"unknown extraction parameter {key!r}")
        into[name] = value
    try:
        return ExtractParams.from_dict(values)
    except TypeError as err:
        raise ValueError(str(err)) from None


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
    notes: list = field(default_factory=list)  # e.g. frames without the face, said and kept
    no_face: list = field(default_factory=list)  # (first, last) frame numbers without the face

    def to_dict(self) -> dict:
        return asdict(self)


def plan_extraction(videos, statuses: dict[str, str | None],
                    changed: set[str] = frozenset()) -> tuple[list, list]:
    """Split `videos` (VideoSpec) into (to_extract, already_complete) by their store status;
    `changed`: complete videos whose source frames changed since, extracted again."""
    done = [v for v in videos if statuses.get(v.video_id) == COMPLETE
            and v.video_id not in changed]
    todo = [v for v in videos if v not in done]
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
        if store.status(spec.video_id) == COMPLETE and _same_source(spec, store):
            return VideoResult(spec.video_id, spec.subject, "skipped")
        return _extract_video(spec, params, store, options, progress)


def _same_source(spec: VideoSpec, store: FeatureStore) -> bool:
    """Whether the store's copy of the video was extracted from the frames at `spec.path`."""
    try:
        return same_frames(store.fingerprint(spec.video_id), source_fingerprint(spec))
    except (OSError, ValueError, FrameError):
        return False


def _extract_video(spec, params, store, options, progress) -> VideoResult:
    started = time.perf_counter()
    timer = _Timer()
    attrs = {"subject": spec.subject, "source": str(spec.path), "subsample": spec.subsample,
             "fps": spec.fps_kept, "device": str(options.device)}
    result = VideoResult(spec.video_id, spec.subject, "failed")
    report = progress or (lambda *a: None)
    stage = "setup"
    try:
        with timer("setup"):  # once per process: the dlib models
            load_models(params.faces)
        stage = "decode"
        attrs["source_fingerprint"] = source_fingerprint(spec)
        stream = FrameStream(spec)
        total = len(stream)
        stage = "face"  # pass 1: track the face, fit the landmarks
        track = track_face(stream, params.faces, timer, int(options.frame_cache_mb * 2**20),
                           lambda done: report(spec.video_id, "landmarks", done, total))
        faces = face_frames(track, spec.video_id, params.faces.jump_tolerance)
        result.warnings += track.warnings
        result.notes += faces.notes()
        repairs = {**stream.repairs, "outlier": [int(faces.numbers[k]) for k in faces.replaced]}

        stage = "flow"  # pass 2: flow and MDMO, run by run
        group = store.begin(spec.video_id, attrs)
        testhooks.gate(f"extract-{spec.video_id}")  # a test may hold the video here
        size = faces.segments[0].size
        flow_out = (store.create_flow(group, len(faces.numbers) - 1, size[1], size[0])
                    if params.save_flow else None)
        crops = faces.crops if faces.crops is not None else _cropped(stream, faces, timer)
        flow_landmarks, transforms = faces.landmarks, None
        if params.align is not None:  # registered crops, and the landmarks moved with them
            crops, flow_landmarks, transforms = register_runs(crops, faces.landmarks,
                                                              faces.runs(), params.align)
        features = _flow_and_mdmo(crops, flow_landmarks, faces.row_valid, params, options,
                                  timer, flow_out,
                                  lambda done: report(spec.video_id, "flow", done,
                                                      len(faces.numbers)))
        stage = "write"
        with timer("write"):
            _write_arrays(store, group, faces, features, transforms)
        result.timings = {k: round(v, 4) for k, v in timer.seconds.items()}
        result.n_frames = len(faces.numbers)
        result.landmark_repairs = int(faces.bad.sum())
        result.frame_repairs = repairs
        result.no_face = faces.no_face
        store.complete(group, _final_attrs(result, faces, track, params.faces))
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


def _write_arrays(store, group, faces, features, transforms) -> None:
    """The video's arrays (flowcore.store's layout)."""
    store.write_array(group, "mdmo", features)
    store.write_array(group, "landmarks", faces.landmarks)
    store.write_array(group, "face_box", np.asarray(faces.segments[0].box, dtype=np.int32))
    store.write_array(group, "frame_numbers", np.asarray(faces.numbers, dtype=np.int32))
    store.write_array(group, "face_present", faces.present)
    store.write_array(group, "fit_quality", faces.quality.astype(np.float32))
    store.write_array(group, "crop_box", faces.crop_boxes())
    store.write_array(group, "mdmo_valid", faces.row_valid)
    if transforms is not None:
        store.write_array(group, "alignment", transforms)


def _final_attrs(result: VideoResult, faces, track, face_params) -> dict:
    """The attributes written with the status "complete"."""
    numbers = faces.numbers
    first = faces.segments[0]
    return {
        "n_frames": len(numbers), "timings": result.timings,
        "landmark_repairs": result.landmark_repairs,
        "landmark_repaired_frames": [int(numbers[i]) for i in np.flatnonzero(faces.bad)[:1000]],
        "frame_repairs": result.frame_repairs, "crop_size": list(first.size),
        "face_found_in_frame": int(numbers[0]), "faces_in_that_frame": track.segment_faces[0],
        "face_choice": face_params.choose, "faces_in_view": track.faces_in_view,
        "face_segments": [{"first": int(numbers[a]), "last": int(numbers[b]),
                           "crop_box": list(faces.segments[faces.segment[a]].box)}
                          for a, b in faces.runs()],
        "no_face_frames": [list(r) for r in faces.no_face],
        "searched_frames": track.searched, "warnings": result.warnings, "notes": result.notes}


def _describe(err: Exception) -> str:
    text = str(err) or repr(err)
    if isinstance(err, (AssertionError, IndexError, KeyError, TypeError, AttributeError)):
        where = traceback.extract_tb(err.__traceback__)[-1]  # a bug: say where
        text += f" [{type(err).__name__} at {where.filename}:{where.lineno}]"
    return text


def _cropped(stream, faces, timer):
    """Pass 2 without a cache: decode again and crop each frame of `faces` with its segment's
    box (None without a face), replaced frames as in pass 1 (flowcore.tracking.replace_frames:
    the frame before in the run, or after it at the run's start)."""
    replaced = set(faces.replaced)
    last = len(faces.numbers) - 1
    held, previous = False, None  # held: a replaced frame at its run's start awaits the next
    for index, (_, frame) in enumerate(timer.frames(stream)):
        k = index - faces.offset
        if k < 0:
            continue
        if k > last:
            return
        segment = faces.segment[k]
        with timer("decode"):
            face = None if segment < 0 else faces.segments[segment].crop(frame)
        if held:
            yield face
            previous, held = face, False
        if k in replaced:
            if k == 0 or faces.run[k - 1] != faces.run[k]:
                held = True
                continue
            face = previous
        previous = face
        yield face


def _mdmo_function(params: ExtractParams):
    """`mdmo`, or with a flow backend that has one (`cuda`: kernels/) the MDMO kernel, float rules
    only (compat MDMO stays on the CPU)."""
    from flowcore.flow import backend_named

    if backend_named(params.flow_backend).mdmo_kernel and not params.mdmo.compat:
        from flowcore.mdmo_cuda import mdmo_cuda

        return mdmo_cuda
    return mdmo


def _flow_and_mdmo(crops, landmarks, row_valid, params, options, timer, flow_out, report):
    """Pass 2 over `crops` (per frame an (h, w) uint8 face crop, None without a face; cached or
    decoded again): (T-1, 12, 2) float32 MDMO, computed run by run in batches that never cross
    a row where `row_valid` (T-1,) is False (those rows stay 0); the flow (float16) is written
    to `flow_out` when given."""
    from flowcore.flow import compute_flow

    features = np.zeros((len(landmarks) - 1, len(params.mdmo.roi_landmarks), 2), np.float32)
    device = options.device

    def run(frames, start):
        with timer("flow"):
            stack = np.stack(frames)
            if device != "cpu":
                import torch

                stack = torch.from_numpy(stack).to(device)
            flow = compute_flow(stack[:-1], stack[1:], params=params.tvl1,
                                backend=params.flow_backend, device=device)
        with timer("mdmo"):
            lm = landmarks[start + 1 : start + len(frames)]
            if not isinstance(flow, np.ndarray):
                import torch

                lm = torch.from_numpy(lm).to(flow.device)
            rows = _mdmo_function(params)(flow, lm, params.mdmo)
            if not isinstance(rows, np.ndarray):
                rows = rows.cpu().numpy()
            features[start : start + len(frames) - 1] = rows
        if flow_out is not None:
            with timer("write"):
                flow16 = (flow.astype(np.float16) if isinstance(flow, np.ndarray)
                          else flow.half().cpu().numpy())  # halve the transfer from a GPU
                flow_out[start : start + len(frames) - 1] = flow16

    batch, start, seen = [], 0, 0
    for k, face in enumerate(crops):
        seen = k + 1
        if batch and not row_valid[k - 1]:  # the run ended
            if len(batch) > 1:
                run(batch, start)
            batch = []
        if face is None:
            continue
        if not batch:
            start = k
        batch.append(face)
        if len(batch) == options.pairs_per_batch + 1:
            run(batch, start)
            batch, start = batch[-1:], k
            report(k + 1)
    if len(batch) > 1:
        run(batch, start)
    if seen != len(landmarks):
        raise RuntimeError(f"pass 2 read {seen} frames, pass 1 read {len(landmarks)}; the "
                           f"frames changed during extraction")
    return features
