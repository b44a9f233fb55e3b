"""Synthetic pretraining: one AUW-GCN trained on every subject of one or more feature stores (no
test subject), whose weights then start each LOSO fold (`mespot train --init pretrained`).

The package ships such weights (`PRETRAINED`, 39,248 parameters and the BatchNorm statistics,
about 160 KB), trained on large `mespot synth` sets whose seeds lie in
`mespot.synth.seeds.PRETRAIN_SEEDS`, disjoint from every benchmark set; the README gives the
commands that remake them. `pretrain` refuses a synthetic set made with a benchmark seed (it
reads the seed from the `synth.json` beside the annotations).

A fold started from pretrained weights keeps what is its own: the AU prior (the `adj` buffer is
not taken from the file) and the feature normalisation of its training subjects. Every other
weight, BatchNorm statistics included, is copied before the first epoch; training then goes on
as from scratch (same optimiser, schedule and epochs unless the configuration says otherwise).

`--init` values: `scratch` (the paper's random initialisation), `pretrained` (the shipped
weights) or the path of a weights file (`mespot pretrain`'s output, or any
`weights_epoch_EEE.safetensors` of a run).
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from mespot.errors import UserError
from spotting.annotations import AnnotationTable
from spotting.features import FeatureSet
from spotting.windows import WindowSet

PRETRAINED = Path(__file__).parent / "weights" / "pretrained_synth.safetensors"
INIT_CHOICES = ("scratch", "pretrained")  # or a path to a weights file


def init_path(init: str) -> Path | None:
    """The weights file of an `--init` value (None for scratch); UserError when missing."""
    if init == "scratch":
        return None
    path = PRETRAINED if init == "pretrained" else Path(init)
    if not path.is_file():
        raise UserError(f"--init {init}: no weights file at {path}"
                        + ("; this installation ships no pretrained weights" if init == "pretrained" else ""))
    return path


def apply_init(model, init: str) -> None:
    """Copy the weights of `init` into `model` (in place), all but the AU prior `adj`."""
    path = init_path(init)
    if path is None:
        return
    from safetensors.torch import load_file

    try:
        state = load_file(str(path))
    except Exception as err:
        raise UserError(f"--init {init}: {path} is not a safetensors weights file ({err})") from None
    state = {k: v for k, v in state.items() if not k.endswith(".adj")}
    result = model.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if not k.endswith(".adj")]
    if missing or result.unexpected_keys:
        raise UserError(f"--init {init}: {path} does not fit AUW-GCN (missing {missing}, unexpected "
                        f"{list(result.unexpected_keys)})")


def check_synthetic_seed(annotations: str | Path) -> int | None:
    """The seed of the synthetic set the annotations belong to (None for other data); UserError
    when it is a benchmark seed."""
    from mespot.synth.seeds import check_not_benchmark

    meta = Path(annotations).parent / "synth.json"
    if not meta.is_file():
        return None
    seed = int(json.loads(meta.read_text())["config"]["seed"])
    return check_not_benchmark(seed, f"the pretraining set {Path(annotations).parent}")


def merge_prepared(preps: list) -> "Prepared":  # noqa: F821 - spotting.train.Prepared
    """Several stores' Prepared data as one, subjects and videos prefixed `<k>:` by store index
    so that sets made with the same layout (same subject and video names) stay apart."""
    from spotting.train import Prepared

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
    return Prepared(features, table, _concat_windows(parts), tuple(i for p in preps for i in p.issues), sums)


def _concat_windows(parts: list[WindowSet]) -> WindowSet:
    offsets = np.cumsum([0] + [len(p.video_ids) for p in parts[:-1]])
    return WindowSet(
        x=np.concatenate([p.x for p in parts]), valid=np.concatenate([p.valid for p in parts]),
        start_end=np.concatenate([p.start_end for p in parts]), apex=np.concatenate([p.apex for p in parts]),
        action=np.concatenate([p.action for p in parts]),
        video=np.concatenate([p.video + o for p, o in zip(parts, offsets)]),
        first_row=np.concatenate([p.first_row for p in parts]),
        video_ids=tuple(f"{k}:{v}" for k, p in enumerate(parts) for v in p.video_ids),
        subjects=tuple(f"{k}:{s}" for k, p in enumerate(parts) for s in p.subjects),
        n_rows=tuple(n for p in parts for n in p.n_rows),
    )


def pretrain(pairs: list[tuple[str, str]], out: str | Path, config, device: str = "cpu",
             show_progress: bool = True) -> Path:
    """Train one network on every subject of the (store, annotations) `pairs`; write its final
    weights to `out` (safetensors, metadata: the sets, their seeds and the configuration) and
    return that path. The work folder `out`.work/ keeps the per-epoch state, so a killed run
    resumes; it is removed at the end."""
    from spotting.train import prepare, resolve_device, train_fold

    if not pairs:
        raise UserError("pretraining needs at least one store and its annotations")
    seeds = [check_synthetic_seed(annotations) for _, annotations in pairs]
    dev = resolve_device(device)
    out = Path(out)
    prep = merge_prepared([prepare(store, annotations, config.windows) for store, annotations in pairs])
    work = out.with_name(out.name + ".work")
    work.mkdir(parents=True, exist_ok=True)
    bar = _progress(config.train.epochs, show_progress)
    with bar:
        task = bar.add_task("pretraining", total=config.train.epochs, loss="-")
        result = train_fold(prep, config, "", work, dev, tensorboard=False,
                            progress=lambda e, loss: bar.update(task, completed=e, loss=f"{loss:.4f}"))
    final = work / f"weights_epoch_{config.train.epochs:03d}.safetensors"
    _copy_with_metadata(final, out, {
        "pretraining": json.dumps({"sets": [{"store": str(s), "annotations": str(a), "seed": seed}
                                            for (s, a), seed in zip(pairs, seeds)],
                                   "subjects": len(prep.features.subjects), "videos": len(prep.features.videos),
                                   "windows": result.n_train_windows, "final_loss": result.final_loss,
                                   "seconds": result.seconds, "config": config.to_json()})})
    shutil.rmtree(work)
    return out


def _copy_with_metadata(source: Path, out: Path, extra: dict[str, str]) -> None:
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    with safe_open(str(source), framework="pt") as f:
        meta = dict(f.metadata() or {})
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    save_file(load_file(str(source)), str(tmp), metadata={**meta, **extra})
    tmp.replace(out)


def _progress(epochs: int, show: bool):
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("loss {task.fields[loss]}"), TimeElapsedColumn(),
                    console=Console(stderr=True), disable=not show, transient=True)
