"""The job runner (flowcore.jobs): results, failures and messages, in this process and in
worker processes; extraction and LOSO training use it (their own tests cover Ray and Ctrl-C)."""

import os

import pytest

from flowcore.jobs import Done, LocalProcesses, Task, WorkerLost, run_tasks


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
