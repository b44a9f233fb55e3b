"""Spot expressions in new videos with a trained run (or a reference checkpoint).

    video file / frame folder / folder of videos --flowcore.run_extraction--> features.zarr
        --windows--> each fold's network --mean of the logits--> proposals + NMS
        --> intervals.csv (1-based original frame numbers) and curves.png (one video), or
            intervals.csv of all videos and curves/<video>.png (several)

Each interval carries its expected precision (spotting/precision.py: the run's score ->
precision map, which `mespot train` (its last step) and `mespot evaluate` fit on held-out LOSO
test intervals; one fold's map, fitted without its test subject, with `--fold`), and by
default only those of at least DEFAULT_MIN_PRECISION are listed, the others counted
(`left_out`); `min_precision=0` lists every proposal. A run without a map for these options
(trained with `--subjects`, or before maps were fitted at training's end) lists every interval
and says so.

A video whose extraction fails is listed (prediction.json, the command's summary) and the others
are still spotted; the features of those done are kept, so running again redoes only the rest.

Start-up: the run folder is read and checked whole (spotting/run_checks.py) before any frame,
without torch; torch is imported and the networks built once the features are extracted, so
the first frame is processed a few seconds after the command starts (benchmarks/
predict_speed.py). The frames stream through the extraction (flowcore/extract.py: decode, face
and landmarks frame by frame, flow and MDMO batch by batch, the face crops kept for the second
pass up to a cap); the networks then run on the video's features (96 bytes a frame).

Everything comes from the run folder (spotting/trained.py, spotting/run_record.py): the
features are extracted with the training store's parameters as the run recorded them, so the
network sees what it was trained on; only the subsampling adapts to the new video's frame rate
(the kept rate closest to the training rate). By default it applies what `mespot evaluate`
applies by default (last epoch, calibrated proposal rules, test-time flip; spotting/trained.py
says how the folds' rules combine), through the same code (spotting/spot.py).

Device and flow backend: the network runs on `device`; the extraction too, where the flow
backend allows (opencv runs on the CPU only). A run trained on features of the `cuda` flow
backend (a GPU's) extracts with it where a GPU and CuPy are; elsewhere it falls back to the
`torch` backend on the CPU, the same TV-L1 algorithm, and says so: the features are close, not
identical (docs/datasets.md gives the measured difference).

A reference checkpoint (`checkpoint_epoch_EEE.pth.tar`) is fed the reference's feature scale:
8-bit compat flow and the reference's normalisation constants, and its proposals use the
reference's arithmetic (`--proposals`, spotting/proposals.py), as do those of a run trained on
`--compat` features.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from flowcore.errors import UserError
from flowcore.locations import (absolute, is_url, local_file, local_folder, location,
                                working_copy)
from flowcore.store import load_features
from spotting.calibrate import Calibrated
from spotting.data import usable_device
from spotting.inference import CURVES, probability_curves
from spotting.precision import DEFAULT_MIN_PRECISION, kept, with_precision
from spotting.proposals import PROPOSAL_VARIANTS
from spotting.spot import mean_logits, spot_rows
from spotting.trained import Trained, load_trained
from spotting.windows import rows_to_frames


@dataclass(frozen=True)
class Prediction:
    video_id: str
    intervals: pd.DataFrame  # video, type, onset, offset, apex, score (1-based original frames)
    curves: np.ndarray  # (N, 8) probabilities, columns CURVES
    frames: np.ndarray  # (N,) 1-based original frame number of each row
    out: Path
    rows: pd.DataFrame | None = None  # the intervals in feature rows (video, subject, type, ...)
    no_face: tuple = ()  # (first, last) frame numbers of each stretch without the face
    warnings: tuple = ()  # the extraction's, e.g. which of several faces was taken
    left_out: int = 0  # intervals spotted below the minimum expected precision, not listed


@dataclass(frozen=True)
class Batch:
    """The predictions of every video that could be extracted, and those that could not."""

    predictions: list[Prediction]
    failed: list  # flowcore VideoResults: video_id, stage, error
    out: Path
    trained: Trained  # what was applied
    extraction: dict  # how the videos were extracted: backend, device, fallback (or None)
    metrics: pd.DataFrame | None = None  # with annotations: MEGC counts and P/R/F1 per type
    annotations: Path | None = None
    length_note: str = ""  # videos much longer than the calibration videos (Trained.length_note)
    min_precision: float = 0.0  # the minimum expected precision applied (0: every interval)

    @property
    def proposals(self) -> str:
        """The proposal arithmetic used, a key of PROPOSAL_VARIANTS."""
        rules = self.trained.rules
        return (rules.params[0] if isinstance(rules, Calibrated) else rules).variant

    @property
    def missing_folds(self) -> tuple[str, ...]:
        return self.trained.missing_folds

    @property
    def intervals(self) -> pd.DataFrame:
        if not self.predictions:
            return pd.DataFrame(columns=INTERVAL_COLUMNS)
        return pd.concat([p.intervals for p in self.predictions], ignore_index=True)


INTERVAL_COLUMNS = ["video", "type", "onset", "offset", "apex", "score", "precision",
                    "precision_n"]


def predict_video(path: str | Path, model: str | Path, out: str | Path, **options) -> Prediction:
    """Spot one video (a file or a folder of frames); UserError if it cannot be extracted.
    Options as `predict_videos`."""
    batch = predict_videos(path, model, out, one=True, **options)
    if batch.failed:
        failure = batch.failed[0]
        raise UserError(f"{path}: feature extraction failed at {failure.stage}: {failure.error}")
    return batch.predictions[0]


def predict_videos(path: str | Path, model: str | Path, out: str | Path, *, fold: str | None = None,
                   select: str = "last", preset: str | None = None, fps: float | None = None,
                   device: str = "cpu", backend: str | None = None, one: bool = False,
                   progress=None, proposals: str | None = None, trained: Trained | None = None,
                   allow_missing_folds: bool = False, flip: bool | None = None,
                   calibrate: bool | None = None,
                   annotations: str | Path | None = None, face: str | None = None,
                   min_precision: float | None = None) -> Batch:
    """Extract the videos of `path` (a video file, a folder of frames, a folder of video files or
    a dataset copy) with the model's extraction parameters, run the model(s) and write the
    outputs into `out`. `one`: refuse a path holding several videos. `progress`: as for
    flowcore.run_extraction. `trained`: the model, already loaded (`load_trained`; then `fold`,
    `select`, `preset`, `proposals`, `allow_missing_folds`, `flip` and `calibrate` are its
    own); else it is loaded from `model` with those options (spotting.trained.load_trained:
    by default what `mespot evaluate` applies by default). `backend`: another flow backend than
    the model's (the features then differ from the training ones). `annotations`: score the
    spotted intervals against them as `evaluate` counts (MEGC; OUT/metrics.json,
    OUT/matches.csv, `Batch.metrics`). `face`: which of several faces (largest, center or N
    from the left; None: the training store's choice). `min_precision`: list only the
    intervals of at least this expected precision (spotting/precision.py; None:
    DEFAULT_MIN_PRECISION, 0: every interval, as the MEGC protocol scores); without a
    precision map in the run every interval is listed (`Trained.precision_note` says why).
    `out` may be a URL (s3://...): written in a local copy, then there."""
    if is_url(out):
        options = {k: v for k, v in locals().items() if k not in ("path", "model", "out")}
        with working_copy(out) as local:
            return predict_videos(path, model, local, **options)
    path, model, out = absolute(path), _run_here(model), Path(out)
    _check_inputs(path, model, out, fps, device)
    min_precision = _check_min_precision(min_precision)
    if annotations is not None and not location(annotations).exists():
        raise UserError(f"{annotations}: no such annotation file")
    source = _open(path, fps)
    if one and len(source.videos) != 1:
        raise UserError(f"{path}: holds {len(source.videos)} videos; predict_video takes one "
                        f"video file or one folder of frames")
    if not source.videos:
        raise UserError(f"{path}: no video found")
    if trained is None:  # before the long extraction: fail early
        trained = load_trained(model, fold=fold, select=select, device=device,
                               allow_missing_folds=allow_missing_folds, calibrate=calibrate,
                               flip=flip, preset=preset, proposals=proposals)
    if trained.precision is None:
        min_precision = 0.0
    subsample = _one_subsample(path, source.videos, trained.fps)
    params, options, extraction = extraction_setup(trained.params, subsample, backend, device)
    report = _extract(source, out, _with_face(params, face), options, progress)
    _check_extracted(report)
    features = load_features(out / "features.zarr")
    several = len(source.videos) > 1
    predictions = []
    said = {r.video_id: tuple(r.warnings) for r in report.results}
    for spec in source.videos:
        if spec.video_id in features.videos:
            curves_png = out / "curves" / f"{spec.video_id}.png" if several else out / "curves.png"
            found = spot_features(features.videos[spec.video_id], trained, device, curves_png, out,
                                  min_precision)
            predictions.append(replace(found, warnings=said.get(spec.video_id, ())))
    spotted = [features.videos[p.video_id] for p in predictions]
    batch = Batch(predictions, list(report.failed), out, trained, extraction,
                  length_note=trained.length_note(spotted), min_precision=min_precision)
    if annotations is not None and predictions:
        batch = _scored(batch, local_file(annotations))
    batch.intervals.to_csv(out / "intervals.csv", index=False)
    _write_json(batch, path, subsample)
    return batch


def _write_json(batch: Batch, path: Path, subsample: int) -> None:
    """OUT/prediction.json: what was applied and how, and what came of each video."""
    t = batch.trained
    (batch.out / "prediction.json").write_text(json.dumps({
        "source": str(path), "model": str(t.path), "models": [m.name for m in t.files],
        "applied": t.applied,
        "as_evaluate": _as_evaluate(t),
        "combination": ("mean of the models' logits" if len(t.files) > 1 else "single model")
                       + (", each on the face and its mirror" if t.options.flip else ""),
        "missing_folds": list(t.missing_folds), "flip": t.options.flip,
        "calibrated": t.options.calibrate, "rules": t.rules_json(), "fold_rules": t.fold_rules,
        "rules_note": t.note or None, "length_note": batch.length_note or None,
        "selection": t.selection, "preset": t.preset, "proposals": batch.proposals,
        "proposals_label": PROPOSAL_VARIANTS[batch.proposals], "subsample": subsample,
        "extraction": batch.extraction,
        "windows": asdict(t.files[0].windows),
        "videos": [p.video_id for p in batch.predictions],
        "failed": [{"video": r.video_id, "stage": r.stage, "error": r.error}
                   for r in batch.failed],
        "frame_numbers": "1-based, the video's original numbering",
        "min_precision": batch.min_precision, "precision": t.precision_note,
        "left_out": {p.video_id: p.left_out for p in batch.predictions},
        "no_face": {p.video_id: [list(r) for r in p.no_face] for p in batch.predictions}},
        indent=1))


def _scored(batch: Batch, annotations: Path) -> Batch:
    """The batch with its intervals scored against `annotations` (OUT/metrics.json,
    OUT/matches.csv)."""
    from spotting.truths import score_spotted

    rows = pd.concat([p.rows for p in batch.predictions], ignore_index=True)
    videos = [p.video_id for p in batch.predictions]
    metrics, matches = score_spotted(rows, videos, batch.out / "features.zarr", annotations,
                                     batch.trained.files[0].windows)
    matches.to_csv(batch.out / "matches.csv", index=False)
    (batch.out / "metrics.json").write_text(json.dumps({
        "annotations": str(annotations), "rule": "megc", "applied": batch.trained.applied,
        "videos": videos,
        "metrics": metrics.set_index("type").to_dict(orient="index"),
        "frame_numbers": "1-based, the video's original numbering"}, indent=1))
    return replace(batch, metrics=metrics, annotations=annotations)


def _as_evaluate(t: Trained) -> str:
    """How the applied rules relate to `mespot evaluate`'s default, in one sentence."""
    if not t.subjects:
        return "a reference checkpoint: the reference's own rules"
    if t.note:
        return "not evaluate's default: " + t.note
    if len(t.files) == 1:
        return (f"what `mespot evaluate`'s options apply to the test subject of fold "
                f"{t.files[0].name}, with the same code: the same intervals on the same features")
    return (f"each fold as `mespot evaluate`'s options apply it, the {len(t.files)} folds "
            f"together (their logits averaged, rules combined per type by the median); "
            f"docs/quality.md measures this on subjects no fold saw")


def _check_min_precision(value: float | None) -> float:
    """`value`, or DEFAULT_MIN_PRECISION for None; UserError outside [0, 1]."""
    if value is None:
        return DEFAULT_MIN_PRECISION
    if not (math.isfinite(value) and 0 <= value <= 1):
        raise UserError(f"--min-precision must be in [0, 1] (0 lists every interval), got {value}")
    return float(value)


def _check_extracted(report) -> None:
    """UserError saying why, when no video could be extracted (e.g. no face in any frame)."""
    if report.results and len(report.failed) == len(report.results):
        raise UserError("; ".join(f"{r.video_id}: feature extraction failed at {r.stage}: "
                                  f"{r.error}" for r in report.failed[:3]))


def _with_face(params, face: str | None):
    """`params` choosing `face` of several (largest, center or N); UserError if it names none."""
    if face is None:
        return params
    try:
        return replace(params, faces=replace(params.faces, choose=face))
    except ValueError as err:
        raise UserError(f"--face: {err}") from None


def _run_here(model: str | Path) -> Path:
    """The run folder (or checkpoint) `model` on this machine: a URL's folder is copied into the
    cache (flowcore/locations.py); UserError when there is none."""
    try:
        return local_folder(model)
    except FileNotFoundError:
        raise UserError(f"{model}: no such run folder or checkpoint file") from None


def _check_inputs(path: Path, model: Path, out: Path, fps: float | None, device: str) -> None:
    """UserError for inputs predict cannot work with, before anything is read or written."""
    usable_device(str(device))
    if not path.exists():
        raise UserError(f"{path}: no such video file or frame folder")
    if not model.exists():
        raise UserError(f"{model}: no such run folder or checkpoint file")
    if out.exists() and not out.is_dir():
        raise UserError(f"{out}: exists and is not a folder; choose another --out")
    if fps is not None and not (math.isfinite(fps) and fps > 0):
        raise UserError(f"--fps must be a frame rate > 0, got {fps}")


def _open(path: Path, fps: float | None):
    """The videos at `path` (flowcore.open_source); UserError when there are none to read."""
    from flowcore import open_source
    from flowcore.sources import SourceError

    try:
        return open_source(path, fps=fps)
    except SourceError as err:
        raise UserError(str(err)) from None


def extraction_setup(params: dict, subsample: int, backend: str | None,
                     device: str) -> tuple[object, object, dict]:
    """(flowcore ExtractParams, RunOptions, what was chosen as JSON) to extract new videos as
    the training store's `params`, kept 1 in `subsample`: its flow backend (or `backend`), on
    `device` where the backend runs there (its `where`; a run's own backend its `run_where`).
    Where the run's backend is not importable here it falls back to the backend's `fallback` on
    the CPU (the `fallback` entry says so: flowcore.flow.backends)."""
    from flowcore.extract import ExtractParams, RunOptions
    from flowcore.flow import backend_named

    chosen = ExtractParams.from_dict(params)
    chosen = replace(chosen, subsample=subsample, flow_backend=backend or chosen.flow_backend)
    try:
        own = backend_named(chosen.flow_backend)
    except ValueError as err:
        raise UserError(f"--backend: {err}") from None
    fallback = None
    if backend is not None:  # asked for: no fallback chosen for the user
        where = own.where(str(device))
    elif own.fallback is None or own.importable():
        where = own.run_where(str(device))
    else:
        chosen, where = replace(chosen, flow_backend=own.fallback), "cpu"
        fallback = own.fallback_note
    extraction = {"backend": chosen.flow_backend, "device": where, "fallback": fallback,
                  "trained_backend": params.get("flow_backend")}
    return chosen, RunOptions(device=where), extraction


def _extract(source, out: Path, params, options, progress):
    """Extract `source` into out/features.zarr with the model's `params`: the ExtractReport."""
    from flowcore import run_extraction
    from flowcore.store import StoreMismatchError

    out.mkdir(parents=True, exist_ok=True)
    try:
        return run_extraction(source, out / "features.zarr", params, options, progress=progress)
    except StoreMismatchError as err:
        raise UserError(f"{err} (features of another model's parameters?): choose another "
                        f"--out") from None
    except ValueError as err:  # a flow backend that cannot run here (flowcore.flow.check_backend)
        raise UserError(str(err)) from None


def _one_subsample(path: Path, videos, trained_fps: float) -> int:
    """The frame subsampling that brings the videos nearest the training frame rate; UserError
    if the videos' rates need different ones (one store holds one subsampling)."""
    wanted = {}
    for spec in videos:
        wanted.setdefault(max(1, int(round(spec.fps / trained_fps))), []).append(spec)
    if len(wanted) > 1:
        groups = "; ".join(
            f"every {n}. frame for {', '.join(f'{v.video_id} ({v.fps:g} fps)' for v in specs[:3])}"
            for n, specs in sorted(wanted.items()))
        raise UserError(f"{path}: the videos need different subsampling to match the model's "
                        f"{trained_fps:g} fps ({groups}); predict each frame rate's videos "
                        f"separately")
    return next(iter(wanted))


def spot_features(video, trained: Trained, device, curves_png: Path, out: Path,
                  min_precision: float = 0.0) -> Prediction:
    """One video's features (a flowcore VideoFeatures) -> intervals, curves and their plot: the
    mean of the models' logits (each on the face and its mirror with flip) under the trained
    run's rules (spotting/spot.py, as `evaluate`), each interval with its expected precision
    (the run's map); those below `min_precision` are left out (counted)."""
    logits = mean_logits(list(trained.models), video, device, trained.options.flip)
    found = with_precision(spot_rows(logits, trained.rules), trained.precision or {})
    left_out = int((~kept(found, min_precision)).sum())
    found = found[kept(found, min_precision)].reset_index(drop=True)
    rows = found.rename(columns={"start": "onset", "end": "offset"}).assign(
        video=video.video_id, subject=video.subject)
    intervals = pd.DataFrame({
        "video": video.video_id, "type": found["type"],
        "onset": rows_to_frames(found["start"], video.frame_numbers),
        "offset": rows_to_frames(found["end"], video.frame_numbers),
        "apex": rows_to_frames(found["apex"], video.frame_numbers), "score": found["score"],
        "precision": found["precision"], "precision_n": found["precision_n"],
    }, columns=INTERVAL_COLUMNS).sort_values(["type", "onset"]).reset_index(drop=True)
    curves = probability_curves(logits)
    frames = video.frame_numbers[: video.n_rows]
    curves_png.parent.mkdir(parents=True, exist_ok=True)
    _plot(video.video_id, curves, frames, intervals, curves_png)
    return Prediction(video.video_id, intervals, curves, frames, out, rows, no_face=video.no_face,
                      left_out=left_out)


def _plot(video_id: str, curves: np.ndarray, frames: np.ndarray, intervals: pd.DataFrame,
          path: Path) -> None:
    from spotting.plots import plot_video_curves

    spotted = pd.DataFrame({"type": intervals["type"], "outcome": "spotted",
                            "truth_onset": np.nan, "truth_offset": np.nan,
                            "proposal_onset": intervals["onset"],
                            "proposal_offset": intervals["offset"],
                            "proposal_precision": intervals["precision"]})
    plot_video_curves(video_id, curves, frames, spotted, path, CURVES)
