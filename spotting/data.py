"""A run's data, prepared once: the store's features, the annotations, every window and target,
and the per-subject sums from which each fold's feature normalisation is taken.

Shapes: windows as spotting.windows.WindowSet; `window_tensors` gives x (W, L + 2C, 12, 2)
float32 normalised features (0 outside the videos) and the targets, on a torch device.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np

from flowcore.devices import check_device
from flowcore.errors import UserError
from flowcore.store import FeatureSet, load_features
from spotting.annotations import AnnotationTable, read_annotations
from spotting.windows import WindowParams, WindowSet, annotation_targets, build_windows

if TYPE_CHECKING:  # imported where tensors are made: reading a run needs no torch
    import torch

# Reference feature normalisation (features on its "20 px" 8-bit scale, AUWGCN.md section 3).
REFERENCE_MEAN = (0.003463, 0.003873)
REFERENCE_STD = (0.548588, 0.645621)


@dataclass(frozen=True)
class Prepared:
    """The store, annotations, targets and windows, built once for every fold."""

    features: FeatureSet
    table: AnnotationTable
    windows: WindowSet
    issues: tuple
    sums: dict  # subject -> (count, sum (2,), sum of squares (2,)) of raw features, float64


def prepare(
    store: str | Path, annotations: str | Path, params: WindowParams = WindowParams()
) -> Prepared:
    """Load the annotations and the store, build all targets and windows (once per run).
    The annotations come first: a file without a usable row stops here, before any work."""
    table = read_annotations(annotations)
    features = load_features(store)
    check_overlap(features, table)
    return prepare_loaded(features, table, params)


def check_overlap(features: FeatureSet, table: AnnotationTable) -> None:
    """UserError when annotations name videos and none of them is in the store."""
    if len(table.frame) and not table.frame["video_id"].isin(list(features.videos)).any():
        raise UserError(
            f"no annotated video is in the store {features.path}: annotations {table.source} "
            f"name e.g. {sorted(table.frame['video_id'].unique())[:3]}, "
            f"the store holds e.g. {sorted(features.videos)[:3]}"
        )


def prepare_loaded(features: FeatureSet, table: AnnotationTable,
                   params: WindowParams = WindowParams()) -> Prepared:
    """`prepare` of a store and annotations already read (several datasets pooled into one:
    spotting/datasets.py)."""
    targets, target_issues = annotation_targets(features, table, params)
    videos = list(features.videos.values())
    windows = build_windows(videos, targets, params)
    sums: dict = {}
    for v in videos:  # rows without a face (0, not motion) do not count
        x = v.mdmo[v.row_valid].reshape(-1, 2).astype(np.float64)
        c, s, q = sums.get(v.subject, (0, np.zeros(2), np.zeros(2)))
        sums[v.subject] = (c + x.shape[0], s + x.sum(0), q + (x * x).sum(0))
    return Prepared(features, table, windows, tuple(table.issues) + tuple(target_issues), sums)


def fold_normalisation(
    prep: Prepared, train_subjects, mode: str
) -> tuple[list[float], list[float]]:
    """(mean, std) per feature channel (x, y): from the training subjects, or the reference's."""
    if mode == "compat":
        return list(REFERENCE_MEAN), list(REFERENCE_STD)
    c, s, q = 0, np.zeros(2), np.zeros(2)
    for subject in train_subjects:
        if subject in prep.sums:
            c2, s2, q2 = prep.sums[subject]
            c, s, q = c + c2, s + s2, q + q2
    if c == 0:
        raise UserError("no training features to normalise with")
    mean = s / c
    std = np.sqrt(np.maximum(q / c - mean * mean, 0.0))
    std = np.where(std > 1e-12, std, 1.0)
    return mean.tolist(), std.tolist()


def normalised(x: np.ndarray, valid: np.ndarray, mean, std) -> np.ndarray:
    """Raw windows x (W, T, 12, 2) float32 -> (x - mean) / std per channel, 0 where `valid`
    (W, T) is False (rows outside the video), float32 C-contiguous."""
    m = np.asarray(mean, np.float32)
    s = np.asarray(std, np.float32)
    return np.ascontiguousarray((x - m) / s * valid[:, :, None, None], dtype=np.float32)


def window_tensors(
    windows: WindowSet, mask: np.ndarray, mean, std, device
) -> dict[str, torch.Tensor]:
    """The selected windows as tensors on `device`: x normalised, 0 outside the videos."""
    import torch

    x = normalised(windows.x[mask], windows.valid[mask], mean, std)
    return {
        "x": torch.from_numpy(x).to(device),
        "start_end": torch.from_numpy(windows.start_end[mask]).to(device),
        "apex": torch.from_numpy(windows.apex[mask]).to(device),
        "action": torch.from_numpy(windows.action[mask]).to(device),
    }


_PREPARED: dict = {}  # this process's prepared data of one run: key -> Prepared


def prepared_for(
    store: str | Path,
    annotations: str | Path,
    params: WindowParams,
    run: str,
    given: Prepared | None = None,
    load: Callable[[], Prepared] | None = None,
) -> Prepared:
    """`prepare(store, annotations, params)` (or `load()`, e.g. several datasets pooled) for the
    run named `run` (a token the driver draws), done once per process and kept while the process
    trains that run's folds one after the other; `given`: the driver's own prepared data, kept
    instead."""
    key = (str(store), str(annotations), params, run)
    if given is not None:
        _PREPARED.clear()  # one run's data at a time
        _PREPARED[key] = given
    elif key not in _PREPARED:
        _PREPARED.clear()
        _PREPARED[key] = load() if load is not None else prepare(store, annotations, params)
    return _PREPARED[key]


def usable_device(name: str) -> None:
    """UserError for a device name this machine cannot use (`resolve_device`'s, 'auto'
    included), without importing torch for the CPU."""
    if name != "cpu":
        resolve_device(name)


def resolve_device(name: str) -> torch.device:
    """'cpu', 'cuda', 'cuda:N' or 'auto' -> a torch device (clear error when CUDA is missing)."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        check_device(name)
    except ValueError as err:
        raise UserError(str(err)) from None
    return torch.device(name)
