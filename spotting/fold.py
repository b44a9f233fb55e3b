"""One LOSO fold: its data, its model trained epoch by epoch, its checkpoints (AUWGCN.md section 7).

`train_fold` trains one model: test subject held out, the training subjects' windows holding an
expression as its batches, the AU prior and the feature normalisation taken from the training
subjects. Every epoch's weights (every `save_every`), a resume state and TensorBoard scalars go
into the fold's folder (spotting.run_folder); an interrupted fold resumes from its last finished
epoch and ends with the same weights. `train_one_fold` trains a fold of a run: first, with
`--inner-val K`, its inner validation model (without K training subjects), then the fold itself.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch

from flowcore import testhooks
from flowcore.errors import UserError
from spotting.augment import mirror_batch, mirror_normalised
from spotting.config import RunConfig, TrainParams
from spotting.data import Prepared, fold_normalisation, window_tensors
from spotting.inference import predict_logits, video_logits
from spotting.losses import spotting_loss
from spotting.model import AUWGCN, decay_parameter_names
from spotting.initial_weights import apply_init
from spotting.prior import prior_from_table
from spotting.protocols import fold_of, run_plan, table_units, video_sums, window_units
from spotting.run_folder import (FoldFolder, RunFolder, load_resume, save_resume, save_safetensors,
                                 save_weights)
from spotting.windows import WindowParams, WindowSet


@dataclass(frozen=True)
class FoldResult:
    subject: str
    epochs: int
    seconds: float
    final_loss: float
    n_train_windows: int
    n_test_windows: int
    resumed_from: int

    @classmethod
    def of_complete(cls, folder: FoldFolder, epochs: int) -> "FoldResult":
        """The result of a fold finished by an earlier run (from its fold.json)."""
        meta = folder.read_meta()
        return cls(meta["test_subject"], epochs, meta.get("seconds", 0.0),
                   meta.get("final_loss", float("nan")), meta["n_train_windows"],
                   meta["n_test_windows"], epochs)


@dataclass(frozen=True)
class FoldData:
    """A fold's windows as tensors on its device, which windows they are, and its fold.json."""

    train: dict[str, torch.Tensor]
    test: dict[str, torch.Tensor]
    train_mask: np.ndarray  # (W,) bool over the run's windows
    test_mask: np.ndarray
    adj: np.ndarray  # (12, 12) AU prior of the fold
    meta: dict
    mirrored: torch.Tensor | None = None  # with --augment mirror: train["x"] of the mirrored face


def fold_data(prep: Prepared, config: RunConfig, test_subject: str, exclude: tuple[str, ...],
              device: torch.device) -> FoldData:
    """The data of fold `test_subject` (a fold name of the run's protocol, spotting/protocols.py;
    under LOSO, its test subject): its training units but those in `exclude` (subjects); their
    windows holding an expression are the training windows."""
    p = config.train
    units = fold_of(run_plan(config, prep), test_subject)
    train_subjects = [u for u in units.train if u not in exclude and (
        units.by == "subject" or prep.features.videos[u].subject not in exclude)]
    frame = table_units(prep.table.frame, train_subjects, units.by)
    adj = prior_from_table(frame if config.prior.source == "train" else prep.table.frame, None,
                           config.prior)
    sums = prep if units.by == "subject" else replace(prep, sums=video_sums(prep, train_subjects))
    mean, std = fold_normalisation(sums, train_subjects, p.normalisation)
    ws = prep.windows
    train_mask = window_units(ws, train_subjects, units.by) & ws.has_expression
    test_mask = window_units(ws, units.test, units.by)
    if not train_mask.any():
        raise UserError(f"fold {test_subject}: no training window holds an expression")
    train = window_tensors(ws, train_mask, mean, std, device)
    test = window_tensors(ws, test_mask, mean, std, device)
    mirrored = None
    if p.augment == "mirror":
        valid = torch.from_numpy(ws.valid[train_mask]).to(device)
        mirrored = mirror_normalised(train["x"], valid, mean, std)
    meta = {
        "test_subject": test_subject, "train_subjects": train_subjects,
        "test_units": list(units.test), "units": units.by,
        "normalisation": {"mode": p.normalisation, "mean": mean, "std": std},
        "prior": adj.tolist(), "prior_source": config.prior.source,
        "n_train_windows": int(train_mask.sum()), "n_test_windows": int(test_mask.sum()),
        "config": config.to_json(),
    }
    return FoldData(train, test, train_mask, test_mask, adj, meta, mirrored)


def _optimizer(model: AUWGCN, p: TrainParams) -> torch.optim.AdamW:
    decay = decay_parameter_names(model)
    named = list(model.named_parameters())
    groups = [
        {
            "params": [t for n, t in named if n in decay],
            "weight_decay": p.weight_decay,
            "names": [n for n, _ in named if n in decay],
        },
        {
            "params": [t for n, t in named if n not in decay],
            "weight_decay": 0.0,
            "names": [n for n, _ in named if n not in decay],
        },
    ]
    return torch.optim.AdamW(groups, lr=p.lr)


def _new_model(adj, config: RunConfig, device: torch.device, folder: FoldFolder):
    """(model, optimiser, shuffling generator, first epoch, last loss): seeded afresh, or as the
    fold's resume state left them."""
    p = config.train
    if device.type == "cuda":  # same seed, same weights on GPU too
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    torch.manual_seed(p.seed)
    model = AUWGCN(adj, config.model).to(device)
    apply_init(model, p.init)  # --init: every weight but the fold's own prior; scratch: none
    opt = _optimizer(model, p)
    shuffle = torch.Generator().manual_seed(p.seed)
    start_epoch, loss_value = 0, float("nan")
    if folder.resume_path.exists():
        start_epoch, loss_value = load_resume(folder.resume_path, model, opt, shuffle, device)
    return model, opt, shuffle, start_epoch, loss_value


def _losses(model, data, context, loss_params, idx=None):
    x = data["x"] if idx is None else data["x"][idx]
    logits = model(x)[:, :, context : x.shape[1] - context]
    pick = (lambda t: t) if idx is None else (lambda t: t[idx])
    return spotting_loss(
        logits, pick(data["start_end"]), pick(data["apex"]), pick(data["action"]), loss_params
    )


def _train_epoch(
    model,
    opt,
    shuffle: torch.Generator,
    train: dict,
    epoch: int,
    config: RunConfig,
    device: torch.device,
    mirrored: torch.Tensor | None = None,
) -> tuple[float, dict[str, float]]:
    """One epoch over the training windows in shuffled batches: (mean loss, mean of each part).
    `mirrored` (--augment mirror): each window of a batch replaced by its mirror with p 1/2,
    drawn from `shuffle` (its state is saved with the resume state, so a resumed run ends the
    same)."""
    p = config.train
    for group in opt.param_groups:
        group["lr"] = p.lr * p.lr_decay**epoch
    model.train()
    n = len(train["x"])
    perm = torch.randperm(n, generator=shuffle).to(device)
    total, parts_sum = 0.0, {}
    for i in range(0, n, p.batch_size):
        idx = perm[i : i + p.batch_size]
        if mirrored is None:
            loss, parts = _losses(model, train, config.windows.context, config.losses, idx)
        else:
            batch = mirror_batch(train, mirrored, idx, shuffle)
            loss, parts = _losses(model, batch, config.windows.context, config.losses)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        k = len(idx) / n  # sums stay on the device: no host sync inside the epoch
        total = total + loss.detach() * k
        for name, v in parts.items():
            parts_sum[name] = parts_sum.get(name, 0.0) + v * k
    return float(total), {name: float(v) for name, v in parts_sum.items()}


def _write_scalars(
    writer, model, test: dict, epoch: int, total: float, parts: dict, config: RunConfig
) -> None:
    """TensorBoard scalars of epoch `epoch` (0-based): losses, learning rate, now and then the
    test subject's loss (logged only, never used to choose anything)."""
    p, done = config.train, epoch + 1
    writer.add_scalar("train/loss", total, done)
    for name, v in parts.items():
        writer.add_scalar(f"train/{name}", v, done)
    writer.add_scalar("train/lr", p.lr * p.lr_decay**epoch, done)
    if len(test["x"]) and (done % p.test_loss_every == 0 or done == p.epochs):
        model.eval()
        with torch.no_grad():
            test_loss, _ = _losses(model, test, config.windows.context, config.losses)
        writer.add_scalar("test/loss", float(test_loss), done)


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
    """Train one LOSO fold into `fold_dir` (test = `test_subject`, train = every other subject of
    the store but those in `exclude`, which the inner validation model of a fold leaves out);
    `progress(epoch, loss)` after every epoch."""
    p, folder = config.train, FoldFolder(Path(fold_dir))
    started = time.perf_counter()
    folder.path.mkdir(parents=True, exist_ok=True)
    data = fold_data(prep, config, test_subject, exclude, device)
    model, opt, shuffle, start_epoch, loss_value = _new_model(data.adj, config, device, folder)
    writer = None
    if tensorboard:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(folder.tensorboard_path), purge_step=start_epoch + 1)
    try:
        for epoch in range(start_epoch, p.epochs):
            loss_value, parts = _train_epoch(model, opt, shuffle, data.train, epoch, config, device,
                                             data.mirrored)
            done = epoch + 1
            if writer is not None:
                _write_scalars(writer, model, data.test, epoch, loss_value, parts, config)
            if done % p.save_every == 0 or done == p.epochs:
                save_weights(model, folder.weights_path(done), done, data.meta)
            save_resume(folder.resume_path, model, opt, shuffle, done, loss_value)
            if progress is not None:
                progress(done, loss_value)
            if on_epoch_end is not None:
                on_epoch_end(done)
            testhooks.gate(f"train-{test_subject}{'-inner' if exclude else ''}-epoch-{done}")
    finally:
        if writer is not None:
            writer.close()

    _save_test_outputs(
        model, data.test, prep.windows, data.test_mask, config.windows, folder.test_outputs_path
    )
    seconds = time.perf_counter() - started
    result = FoldResult(
        test_subject,
        p.epochs,
        seconds,
        loss_value,
        int(data.train_mask.sum()),
        int(data.test_mask.sum()),
        start_epoch,
    )
    data.meta.update(
        status="complete", final_loss=loss_value, seconds=seconds, resumed_from=start_epoch
    )
    folder.meta_path.write_text(json.dumps(data.meta, indent=1))
    return result


def _save_test_outputs(model, test, ws: WindowSet, test_mask, w: WindowParams, path: Path) -> None:
    """Per test video, the final model's logits of its N rows: tensors named by video id."""
    logits = predict_logits(model, test["x"], w.context).cpu().numpy()
    out = {k: torch.from_numpy(v) for k, v in video_logits(logits, ws, test_mask).items()}
    save_safetensors(out, path, {"layout": "per video (N rows, 10 logits); see spotting/model.py"})


def train_one_fold(
    prep: Prepared,
    config: RunConfig,
    run: RunFolder,
    folds: list[str],
    subject: str,
    device: torch.device,
    report,
    on_epoch_end=None,
    tensorboard: bool = True,
) -> FoldResult:
    """Fold `subject` of the run (its inner validation model first, with --inner-val), telling
    `report` (`start_fold(label, k)`, `epoch(done, loss)`, `line(text)`) how it goes. The fold is
    locked meanwhile (FoldFolder.lock): a fold another process trains (e.g. a worker of a killed
    run that is still going) is refused with a UserError, never trained twice at once."""
    with run.fold(subject).lock() as holder:
        if holder is not None:
            raise UserError(f"fold {subject}: being trained by another process ({holder}); wait "
                            f"for it to end")
        return _train_locked(prep, config, run, folds, subject, device, report, on_epoch_end,
                             tensorboard)


def _train_locked(prep, config, run, folds, subject, device, report, on_epoch_end,
                  tensorboard) -> FoldResult:
    """train_one_fold, the fold locked."""
    k = folds.index(subject)
    folder = run.fold(subject)
    if config.train.inner_val > 0:
        _train_inner(prep, config, subject, folder.inner, device, report, k, tensorboard)
    report.start_fold(subject, k)
    r = train_fold(
        prep,
        config,
        subject,
        folder.path,
        device,
        progress=report.epoch,
        on_epoch_end=on_epoch_end,
        tensorboard=tensorboard,
    )
    report.line(
        f"fold {k + 1}/{len(folds)} {subject}: {r.n_train_windows} train / {r.n_test_windows} "
        f"test windows, loss {r.final_loss:.4f}, {r.seconds:.1f} s"
        + (f" (resumed at epoch {r.resumed_from})" if r.resumed_from else "")
    )
    return r


def inner_val_subjects(
    train_subjects: list[str], k: int, seed: int, test_subject: str
) -> list[str]:
    """The k training subjects a fold's inner model leaves out: a fixed draw per (seed, fold)."""
    if k >= len(train_subjects):
        raise UserError(
            f"--inner-val {k}: fold {test_subject} has only {len(train_subjects)} training "
            f"subject(s); at least one must remain to train the inner model"
        )
    digest = int.from_bytes(test_subject.encode()[:8].ljust(8, b"\0"), "little")
    rng = np.random.default_rng([seed, digest])
    return sorted(rng.choice(sorted(train_subjects), size=k, replace=False).tolist())


def _train_inner(prep, config, subject, inner: FoldFolder, device, report, k, tensorboard) -> None:
    """The fold's inner validation model: trained without `inner_val` of its training subjects."""
    if inner.is_complete():
        return
    train_subjects = list(fold_of(run_plan(config, prep), subject).train)
    val = inner_val_subjects(train_subjects, config.train.inner_val, config.train.seed, subject)
    inner.path.mkdir(parents=True, exist_ok=True)
    inner.inner_meta_path.write_text(json.dumps({"val_subjects": val, "test_subject": subject}))
    report.start_fold(f"{subject} (inner, without {', '.join(val)})", k)
    r = train_fold(
        prep,
        config,
        subject,
        inner.path,
        device,
        progress=report.epoch,
        tensorboard=tensorboard,
        exclude=tuple(val),
    )
    report.line(
        f"fold {subject}: inner validation model without {', '.join(val)} trained, "
        f"{r.seconds:.1f} s"
    )
