"""Slots take jobs in order and run each in a runner process; recovery after a crash.

One thread per slot (a GPU, or a group of CPU cores): claim the oldest runnable job, start
`mespot.service.runner` for it in a new process group, wait, and see that the job ends in a
final state even when the runner dies. A cancelled runner that does not stop by itself
within `cancel_grace_s` is killed with its group. Recovery (at start, then every few seconds)
gives back to the queue the running jobs no live runner holds: after `kill -9` of the server
their runners died with it, and the restarted server resumes them through the store's and
the run's own resume.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

from mespot.service.config import ServiceConfig, Slot
from mespot.service.jobs import JobStore

IDLE_POLL_S = 0.25  # a free slot looks for a new job this often
WATCH_POLL_S = 0.2  # a busy slot checks its runner this often
STOP_SIGNAL_WAIT_S = 3.0  # a runner ended by SIGTERM: time for the server's own stop to show


def job_log(config: ServiceConfig, job_id: int, line: str) -> None:
    folder = config.job_folder(job_id)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "log.txt", "a") as handle:
        handle.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {line}\n")


def group_members(pgid: int) -> list[int]:
    """Live processes of process group `pgid` that are mespot runners or their workers
    (Linux /proc; elsewhere none)."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            cmdline = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ")
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] != "Z" and (
                b"mespot.service.runner" in cmdline or b"multiprocessing" in cmdline):
            members.append(int(stat.parent.name))
    return members


def kill_group(pgid: int, timeout: float = 10.0) -> None:
    """SIGKILL what is left of a runner's process group and wait until it is gone."""
    deadline = time.monotonic() + timeout
    while (members := group_members(pgid)) and time.monotonic() < deadline:
        for pid in members:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.05)


class Scheduler:
    def __init__(self, config: ServiceConfig, store: JobStore):
        self.config, self.store = config, store
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        # slot -> job, owner, runner
        self._active: dict[str, tuple[int, str, subprocess.Popen]] = {}
        self._lock = threading.Lock()

    # ---- life ----------------------------------------------------------------------------------

    def start(self) -> None:
        self.recover()
        for slot in self.config.slots:
            self._threads.append(threading.Thread(target=self._slot_loop, args=(slot,),
                                                  name=f"slot-{slot.name}", daemon=True))
        self._threads.append(threading.Thread(target=self._recover_loop, daemon=True))
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        """End the runners (their jobs go back to the queue and resume at the next start)."""
        self._stop.set()
        with self._lock:
            active = list(self._active.values())
        for job_id, owner, runner in active:
            _signal_group(runner.pid, signal.SIGTERM)
        for thread in self._threads:
            thread.join(timeout=15)

    def owners(self) -> set[str]:
        with self._lock:
            return {owner for _, owner, _ in self._active.values()}

    # ---- recovery ------------------------------------------------------------------------------

    def recover(self) -> list[int]:
        """Requeue running jobs held by no runner of this server whose runner is gone or whose
        lease ran out; return their ids."""
        mine, now, requeued = self.owners(), time.time(), []
        for job in self.store.running():
            if job.owner in mine:
                continue
            expired = job.lease_until is None or job.lease_until < now
            gone = job.pid is not None and not _alive(job.pid)
            if not (expired or gone):
                continue  # a runner of an earlier server may still be working: its lease says so
            if job.pid is not None:
                kill_group(job.pid)  # its worker processes outlive a killed runner
            note = ("the server restarted or the runner was lost; the job goes back to the "
                    "queue and resumes from what its store or run folder already holds")
            if self.store.requeue(job.id, job.owner, "resuming after a restart"):
                job_log(self.config, job.id, note)
                requeued.append(job.id)
        return requeued

    def _recover_loop(self) -> None:
        while not self._stop.wait(max(self.config.lease_s / 3, 0.5)):
            self.recover()

    # ---- slots ---------------------------------------------------------------------------------

    def _slot_loop(self, slot: Slot) -> None:
        while not self._stop.is_set():
            owner = f"{os.uname().nodename}:{os.getpid()}:{slot.name}:{uuid.uuid4().hex[:12]}"
            job = self.store.claim(slot.name, slot.device, owner, self.config.lease_s)
            if job is None:
                self._stop.wait(IDLE_POLL_S)
                continue
            try:
                self._run(slot, job, owner)
            except Exception as err:  # noqa: BLE001 - the slot goes on with the next job
                self.store.finish(job.id, owner, "failed", "failed", f"could not run: {err}")

    def _run(self, slot: Slot, job, owner: str) -> None:
        folder = self.config.job_folder(job.id)
        folder.mkdir(parents=True, exist_ok=True)
        job_log(self.config, job.id, f"started on slot {slot.name} (attempt {job.attempts})")
        env = dict(os.environ, OMP_NUM_THREADS=str(slot.cores), PYTHONUNBUFFERED="1")
        if slot.gpu is not None:
            env["CUDA_VISIBLE_DEVICES"] = str(slot.gpu)
        command = [sys.executable, "-m", "mespot.service.runner", str(self.config.home),
                   str(job.id), owner, json.dumps(vars(slot)), str(os.getpid())]
        with open(folder / "log.txt", "ab") as log:
            runner = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log,
                                      stderr=subprocess.STDOUT, env=env, start_new_session=True)
        self.store.set_pid(job.id, owner, runner.pid)
        with self._lock:
            self._active[slot.name] = (job.id, owner, runner)
        try:
            code = self._watch(job.id, runner)
        finally:
            with self._lock:
                self._active.pop(slot.name, None)
            kill_group(runner.pid, timeout=5.0)  # worker processes left behind
        self._after(job.id, owner, code)

    def _watch(self, job_id: int, runner: subprocess.Popen) -> int:
        """Wait for the runner; kill its group when a cancel was not obeyed in time."""
        asked, killed = None, False
        while (code := runner.poll()) is None:
            time.sleep(WATCH_POLL_S)
            if self._stop.is_set():
                continue  # stop() signalled the group; wait for it to end
            job = self.store.get(job_id)
            if job is not None and job.cancel and not killed:
                asked = asked or time.monotonic()
                if time.monotonic() - asked > self.config.cancel_grace_s:
                    killed = True
                    job_log(self.config, job_id, f"the runner did not stop within "
                            f"{self.config.cancel_grace_s:g} s of the cancel: killed")
                    _signal_group(runner.pid, signal.SIGKILL)
        return code

    def _after(self, job_id: int, owner: str, code: int) -> None:
        """A runner ended: make sure its job is in a final state (or queued again on stop)."""
        job = self.store.get(job_id)
        if job is None or job.state != "running" or job.owner != owner:
            return  # the runner wrote the final state itself
        if code == -signal.SIGTERM:  # e.g. systemd stopping the whole group: the server is next
            self._stop.wait(STOP_SIGNAL_WAIT_S)
        if self._stop.is_set():
            self.store.requeue(job_id, owner, "server stopped; resumes at the next start")
            job_log(self.config, job_id, "server stopped: the job resumes at the next start")
            return
        how = f"signal {-code}" if code < 0 else f"exit code {code}"
        if job.cancel:
            self.store.finish(job_id, owner, "cancelled", f"cancelled (runner ended by {how})")
        else:
            self.store.finish(job_id, owner, "failed", "failed",
                              f"the runner process ended without a result ({how}); see the log",
                              {"log.txt": str(self.config.job_folder(job_id) / "log.txt")})


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass
