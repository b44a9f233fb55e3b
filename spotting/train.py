"""Leave-one-subject-out (LOSO) training of AUW-GCN from a feature store (AUWGCN.md section 7).

`train_loso` loads the store and the annotations once, builds every window and target once, and
then trains one fold per subject entirely on preloaded tensors (a batch is one index operation).
A run folder holds:

    config.json                  resolved configuration (store, annotations, every parameter)
    annotation_issues.csv        every repaired or skipped annotation, with its reason
    train.log                    the plain-text log
    folds/<subject>/
        fold.json                fold config: prior, feature normalisation, losses, status
        weights_epoch_EEE.safetensors   model weights (+ JSON metadata) every `save_every` epochs
                                 (every epoch by default)
        resume.safetensors       model + optimiser + shuffle state after the last finished epoch
        test_outputs.safetensors per test video: (N, 10) float32 logits of the final model
        tb/                      TensorBoard scalars (train/test losses, learning rate)
        inner/                   with --inner-val K: the same for a model trained without K of
                                 the training subjects (inner.json names them); evaluation picks
                                 the epoch on them (`--select inner-val`)

Running the same command again resumes: finished folds are skipped and an interrupted fold
continues from its last finished epoch, ending with the same weights as an uninterrupted run.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import re
import platform
import shutil
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch

from mespot import __version__
from mespot.errors import UserError
from spotting.annotations import AnnotationTable, issues_to_frame, read_annotations
from spotting.features import FeatureSet, load_features
from spotting.losses import LossParams, spotting_loss
from spotting.model import AUWGCN, ModelDims, decay_parameter_names, dims_from_state
from spotting.prior import PriorParams, prior_from_table
from spotting.windows import WindowParams, WindowSet, annotation_targets, build_windows

# Reference feature normalisation (features on its "20 px" 8-bit scale, AUWGCN.md section 3).
REFERENCE_MEAN = (0.003463, 0.003873)
REFERENCE_STD = (0.548588, 0.645621)


@dataclass(frozen=True)
class TrainParams:
    """Optimisation settings (paper defaults). `normalisation`: 'fold' (mean/std of the training
    subjects' features) or 'compat' (the reference constants); `macro_ratio` None picks 0.7 for
    SAMM-LV stores and 0.5 otherwise; `save_every` keeps weights every that many epochs (the last
    epoch always; every epoch by default, so evaluation can use any epoch); `inner_val` > 0 also
    trains, per fold, an inner model without that many training subjects, on which
    `mespot evaluate --select inner-val` chooses the epoch. The test subject's loss is only
    logged, never used to choose anything."""

    epochs: int = 100
    batch_size: int = 128
    lr: float = 0.01
    weight_decay: float = 0.1
    lr_decay: float = 0.96  # per epoch
    seed: int = 1
    normalisation: str = "fold"
    macro_ratio: Optional[float] = None
    save_every: int = 1
    inner_val: int = 0  # training subjects held out per fold to choose the epoch (0: off)
    test_loss_every: int = 10  # epochs between TensorBoard test-loss points (logging only)

    def __post_init__(self):
        if self.normalisation not in ("fold", "compat"):
            raise UserError(f"normalisation must be 'fold' or 'compat', got {self.normalisation!r}")
        for name in ("epochs", "batch_size", "save_every", "test_loss_every"):
            if getattr(self, name) < 1:
                raise UserError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.inner_val < 0:
            raise UserError(f"inner_val must be >= 0, got {self.inner_val}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise UserError(f"lr (learning rate) must be a number > 0, got {self.lr}")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise UserError(f"weight_decay must be a number >= 0, got {self.weight_decay}")
        if not (math.isfinite(self.lr_decay) and 0 < self.lr_decay <= 1):
            raise UserError(f"lr_decay must be in (0, 1], got {self.lr_decay}")
        if self.macro_ratio is not None and not (math.isfinite(self.macro_ratio) and self.macro_ratio >= 0):
            raise UserError(f"macro_ratio must be a number >= 0, got {self.macro_ratio}")


@dataclass(frozen=True)
class RunConfig:
    """Everything that determines a run's results (written to config.json)."""

    store: str
    annotations: str
    protocol: str = "loso"
    train: TrainParams = field(default_factory=TrainParams)
    windows: WindowParams = field(default_factory=WindowParams)
    prior: PriorParams = field(default_factory=PriorParams)
    losses: LossParams = field(default_factory=LossParams)
    model: ModelDims = field(default_factory=ModelDims)

    def to_json(self) -> dict:
        d = dataclasses.asdict(self)
        d["prior"]["au_nodes"] = {str(k): list(v) for k, v in self.prior.au_nodes.items()}
        d["losses"]["class_weights"] = list(self.losses.class_weights)
        return d


def config_from_dict(sections: dict, store: str, annotations: str, protocol: str = "loso") -> RunConfig:
    """A RunConfig from sections {train, windows, prior, losses, model} of field values (a YAML
    file or a run's config.json; its store/annotations/environment entries are ignored)."""
    kinds = {"train": TrainParams, "windows": WindowParams, "prior": PriorParams, "losses": LossParams,
             "model": ModelDims}
    ignored = {"store", "annotations", "protocol", "environment", "store_params_hash"}
    unknown = set(sections) - set(kinds) - ignored
    if unknown:
        raise UserError(f"unknown config section(s) {sorted(unknown)}; expected {sorted(kinds)}")
    built = {}
    for name, kind in kinds.items():
        values = dict(sections.get(name) or {})
        fields = {f.name for f in dataclasses.fields(kind)}
        bad = set(values) - fields
        if bad:
            raise UserError(f"config section {name!r}: unknown field(s) {sorted(bad)}; known: {sorted(fields)}")
        if name == "prior" and "au_nodes" in values:
            values["au_nodes"] = {int(k): tuple(int(n) for n in v) for k, v in values["au_nodes"].items()}
        if name == "losses" and "class_weights" in values:
            values["class_weights"] = tuple(float(w) for w in values["class_weights"])
        try:
            built[name] = kind(**values)
        except (TypeError, ValueError) as err:
            raise UserError(f"config section {name!r}: {err}") from err
    return RunConfig(store=store, annotations=annotations, protocol=protocol, **built)


@dataclass(frozen=True)
class FoldResult:
    subject: str
    epochs: int
    seconds: float
    final_loss: float
    n_train_windows: int
    n_test_windows: int
    resumed_from: int


# --- data -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Prepared:
    """The store, annotations, targets and windows, built once for every fold."""

    features: FeatureSet
    table: AnnotationTable
    windows: WindowSet
    issues: tuple
    sums: dict  # subject -> (count, sum (2,), sum of squares (2,)) of raw features, float64


def prepare(store: str | Path, annotations: str | Path, params: WindowParams = WindowParams()) -> Prepared:
    """Load the annotations and the store, build all targets and windows (once per run).
    The annotations come first: a file without a usable row stops here, before any work."""
    table = read_annotations(annotations)
    features = load_features(store)
    if len(table.frame) and not table.frame["video_id"].isin(list(features.videos)).any():
        raise UserError(
            f"no annotated video is in the store: annotations name e.g. "
            f"{sorted(table.frame['video_id'].unique())[:3]}, the store holds e.g. {sorted(features.videos)[:3]}"
        )
    targets, target_issues = annotation_targets(features, table, params)
    videos = list(features.videos.values())
    windows = build_windows(videos, targets, params)
    sums: dict = {}
    for v in videos:
        x = v.mdmo.reshape(-1, 2).astype(np.float64)
        c, s, q = sums.get(v.subject, (0, np.zeros(2), np.zeros(2)))
        sums[v.subject] = (c + x.shape[0], s + x.sum(0), q + (x * x).sum(0))
    return Prepared(features, table, windows, tuple(table.issues) + tuple(target_issues), sums)


def fold_normalisation(prep: Prepared, train_subjects, mode: str) -> tuple[list[float], list[float]]:
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


def window_tensors(windows: WindowSet, mask: np.ndarray, mean, std, device) -> dict[str, torch.Tensor]:
    """The selected windows as tensors on `device`: x normalised, 0 outside the videos."""
    m = np.asarray(mean, np.float32)
    s = np.asarray(std, np.float32)
    x = (windows.x[mask] - m) / s * windows.valid[mask][:, :, None, None]
    return {
        "x": torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(device),
        "start_end": torch.from_numpy(windows.start_end[mask]).to(device),
        "apex": torch.from_numpy(windows.apex[mask]).to(device),
        "action": torch.from_numpy(windows.action[mask]).to(device),
    }


# --- model state ------------------------------------------------------------------------------


def _save_safetensors(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str]) -> None:
    from safetensors.torch import save_file

    tmp = path.with_name(path.name + ".tmp")
    try:
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp), metadata=metadata)
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
    _save_safetensors(model.state_dict(), path, metadata)


def load_weights(path: str | Path, device="cpu") -> tuple[AUWGCN, dict]:
    """(model in eval mode, metadata) from a `weights_epoch_EEE.safetensors` file. The network
    is built with the dimensions stored beside the weights; a file from before they were stored
    gets them from its tensor shapes (the defaults, the only ones then). `meta["dims"]` and
    `meta["dims_source"]` say which."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise UserError(f"weights not found: {path}")
    try:
        state = load_file(str(path), device=str(device))
        with safe_open(str(path), framework="pt") as f:
            meta = dict(f.metadata() or {})
    except Exception as err:  # truncated or not a safetensors file
        raise UserError(f"{path}: not a readable weights file ({str(err).splitlines()[0]}); "
                        f"train the fold again or restore the file") from None
    if "graph_embedding.0.gc1.adj" not in state:
        raise UserError(f"{path}: not AUW-GCN weights (no 'graph_embedding.0.gc1.adj')")
    try:
        if "dims" in meta:
            dims, source = ModelDims(**json.loads(meta["dims"])), "stored"
        else:
            dims, source = dims_from_state(state), "tensor shapes (the file stores no dimensions)"
        model = AUWGCN(state["graph_embedding.0.gc1.adj"].cpu().numpy(), dims).to(device)
        model.load_state_dict(state)
    except (ValueError, TypeError, RuntimeError) as err:
        raise UserError(f"{path}: weights do not fit AUW-GCN: {' '.join(str(err).split())}") from None
    meta = {"epoch": int(meta.get("epoch", 0)), "dims": dataclasses.asdict(dims), "dims_source": source,
            **json.loads(meta.get("fold", "{}"))}
    return model.eval(), meta


def _optimizer(model: AUWGCN, p: TrainParams) -> torch.optim.AdamW:
    decay = decay_parameter_names(model)
    named = list(model.named_parameters())
    groups = [
        {"params": [t for n, t in named if n in decay], "weight_decay": p.weight_decay, "names": [n for n, _ in named if n in decay]},
        {"params": [t for n, t in named if n not in decay], "weight_decay": 0.0, "names": [n for n, _ in named if n not in decay]},
    ]
    return torch.optim.AdamW(groups, lr=p.lr)


def _save_resume(path: Path, model, opt, shuffle: torch.Generator, epoch: int, loss: float) -> None:
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    for group in opt.param_groups:
        for name, param in zip(group["names"], group["params"]):
            for key, value in opt.state.get(param, {}).items():
                tensors[f"optim.{name}.{key}"] = torch.as_tensor(value)
    tensors["rng.shuffle"] = shuffle.get_state()
    _save_safetensors(tensors, path, {"epoch": str(epoch), "loss": repr(loss)})


def _load_resume(path: Path, model, opt, shuffle: torch.Generator, device) -> tuple[int, float]:
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


# --- training ---------------------------------------------------------------------------------


@torch.no_grad()
def predict_logits(model: AUWGCN, x: torch.Tensor, context: int, batch: int = 256) -> torch.Tensor:
    """(W, L + 2C, 12, 2) windows -> (W, 10, L) logits of the central rows, in eval mode."""
    model.eval()
    outs = [model(x[i: i + batch])[:, :, context: x.shape[1] - context] for i in range(0, len(x), batch)]
    return torch.cat(outs) if outs else torch.zeros(0, 10, x.shape[1] - 2 * context, device=x.device)


def _losses(model, data, context, loss_params, idx=None):
    x = data["x"] if idx is None else data["x"][idx]
    logits = model(x)[:, :, context: x.shape[1] - context]
    pick = (lambda t: t) if idx is None else (lambda t: t[idx])
    return spotting_loss(logits, pick(data["start_end"]), pick(data["apex"]), pick(data["action"]), loss_params)


def train_fold(
    prep: Prepared,
    config: RunConfig,
    test_subject: str,
    fold_dir: Path,
    device: torch.device,
    progress: Optional[Callable[[int, float], None]] = None,
    on_epoch_end: Optional[Callable[[int], None]] = None,
    tensorboard: bool = True,
    exclude: tuple[str, ...] = (),
) -> FoldResult:
    """Train one LOSO fold (test = `test_subject`, train = every other subject of the store but
    those in `exclude`, which the inner validation model of a fold leaves out)."""
    p, w = config.train, config.windows
    started = time.perf_counter()
    fold_dir.mkdir(parents=True, exist_ok=True)
    subjects = prep.features.subjects
    train_subjects = [s for s in subjects if s != test_subject and s not in exclude]
    prior_subjects = train_subjects if config.prior.source == "train" else None
    adj = prior_from_table(prep.table.frame, prior_subjects, config.prior)
    mean, std = fold_normalisation(prep, train_subjects, p.normalisation)
    ws = prep.windows
    train_mask = ws.of_subjects(train_subjects) & ws.has_expression
    test_mask = ws.of_subjects([test_subject])
    if not train_mask.any():
        raise UserError(f"fold {test_subject}: no training window holds an expression")
    train = window_tensors(ws, train_mask, mean, std, device)
    test = window_tensors(ws, test_mask, mean, std, device)
    fold_meta = {
        "test_subject": test_subject, "train_subjects": train_subjects,
        "normalisation": {"mode": p.normalisation, "mean": mean, "std": std},
        "prior": adj.tolist(), "prior_source": config.prior.source,
        "n_train_windows": int(train_mask.sum()), "n_test_windows": int(test_mask.sum()),
        "config": config.to_json(),
    }

    if device.type == "cuda":  # same seed, same weights on GPU too
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    torch.manual_seed(p.seed)
    model = AUWGCN(adj, config.model).to(device)
    opt = _optimizer(model, p)
    shuffle = torch.Generator().manual_seed(p.seed)
    resume_path = fold_dir / "resume.safetensors"
    start_epoch, loss_value = 0, float("nan")
    if resume_path.exists():
        start_epoch, loss_value = _load_resume(resume_path, model, opt, shuffle, device)
    writer = None
    if tensorboard:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(fold_dir / "tb"), purge_step=start_epoch + 1)
    n = len(train["x"])
    try:
        for epoch in range(start_epoch, p.epochs):
            for group in opt.param_groups:
                group["lr"] = p.lr * p.lr_decay ** epoch
            model.train()
            perm = torch.randperm(n, generator=shuffle).to(device)
            total, parts_sum = 0.0, {}
            for i in range(0, n, p.batch_size):
                idx = perm[i: i + p.batch_size]
                loss, parts = _losses(model, train, w.context, config.losses, idx)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                k = len(idx) / n  # sums stay on the device: no host sync inside the epoch
                total = total + loss.detach() * k
                for name, v in parts.items():
                    parts_sum[name] = parts_sum.get(name, 0.0) + v * k
            total = float(total)
            parts_sum = {name: float(v) for name, v in parts_sum.items()}
            loss_value = total
            done = epoch + 1
            if writer is not None:
                writer.add_scalar("train/loss", total, done)
                for name, v in parts_sum.items():
                    writer.add_scalar(f"train/{name}", v, done)
                writer.add_scalar("train/lr", p.lr * p.lr_decay ** epoch, done)
                if len(test["x"]) and (done % p.test_loss_every == 0 or done == p.epochs):
                    model.eval()
                    with torch.no_grad():
                        test_loss, _ = _losses(model, test, w.context, config.losses)
                    writer.add_scalar("test/loss", float(test_loss), done)
            if done % p.save_every == 0 or done == p.epochs:
                save_weights(model, fold_dir / f"weights_epoch_{done:03d}.safetensors", done, fold_meta)
            _save_resume(resume_path, model, opt, shuffle, done, total)
            if progress is not None:
                progress(done, total)
            if on_epoch_end is not None:
                on_epoch_end(done)
    finally:
        if writer is not None:
            writer.close()

    _save_test_outputs(model, test, ws, test_mask, w, fold_dir / "test_outputs.safetensors")
    seconds = time.perf_counter() - started
    result = FoldResult(test_subject, p.epochs, seconds, loss_value, int(train_mask.sum()),
                        int(test_mask.sum()), start_epoch)
    fold_meta.update(status="complete", final_loss=loss_value, seconds=seconds, resumed_from=start_epoch)
    (fold_dir / "fold.json").write_text(json.dumps(fold_meta, indent=1))
    return result


def video_logits(logits: np.ndarray, ws: WindowSet, mask: np.ndarray) -> dict[str, np.ndarray]:
    """Window logits -> per video. `logits` (W', 10, L) float32 for the windows selected by `mask`
    (W,) bool, in their order; returns {video id: (N, 10) float32 logits of the video's N rows}."""
    videos, first = ws.video[mask], ws.first_row[mask]
    if len(logits) != len(videos):
        raise ValueError(f"{len(logits)} logits for {len(videos)} selected windows")
    out: dict[str, np.ndarray] = {}
    for v in np.unique(videos):
        sel = np.flatnonzero(videos == v)
        sel = sel[np.argsort(first[sel])]
        rows = logits[sel].transpose(0, 2, 1).reshape(-1, logits.shape[1])
        out[ws.video_ids[v]] = np.ascontiguousarray(rows[: ws.n_rows[v]])
    return out


def _save_test_outputs(model, test, ws: WindowSet, test_mask, w: WindowParams, path: Path) -> None:
    """Per test video, the final model's logits of its N rows: tensors named by video id."""
    logits = predict_logits(model, test["x"], w.context).cpu().numpy()
    out = {k: torch.from_numpy(v) for k, v in video_logits(logits, ws, test_mask).items()}
    _save_safetensors(out, path, {"layout": "per video (N rows, 10 logits); see spotting/model.py"})


def resolve_device(name: str) -> torch.device:
    """'cpu', 'cuda', 'cuda:N' or 'auto' -> a torch device (clear error when CUDA is missing)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {name}: CUDA is not available on this machine")
    try:
        return torch.device(name)
    except RuntimeError as err:
        raise UserError(f"--device {name!r}: {err}") from err


def _environment() -> dict:
    return {"mespot": __version__, "torch": torch.__version__, "numpy": np.__version__,
            "python": platform.python_version(), "machine": platform.machine(),
            "threads": torch.get_num_threads()}


def train_loso(
    config: RunConfig,
    out: str | Path,
    device: str = "cpu",
    subjects: Optional[list[str]] = None,
    overwrite: bool = False,
    show_progress: bool = True,
    tensorboard: bool = True,
    on_epoch_end: Optional[Callable[[str, int], None]] = None,
    prepared: Optional[Prepared] = None,
    workers: Optional[int] = None,
    threads: int = 0,
    engine=None,
) -> list[FoldResult]:
    """Train every LOSO fold (or those of `subjects`) into run folder `out`; resumes by default.

    The run folder is locked meanwhile: a second `train_loso` into the same `out` (another
    process on this machine) is refused with a UserError instead of training the same folds
    twice at once. Arguments as `_train_loso_locked`."""
    with folder_lock(Path(out), "run") as holder:
        if holder is not None:
            raise UserError(f"{out}: another `mespot train` (process {holder}) is training into this run "
                            f"folder; wait for it to end, or choose another --out")
        return _train_loso_locked(config, out, device, subjects, overwrite, show_progress, tensorboard,
                                  on_epoch_end, prepared, workers, threads, engine)


@contextlib.contextmanager
def folder_lock(folder: Path, kind: str):
    """Yield None while this process holds the `kind` lock of `folder`, else the process id of the
    holder. An advisory `flock` on a file in the temporary folder, keyed by the folder's absolute
    path (outside it, so --overwrite can delete it): the kernel frees it when its process dies."""
    import fcntl
    import hashlib
    import tempfile

    locks = Path(tempfile.gettempdir()) / "mespot-locks"
    locks.mkdir(exist_ok=True)
    key = hashlib.sha256(str(folder.resolve()).encode()).hexdigest()[:16]
    with open(locks / f"{key}-{kind}.lock", "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            yield handle.read().strip() or "unknown"
            return
        try:
            handle.seek(0)
            handle.truncate()
            handle.write(str(os.getpid()))
            handle.flush()
            yield None
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _train_loso_locked(
    config: RunConfig,
    out: str | Path,
    device: str = "cpu",
    subjects: Optional[list[str]] = None,
    overwrite: bool = False,
    show_progress: bool = True,
    tensorboard: bool = True,
    on_epoch_end: Optional[Callable[[str, int], None]] = None,
    prepared: Optional[Prepared] = None,
    workers: Optional[int] = None,
    threads: int = 0,
    engine=None,
) -> list[FoldResult]:
    """Train every LOSO fold (or those of `subjects`) into run folder `out`; resumes by default.

    `workers` > 1 trains that many folds at once in worker processes (spotting/fold_pool.py):
    on the CPU each gets `threads` torch threads (0: the cores shared out), with `device` 'cuda'
    the workers share out every visible GPU (None: 1). `engine`, a flowcore.ray_engine.RayEngine,
    trains the folds as Ray tasks instead (at most `workers` at once; None: as the cluster's
    resources allow). A fold's result does not depend on the order or the process it is
    trained in, only on its configuration (and, on the CPU, the thread count)."""
    if config.protocol != "loso":
        raise UserError(f"protocol {config.protocol!r} is not supported (only 'loso')")
    if (workers is not None and workers < 1) or threads < 0:
        raise UserError(f"workers must be >= 1 and threads >= 0, got {workers} and {threads}")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"{out}: exists and is not a folder; choose another --out")
    if engine is not None:  # Ray gives each task its GPU; the driver may have none
        try:
            engine.gpus_for(device)
        except ValueError as err:
            raise UserError(str(err)) from None
        dev = torch.device("cpu" if device == "cpu" else "cuda")
    else:
        dev = resolve_device(device)
    started = time.perf_counter()
    # absolute paths: the run stays usable from any folder (predict, evaluate, report)
    config = dataclasses.replace(config, store=str(Path(config.store).absolute()),
                                 annotations=str(Path(config.annotations).absolute()))
    prep = prepared or prepare(config.store, config.annotations, config.windows)
    if config.train.macro_ratio is None:
        ratio = 0.7 if "samm" in prep.features.dataset.lower() or prep.table.dataset == "samm-lv" else 0.5
        config = dataclasses.replace(config, train=dataclasses.replace(config.train, macro_ratio=ratio))
    config = dataclasses.replace(config, losses=dataclasses.replace(config.losses, macro_ratio=config.train.macro_ratio))
    resolved = config.to_json()
    resolved["store_params_hash"] = prep.features.params_hash
    cfg_path = out / "config.json"
    if cfg_path.exists():
        previous = json.loads(cfg_path.read_text())
        for key in ("store", "annotations"):  # a run of an older version kept the path as typed
            previous[key] = str(Path(previous.get(key, "")).absolute())
        previous.setdefault("model", dataclasses.asdict(ModelDims()))  # runs from before dims were set
        same = {k: v for k, v in previous.items() if k != "environment"} == resolved
        if overwrite:
            shutil.rmtree(out)
        elif not same:
            raise UserError(f"{out} holds a run with another configuration; pass --overwrite or "
                            "choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    cfg_path.write_text(json.dumps({**resolved, "environment": _environment()}, indent=1))
    issues_to_frame(prep.issues).to_csv(out / "annotation_issues.csv", index=False)

    all_subjects = prep.features.subjects
    folds = all_subjects if subjects is None else list(subjects)
    unknown = [s for s in folds if s not in all_subjects]
    if unknown:
        raise UserError(f"unknown subject(s) {unknown}; the store has {all_subjects}")
    log = _Log(out / "train.log", show_progress)
    log.line(prep.table.summary())
    log.line(f"{len(prep.issues)} annotation issue(s) listed in {out / 'annotation_issues.csv'}")
    counts = Counter((i.reason, i.action) for i in prep.issues)
    for (reason, action), n in sorted(counts.items()):
        log.line(f"  {n:4d} x {reason} -> {action}")
    for issue in prep.issues:
        log.line("  " + issue.as_line(), console=False)
    if prep.features.skipped:
        log.line(f"{len(prep.features.skipped)} incomplete video(s) in the store skipped: "
                 + ", ".join(f"{k} ({v})" for k, v in prep.features.skipped.items()))
    log.line(f"{len(prep.windows)} windows from {len(prep.features.videos)} videos of "
             f"{len(all_subjects)} subjects; {len(folds)} fold(s) on {dev}")
    todo = [s for s in folds if not _fold_complete(out / "folds" / s)]
    results: dict[str, FoldResult] = {}
    for k, subject in enumerate(folds):
        if subject not in todo:
            log.line(f"fold {k + 1}/{len(folds)} {subject}: already complete, skipped")
            results[subject] = _complete_result(out / "folds" / subject, config.train.epochs)
    with log.progress(config.train.epochs, len(folds)) as bar:
        if (engine is not None or (workers or 1) > 1) and on_epoch_end is not None:
            raise ValueError("on_epoch_end is only called when folds are trained in this process")
        if engine is not None and todo:
            from spotting.fold_pool import train_folds_on_ray

            results.update(train_folds_on_ray(config, out, folds, todo, dev, engine, workers, tensorboard,
                                              bar, log))
        elif (workers or 1) > 1 and len(todo) > 1:
            from spotting.fold_pool import train_folds_in_workers

            results.update(train_folds_in_workers(config, out, folds, todo, dev, workers, threads,
                                                  tensorboard, bar, log))
        else:
            for subject in todo:
                hook = (lambda e, s=subject: on_epoch_end(s, e)) if on_epoch_end else None
                results[subject] = train_one_fold(prep, config, out, folds, subject, dev, bar, log,
                                                  tensorboard, hook)
    results = [results[s] for s in folds if s in results]
    total = sum(r.seconds for r in results)
    log.line(f"done: {len(results)} fold(s), {total:.1f} s of fold training, {time.perf_counter() - started:.1f} s "
             f"wall; run folder {out}")
    return results


def train_one_fold(prep, config, out, folds, subject, dev, bar, log, tensorboard=True, hook=None) -> FoldResult:
    """Fold `subject` of the run in `out` (its inner validation model first, with --inner-val),
    reporting to `bar` and `log` (the driver's, or a worker's stand-ins for them)."""
    with folder_lock(out / "folds" / subject, "fold") as holder:
        if holder is not None:  # e.g. a worker of a killed run that is still going
            raise UserError(f"fold {subject}: being trained by another process ({holder}); wait for it to end")
        return _train_one_fold(prep, config, out, folds, subject, dev, bar, log, tensorboard, hook)


def _train_one_fold(prep, config, out, folds, subject, dev, bar, log, tensorboard, hook) -> FoldResult:
    k = folds.index(subject)
    fold_dir = out / "folds" / subject
    if config.train.inner_val > 0:
        _train_inner(prep, config, subject, fold_dir / "inner", dev, bar, k, log, tensorboard)
    bar.start_fold(subject, k)
    r = train_fold(prep, config, subject, fold_dir, dev, progress=bar.epoch, on_epoch_end=hook,
                   tensorboard=tensorboard)
    log.line(f"fold {k + 1}/{len(folds)} {subject}: {r.n_train_windows} train / {r.n_test_windows} "
             f"test windows, loss {r.final_loss:.4f}, {r.seconds:.1f} s"
             + (f" (resumed at epoch {r.resumed_from})" if r.resumed_from else ""))
    return r


def _fold_complete(fold_dir: Path) -> bool:
    fold_json = fold_dir / "fold.json"
    return fold_json.exists() and json.loads(fold_json.read_text()).get("status") == "complete"


def _complete_result(fold_dir: Path, epochs: int) -> FoldResult:
    meta = json.loads((fold_dir / "fold.json").read_text())
    return FoldResult(meta["test_subject"], epochs, meta.get("seconds", 0.0), meta.get("final_loss", float("nan")),
                      meta["n_train_windows"], meta["n_test_windows"], epochs)


def inner_val_subjects(train_subjects: list[str], k: int, seed: int, test_subject: str) -> list[str]:
    """The k training subjects a fold's inner model leaves out: a fixed draw per (seed, fold)."""
    if k >= len(train_subjects):
        raise UserError(f"--inner-val {k}: fold {test_subject} has only {len(train_subjects)} training "
                        f"subject(s); at least one must remain to train the inner model")
    digest = int.from_bytes(test_subject.encode()[:8].ljust(8, b"\0"), "little")
    rng = np.random.default_rng([seed, digest])
    return sorted(rng.choice(sorted(train_subjects), size=k, replace=False).tolist())


def _train_inner(prep, config, subject, inner_dir, device, bar, k, log, tensorboard) -> None:
    """The fold's inner validation model: trained without `inner_val` of its training subjects."""
    meta = inner_dir / "fold.json"
    if meta.exists() and json.loads(meta.read_text()).get("status") == "complete":
        return
    train_subjects = [s for s in prep.features.subjects if s != subject]
    val = inner_val_subjects(train_subjects, config.train.inner_val, config.train.seed, subject)
    inner_dir.mkdir(parents=True, exist_ok=True)
    (inner_dir / "inner.json").write_text(json.dumps({"val_subjects": val, "test_subject": subject}))
    bar.start_fold(f"{subject} (inner, without {', '.join(val)})", k)
    r = train_fold(prep, config, subject, inner_dir, device, progress=bar.epoch, tensorboard=tensorboard,
                   exclude=tuple(val))
    log.line(f"fold {subject}: inner validation model without {', '.join(val)} trained, {r.seconds:.1f} s")


class _Log:
    """Plain-text log file + console lines + a rich progress bar (epochs of the current fold)."""

    def __init__(self, path: Path, show: bool):
        self.path, self.show = path, show
        from rich.console import Console

        self.console = Console(stderr=True)

    def line(self, text: str, console: bool = True) -> None:
        with open(self.path, "a") as f:
            f.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {text}\n")
        if self.show and console:
            self.console.print(text, markup=False, highlight=False)

    def progress(self, epochs: int, n_folds: int):
        return _Bar(self, epochs, n_folds)


class _Bar:
    """One progress row per fold in training (one at a time, or one per worker)."""

    def __init__(self, log: _Log, epochs: int, n_folds: int):
        self.log, self.epochs, self.n_folds = log, epochs, n_folds
        self.bar = None
        self.rows: dict[str, int] = {}  # key (a fold's subject) -> row
        self.states: dict[str, list] = {}  # key -> [label, epochs done, loss] (for log lines)
        self.heartbeat = None

    def status_line(self) -> str:
        """Where training is, in one line (for logs)."""
        rows = [f"{label} epoch {done}/{self.epochs} loss {loss}" for label, done, loss in list(self.states.values())]
        return "train: " + ("; ".join(rows) if rows else "preparing")

    def __enter__(self):
        if self.log.show and not self.log.console.is_terminal:  # a log: plain lines instead of bars
            from flowcore.heartbeat import Heartbeat

            self.heartbeat = Heartbeat(self.status_line).start()
        if self.log.show:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self.bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                TextColumn("loss {task.fields[loss]}"), TimeElapsedColumn(),
                                console=self.log.console, transient=True)
            self.bar.__enter__()
        return self

    def __exit__(self, *exc):
        if self.heartbeat is not None:
            self.heartbeat.stop()
        if self.bar is not None:
            self.bar.__exit__(*exc)

    def start_fold(self, label: str, k: int, key: str = "") -> None:
        """A new row for fold k (replacing the row of `key`: one row per worker)."""
        self.states[key] = [f"fold {k + 1}/{self.n_folds} {label}", 0, "-"]
        if self.bar is not None:
            if key in self.rows:
                self.bar.remove_task(self.rows[key])
            self.rows[key] = self.bar.add_task(f"fold {k + 1}/{self.n_folds} {label}", total=self.epochs, loss="-")

    def epoch(self, done: int, loss: float, key: str = "") -> None:
        if key in self.states:
            self.states[key][1:] = [done, f"{loss:.4f}"]
        if self.bar is not None and key in self.rows:
            self.bar.update(self.rows[key], completed=done, loss=f"{loss:.4f}")

    def end(self, key: str) -> None:
        """Remove the row of `key` (its fold is over)."""
        self.states.pop(key, None)
        if self.bar is not None and key in self.rows:
            self.bar.remove_task(self.rows.pop(key))
