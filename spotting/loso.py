"""Leave-one-subject-out (LOSO) training of AUW-GCN from a feature store (AUWGCN.md section 7).

`train_loso` loads the store and the annotations once, builds every window and target once, writes
the run's configuration, then trains one fold per subject (spotting.fold) on preloaded tensors:
one after the other in this process, side by side in local worker processes (`workers`), or as
Ray tasks (`engine`), all through the one job runner (flowcore.jobs). The run folder's layout is
spotting.run_folder's.

Running the same call again resumes: finished folds are skipped and an interrupted fold continues
from its last finished epoch, ending with the same weights as an uninterrupted run. A fold's
result does not depend on the order or the process it is trained in, only on its configuration
(and, on the CPU, the thread count). A fold that fails in a worker is reported and the others go
on; the run then ends with an error naming the failed folds, and running it again resumes them.

Workers: on the CPU each gets its share of the cores as torch threads (small layers use a core
better alone than split over two); with `device` 'cuda' the workers are spread over every
visible GPU. On Ray each fold asks for the engine's CPUs and share of a GPU; the store and the
run folder must be reachable under the same paths on every node.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import platform
import shutil
import time
import traceback
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch

from flowcore.errors import UserError
from flowcore.locations import absolute, copy_down, is_url, upload_changes, working_copy
from flowcore.locks import folder_lock, lease_seconds
from flowcore.jobs import LocalProcesses, Task, run_tasks
from flowcore.version import __version__, git_commit
from spotting.annotations import issues_to_frame
from spotting.config import LEGACY_TRAIN, RunConfig, TrainParams, resolve_inner_val
from spotting.data import Prepared, prepare, prepared_for, resolve_device
from spotting.datasets import prepare_datasets, rate_warning, rates
from spotting.fold import FoldResult, train_one_fold
from spotting.initial_weights import init_path
from spotting.fold_rules import record_run_rules
from spotting.model import ModelDims
from spotting.protocols import PROTOCOLS, run_plan
from spotting.run_folder import RunFolder
from spotting.run_record import features_record, init_record


def train_loso(
    config: RunConfig,
    out: str | Path,
    device: str = "cpu",
    subjects: Optional[list[str]] = None,
    overwrite: bool = False,
    progress=None,
    tensorboard: bool = True,
    on_epoch_end: Optional[Callable[[str, int], None]] = None,
    prepared: Optional[Prepared] = None,
    workers: Optional[int] = None,
    threads: int = 0,
    engine=None,
) -> list[FoldResult]:
    """Train every LOSO fold (or those of `subjects`) into run folder `out`; resumes by default.

    progress: a flowcore.progress.TrainingProgress (e.g. mespot.progress.RichTraining), or None:
    nothing shown (train.log is written anyway). `workers` > 1 trains that many folds at once in
    worker processes: on the CPU each gets `threads` torch threads (0: the cores shared out), with
    `device` 'cuda' the workers share out every visible GPU (None: 1). One process: `threads` > 0
    sets its torch threads. `engine`, a flowcore.ray_engine.RayEngine, trains the folds as Ray
    tasks instead (at most `workers` at once; None: as the cluster's resources allow).
    `on_epoch_end(subject, epoch)`: called after every epoch, only when folds train in this
    process. `prepared`: the store and annotations already prepared for this config.

    The run folder is locked meanwhile (RunFolder.lock): a second `train_loso` into the same
    `out` (another process on this machine) is refused with a UserError instead of training the
    same folds twice at once. The config records the store and annotations as absolute paths,
    so the run stays usable from any folder.
    """
    _check_arguments(config, workers, threads)
    with folder_lock(out, "run") if is_url(out) else contextlib.nullcontext() as holder:
        if holder is not None:  # a run folder on object storage: its lease lock (flowcore.locks)
            raise UserError(f"{out}: another `mespot train` ({holder}) is training into this "
                            f"run folder (one that was killed holds it until its lease runs "
                            f"out, {lease_seconds():g} s); wait for it to end, or choose "
                            f"another --out")
        with working_copy(out) as local:  # a URL: trained in a local copy, written back
            run = RunFolder(local)
            if run.path.exists() and not run.path.is_dir():
                raise UserError(f"{run.path}: exists and is not a folder; choose another --out")
            with run.lock() as holder:
                if holder is not None:
                    raise UserError(f"{run.path}: another `mespot train` (process {holder}) is "
                                    f"training into this run folder; wait for it to end, or "
                                    f"choose another --out")
                remote = str(out) if is_url(out) and engine is not None else None
                return _train_locked(config, run, device, subjects, overwrite, progress,
                                     tensorboard, on_epoch_end, prepared, workers, threads,
                                     engine, remote)


def _train_locked(config: RunConfig, run: RunFolder, device, subjects, overwrite, progress,
                  tensorboard, on_epoch_end, prepared, workers, threads,
                  engine, remote: str | None = None) -> list[FoldResult]:
    """train_loso, its run folder locked. `remote`: the run folder's URL, where Ray tasks on
    other machines read and write their folds (the driver works in `run`, its local copy)."""
    dev = _driver_device(device, engine)
    started = time.perf_counter()
    config = absolute_paths(config)
    token = uuid.uuid4().hex  # this run's prepared data, in this process and each worker
    prep = prepared_for(config.store, config.annotations, config.windows, token,
                        prepared or prepare_config(config))
    plan = run_plan(config, prep)
    config = resolve_macro_ratio(config, prep)
    config = dataclasses.replace(config, train=_inner_val(config, plan))
    all_folds = [f.name for f in plan]
    _write_config(run, config, prep, overwrite, all_folds)
    folds = all_folds if subjects is None else list(subjects)
    unknown = [s for s in folds if s not in all_folds]
    if unknown and config.protocol == "loso":
        raise UserError(f"unknown subject(s) {unknown}; the store has {all_folds}")
    if unknown:
        raise UserError(f"unknown fold(s) {unknown}; the run's folds ({config.protocol}) are "
                        f"{all_folds}")
    log = RunLog(run.log_path, progress)
    _log_data(log, prep, run, folds, dev)
    results: dict[str, FoldResult] = {}
    for k, subject in enumerate(folds):
        if run.fold(subject).is_complete():
            log.line(f"fold {k + 1}/{len(folds)} {subject}: already complete, skipped")
            results[subject] = FoldResult.of_complete(run.fold(subject), config.train.epochs)
    todo = [s for s in folds if s not in results]
    if progress is not None:
        progress.start(len(folds), config.train.epochs)
    try:
        job = FoldJob(config, str(run.path), tuple(folds), token, tensorboard, on_epoch_end,
                      remote)
        if remote is not None:  # the tasks start from what the driver wrote (config.json, ...)
            upload_changes(run.path, remote, {})
        try:
            results.update(_train_folds(job, run, todo, dev, log, workers, threads, engine))
        finally:
            for subject in todo if remote is not None else ():  # what the tasks wrote back
                fold = f"folds/{subject}"
                copy_down(f"{remote}/{fold}", run.path / fold)
    finally:
        if progress is not None:
            progress.close()
    ordered = [results[s] for s in folds if s in results]
    _record_rules(run, config, prep, folds, dev if engine is None else torch.device("cpu"), log)
    total = sum(r.seconds for r in ordered)
    log.line(f"done: {len(ordered)} fold(s), {total:.1f} s of fold training, "
             f"{time.perf_counter() - started:.1f} s wall; run folder {run.path}")
    return ordered


def _record_rules(run: RunFolder, config: RunConfig, prep: Prepared, folds: list[str], device,
                  log: "RunLog") -> None:
    """Each fold's proposal rules calibrated on its inner subjects, into its rules.json (what
    `evaluate` applies by default, so that `predict` applies it from the run folder alone)."""
    preset = features_record(prep)["preset"]
    done = record_run_rules(run, prep, config.windows, preset, folds, device)
    if done:
        log.line(f"proposal rules calibrated on the inner subjects recorded for {len(done)} "
                 f"fold(s) (folds/<subject>/rules.json)")


def absolute_paths(config: RunConfig) -> RunConfig:
    """`config` with its store and annotations as absolute paths; a pooled run's (`datasets`,
    already absolute) joined by " + " (what config.json shows; each is in `datasets`)."""
    if config.datasets:
        return dataclasses.replace(config, store=" + ".join(d.store for d in config.datasets),
                                   annotations=" + ".join(d.annotations for d in config.datasets))
    return dataclasses.replace(config, store=str(absolute(config.store)),
                               annotations=str(absolute(config.annotations)))


def prepare_config(config: RunConfig) -> Prepared:
    """The data of a run's configuration: its datasets pooled, or its one store."""
    if config.datasets:
        return prepare_datasets(list(config.datasets), config.windows)
    return prepare(config.store, config.annotations, config.windows)


def _inner_val(config: RunConfig, plan) -> TrainParams:
    """The train section with inner_val resolved for the folds' training subjects; never with
    the split protocol, whose inner subjects would hold test videos."""
    if config.protocol == "split":
        if config.train.inner_val:
            raise UserError("--inner-val: not with --protocol split (a subject's videos lie on "
                            "both sides of the split); use 0")
        return dataclasses.replace(config.train, inner_val=0)
    return resolve_inner_val(config.train, len(plan[0].train) + 1)


def _check_arguments(config: RunConfig, workers, threads: int) -> None:
    if config.protocol not in PROTOCOLS:
        raise UserError(f"protocol {config.protocol!r} is not supported (one of "
                        f"{', '.join(PROTOCOLS)})")
    if (workers is not None and workers < 1) or threads < 0:
        raise UserError(f"workers must be >= 1 and threads >= 0, got {workers} and {threads}")
    init_path(config.train.init)  # --init: a missing weights file stops the run before any fold


def _driver_device(device: str, engine) -> torch.device:
    """The run's device here; with Ray, the device its tasks are given (the driver may have no
    GPU: Ray gives each task its own)."""
    if engine is None:
        return resolve_device(device)
    try:
        engine.gpus_for(device)
    except ValueError as err:
        raise UserError(str(err)) from None
    return torch.device("cpu" if device == "cpu" else "cuda")


def resolve_macro_ratio(config: RunConfig, prep: Prepared) -> RunConfig:
    """The config with `macro_ratio` filled in (0.7 for SAMM-LV, 0.5 otherwise, unless given)
    and passed on to the losses."""
    if config.train.macro_ratio is None:
        samm = "samm" in prep.features.dataset.lower() or prep.table.dataset == "samm-lv"
        config = dataclasses.replace(config, train=dataclasses.replace(
            config.train, macro_ratio=0.7 if samm else 0.5))
    return dataclasses.replace(config, losses=dataclasses.replace(
        config.losses, macro_ratio=config.train.macro_ratio))


def _write_config(run: RunFolder, config: RunConfig, prep: Prepared, overwrite: bool,
                  folds: list[str]) -> None:
    """config.json and annotation_issues.csv; UserError for a folder holding another run."""
    resolved = config.to_json()
    resolved["store_params_hash"] = prep.features.params_hash
    resolved["init_weights"] = init_record(config.train.init)
    if run.config_path.exists() and overwrite:
        shutil.rmtree(run.path)
    elif run.config_path.exists():
        previous = run.read_config()  # refused in one line when damaged
        for key in ("store", "annotations"):  # a run of an older version kept the path as typed
            previous[key] = str(absolute(previous.get(key, "")))
        # runs from before the network's dimensions were part of the configuration, and from
        # before training fields were added (init, augment): what their absence meant then
        previous.setdefault("model", dataclasses.asdict(ModelDims()))
        previous["train"] = {**dataclasses.asdict(TrainParams()), **LEGACY_TRAIN,
                             **previous.get("train", {})}
        previous.setdefault("init_weights", resolved["init_weights"])  # from before the record
        for key in ("split", "test_datasets", "datasets"):  # from before several datasets
            previous.setdefault(key, resolved[key] if key == "split" else [])
        if {k: v for k, v in previous.items() if k not in DESCRIPTIVE} != resolved:
            raise UserError(f"{run.path} holds a run with another configuration; pass --overwrite "
                            "or choose another --out")
    run.path.mkdir(parents=True, exist_ok=True)
    described = {"features": {**features_record(prep), "subjects": folds},
                 "environment": _environment()}
    if config.datasets:
        described["rates"] = rates(prep)
    run.config_path.write_text(json.dumps({**resolved, **described}, indent=1))
    issues_to_frame(prep.issues).to_csv(run.issues_path, index=False)


# config.json entries that describe the run and its store, rewritten by each `train` call, not
# compared when a run resumes (the store's parameters hash, `store_params_hash`, is)
DESCRIPTIVE = ("environment", "features", "rates")


def _environment() -> dict:
    return {"mespot": __version__, "code": {"version": __version__, "git_commit": git_commit()},
            "torch": torch.__version__, "numpy": np.__version__,
            "python": platform.python_version(), "machine": platform.machine(),
            "threads": torch.get_num_threads()}


def _log_data(log: "RunLog", prep: Prepared, run: RunFolder, folds: list[str], dev) -> None:
    """What the run trains on: the annotations, their repairs, skipped videos, the windows."""
    log.line(prep.table.summary())
    log.line(f"{len(prep.issues)} annotation issue(s) listed in {run.issues_path}")
    counts = Counter((i.reason, i.action) for i in prep.issues)
    for (reason, action), n in sorted(counts.items()):
        log.line(f"  {n:4d} x {reason} -> {action}")
    for issue in prep.issues:
        log.line("  " + issue.as_line(), console=False)
    if prep.features.skipped:
        log.line(f"{len(prep.features.skipped)} incomplete video(s) in the store skipped: "
                 + ", ".join(f"{k} ({v})" for k, v in prep.features.skipped.items()))
    for line in unused_data_lines(prep):
        log.line(line)
    if prep.features.dataset == "pooled":
        for name, r in rates(prep).items():
            log.line(f"dataset {name}: {r['subjects']} subjects, {r['videos']} videos at "
                     f"{r['fps']:g} fps (1 frame in {r['subsample']} kept)")
        warning = rate_warning(prep)
        if warning:
            log.line(warning)
    log.line(f"{len(prep.windows)} windows from {len(prep.features.videos)} videos of "
             f"{len(prep.features.subjects)} subjects; {len(folds)} fold(s) on {dev}")


def unused_data_lines(prep: Prepared) -> list[str]:
    """What training does with the store's videos that have no annotation, and with the rows
    of videos whose face was missing in some frames: one line each, [] when there are none."""
    lines = []
    annotated = set(prep.table.frame["video_id"])
    bare = sorted(v for v in prep.features.videos if v not in annotated)
    if bare:
        lines.append(
            f"{len(bare)} video(s) of the store have no annotation: {', '.join(bare)}. They give "
            f"no training window (none holds an expression), count in their subject's feature "
            f"normalisation, and are spotted when their subject is tested, where every interval "
            f"found counts as a false positive; if one is a copy or has unannotated "
            f"expressions, remove it from the store (or annotate it) and train again")
    gaps = {k: v for k, v in prep.features.videos.items() if not v.row_valid.all()}
    if gaps:
        rows = sum(int((~v.row_valid).sum()) for v in gaps.values())
        lines.append(f"{len(gaps)} video(s) lost frames without the face ({rows} feature rows in "
                     f"all): {', '.join(sorted(gaps))}; no window spans those rows")
    return lines


def _train_folds(job: "FoldJob", run: RunFolder, todo, dev, log: "RunLog", workers, threads,
                 engine) -> dict[str, FoldResult]:
    """Train the folds of `todo` (see train_loso); {subject: FoldResult} of those that finished.
    Raises UserError naming the folds that failed in workers, after the others are done."""
    runner = engine if todo else None
    if engine is None and (workers or 1) > 1 and len(todo) > 1:
        runner = _local_workers(dev, min(workers, len(todo)), threads, len(todo), log)
    if runner is not None and job.on_epoch_end is not None:
        raise ValueError("on_epoch_end is only called when folds are trained in this process")
    if runner is None and threads > 0:
        torch.set_num_threads(threads)
    results, failures = {}, {}
    for done in run_tasks(job, [Task(s, s) for s in todo], runner, device=str(dev),
                          on_message=log.message, on_note=log.line, limit=workers, name="train",
                          noun="fold"):
        log.end(done.key)
        if done.error is None:
            results[done.key] = done.result
        else:  # one fold's failure does not stop the others
            failures[done.key] = done.error
            log.line(f"fold {done.key}: failed ({type(done.error).__name__}: {done.error})")
            log.line("".join(traceback.format_exception(done.error)), console=False)
    if failures:
        raise UserError(f"{len(failures)} fold(s) failed: {', '.join(sorted(failures))} (see "
                        f"{run.log_path}); {len(results)} finished. Run the same command again to "
                        f"resume the failed ones.")
    return results


def worker_devices(device: torch.device) -> list[str]:
    """The devices the workers share out: every visible GPU for plain 'cuda', else `device`."""
    if device.type == "cuda" and device.index is None:
        return [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    return [str(device)]


def threads_per_worker(workers: int, threads: int) -> int:
    """`threads` if given, else the cores this process may use shared out over the workers."""
    if threads > 0:
        return threads
    if hasattr(os, "sched_getaffinity"):
        cores = len(os.sched_getaffinity(0))
    else:
        cores = os.cpu_count() or 1
    return max(1, cores // workers)


def _local_workers(
    dev: torch.device, workers: int, threads: int, n_folds: int, log
) -> LocalProcesses:
    devices = worker_devices(dev)
    per_worker = threads_per_worker(workers, threads)
    log.line(
        f"{n_folds} fold(s) in {workers} worker processes on {', '.join(devices)}"
        + (f", {per_worker} torch thread(s) each" if dev.type == "cpu" else "")
    )
    return LocalProcesses(workers, per_worker, tuple(devices))


@dataclass(frozen=True)
class FoldJob:
    """The job of one fold (flowcore.jobs): train fold `subject` of the run at `out` on the
    worker's device, its store and annotations prepared once per process; what it shows is sent
    to the driver as messages ("start", subject, label, k), ("epoch", subject, done, loss) and
    ("line", subject, text, console)."""

    config: RunConfig
    out: str
    folds: tuple[str, ...]
    run_token: str  # names the run's prepared data in each process (spotting.data.prepared_for)
    tensorboard: bool = True
    on_epoch_end: Optional[Callable[[str, int], None]] = None  # only in this process
    remote: Optional[str] = None  # the run folder's URL: the fold works in a local copy of its
    #                               own folder there, written back at its end (Ray on a cluster)

    def __call__(self, subject: str, worker) -> FoldResult:
        c = self.config
        prep = prepared_for(c.store, c.annotations, c.windows, self.run_token,
                            load=lambda: prepare_config(c))
        hook = (lambda e: self.on_epoch_end(subject, e)) if self.on_epoch_end else None
        where = self.out if self.remote is None else self.remote
        with working_copy(where, under=f"folds/{subject}") as local:
            return train_one_fold(
                prep,
                c,
                RunFolder(local),
                list(self.folds),
                subject,
                torch.device(worker.device),
                _Reporter(worker.report, subject),
                hook,
                self.tensorboard,
            )


class _Reporter:
    """What a fold shows, as messages to the driver (see FoldJob)."""

    def __init__(self, send, key: str):
        self.send, self.key = send, key

    def start_fold(self, label: str, k: int) -> None:
        self.send(("start", self.key, label, k))

    def epoch(self, done: int, loss: float) -> None:
        self.send(("epoch", self.key, done, loss))

    def line(self, text: str, console: bool = True) -> None:
        self.send(("line", self.key, text, console))


class RunLog:
    """train.log (every line, timestamped), and what is worth showing passed on to the progress
    display (a flowcore.progress.TrainingProgress, or None)."""

    def __init__(self, path: Path, progress=None):
        self.path, self.progress = path, progress

    def line(self, text: str, console: bool = True) -> None:
        with open(self.path, "a") as f:
            f.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {text}\n")
        if console and self.progress is not None:
            self.progress.line(text)

    def message(self, message: tuple) -> None:
        """A fold's message (see FoldJob): to the log or the progress rows."""
        kind, key, *rest = message
        if kind == "line":
            self.line(rest[0], console=rest[1])
        elif self.progress is None:
            return
        elif kind == "start":
            self.progress.start_fold(rest[0], rest[1], key)
        elif kind == "epoch":
            self.progress.epoch(rest[0], rest[1], key)

    def end(self, key: str) -> None:
        if self.progress is not None:
            self.progress.end(key)
