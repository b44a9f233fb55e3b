"""A training run's folder: where each file lives, and the checkpoints in it (safetensors).

Layout:

    config.json                  resolved configuration (store, annotations, every parameter)
                                 and what a copy of the folder needs to spot a new video alone
                                 (the store's extraction parameters: spotting/run_record.py)
    annotation_issues.csv        every repaired or skipped annotation, with its reason
    train.log                    the plain-text log
    folds/<subject>/
        fold.json                fold config: prior, feature normalisation, losses, status
        rules.json               proposal rules calibrated on the inner subjects (with --inner-val)
        weights_epoch_EEE.safetensors   model weights (+ JSON metadata) every `save_every` epochs
                                 (every epoch by default)
        resume.safetensors       model + optimiser + shuffle state after the last finished epoch
        test_outputs.safetensors per test video: (N, 10) float32 logits of the final model
        tb/                      TensorBoard scalars (train/test losses, learning rate)
        inner/                   with --inner-val K: the same for a model trained without K of
                                 the training subjects (inner.json names them); evaluation picks
                                 the epoch on them (`--select inner-val`)
    evaluation/<selection>/      what `mespot evaluate` wrote (metrics, intervals, matches, curves)
    report.html, report/         what `mespot report` wrote

`RunFolder` and `FoldFolder` are the one place that knows these names; training, evaluation,
prediction and the report all go through them. They also say whether a run is complete (every
LOSO fold finished, each with its last epoch's weights), whether a store is the one the run was
trained on (config.json keeps its absolute path and params hash), and hold the locks that keep
two processes from training into one run folder or one fold at once (`folder_lock`). Every file
is read through them, and so through the checks of spotting/run_checks.py: a truncated or
hand-edited JSON file, weights holding NaN or inf, or a store replaced since training is refused
in one line naming the file.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from typing import TYPE_CHECKING

from flowcore.errors import UserError
from flowcore.locations import is_url
from flowcore.locks import folder_lock
from spotting import run_checks

if TYPE_CHECKING:  # torch is imported where a network is built or saved, not to read a run
    import torch

    from spotting.model import AUWGCN

_WEIGHTS = re.compile(r"^weights_epoch_(\d+)\.safetensors$")


@dataclass(frozen=True)
class FoldFolder:
    """One fold's folder (or its inner validation model's, `inner`)."""

    path: Path

    @property
    def meta_path(self) -> Path:
        return self.path / "fold.json"

    @property
    def resume_path(self) -> Path:
        return self.path / "resume.safetensors"

    @property
    def test_outputs_path(self) -> Path:
        return self.path / "test_outputs.safetensors"

    @property
    def tensorboard_path(self) -> Path:
        return self.path / "tb"

    @property
    def rules_path(self) -> Path:
        """rules.json: the fold's calibrated proposal rules (spotting/fold_rules.py)."""
        return self.path / "rules.json"

    @property
    def inner(self) -> "FoldFolder":
        return FoldFolder(self.path / "inner")

    @property
    def inner_meta_path(self) -> Path:
        """inner.json of an inner validation model: the training subjects it left out."""
        return self.path / "inner.json"

    def weights_path(self, epoch: int) -> Path:
        return self.path / f"weights_epoch_{epoch:03d}.safetensors"

    def epochs(self) -> list[int]:
        """The epochs whose weights were kept, in order."""
        found = (_WEIGHTS.match(p.name) for p in self.path.glob("weights_epoch_*.safetensors"))
        return sorted(int(m.group(1)) for m in found if m)

    def read_meta(self) -> dict:
        """fold.json (checked: spotting/run_checks.py)."""
        return run_checks.read_json(self.meta_path, run_checks.FOLD)

    def read_inner(self) -> dict:
        """inner.json of an inner validation model (checked): `val_subjects`, the training
        subjects it left out."""
        return run_checks.read_json(self.inner_meta_path, run_checks.INNER)

    def is_complete(self) -> bool:
        return self.meta_path.exists() and self.read_meta().get("status") == "complete"

    def last_epoch(self) -> int:
        """The fold's last trained epoch (its config's epochs); UserError naming the file when
        its weights are gone (never a silent fall-back to an earlier epoch)."""
        epochs = self.epochs()
        trained = self.read_meta().get("config", {}).get("train", {}).get("epochs")
        last = int(trained or (epochs[-1] if epochs else 0))
        if last not in epochs:
            raise UserError(f"{self.weights_path(last)}: missing (the fold's last epoch); delete "
                            f"{self.path} and rerun `mespot train` to train it again, or choose "
                            f"--select fixed:N")
        return last

    def lock(self):
        """This fold's lock (`folder_lock`): None while held here, else the holder's pid."""
        return folder_lock(self.path, "fold")


@dataclass(frozen=True)
class RunFolder:
    """A run folder (see the module docstring)."""

    path: Path

    def __init__(self, path: str | Path):
        object.__setattr__(self, "path", Path(path))

    @property
    def config_path(self) -> Path:
        return self.path / "config.json"

    @property
    def log_path(self) -> Path:
        return self.path / "train.log"

    @property
    def issues_path(self) -> Path:
        return self.path / "annotation_issues.csv"

    @property
    def report_path(self) -> Path:
        return self.path / "report.html"

    @property
    def figures_path(self) -> Path:
        return self.path / "report"

    def fold(self, subject: str) -> FoldFolder:
        return FoldFolder(self.path / "folds" / subject)

    def folds(self) -> list[FoldFolder]:
        """The folds that started writing their fold.json (complete or not), by subject."""
        return [FoldFolder(p) for p in sorted((self.path / "folds").glob("*"))
                if (p / "fold.json").is_file()]

    def evaluation(self, selection: str) -> Path:
        """The folder of one evaluation (`mespot evaluate --select`)."""
        return self.path / "evaluation" / selection

    def precision_path(self, name: str) -> Path:
        """The score -> precision maps of one evaluation's options (spotting/precision.py):
        precision/<selection + options' suffix>.json, e.g. precision/last+calibrated+flip.json."""
        return self.path / "precision" / f"{name}.json"

    def evaluations(self) -> dict[str, Path]:
        """Every finished evaluation: selection name -> folder."""
        return {p.name: p for p in sorted((self.path / "evaluation").glob("*"))
                if (p / "metrics.json").is_file()}

    def read_config(self) -> dict:
        """config.json, checked (spotting/run_checks.py); UserError when this is no run folder
        or the file is damaged."""
        if not self.config_path.is_file():
            raise UserError(f"{self.path}: not a run folder (no config.json); train one with "
                            f"`mespot train`")
        config = run_checks.read_json(self.config_path, run_checks.CONFIG)
        run_checks.check_config(self.config_path, config)
        return config

    def read_summary(self, evaluation: Path) -> dict:
        """An evaluation folder's metrics.json (checked)."""
        return run_checks.read_json(evaluation / "metrics.json", run_checks.METRICS)

    def store_path(self, config: dict) -> str:
        """The feature store the run was trained on: as its config records it (absolute since
        runs record it so; an older run's relative path is tried from here, then from the run
        folder)."""
        if is_url(config["store"]):
            return str(config["store"])
        recorded = Path(config["store"])
        if recorded.is_absolute() or recorded.exists():
            return str(recorded)
        beside = self.path / recorded
        return str(beside if beside.exists() else recorded)

    def checked_store(self, config: dict, store: str | Path | None = None) -> str:
        """The run's store (or `store`, a copy of it elsewhere), once its parameters hash is
        seen to be the one the run recorded; UserError naming it otherwise (gone, not a store,
        or another extraction: results from it would be silently wrong)."""
        path = str(store) if store is not None else self.store_path(config)
        run_checks.check_store_hash(path, config.get("store_params_hash"), self.path)
        return path

    def check_store(self, config: dict, features) -> None:
        """UserError when `features` (a flowcore.store.FeatureSet read from the run's store path)
        is not the store the run was trained on (another extraction's parameters hash)."""
        trained = config.get("store_params_hash")
        if trained is not None and features.params_hash != trained:
            raise run_checks.store_mismatch(features.path, features.params_hash, trained,
                                            self.path)

    def complete_folds(self, subjects: list[str],
                       allow_missing: bool = False) -> tuple[list[FoldFolder], list[str]]:
        """(complete fold folders, subjects whose fold is missing or unfinished) of a LOSO run
        over `subjects`; UserError for an incomplete run unless `allow_missing`."""
        done, missing = [], []
        for subject in subjects:
            fold = self.fold(subject)
            if fold.is_complete():
                done.append(fold)
            else:
                missing.append(subject)
        if not done:
            raise UserError(f"{self.path}: holds no finished fold (of {len(subjects)}); train "
                            f"with `mespot train`")
        if missing and not allow_missing:
            raise UserError(f"{self.path}: {len(missing)} of {len(subjects)} LOSO folds missing "
                            f"or unfinished ({', '.join(missing)}); finish them with the same "
                            f"`mespot train` command, or pass --allow-missing-folds to count "
                            f"their truths as missed")
        return done, missing

    def lock(self):
        """This run folder's lock (`folder_lock`): None while held here, else the holder's pid."""
        return folder_lock(self.path, "run")


def read_json(path: Path, remake: str) -> dict | None:
    """The JSON file `path` a run records, None when it has none; UserError when it is not
    readable, saying to delete it and `remake` it (e.g. "run `mespot evaluate` again")."""
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise UserError(f"{path}: not readable JSON ({err}); delete it and {remake} to record "
                        f"it") from None


# ---- checkpoints -------------------------------------------------------------------------------


def save_safetensors(tensors: dict[str, torch.Tensor], path: Path,
                     metadata: dict[str, str]) -> None:
    from safetensors.torch import save_file

    tmp = path.with_name(path.name + ".tmp")
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    try:
        save_file(tensors, str(tmp), metadata=metadata)
    except Exception as err:  # safetensors' own error type: make it the OSError it wraps
        tmp.unlink(missing_ok=True)
        code = re.search(r"os error (\d+)", str(err))
        if code is None:
            raise
        raise OSError(int(code.group(1)), os.strerror(int(code.group(1))), str(path)) from None
    os.replace(tmp, path)


def save_weights(model: AUWGCN, path: Path, epoch: int, fold_meta: dict) -> None:
    """Model state dict as safetensors; metadata: epoch, the network's dimensions (`dims`, the
    fields of ModelDims as JSON) and the fold's JSON (config, norm)."""
    metadata = {"epoch": str(epoch), "dims": json.dumps(dataclasses.asdict(model.dims)),
                "fold": json.dumps(fold_meta)}
    save_safetensors(model.state_dict(), path, metadata)


def read_weights(path: str | Path) -> tuple[dict, dict]:
    """(tensors as numpy arrays, metadata) of a `weights_epoch_EEE.safetensors` file, checked
    without torch (spotting/run_checks.py: readable, AUW-GCN's, finite, its normalisation):
    UserError naming the file otherwise. The metadata: `epoch`, `dims` (None for a file from
    before they were stored) and the fold's JSON (`normalisation`, `prior`, ...)."""
    from safetensors import safe_open
    from safetensors.numpy import load_file

    path = Path(path)
    if not path.is_file():
        raise UserError(f"weights not found: {path}")
    try:
        state = load_file(str(path))
        with safe_open(str(path), framework="numpy") as f:
            meta = dict(f.metadata() or {})
    except Exception as err:  # truncated or not a safetensors file
        raise UserError(f"{path}: not a readable weights file ({str(err).splitlines()[0]}); "
                        f"train the fold again or restore the file") from None
    if "graph_embedding.0.gc1.adj" not in state:
        raise UserError(f"{path}: not AUW-GCN weights (no 'graph_embedding.0.gc1.adj')")
    try:
        fold = json.loads(meta.get("fold", "{}"))
        dims = json.loads(meta["dims"]) if "dims" in meta else None
    except json.JSONDecodeError as err:
        raise run_checks.refuse(path, f"its metadata is not readable JSON ({err.msg})") from None
    if not isinstance(fold, dict) or not (dims is None or isinstance(dims, dict)):
        raise run_checks.refuse(path, "its metadata is not of the shape mespot writes")
    run_checks.check_weights(path, state, fold)
    return state, {**fold, "epoch": int(meta.get("epoch", 0)), "dims": dims}


def load_weights(path: str | Path, device="cpu") -> tuple[AUWGCN, dict]:
    """(model in eval mode, metadata) from a `weights_epoch_EEE.safetensors` file, checked as
    `read_weights` checks it. The network is built with the dimensions stored beside the
    weights; a file from before they were stored gets them from its tensor shapes (the
    defaults, the only ones then). `meta["dims"]` and `meta["dims_source"]` say which."""
    import torch

    from spotting.model import AUWGCN, ModelDims, dims_from_state

    arrays, meta = read_weights(path)
    state = {name: torch.from_numpy(array) for name, array in arrays.items()}
    try:
        if meta["dims"] is not None:
            dims, source = ModelDims(**meta["dims"]), "stored"
        else:
            dims, source = dims_from_state(state), "tensor shapes (the file stores no dimensions)"
        model = AUWGCN(arrays["graph_embedding.0.gc1.adj"], dims)
        model.load_state_dict(state)
    except (ValueError, TypeError, RuntimeError) as err:
        message = " ".join(str(err).split())
        raise UserError(f"{path}: weights do not fit AUW-GCN: {message}") from None
    meta = {**meta, "dims": dataclasses.asdict(dims), "dims_source": source}
    return model.to(device).eval(), meta


def save_resume(path: Path, model, opt, shuffle: torch.Generator, epoch: int, loss: float) -> None:
    import torch

    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    for group in opt.param_groups:
        for name, param in zip(group["names"], group["params"]):
            for key, value in opt.state.get(param, {}).items():
                tensors[f"optim.{name}.{key}"] = torch.as_tensor(value)
    tensors["rng.shuffle"] = shuffle.get_state()
    save_safetensors(tensors, path, {"epoch": str(epoch), "loss": repr(loss)})


def load_resume(path: Path, model, opt, shuffle: torch.Generator, device) -> tuple[int, float]:
    from safetensors import safe_open
    from safetensors.torch import load_file

    tensors = load_file(str(path))
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    epoch, loss = int(meta["epoch"]), float(meta.get("loss", "nan"))
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    for group in opt.param_groups:
        for name, param in zip(group["names"], group["params"]):
            state = {}
            for key in ("step", "exp_avg", "exp_avg_sq"):
                t = tensors.get(f"optim.{name}.{key}")
                if t is not None:
                    state[key] = t.to(device) if key != "step" else t.clone()
            if state:
                opt.state[param] = state
    shuffle.set_state(tensors["rng.shuffle"])
    return epoch, loss
