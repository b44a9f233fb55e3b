"""Trained networks on one video's feature rows: logits, then proposals under a fold's rules.

The one path `evaluate` and `predict` share, so that a fold's model spots a video the same way
in both: the same windows (the run's), the same batches (one video's windows at a time), the
same arithmetic, the same rules.

Shapes: a video's windows x (W, L + 2C, 12, 2) float32 raw MDMO px -> normalised per channel
with the fold's mean and std (0 outside the video) -> (W, 10, L) logits of the central rows ->
(N, 10) float32 per feature row of the video. With `flip`, the mean of the face's logits and
its mirror's (spotting.augment.mirror_features on the raw features, then the same
normalisation). Several models: the mean of their (N, 10) logits.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from flowcore.store import VideoFeatures
from spotting.augment import mirror_features
from spotting.calibrate import Calibrated
from spotting.data import Prepared, normalised
from spotting.inference import predict_logits, video_logits
from spotting.proposals import ProposalParams, spot_video
from spotting.run_checks import refuse
from spotting.run_folder import load_weights, read_weights
from spotting.windows import WindowParams, WindowSet, build_windows, video_targets

if TYPE_CHECKING:  # torch is imported where a network runs (spotting a video)
    import torch

ROW_COLUMNS = ["video", "subject", "type", "onset", "apex", "offset", "score"]


@dataclass(frozen=True)
class Model:
    """One network with the feature normalisation and the windows it was trained with."""

    name: str  # fold subject, or the checkpoint file name
    network: torch.nn.Module
    mean: list[float]
    std: list[float]
    windows: WindowParams  # the run's (config.json); for a checkpoint, the reference's defaults

    @classmethod
    def from_weights(cls, path: Path, windows: WindowParams, device, name: str = "") -> "Model":
        """A fold's saved weights (spotting.run_folder.load_weights) with their normalisation."""
        return WeightsFile.read(path, windows, name).load(device)


@dataclass(frozen=True)
class WeightsFile:
    """A fold's weights file, checked and its feature normalisation read without torch
    (spotting.run_folder.read_weights); `load` builds its network (torch). Reading a run to spot
    a video checks every file first, and builds the networks only when the video's features
    are there."""

    name: str
    path: Path
    mean: list[float]
    std: list[float]
    windows: WindowParams

    @classmethod
    def read(cls, path: Path, windows: WindowParams, name: str = "") -> "WeightsFile":
        _, meta = read_weights(path)
        norm = meta.get("normalisation")
        if norm is None:  # read_weights saw it finite where it is there
            raise refuse(path, "its metadata holds no feature normalisation")
        return cls(name or Path(path).parent.name, Path(path), norm["mean"], norm["std"],
                   windows)

    def load(self, device) -> Model:
        network, _ = load_weights(self.path, device)
        return Model(self.name, network, self.mean, self.std, self.windows)


def video_rows(model: Model, ws: WindowSet, index: int, device, flip: bool) -> np.ndarray:
    """(N, 10) float32 logits of video `index` of `ws` (cut with `model.windows`): its windows
    through the network in one go, with `flip` averaged with its mirrored face."""
    mask = ws.video == index
    raw = ws.x[mask]
    views = [raw, mirror_features(raw)] if flip else [raw]
    total = None
    import torch

    for x in views:
        data = torch.from_numpy(normalised(x, ws.valid[mask], model.mean, model.std)).to(device)
        rows = predict_logits(model.network, data, model.windows.context).cpu().numpy()
        logits = video_logits(rows, ws, mask)[ws.video_ids[index]]
        total = logits if total is None else total + logits
    return total / len(views)


def video_windows(video: VideoFeatures, windows: WindowParams) -> WindowSet:
    """One video cut into `windows` (no targets: a video to spot)."""
    return build_windows([video], {video.video_id: video_targets(video.n_rows, [], windows)},
                         windows)


def mean_logits(models: list[Model], video: VideoFeatures, device, flip: bool) -> np.ndarray:
    """(N, 10) the mean of the models' logits over one video's rows (each model's windows)."""
    total = None
    for model in models:
        logits = video_rows(model, video_windows(video, model.windows), 0, device, flip)
        total = logits if total is None else total + logits
    return total / len(models)


def spot_rows(logits: np.ndarray, rules: ProposalParams | Calibrated) -> pd.DataFrame:
    """Proposals (rows: type, start, apex, end, score) of one video's (N, 10) logits under fixed
    proposal rules or calibrated ones."""
    return rules.spot(logits) if isinstance(rules, Calibrated) else spot_video(logits, rules)


def spot_subjects(
    prep: Prepared,
    weights: Path,
    subjects: list[str],
    params: ProposalParams | Calibrated,
    windows: WindowParams,
    device: str = "cpu",
    flip: bool = False,
) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """Proposals (rows; columns ROW_COLUMNS) of a saved model on every video of `subjects` (or
    named in it: the units of a fold may be videos, spotting/protocols.py), and each video's
    (N, 10) logits (with `flip`, the mean of the face's and its mirror's)."""
    model = Model.from_weights(weights, windows, device)
    ws = prep.windows
    wanted = set(subjects)
    parts, per_video = [pd.DataFrame(columns=ROW_COLUMNS)], {}
    for index, video_id in enumerate(ws.video_ids):
        if (ws.subjects[index] not in wanted and video_id not in wanted) or not (
                ws.video == index).any():
            continue
        per_video[video_id] = logits = video_rows(model, ws, index, device, flip)
        found = spot_rows(logits, params).rename(columns={"start": "onset", "end": "offset"})
        found.insert(0, "subject", ws.subjects[index])
        found.insert(0, "video", video_id)
        parts.append(found)
    return pd.concat(parts, ignore_index=True), per_video
