"""Synthetic pretraining: one AUW-GCN trained on every subject of one or more feature stores (no
test subject), whose weights then start each LOSO fold (`mespot train --init FILE`, and
`--init pretrained` once the package ships such weights: spotting/initial_weights.py).

The sets are large `mespot synth` sets whose seeds lie in `mespot.synth.seeds.PRETRAIN_SEEDS`,
disjoint from every benchmark and development set; `mespot pretrain` (mespot.api.pretrain)
refuses a set made with a reserved seed before calling `pretrain` here. The output is a
safetensors file of the final weights with the sets, their seeds and the configuration in its
metadata (`pretraining`, JSON).
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from flowcore.errors import UserError
from flowcore.store import FeatureSet
from spotting.annotations import AnnotationTable
from spotting.config import RunConfig
from spotting.data import Prepared, prepare, resolve_device
from spotting.fold import train_fold
from spotting.run_folder import FoldFolder
from spotting.windows import WindowSet

PROGRESS_KEY = "pretrain"  # the progress row of the one model


def merge_prepared(preps: list[Prepared]) -> Prepared:
    """Several stores' Prepared data as one, subjects and videos prefixed `<k>:` by store index
    so that sets made with the same layout (same subject and video names) stay apart."""
    if len(preps) == 1:
        return preps[0]
    videos, frames, sums, parts = {}, [], {}, []
    for k, prep in enumerate(preps):
        tag = f"{k}:"
        for vid, v in prep.features.videos.items():
            videos[tag + vid] = dataclasses.replace(v, video_id=tag + vid, subject=tag + v.subject)
        frame = prep.table.frame.copy()
        frame["subject"], frame["video_id"] = tag + frame["subject"], tag + frame["video_id"]
        frames.append(frame)
        sums.update({tag + s: value for s, value in prep.sums.items()})
        parts.append(prep.windows)
    first = preps[0]
    features = FeatureSet(path="+".join(p.features.path for p in preps), dataset="merged",
                          params_hash="+".join(p.features.params_hash for p in preps),
                          params=first.features.params, videos=videos)
    table = AnnotationTable(pd.concat(frames, ignore_index=True), (), "merged",
                            "+".join(p.table.source for p in preps))
    issues = tuple(i for p in preps for i in p.issues)
    return Prepared(features, table, _concat_windows(parts), issues, sums)


def _concat_windows(parts: list[WindowSet]) -> WindowSet:
    offsets = np.cumsum([0] + [len(p.video_ids) for p in parts[:-1]])
    joined = {name: np.concatenate([getattr(p, name) for p in parts])
              for name in ("x", "valid", "start_end", "apex", "action", "first_row")}
    return WindowSet(
        **joined, video=np.concatenate([p.video + o for p, o in zip(parts, offsets)]),
        video_ids=tuple(f"{k}:{v}" for k, p in enumerate(parts) for v in p.video_ids),
        subjects=tuple(f"{k}:{s}" for k, p in enumerate(parts) for s in p.subjects),
        n_rows=tuple(n for p in parts for n in p.n_rows),
    )


def pretrain(pairs: list[tuple[str, str]], out: str | Path, config: RunConfig,
             device: str = "cpu", progress=None, seeds: list[int | None] | None = None) -> Path:
    """Train one network on every subject of the (store, annotations) `pairs`; write its final
    weights to `out` (safetensors; metadata `pretraining`: the sets with their `seeds`, sizes,
    final loss, seconds and the configuration) and return that path. The work folder
    `out`.work/ keeps the per-epoch state, so a killed run resumes; it is removed at the end.
    `progress`: a flowcore.progress.TrainingProgress (one row), None for silence."""
    if not pairs:
        raise UserError("pretraining needs at least one store and its annotations")
    seeds = list(seeds) if seeds is not None else [None] * len(pairs)
    dev = resolve_device(device)
    out = Path(out)
    prep = merge_prepared([prepare(store, annotations, config.windows)
                           for store, annotations in pairs])
    work = FoldFolder(out.with_name(out.name + ".work"))
    work.path.mkdir(parents=True, exist_ok=True)
    epoch = (lambda done, loss: progress.epoch(done, loss, PROGRESS_KEY)) if progress else None
    if progress is not None:
        progress.start(1, config.train.epochs)
        progress.start_fold("pretraining", 0, PROGRESS_KEY)
    try:  # no test subject: every subject of the sets trains
        result = train_fold(prep, config, "", work.path, dev, progress=epoch, tensorboard=False)
    finally:
        if progress is not None:
            progress.close()
    _copy_with_metadata(work.weights_path(config.train.epochs), out, {"pretraining": json.dumps({
        "sets": [{"store": str(s), "annotations": str(a), "seed": seed}
                 for (s, a), seed in zip(pairs, seeds)],
        "subjects": len(prep.features.subjects), "videos": len(prep.features.videos),
        "windows": result.n_train_windows, "final_loss": result.final_loss,
        "seconds": result.seconds, "config": config.to_json()})})
    shutil.rmtree(work.path)
    return out


def _copy_with_metadata(source: Path, out: Path, extra: dict[str, str]) -> None:
    """The tensors of `source` written to `out` (atomically) with `extra` added to its metadata."""
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    with safe_open(str(source), framework="pt") as f:
        meta = dict(f.metadata() or {})
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    save_file(load_file(str(source)), str(tmp), metadata={**meta, **extra})
    tmp.replace(out)
