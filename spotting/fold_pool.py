"""LOSO folds trained side by side in worker processes (`mespot train --workers N`).

The folds of a LOSO run are independent, so N worker processes each take the next fold that is
not complete yet. On the CPU every worker gets its share of the cores as torch threads (small
layers use a core better alone than split over two); with `--device cuda` the workers are
spread over every visible GPU, and several workers on one GPU keep it busy while each waits on
Python. The driver process only draws the progress (one row per worker) and writes train.log:
workers send it their log lines and epochs through a queue. Each worker loads the store once.

A fold that fails (an error, a killed worker) is reported and the other folds go on; the run
ends with an error naming the failed folds, and running the same command again resumes them.
"""

from __future__ import annotations

import multiprocessing
import os
import queue as queue_module
import traceback
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from pathlib import Path

import torch

from mespot.errors import UserError

_WORKER: dict = {}  # the state of this worker process, set once by _start_worker


def worker_devices(device: torch.device) -> list[str]:
    """The devices the workers share out: every visible GPU for plain 'cuda', else `device`."""
    if device.type == "cuda" and device.index is None:
        return [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    return [str(device)]


def threads_per_worker(workers: int, threads: int) -> int:
    """`threads` if given, else the cores this process may use shared out over the workers."""
    if threads > 0:
        return threads
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // workers)


def train_folds_in_workers(config, out: Path, folds, todo, device: torch.device, workers: int, threads: int,
                           tensorboard: bool, bar, log) -> dict:
    """Train the folds of `todo` in `workers` processes; {subject: FoldResult} of those that
    finished. Raises UserError naming the folds that failed, after the others are done."""
    devices = worker_devices(device)
    per_worker = threads_per_worker(workers, threads)
    workers = min(workers, len(todo))
    log.line(f"{len(todo)} fold(s) in {workers} worker processes on {', '.join(devices)}"
             + (f", {per_worker} torch thread(s) each" if device.type == "cpu" else ""))
    context = multiprocessing.get_context("spawn")  # CUDA cannot be used in forked children
    messages = context.Queue()
    slots = context.Value("i", 0)
    results, failures = {}, {}
    pool = ProcessPoolExecutor(workers, mp_context=context, initializer=_start_worker,
                               initargs=(config, str(out), list(folds), devices, slots, per_worker,
                                         messages, tensorboard))
    try:
        pending = {pool.submit(_train_fold, subject): subject for subject in todo}
        while pending:
            finished, _ = wait(pending, timeout=0.25, return_when=FIRST_COMPLETED)
            _show(messages, bar, log)
            for future in finished:
                subject = pending.pop(future)
                try:
                    results[subject] = future.result()
                except Exception as err:  # one fold's failure does not stop the others
                    failures[subject] = err
                    log.line(f"fold {subject}: failed ({type(err).__name__}: {err})")
                    log.line("".join(traceback.format_exception(err)), console=False)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        _show(messages, bar, log)
    if failures:
        raise UserError(f"{len(failures)} fold(s) failed: {', '.join(sorted(failures))} (see {out / 'train.log'}); "
                        f"{len(results)} finished. Run the same command again to resume the failed ones.")
    return results


def _show(messages, bar, log) -> None:
    """Pass the workers' queued messages on to the progress rows and the log."""
    while True:
        try:
            kind, key, *rest = messages.get_nowait()
        except queue_module.Empty:
            return
        if kind == "start":
            bar.start_fold(rest[0], rest[1], key=key)
        elif kind == "epoch":
            bar.epoch(rest[0], rest[1], key=key)
        else:
            log.line(rest[0], console=rest[1])


class _Reporter:
    """A worker's stand-in for the driver's progress bar and log: it queues what they show."""

    def __init__(self, messages, key: str):
        self.messages, self.key = messages, key

    def start_fold(self, label: str, k: int) -> None:
        self.messages.put(("start", self.key, label, k))

    def epoch(self, done: int, loss: float) -> None:
        self.messages.put(("epoch", self.key, done, loss))

    def line(self, text: str, console: bool = True) -> None:
        self.messages.put(("line", self.key, text, console))


def _start_worker(config, out, folds, devices, slots, threads, messages, tensorboard) -> None:
    from spotting.train import prepare

    with slots.get_lock():
        slot = slots.value
        slots.value += 1
    torch.set_num_threads(threads)
    _WORKER.update(
        prep=prepare(config.store, config.annotations, config.windows), config=config, out=Path(out),
        folds=folds, device=torch.device(devices[slot % len(devices)]), tensorboard=tensorboard,
        reporter=_Reporter(messages, f"worker {slot}"),
    )


def _train_fold(subject: str):
    from spotting.train import train_one_fold

    w = _WORKER
    return train_one_fold(w["prep"], w["config"], w["out"], w["folds"], subject, w["device"], w["reporter"],
                          w["reporter"], w["tensorboard"])
