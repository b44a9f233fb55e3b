"""Spot expressions in new videos with a trained run (or a reference checkpoint).

    video file / frame folder / folder of videos --flowcore.run_extraction--> features.zarr
        --windows--> each fold's network --mean of the logits--> proposals + NMS
        --> intervals.csv (1-based original frame numbers) and curves.png (one video), or
            intervals.csv of all videos and curves/<video>.png (several)

A video whose extraction fails is listed (prediction.json, the command's summary) and the others
are still spotted; the features of those done are kept, so running again redoes only the rest.

The features are extracted with the same parameters as the model's training store (read from
that store), so the network sees what it was trained on; only the subsampling adapts to the new
video's frame rate (the kept rate closest to the training rate). A reference checkpoint
(`checkpoint_epoch_EEE.pth.tar`) is fed the reference's feature scale: 8-bit compat flow and the
reference's normalisation constants, and its proposals use the reference's arithmetic
(`--proposals`, spotting/proposals.py), as do those of a run trained on `--compat` features.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from flowcore.errors import UserError
from flowcore.store import load_features
from spotting.augment import flip_by_default, mirror_features
from spotting.channels import N_OUTPUTS
from spotting.data import REFERENCE_MEAN, REFERENCE_STD, resolve_device, window_tensors
from spotting.evaluate import parse_selection
from spotting.inference import CURVES, predict_logits, probability_curves, video_logits
from spotting.model import load_reference_checkpoint
from spotting.proposals import PRESETS, PROPOSAL_VARIANTS, ProposalParams, spot_video
from spotting.run_folder import RunFolder, load_weights
from spotting.windows import WindowParams, build_windows, rows_to_frames, video_targets


@dataclass(frozen=True)
class Model:
    """One network with the feature normalisation and the windows it was trained with."""

    name: str  # fold subject, or the checkpoint file name
    network: torch.nn.Module
    mean: list[float]
    std: list[float]
    windows: WindowParams  # the run's (config.json); for a checkpoint, the reference's defaults


@dataclass(frozen=True)
class Prediction:
    video_id: str
    intervals: pd.DataFrame  # video, type, onset, offset, apex, score (1-based original frames)
    curves: np.ndarray  # (N, 8) probabilities, columns CURVES
    frames: np.ndarray  # (N,) 1-based original frame number of each row
    out: Path
    no_face: tuple = ()  # (first, last) frame numbers of each stretch without the face
    warnings: tuple = ()  # the extraction's, e.g. which of several faces was taken


@dataclass(frozen=True)
class Batch:
    """The predictions of every video that could be extracted, and those that could not."""

    predictions: list[Prediction]
    failed: list  # flowcore VideoResults: video_id, stage, error
    out: Path
    proposals: str = "mespot"  # the proposal arithmetic used, a key of PROPOSAL_VARIANTS
    missing_folds: tuple[str, ...] = ()  # the run's LOSO folds not averaged (allowed missing)

    @property
    def intervals(self) -> pd.DataFrame:
        if not self.predictions:
            return pd.DataFrame(columns=INTERVAL_COLUMNS)
        return pd.concat([p.intervals for p in self.predictions], ignore_index=True)


INTERVAL_COLUMNS = ["video", "type", "onset", "offset", "apex", "score"]


def run_models(run: Path, fold: str | None, select: str, device: str,
               subjects: list[str] | None = None, allow_missing_folds: bool = False) -> list[Model]:
    """The networks of a run folder: one fold's, or every fold's, at the selected epoch.
    `subjects`: the LOSO folds the run should have (its store's subjects; None: the fold folders
    there are); a run with some missing is refused unless `allow_missing_folds` (then the others
    are averaged). `last` is the fold's last trained epoch: a deleted last weights file is
    refused, never replaced by an earlier epoch."""
    selection = parse_selection(select)
    if selection.mode not in ("last", "fixed"):
        raise UserError("predict takes --select last or fixed:N (the others choose epochs on "
                        "labelled data)")
    run_folder = RunFolder(run)
    if subjects is None:
        subjects = sorted(p.name for p in (run_folder.path / "folds").glob("*"))
    if fold is not None:
        if fold not in subjects:
            raise UserError(f"{run} has no fold {fold!r} (its folds: {', '.join(subjects)})")
        subjects = [fold]
    folds, _missing = run_folder.complete_folds(subjects, allow_missing_folds)
    windows = run_windows(run)
    models = []
    for folder in folds:
        epochs = folder.epochs()
        epoch = folder.last_epoch() if selection.mode == "last" else selection.epoch
        if epoch not in epochs:
            raise UserError(f"{folder.path}: no weights for epoch {epoch}")
        network, meta = load_weights(folder.weights_path(epoch), device)
        norm = meta["normalisation"]
        models.append(Model(folder.path.name, network, norm["mean"], norm["std"], windows))
    return models


def run_windows(run: Path) -> WindowParams:
    """The window parameters a run was trained with (its config.json), as evaluation uses them."""
    return WindowParams(**RunFolder(run).read_config()["windows"])


def _extract_params_for(model_path: Path):
    """(ExtractParams, proposal preset, training frame rate, LOSO subjects or None) matching the
    model's features; UserError when the run's store is gone or was replaced since training."""
    from flowcore.extract import ExtractParams

    if model_path.is_file():  # a reference checkpoint: the reference's 8-bit features
        from dataclasses import replace

        defaults = ExtractParams()
        return replace(defaults, mdmo=replace(defaults.mdmo, compat=True)), "casme2", 30.0, None
    run = RunFolder(model_path)
    config = run.read_config()
    store = run.store_path(config)
    if not Path(store).is_dir():
        raise UserError(f"{store}: the feature store run {model_path} was trained on is gone; "
                        f"predict needs it for the extraction parameters")
    features = load_features(store)
    run.check_store(config, features)
    params = ExtractParams.from_dict(features.params)
    fps = float(np.median([v.fps for v in features.videos.values()]))
    preset = "samm" if "samm" in features.dataset.lower() else "casme2"
    return params, preset, fps, features.subjects


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
                   progress=None, proposals: str | None = None,
                   models: list[Model] | None = None, allow_missing_folds: bool = False,
                   flip: bool | None = None, face: str | None = None) -> Batch:
    """Extract the videos of `path` (a video file, a folder of frames, a folder of video files or
    a dataset copy) with the model's extraction parameters, run the model(s) and write the
    outputs into `out`. `one`: refuse a path holding several videos. `progress`: as for
    flowcore.run_extraction. `proposals`: proposal arithmetic, None for `reference` with compat
    features (a reference checkpoint) and `mespot` otherwise. `models`: the networks, already
    loaded (`load_models`). `allow_missing_folds`: average the folds there are when some of the
    run's are missing (refused otherwise; `Batch.missing_folds` names them). `flip`: also run
    the models on the mirrored face and average (None: yes, except for a reference checkpoint
    or --compat features, spotting.augment.flip_by_default). `face`: which of several faces
    (largest, center or N from the left; None: the training store's choice)."""
    from dataclasses import replace

    path, model, out = Path(path), Path(model), Path(out)
    _check_inputs(path, model, out, fps, device)
    source = _open(path, fps)
    if one and len(source.videos) != 1:
        raise UserError(f"{path}: holds {len(source.videos)} videos; predict_video takes one "
                        f"video file or "
                        f"one folder of frames")
    if not source.videos:
        raise UserError(f"{path}: no video found")
    params, trained_preset, trained_fps, subjects = _extract_params_for(model)
    subsample = _one_subsample(path, source.videos, trained_fps)
    params = replace(params, subsample=subsample, **({"flow_backend": backend} if backend else {}))
    if face is not None:
        try:
            params = replace(params, faces=replace(params.faces, choose=face))
        except ValueError as err:
            raise UserError(f"--face: {err}") from None
    proposal_params = _proposal_params(preset or trained_preset, proposals, params.mdmo.compat)
    flip = flip_by_default(params.mdmo.compat) if flip is None else flip
    if models is None:  # before the long extraction: fail early
        models = load_models(model, fold, select, device, subjects, allow_missing_folds)
    missing = sorted(set(subjects or []) - {m.name for m in models}) if fold is None else []
    report = _extract(source, out, params, progress)
    _check_extracted(report)
    features = load_features(out / "features.zarr")
    several = len(source.videos) > 1
    predictions = []
    said = {r.video_id: tuple(r.warnings) for r in report.results}
    for spec in source.videos:
        if spec.video_id in features.videos:
            curves_png = out / "curves" / f"{spec.video_id}.png" if several else out / "curves.png"
            found = _spot(features.videos[spec.video_id], models, proposal_params, device,
                          curves_png, out, flip)
            predictions.append(replace(found, warnings=said.get(spec.video_id, ())))
    batch = Batch(predictions, list(report.failed), out, proposal_params.variant, tuple(missing))
    batch.intervals.to_csv(out / "intervals.csv", index=False)
    (out / "prediction.json").write_text(json.dumps({
        "source": str(path), "model": str(model), "models": [m.name for m in models],
        "combination": ("mean of the models' logits" if len(models) > 1 else "single model")
                       + (", each on the face and its mirror" if flip else ""),
        "missing_folds": missing, "flip": flip,
        "selection": select, "preset": preset or trained_preset,
        "proposals": proposal_params.variant,
        "proposals_label": PROPOSAL_VARIANTS[proposal_params.variant], "subsample": subsample,
        "windows": asdict(models[0].windows),
        "videos": [p.video_id for p in predictions],
        "failed": [{"video": r.video_id, "stage": r.stage, "error": r.error}
                   for r in report.failed],
        "frame_numbers": "1-based, the video's original numbering",
        "no_face": {p.video_id: [list(r) for r in p.no_face] for p in predictions}}, indent=1))
    return batch


def _check_extracted(report) -> None:
    """UserError saying why, when no video could be extracted (e.g. no face in any frame)."""
    if report.results and len(report.failed) == len(report.results):
        raise UserError("; ".join(f"{r.video_id}: feature extraction failed at {r.stage}: "
                                  f"{r.error}" for r in report.failed[:3]))


def _check_inputs(path: Path, model: Path, out: Path, fps: float | None, device: str) -> None:
    """UserError for inputs predict cannot work with, before anything is read or written."""
    resolve_device(device)
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


def _extract(source, out: Path, params, progress):
    """Extract `source` into out/features.zarr with the model's `params`: the ExtractReport."""
    from flowcore import run_extraction
    from flowcore.store import StoreMismatchError

    out.mkdir(parents=True, exist_ok=True)
    try:
        return run_extraction(source, out / "features.zarr", params, progress=progress)
    except StoreMismatchError as err:
        raise UserError(f"{err} (features of another model's parameters?): choose another "
                        f"--out") from None
    except ValueError as err:  # a flow backend that cannot run here (flowcore.flow.check_backend)
        raise UserError(str(err)) from None


def _proposal_params(preset: str, variant: str | None, compat: bool) -> ProposalParams:
    """The preset's ranges with the arithmetic asked for, by default the reference's for compat
    features (a reference checkpoint, or a run trained on a `--compat` store)."""
    from dataclasses import replace

    variant = variant or ("reference" if compat else "mespot")
    if variant not in PROPOSAL_VARIANTS:
        raise UserError(f"--proposals must be one of {', '.join(PROPOSAL_VARIANTS)} "
                        f"(got {variant!r})")
    if preset not in PRESETS:
        raise UserError(f"--preset must be one of {', '.join(PRESETS)} (got {preset!r})")
    return replace(PRESETS[preset], variant=variant)


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


def load_models(model: Path, fold: str | None, select: str, device: str,
                subjects: list[str] | None = None,
                allow_missing_folds: bool = False) -> list[Model]:
    """The networks of a run folder (one fold's or every fold's; `subjects`,
    `allow_missing_folds` as `run_models`) or of a reference checkpoint."""
    if model.is_file():
        network, _epoch = load_reference_checkpoint(model)
        return [Model(model.name, network.to(device).eval(), list(REFERENCE_MEAN),
                      list(REFERENCE_STD), WindowParams())]
    return run_models(model, fold, select, device, subjects, allow_missing_folds)


def run_subjects(model: Path) -> list[str] | None:
    """The LOSO folds a run should have (its store's subjects), None for a reference
    checkpoint; UserError when the run's store is gone or was replaced since training."""
    return _extract_params_for(Path(model))[3]


def _spot(video, models: list[Model], preset, device: str, curves_png: Path, out: Path,
          flip: bool = False) -> Prediction:
    """The mean of the models' logits over one video's rows (with `flip`, of the face and of its
    mirror too) -> intervals, curves and their plot. Each model sees the video cut into the
    windows it was trained with."""
    logits = np.zeros((video.n_rows, N_OUTPUTS), np.float32)
    for m in models:  # the folds' mean logit per row and channel
        targets = {video.video_id: video_targets(video.n_rows, [], m.windows)}
        ws = build_windows([video], targets, m.windows)
        mask = np.ones(len(ws), bool)
        views = [ws, replace(ws, x=mirror_features(ws.x))] if flip else [ws]
        for view in views:
            data = window_tensors(view, mask, m.mean, m.std, device)
            rows = predict_logits(m.network, data["x"], m.windows.context).cpu().numpy()
            logits += video_logits(rows, ws, mask)[video.video_id] / (len(models) * len(views))
    found = spot_video(logits, preset)
    intervals = pd.DataFrame({
        "video": video.video_id, "type": found["type"],
        "onset": rows_to_frames(found["start"], video.frame_numbers),
        "offset": rows_to_frames(found["end"], video.frame_numbers),
        "apex": rows_to_frames(found["apex"], video.frame_numbers), "score": found["score"],
    }, columns=INTERVAL_COLUMNS).sort_values(["type", "onset"]).reset_index(drop=True)
    curves = probability_curves(logits)
    frames = video.frame_numbers[: video.n_rows]
    curves_png.parent.mkdir(parents=True, exist_ok=True)
    _plot(video.video_id, curves, frames, intervals, curves_png)
    return Prediction(video.video_id, intervals, curves, frames, out, video.no_face)


def _plot(video_id: str, curves: np.ndarray, frames: np.ndarray, intervals: pd.DataFrame,
          path: Path) -> None:
    from spotting.plots import plot_video_curves

    spotted = pd.DataFrame({"type": intervals["type"], "outcome": "spotted",
                            "truth_onset": np.nan, "truth_offset": np.nan,
                            "proposal_onset": intervals["onset"],
                            "proposal_offset": intervals["offset"]})
    plot_video_curves(video_id, curves, frames, spotted, path, CURVES)
