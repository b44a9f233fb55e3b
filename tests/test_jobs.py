"""The job runner (flowcore.jobs): results, failures and messages, in this process and in
worker processes; extraction and LOSO training use it (their own tests cover Ray and Ctrl-C)."""

import os
import time
from pathlib import Path

import pytest
from waiting import wait_until

from flowcore.jobs import Done, LocalProcesses, Task, WorkerLost, run_tasks, stop_on_error


def square(payload, worker):
    """A job: reports where it ran, fails on request, dies on request."""
    if payload == "raise":
        raise ValueError("bad payload")
    if payload == "die":
        os._exit(3)  # as a killed process: no exception, no result
    worker.report(("ran", payload, worker.device, worker.threads))
    return payload * payload


def test_in_process_runs_in_order_and_delivers_messages_at_once():
    messages = []
    done = list(run_tasks(square, [Task("a", 2), Task("b", 3)], device="cuda:7",
                          on_message=messages.append))
    assert done == [Done("a", 4), Done("b", 9)]
    assert messages == [("ran", 2, "cuda:7", 0), ("ran", 3, "cuda:7", 0)]
    with pytest.raises(ValueError, match="bad payload"):  # as a plain call would
        list(run_tasks(square, [Task("x", "raise")]))


@pytest.mark.slow  # spawns worker processes (a few seconds)
def test_worker_processes_share_out_devices_and_report_each_failure():
    messages = []
    engine = LocalProcesses(workers=2, threads=1, devices=("cpu", "meta"))
    tasks = [Task("one", 1), Task("bad", "raise"), Task("two", 2), Task("three", 3)]
    done = {d.key: d for d in run_tasks(square, tasks, engine, on_message=messages.append)}
    assert {k: d.result for k, d in done.items() if d.error is None} == {"one": 1, "two": 4,
                                                                        "three": 9}
    assert isinstance(done["bad"].error, ValueError)  # one failure does not stop the others
    assert sorted(m[1] for m in messages) == [1, 2, 3]
    assert {m[2] for m in messages} <= {"cpu", "meta"} and {m[3] for m in messages} == {1}


@pytest.mark.slow
def test_a_dead_worker_process_is_a_lost_task():
    done = list(run_tasks(square, [Task("dies", "die")], LocalProcesses(workers=1)))
    assert len(done) == 1 and isinstance(done[0].error, WorkerLost)
    assert "rerun to retry" in str(done[0].error)


FINISH_SECONDS = 0.5  # a released task's remaining work: the stop is a few statements away


def marked(payload, worker):
    """A job that marks its start and its end in folder `payload[0]`. With `payload[2]` (gated),
    task "t0" ends as soon as another task has started, and the others wait for the file
    `stopping` (the caller's stop) and then work a little more, so one is mid-task when t0
    ends and none ends before the stop."""
    folder, key, gated = Path(payload[0]), payload[1], payload[2]
    (folder / f"{key}.started").touch()
    if gated and key == "t0":
        wait_until(lambda: len(list(folder.glob("*.started"))) > 1, "another task started")
    elif gated:
        wait_until((folder / "stopping").exists, "the caller's stop")
        time.sleep(FINISH_SECONDS)
    (folder / f"{key}.done").touch()
    return key


class Cancel(Exception):
    pass


def refuse(done):
    raise Cancel(done.key)


def test_an_error_thrown_in_in_process_runs_no_further_task(tmp_path):
    tasks = [Task(k, (str(tmp_path), k, False)) for k in ("t1", "t2", "t3")]
    runs = run_tasks(marked, tasks)
    with pytest.raises(Cancel, match="t1"):
        for done in runs:
            stop_on_error(runs, refuse, done)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t1.done", "t1.started"]


@pytest.mark.slow  # spawns worker processes (a few seconds)
def test_an_error_thrown_in_lets_the_running_tasks_finish_and_starts_no_other(tmp_path):
    keys = [f"t{k}" for k in range(10)]
    tasks = [Task(k, (str(tmp_path), k, True)) for k in keys]
    runs = run_tasks(marked, tasks, LocalProcesses(2))

    def stop(done):
        (tmp_path / "stopping").touch()  # the tasks begun may end now: none could before
        refuse(done)

    with pytest.raises(Cancel, match="t0"):
        for done in runs:
            stop_on_error(runs, stop, done)
    started = {p.stem for p in tmp_path.glob("*.started")}
    finished = {p.stem for p in tmp_path.glob("*.done")}
    assert "t0" in finished and len(started) >= 2  # t0 ended while another task was running
    assert started == finished  # none killed mid-task
    # t0, the one beside it and those already in the pool's call queue (workers + 1)
    assert len(started) <= 1 + 2 + 3 < len(keys), started


def half_a_result(payload, worker):
    """A job that leaves half a message in the pool's result pipe, as a worker killed while it
    writes its result does, then says so and waits to be killed."""
    import struct
    import sys

    frame = sys._getframe()
    while frame.f_code.co_name != "_process_worker":  # the pool's worker loop holds the pipe
        frame = frame.f_back
    writer = frame.f_locals["result_queue"]._writer
    os.write(writer.fileno(), struct.pack("!i", 1000) + b"only ten b")  # 1000 bytes promised
    worker.report(("half written",))
    time.sleep(600)


def interrupt_at_half_result(message):
    if message == ("half written",):
        raise KeyboardInterrupt  # the driver's Ctrl-C


INTERRUPT_AT_HALF_RESULT = """
import sys
sys.path.insert(0, {tests!r})
from test_jobs import half_a_result, interrupt_at_half_result
from flowcore.jobs import LocalProcesses, Task, run_tasks
try:
    list(run_tasks(half_a_result, [Task("a", 1)], LocalProcesses(workers=1),
                   on_message=interrupt_at_half_result))
except KeyboardInterrupt:
    print("stopped")
"""


@pytest.mark.slow
def test_ctrl_c_returns_when_a_killed_worker_left_half_a_result(tmp_path):
    """The pool's reader thread has read the half message and waits for the rest: without the
    runner closing the pipe's last writer, the stop (and the interpreter's exit) would hang."""
    import subprocess
    import sys

    from waiting import DEADLINE

    script = INTERRUPT_AT_HALF_RESULT.format(tests=str(Path(__file__).parent))
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=DEADLINE, cwd=tmp_path)
    assert done.returncode == 0 and done.stdout.strip() == "stopped", done.stderr[-2000:]
