"""LOSO folds trained side by side: in local worker processes (`mespot train --workers N`) or
as Ray tasks on a cluster (`mespot train --engine ray`).

The folds of a LOSO run are independent, so N worker processes each take the next fold that is
not complete yet. On the CPU every worker gets its share of the cores as torch threads (small
layers use a core better alone than split over two); with `--device cuda` the workers are
spread over every visible GPU, and several workers on one GPU keep it busy while each waits on
Python. The driver process only draws the progress (one row per worker) and writes train.log:
workers send it their log lines and epochs through a queue. Each worker loads the store once.

On Ray each fold is one task asking for `cpus_per_task` CPUs and a share of a GPU (the settings
and checks of flowcore.ray_engine.RayEngine, as `mespot extract --engine ray`); a task loads the
store itself and reports to a small actor the driver drains. As for extraction, the store and the
run folder must be reachable under the same paths on every node (a shared filesystem). A task
whose worker dies is rerun by Ray (`max_retries`) and resumes from the fold's last saved epoch.

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
WAIT_SECONDS = 0.25  # the driver's polling period for results and progress (s)
TASK_NAME = "mespot-train:{subject}"  # a fold's Ray task, in `ray list tasks`


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
    workers = min(workers, len(todo))
    per_worker = threads_per_worker(workers, threads)
    log.line(f"{len(todo)} fold(s) in {workers} worker processes on {', '.join(devices)}"
             + (f", {per_worker} torch thread(s) each" if device.type == "cpu" else ""))
    context = multiprocessing.get_context("spawn")  # CUDA cannot be used in forked children
    messages = context.Queue()
    slots = context.Value("i", 0)
    results, failures = {}, {}
    pool = ProcessPoolExecutor(workers, mp_context=context, initializer=_start_worker,
                               initargs=(config, str(out), list(folds), devices, slots, per_worker,
                                         messages, tensorboard, os.getpid()))
    try:
        pending = {pool.submit(_train_fold, subject): subject for subject in todo}
        while pending:
            finished, _ = wait(pending, timeout=WAIT_SECONDS, return_when=FIRST_COMPLETED)
            _show(_drain(messages), bar, log)
            for future in finished:
                subject = pending.pop(future)
                try:
                    results[subject] = future.result()
                except Exception as err:  # one fold's failure does not stop the others
                    failures[subject] = _failed(subject, err, log)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        _show(_drain(messages), bar, log)
        messages.close()
    _raise_failures(failures, results, out)
    return results


def train_folds_on_ray(config, out: Path, folds, todo, device: torch.device, engine, workers: int | None,
                       tensorboard: bool, bar, log) -> dict:
    """Train the folds of `todo` as Ray tasks (at most `workers` at once; None: as many as the
    cluster's resources allow) with the settings of `engine` (a flowcore RayEngine); as
    train_folds_in_workers otherwise."""
    from flowcore.ray_engine import ProgressSink, first_line, import_ray

    ray = import_ray()
    gpus = engine.gpus_for(str(device))
    threads = max(1, int(engine.cpus_per_task))
    results, failures = {}, {}
    with engine.connected(ray):
        log.line(engine.check_cluster(ray, gpus, len(todo), "fold"))
        sink = ray.remote(num_cpus=0)(ProgressSink).remote()
        task = ray.remote(_ray_fold_task)
        waiting, running = list(todo), {}  # running: ObjectRef -> subject
        try:
            while waiting or running:
                while waiting and len(running) < (workers or len(todo)):
                    subject = waiting.pop(0)
                    ref = task.options(num_cpus=engine.cpus_per_task, num_gpus=gpus,
                                       max_retries=engine.max_retries, name=TASK_NAME.format(subject=subject),
                                       ).remote(config, str(out), list(folds), subject, "cpu" if gpus == 0 else "cuda",
                                                threads, sink, tensorboard)
                    running[ref] = subject
                ready, _ = ray.wait(list(running), num_returns=len(running), timeout=WAIT_SECONDS)
                _show(ray.get(sink.take.remote()), bar, log)
                for ref in ready:
                    subject = running.pop(ref)
                    bar.end(subject)
                    try:
                        results[subject] = ray.get(ref)
                    except ray.exceptions.RayTaskError as err:  # the fold raised
                        failures[subject] = _failed(subject, err.cause if err.cause is not None else err, log)
                    except ray.exceptions.RayError as err:  # its worker died every time
                        failures[subject] = _failed(subject, RuntimeError(
                            f"its Ray worker died {engine.max_retries + 1} time(s): {first_line(err)}"), log)
            _show(ray.get(sink.take.remote()), bar, log)
        finally:  # interrupted: stop the folds still running (each resumes from its last epoch)
            for ref in running:
                ray.cancel(ref, force=True)
            ray.kill(sink)
    _raise_failures(failures, results, out)
    return results


def _failed(subject: str, err: BaseException, log) -> BaseException:
    log.line(f"fold {subject}: failed ({type(err).__name__}: {err})")
    log.line("".join(traceback.format_exception(err)), console=False)
    return err


def _raise_failures(failures: dict, results: dict, out: Path) -> None:
    if failures:
        raise UserError(f"{len(failures)} fold(s) failed: {', '.join(sorted(failures))} (see {out / 'train.log'}); "
                        f"{len(results)} finished. Run the same command again to resume the failed ones.")


def _drain(messages) -> list:
    """The messages in a multiprocessing queue now."""
    taken = []
    while True:
        try:
            taken.append(messages.get_nowait())
        except queue_module.Empty:
            return taken


def _show(messages, bar, log) -> None:
    """Pass the workers' messages on to the progress rows and the log."""
    for kind, key, *rest in messages:
        if kind == "start":
            bar.start_fold(rest[0], rest[1], key=key)
        elif kind == "epoch":
            bar.epoch(rest[0], rest[1], key=key)
        else:
            log.line(rest[0], console=rest[1])


class _Reporter:
    """A worker's stand-in for the driver's progress bar and log: `send` passes on what they
    would show (to a multiprocessing queue, or to the Ray actor the driver drains)."""

    def __init__(self, send, key: str):
        self.send, self.key = send, key

    def start_fold(self, label: str, k: int) -> None:
        self.send(("start", self.key, label, k))

    def epoch(self, done: int, loss: float) -> None:
        self.send(("epoch", self.key, done, loss))

    def line(self, text: str, console: bool = True) -> None:
        self.send(("line", self.key, text, console))


def _start_worker(config, out, folds, devices, slots, threads, messages, tensorboard, parent_pid) -> None:
    from flowcore.lifetime import die_with_parent
    from spotting.train import prepare

    die_with_parent(parent_pid)

    with slots.get_lock():
        slot = slots.value
        slots.value += 1
    torch.set_num_threads(threads)
    _WORKER.update(
        prep=prepare(config.store, config.annotations, config.windows), config=config, out=Path(out),
        folds=folds, device=torch.device(devices[slot % len(devices)]), tensorboard=tensorboard,
        reporter=_Reporter(messages.put, f"worker {slot}"),
    )


def _train_fold(subject: str):
    from spotting.train import train_one_fold

    w = _WORKER
    try:
        return train_one_fold(w["prep"], w["config"], w["out"], w["folds"], subject, w["device"], w["reporter"],
                              w["reporter"], w["tensorboard"])
    except KeyboardInterrupt:  # Ctrl-C: the pool's worker loop would go on with the next fold;
        os._exit(130)  # end this process now (every finished epoch is saved: the run resumes)


def _ray_fold_task(config, out: str, folds, subject: str, device: str, threads: int, sink, tensorboard: bool):
    """One fold in a Ray worker process (Ray gives it its GPU: the device is 'cuda' there)."""
    from spotting.train import prepare, train_one_fold

    torch.set_num_threads(threads)
    prep = prepare(config.store, config.annotations, config.windows)
    reporter = _Reporter(lambda message: sink.put.remote([message]), subject)
    return train_one_fold(prep, config, Path(out), folds, subject, torch.device(device), reporter, reporter,
                          tensorboard)
