"""What a run folder records so that it stands alone: a copy of it, moved to another machine,
spots a new video without the training store (DESIGN.md, "A run directory stands alone").

`mespot train` writes into config.json, beside the training sections:
- `features`: the store's extraction parameters (`params`, exactly the store's `params`
  attribute: flow backend, TV-L1 settings, face resize, ROIs, compat, subsampling, alignment),
  its parameters hash (`params_hash`, also `store_params_hash`, which evaluation checks), the
  devices its videos were extracted on (`devices`; empty for stores from before videos recorded
  it), its dataset name, frame rate (median over its videos, after subsampling), its subjects
  (the LOSO folds), the proposal preset (casme2 or samm ranges) and the videos it holds but
  could not use (`skipped`: incomplete or failed, with why);
- `init_weights`: the file every fold started from (`--init`), its name and SHA-256 (None for
  `--init scratch`);
- `environment`: versions, and `code`: the mespot version and the git commit where known.
Each fold folder keeps its AU prior and feature normalisation (fold.json, and every weights
file's metadata) and `rules.json`, its calibrated proposal rules (spotting/fold_rules.py); the
window parameters are config.json's `windows`.

`read_record(run)` gives prediction all of it from the run folder alone. A run trained before
runs recorded `features` falls back to reading its store (which must still be there, with the
recorded parameters hash).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from flowcore.errors import UserError
from flowcore.locations import location
from spotting.data import Prepared
from spotting.initial_weights import init_path
from spotting.run_folder import RunFolder
from spotting.windows import WindowParams


def preset_of(dataset: str, annotations_dataset: str = "") -> str:
    """The proposal ranges for a store: samm for SAMM-LV (by its dataset name or its annotation
    workbook's), casme2 otherwise."""
    return "samm" if annotations_dataset == "samm-lv" or "samm" in dataset.lower() else "casme2"


def features_record(prep: Prepared) -> dict:
    """config.json's `features` for the store `prep` was prepared from (see the module
    docstring)."""
    features = prep.features
    videos = list(features.videos.values())
    return {
        "params": features.params,
        "params_hash": features.params_hash,
        "devices": sorted({v.device for v in videos if v.device}),
        "dataset": features.dataset,
        "fps": float(np.median([v.fps for v in videos])),
        "subjects": features.subjects,
        "preset": preset_of(features.dataset, prep.table.dataset),
        "skipped": dict(features.skipped),
    }


def init_record(init: str) -> dict | None:
    """config.json's `init_weights`: the `--init` file's name and SHA-256 (the path is the
    `train` section's `init`, or the package's own file for `pretrained`); None for scratch."""
    path = init_path(init)
    if path is None:
        return None
    return {"file": path.name, "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}


@dataclass(frozen=True)
class RunRecord:
    """What prediction needs of a run, read from its folder."""

    params: dict  # the store's extraction parameters (flowcore ExtractParams.to_dict())
    params_hash: str
    devices: tuple[str, ...]  # what the store's videos were extracted on ("" unknown)
    preset: str  # proposal ranges: casme2 or samm
    fps: float  # the training videos' frame rate after subsampling (median)
    subjects: tuple[str, ...]  # the run's LOSO folds
    windows: WindowParams
    source: str  # "run folder", or the store it was read from (runs from before the record)

    @property
    def compat(self) -> bool:
        return bool(self.params.get("compat"))


def read_record(run: str | Path) -> RunRecord:
    """The run folder's record (config.json); for a run trained before runs recorded their
    store's parameters, the store's, refused when it is gone or is not the one the run was
    trained on (another parameters hash)."""
    folder = RunFolder(run)
    config = folder.read_config()
    windows = WindowParams(**config["windows"])
    recorded = config.get("features")
    if recorded is not None:
        return RunRecord(recorded["params"], recorded["params_hash"],
                         tuple(recorded.get("devices", ())), recorded["preset"],
                         float(recorded["fps"]), tuple(recorded["subjects"]), windows,
                         "run folder")
    from flowcore.store import load_features

    store = folder.store_path(config)
    if not location(store).is_dir():
        raise UserError(f"{folder.path}: trained before runs recorded their extraction "
                        f"parameters, and its feature store {store} is gone; restore the store "
                        f"or train again")
    features = load_features(store)
    folder.check_store(config, features)
    fps = float(np.median([v.fps for v in features.videos.values()]))
    return RunRecord(features.params, features.params_hash, (), preset_of(features.dataset),
                     fps, tuple(features.subjects), windows, str(store))
