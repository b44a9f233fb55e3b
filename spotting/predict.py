"""Spot expressions in a new video with a trained run (or a reference checkpoint).

    video file / frame folder --flowcore.extract_source--> features.zarr
        --windows--> each fold's network --mean of the logits--> proposals + NMS
        --> intervals.csv (1-based original frame numbers) and curves.png

The features are extracted with the same parameters as the model's training store (read from
that store), so the network sees what it was trained on; only the subsampling adapts to the new
video's frame rate (the kept rate closest to the training rate). A reference checkpoint
(`checkpoint_epoch_EEE.pth.tar`) is fed the reference's feature scale: 8-bit compat flow and the
reference's normalisation constants.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from mespot.errors import UserError
from spotting.evaluate import CURVES, parse_selection, probability_curves
from spotting.features import load_features
from spotting.model import load_reference_checkpoint
from spotting.proposals import PRESETS, spot_video
from spotting.train import REFERENCE_MEAN, REFERENCE_STD, load_weights, predict_logits, video_logits, window_tensors
from spotting.windows import WindowParams, build_windows, rows_to_frames, video_targets


@dataclass(frozen=True)
class Model:
    """One network with the feature normalisation it expects."""

    name: str  # fold subject, or the checkpoint file name
    network: torch.nn.Module
    mean: list[float]
    std: list[float]


@dataclass(frozen=True)
class Prediction:
    video_id: str
    intervals: pd.DataFrame  # video, type, onset, offset, apex, score (1-based original frames)
    curves: np.ndarray  # (N, 8) probabilities, columns CURVES
    frames: np.ndarray  # (N,) 1-based original frame number of each row
    out: Path


def run_models(run: Path, fold: str | None, select: str, device: str) -> list[Model]:
    """The networks of a run folder: one fold's, or every fold's, at the selected epoch."""
    selection = parse_selection(select)
    if selection.mode not in ("last", "fixed"):
        raise UserError("predict takes --select last or fixed:N (the others choose epochs on labelled data)")
    folds = sorted(p for p in (run / "folds").glob("*") if (p / "fold.json").is_file())
    if fold is not None:
        folds = [p for p in folds if p.name == fold]
        if not folds:
            raise UserError(f"{run} has no fold {fold!r}")
    if not folds:
        raise UserError(f"{run} holds no trained fold")
    models = []
    for folder in folds:
        epochs = sorted(int(p.stem.rsplit("_", 1)[1]) for p in folder.glob("weights_epoch_*.safetensors"))
        epoch = epochs[-1] if selection.mode == "last" else selection.epoch
        if epoch not in epochs:
            raise UserError(f"{folder}: no weights for epoch {epoch}")
        network, meta = load_weights(folder / f"weights_epoch_{epoch:03d}.safetensors", device)
        models.append(Model(folder.name, network, meta["normalisation"]["mean"], meta["normalisation"]["std"]))
    return models


def _extract_params_for(model_path: Path, video_fps: float):
    """(ExtractParams, proposal preset, training frame rate) matching the model's features."""
    from flowcore.extract import ExtractParams

    if model_path.is_file():  # a reference checkpoint: the reference's 8-bit features
        from dataclasses import replace

        defaults = ExtractParams()
        return replace(defaults, mdmo=replace(defaults.mdmo, compat=True)), "casme2", 30.0
    config = json.loads((model_path / "config.json").read_text())
    features = load_features(config["store"])
    params = ExtractParams.from_dict(features.params)
    fps = float(np.median([v.fps for v in features.videos.values()]))
    preset = "samm" if "samm" in features.dataset.lower() else "casme2"
    return params, preset, fps


def predict_video(path: str | Path, model: str | Path, out: str | Path, *, fold: str | None = None,
                  select: str = "last", preset: str | None = None, fps: float | None = None,
                  device: str = "cpu", backend: str | None = None) -> Prediction:
    """Extract `path` (a video file or a folder of frames), run the model(s), write the outputs."""
    from dataclasses import replace

    from flowcore import open_source, run_extraction

    path, model, out = Path(path), Path(model), Path(out)
    if not path.exists():
        raise UserError(f"{path}: no such video file or frame folder")
    if not model.exists():
        raise UserError(f"{model}: no such run folder or checkpoint file")
    source = open_source(path, fps=fps)
    if len(source.videos) != 1:
        raise UserError(f"{path}: holds {len(source.videos)} videos; predict takes one video file or "
                        f"one folder of frames (use `mespot extract` + `mespot evaluate` for datasets)")
    spec = source.videos[0]
    params, trained_preset, trained_fps = _extract_params_for(model, spec.fps)
    subsample = max(1, int(round(spec.fps / trained_fps)))
    params = replace(params, subsample=subsample, **({"flow_backend": backend} if backend else {}))
    out.mkdir(parents=True, exist_ok=True)
    report = run_extraction(source, out / "features.zarr", params)
    if report.failed:
        failure = report.failed[0]
        raise UserError(f"{path}: feature extraction failed at {failure.stage}: {failure.error}")
    video = load_features(out / "features.zarr").videos[spec.video_id]

    if model.is_file():
        network, _epoch = load_reference_checkpoint(model)
        models = [Model(model.name, network.to(device).eval(), list(REFERENCE_MEAN), list(REFERENCE_STD))]
    else:
        models = run_models(model, fold, select, device)
    windows = WindowParams()
    ws = build_windows([video], {video.video_id: video_targets(video.n_rows, [], windows)}, windows)
    mask = np.ones(len(ws), bool)
    logits = np.zeros((video.n_rows, 10), np.float32)
    for m in models:  # the folds' mean logit per row and channel
        data = window_tensors(ws, mask, m.mean, m.std, device)
        rows = predict_logits(m.network, data["x"], windows.context).cpu().numpy()
        logits += video_logits(rows, ws, mask)[video.video_id] / len(models)
    params_preset = PRESETS[preset or trained_preset]
    found = spot_video(logits, params_preset)
    intervals = pd.DataFrame({
        "video": video.video_id, "type": found["type"],
        "onset": rows_to_frames(found["start"], video.frame_numbers),
        "offset": rows_to_frames(found["end"], video.frame_numbers),
        "apex": rows_to_frames(found["apex"], video.frame_numbers), "score": found["score"],
    }).sort_values(["type", "onset"]).reset_index(drop=True)
    intervals.to_csv(out / "intervals.csv", index=False)
    curves = probability_curves(logits)
    frames = video.frame_numbers[: video.n_rows]
    _plot(video.video_id, curves, frames, intervals, out / "curves.png")
    (out / "prediction.json").write_text(json.dumps({
        "video": str(path), "model": str(model), "models": [m.name for m in models],
        "combination": "mean of the models' logits" if len(models) > 1 else "single model",
        "selection": select, "preset": preset or trained_preset, "subsample": subsample,
        "frame_numbers": "1-based, the video's original numbering"}, indent=1))
    return Prediction(video.video_id, intervals, curves, frames, out)


def _plot(video_id: str, curves: np.ndarray, frames: np.ndarray, intervals: pd.DataFrame, path: Path) -> None:
    from spotting.plots import plot_video_curves

    spotted = pd.DataFrame({"type": intervals["type"], "outcome": "spotted",
                            "truth_onset": np.nan, "truth_offset": np.nan,
                            "proposal_onset": intervals["onset"], "proposal_offset": intervals["offset"]})
    plot_video_curves(video_id, curves, frames, spotted, path, CURVES)
