"""One job in its own process: `python -m mespot.service.runner HOME JOB OWNER SLOT PARENT`.

The scheduler starts it in a new process group (so cancel and recovery can end the job's worker
processes too). It dies with the server (flowcore.lifetime), renews the job's lease every
HEARTBEAT_S while it works, and writes the job's final state itself; every write names the
lease's owner, so a runner whose lease was taken from it changes nothing.

Cancel: a watcher thread looks for the request every CANCEL_POLL_S and interrupts the work at
once as Ctrl-C would (SIGINT to this process): the library's own Ctrl-C path kills the worker
processes, keeps every video or epoch already complete, and leaves the one interrupted to be
redone by the store's or the run's resume. The job ends "cancelled", written by this runner.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
import traceback
from pathlib import Path

from flowcore import testhooks
from flowcore.errors import UserError
from flowcore.lifetime import die_with_parent
from mespot.service import tasks
from mespot.service.config import CANCEL_POLL_S, HEARTBEAT_S, PROGRESS_EVERY_S, from_json
from mespot.service.jobs import JobStore
from mespot.service.roots import PathRefused, Roots

class RunnerContext(tasks.Context):
    """tasks.Context backed by the job store: throttled progress, the log file, the lease."""

    def __init__(self, store: JobStore, job, owner: str, slot: dict, config):
        self.store, self.job_id, self.owner, self.lease_s = store, job.id, owner, config.lease_s
        self.device, self.cores = slot["device"], slot["cores"]
        self.folder = config.job_folder(job.id)
        self.roots = Roots(config.data_root, config.store_root)
        self.uploads = config.uploads
        self.engine = None
        if config.engine == "ray":
            self.engine = tasks.ray_engine(config.ray_address, self.device)
        self._cancel = threading.Event()
        self._lost = threading.Event()
        self._last = 0.0
        self._started = time.monotonic()
        self._first = None  # (time, done) of the first progress: the rate excludes start-up

    def log(self, line: str) -> None:
        with open(self.folder / "log.txt", "a") as handle:
            handle.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {line}\n")

    def progress(self, done, total, unit, message="", force=False) -> None:
        now = time.monotonic()
        if not force and now - self._last < PROGRESS_EVERY_S:
            return
        self._last = now
        if self._first is None:
            self._first = (now, done)
        elapsed, gained = now - self._first[0], done - self._first[1]
        rate = gained / elapsed if elapsed > 0.5 and gained > 0 else None
        eta = (total - done) / rate if rate else None
        self.store.progress(self.job_id, self.owner, done, total, unit, rate, eta, message)

    def frames_extracted(self, frames: int) -> None:
        self.store.add_frames(self.job_id, self.owner, frames)

    def cancelled(self) -> bool:
        return self._cancel.is_set()

    def heartbeat_forever(self) -> None:
        """Renew the lease every HEARTBEAT_S; look for a cancel request every CANCEL_POLL_S and
        interrupt the work when there is one; end the process if the lease is lost."""
        last = time.monotonic()
        while True:
            time.sleep(CANCEL_POLL_S)
            now = time.monotonic()
            if now - last >= HEARTBEAT_S:
                held, cancel = self.store.heartbeat(self.job_id, self.owner, self.lease_s,
                                                    now - last)
                last = now
                if not held:
                    self.log("lease lost (the server gave the job to another runner): stopping")
                    os._exit(4)
            else:
                cancel = self.store.cancel_asked(self.job_id)
            if cancel and not self._cancel.is_set():
                self._cancel.set()  # before the log line: a reader of the log may rely on it
                self.log("cancel requested: stopping now (what is complete stays)")
                os.kill(os.getpid(), signal.SIGINT)  # the library's Ctrl-C path stops the work


def run_job(home: Path, job_id: int, owner: str, slot: dict) -> int:
    config = from_json(json.loads((home / "service.json").read_text()))
    store = JobStore(config.database)
    job = store.get(job_id)
    if job is None or job.owner != owner or job.state != "running":
        return 4
    ctx = RunnerContext(store, job, owner, slot, config)
    ctx.log(f"runner {os.getpid()} on {slot['name']} ({slot['device']}, {slot['cores']} core(s)), "
            f"attempt {job.attempts}")
    # a cancel arrives as SIGINT: heard even where the server was started with SIGINT ignored
    # (`nohup mespot serve &`: children inherit the ignored signal, Python keeps it)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    threading.Thread(target=ctx.heartbeat_forever, daemon=True).start()
    try:
        outcome = _outcome(job, ctx)
    except KeyboardInterrupt as stop:  # a cancel that came as the work was ending
        if not ctx.cancelled():
            raise
        outcome = tasks.Outcome("cancelled", cancelled_message(job.kind, stop))
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the work is over: no more interrupts
    testhooks.gate(f"end-job-{job_id}")  # a test may hold it here: work over, state unwritten
    files = {"log.txt": str(ctx.folder / "log.txt"), **outcome.files}
    error = f" - {outcome.error}" if outcome.error else ""
    ctx.log(f"{outcome.state}: {outcome.message}{error}")
    store.finish(job_id, owner, outcome.state, outcome.message, outcome.error, files,
                 outcome.result)
    return 0


def _outcome(job, ctx: RunnerContext) -> tasks.Outcome:
    """Run the job; how it ended (a cancel interrupts it with KeyboardInterrupt)."""
    try:
        testhooks.gate(f"job-{job.id}")  # a test may hold the job here
        return tasks.run(job.kind, job.params, ctx)
    except tasks.JobCancelled as stop:
        return tasks.Outcome("cancelled", str(stop))
    except KeyboardInterrupt as stop:
        if not ctx.cancelled():
            raise
        return tasks.Outcome("cancelled", cancelled_message(job.kind, stop))
    except (UserError, PathRefused) as err:
        return tasks.Outcome("failed", "failed", str(err))
    except Exception as err:  # noqa: BLE001 - any other failure ends this job, not the queue
        ctx.log(traceback.format_exc())
        return tasks.Outcome("failed", "failed", f"{type(err).__name__}: {err} (see the log)")


def cancelled_message(kind: str, stop: KeyboardInterrupt) -> str:
    """What a cancel left: the library's own summary (an extraction's) or what resumes."""
    kept = {"extract": "the complete videos stay in the store; the interrupted one is redone "
                       "when the store is extracted again",
            "train": "the run keeps its finished epochs and resumes from the last one"}
    said = str(stop).strip()
    return said or kept.get(kind, "stopped on request")


def main(argv: list[str] | None = None) -> int:
    home, job_id, owner, slot, parent = (argv or sys.argv[1:])[:5]
    die_with_parent(int(parent))
    slot = json.loads(slot)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    if slot["device"] == "cpu":
        import torch

        torch.set_num_threads(slot["cores"])
    return run_job(Path(home), int(job_id), owner, slot)


if __name__ == "__main__":
    sys.exit(main())
