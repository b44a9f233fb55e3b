"""The one job runner: independent tasks in this process, in local worker processes or as Ray
tasks, with progress messages, one failure per task, and a clean stop on Ctrl-C.

Extraction (one task per video, flowcore.batch) and LOSO training (one task per fold,
spotting.loso) both run through `run_tasks`. A job is a picklable callable
`function(payload, worker) -> result`; `worker` (a `Worker`) tells the task the device and the CPU
threads it was given, and its `report(message)` sends a small picklable message (a tuple) to the
driver's `on_message`. `run_tasks` yields one `Done` per task in the order they finish: the
task's result, or the error that ended it (an exception the task raised, or `WorkerLost` when its
process died); one failing task never stops the others.

Engines:
    None             this process, one task after the other; messages arrive at once, and an
                     exception ends the run as a plain call would.
    LocalProcesses   spawned worker processes (no fork: torch, dlib and CUDA hold threads and
                     locks), each with `threads` CPU threads and one of `devices`, shared out in
                     the order the processes start; a process runs task after task.
    RayEngine        one Ray task per task (flowcore.ray_engine), on a cluster.

Stopping gently: an exception the caller's code raises while it handles a Done (thrown into the
iterator by `stop_on_error`), or one its `on_message` raises in the driver, starts no task not
begun, lets the running worker processes finish theirs and then propagates (a cancelled service
job: the videos begun are complete). In this process no further task starts either; Ray
cancels the running tasks.

Ctrl-C: a local worker process ends at once (exit code 130) instead of going on with the next
task; the driver kills its workers (a Ctrl-C sent to it alone stops them too), cancels the tasks
not started and re-raises; on Ray the running tasks are cancelled. What the tasks saved (complete
videos, finished epochs) stays, so a rerun resumes.

Lifetime: local workers die with the driver (flowcore.lifetime.die_with_parent), however it
died (kill -9 included), so none goes on writing into a folder a rerun is already redoing.
"""

from __future__ import annotations

import multiprocessing
import os
import queue as queue_module
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Callable, Generator, Iterator

from flowcore.lifetime import die_with_parent

WAIT_SECONDS = 0.25  # the driver's polling period for results and messages (s)


@dataclass(frozen=True)
class Task:
    """One unit of work: `key` names it (a video id, a fold's subject), `payload` is what the
    job is called with."""

    key: str
    payload: object


@dataclass(frozen=True)
class Done:
    """A finished task: its result, or the error that ended it."""

    key: str
    result: object = None
    error: BaseException | None = None


class WorkerLost(RuntimeError):
    """The process running a task died (killed, out of memory, node lost); the message says how
    and that a rerun retries it."""


def _ignore(message) -> None:
    pass


@dataclass(frozen=True)
class Worker:
    """What a task is told about where it runs: its torch device ('cpu', 'cuda', 'cuda:1'), its
    CPU threads (0: as the process was) and `report`, the way to send a message to the driver."""

    device: str = "cpu"
    threads: int = 0
    report: Callable[[tuple], None] = _ignore


@dataclass(frozen=True)
class LocalProcesses:
    """Run tasks in `workers` spawned processes on this machine, each with `threads` CPU threads
    (OpenCV and torch) and one device of `devices`, given out in turn as the processes start."""

    workers: int
    threads: int = 1
    devices: tuple[str, ...] = ("cpu",)

    def __post_init__(self):
        if self.workers < 1 or self.threads < 1 or not self.devices:
            raise ValueError(f"workers and threads must be >= 1 and devices not empty, got {self}")

    def run_tasks(self, function, tasks: list[Task], on_message, on_note=None, limit=None,
                  name: str = "task", noun: str = "task", device: str = "cpu") -> Iterator[Done]:
        """Yield one Done per task as they finish (see the module docstring)."""
        context = multiprocessing.get_context("spawn")
        messages = context.Queue()
        slots = context.Value("i", 0)
        pool = ProcessPoolExecutor(min(self.workers, max(1, len(tasks))), mp_context=context,
                                   initializer=_start_worker,
                                   initargs=(slots, self.devices, self.threads, messages,
                                             os.getpid()))
        killed = False
        try:
            pending = {pool.submit(_run_in_worker, function, task.payload): task.key
                       for task in tasks}
            while pending:
                finished, _ = wait(pending, timeout=WAIT_SECONDS, return_when=FIRST_COMPLETED)
                _deliver(_drain(messages), on_message)
                for future in finished:
                    yield _outcome(pending.pop(future), future)
        except Exception:  # the caller's (stop_on_error, on_message): start no new task, let
            _finish_running(pool)  # the running ones finish (what they save is complete)
            raise
        except BaseException:  # Ctrl-C (or the caller gone): stop the running tasks now, not
            _kill_workers(pool)  # after every queued one is done
            killed = True
            raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
            if not killed:  # a killed worker may have left half a message: not read
                _deliver(_drain(messages), on_message)
            messages.close()


def run_tasks(function, tasks: list[Task], engine=None, *, device: str = "cpu",
              on_message: Callable[[tuple], None] | None = None,
              on_note: Callable[[str], None] | None = None, limit: int | None = None,
              name: str = "task", noun: str = "task") -> Iterator[Done]:
    """Run `function(task.payload, worker)` for every task on `engine` (None: in this process,
    on `device`); yield one Done per task in the order they finish.

    on_message: called in this process with each message a task reports. on_note: called with
    a line about the engine (a Ray cluster's size). limit: with Ray, the most tasks at once
    (None: as the cluster's resources allow). name, noun: with Ray, the tasks are named
    `mespot-<name>:<key>`, and the line about the cluster counts them as `noun`s.
    """
    on_message = on_message or _ignore
    if engine is None:
        worker = Worker(device, 0, on_message)
        for task in tasks:
            yield Done(task.key, function(task.payload, worker))
        return
    yield from engine.run_tasks(function, tasks, on_message, on_note=on_note, limit=limit,
                                name=name, noun=noun, device=device)


def stop_on_error(runs: Generator[Done, None, None], call: Callable, *args) -> None:
    """`call(*args)` while consuming `runs` (a run_tasks iterator); an Exception it raises (not
    Ctrl-C) is thrown into `runs` first, which stops gently: no task not yet begun starts, the
    running ones finish (in this process: the task just done was the last), then the exception
    propagates. A service cancels a job this way from its progress display."""
    try:
        call(*args)
    except Exception as err:
        runs.throw(err)  # re-raises err once the running tasks are over
        raise


def limit_threads(threads: int) -> None:
    """Let OpenCV and torch use `threads` threads in this process (workers share the cores)."""
    import cv2
    import torch

    cv2.setNumThreads(threads)
    torch.set_num_threads(threads)


def first_line(err: BaseException) -> str:
    """The first line of an error's message (its repr when the message is empty)."""
    text = str(err).strip() or repr(err)
    return text.splitlines()[0]


def _finish_running(pool: ProcessPoolExecutor) -> None:
    """Cancel the tasks not started and wait for the running ones (Ctrl-C meanwhile: kill)."""
    try:
        pool.shutdown(wait=True, cancel_futures=True)
    except BaseException:
        _kill_workers(pool)
        raise


def _kill_workers(pool: ProcessPoolExecutor) -> None:
    """Kill the pool's worker processes (what their tasks saved stays; a rerun resumes).

    A worker killed (or interrupted by the same Ctrl-C) while it writes a result leaves half a
    message in the pool's result pipe, and the pool's reader thread would wait for the rest for
    ever: `shutdown`, and the interpreter's exit, would hang (seen once in 12 rounds of the Ctrl-C
    test with every core loaded). This process's end of that pipe is the last writer once the
    workers are dead: closing it turns the half message into the end of the pipe, which the pool
    reads as broken, and shutdown returns."""
    processes = list((pool._processes or {}).values())
    for process in processes:
        process.kill()
    for process in processes:
        process.join()
    writer = getattr(getattr(pool, "_result_queue", None), "_writer", None)
    if writer is not None:  # CPython's ProcessPoolExecutor (3.9 to 3.13) keeps it there
        writer.close()


def _deliver(messages, on_message) -> None:
    for message in messages:
        on_message(message)


def _drain(messages) -> list:
    """The messages in a multiprocessing queue now."""
    taken = []
    while True:
        try:
            taken.append(messages.get_nowait())
        except (queue_module.Empty, OSError, ValueError):
            return taken


def _outcome(key: str, future) -> Done:
    try:
        return Done(key, future.result())
    except BrokenProcessPool as err:
        return Done(key, error=WorkerLost(f"the worker process died ({err}); rerun to retry"))
    except Exception as err:
        return Done(key, error=err)


# ---- inside the local worker processes -----------------------------------------------------------

_WORKER: dict = {}  # this worker process's Worker, set once by _start_worker


def _start_worker(slots, devices, threads: int, messages, parent_pid: int) -> None:
    die_with_parent(parent_pid)
    with slots.get_lock():
        slot = slots.value
        slots.value += 1
    limit_threads(threads)
    _WORKER["worker"] = Worker(devices[slot % len(devices)], threads, messages.put)


def _run_in_worker(function, payload):
    try:
        return function(payload, _WORKER["worker"])
    except KeyboardInterrupt:  # Ctrl-C: the pool's worker loop would go on with the next task;
        os._exit(130)  # end this process now (what the task saved stays: a rerun resumes)
