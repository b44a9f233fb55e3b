"""Cancelling a running extraction through `mespot serve`: it stops at once (the runner
interrupts its work as Ctrl-C would, no grace period, no kill), shows "cancelling" until its
runner has stopped, keeps the videos complete, and the interrupted video is redone by the next
extraction of the store, whose progress counts the videos already there. The videos wait at the
test hook's gates, so the cancel always comes while one is in progress."""

from __future__ import annotations

import re

import pytest
from waiting import DEADLINE, alive, wait_until

from flowcore.store import video_statuses
from mespot.service.testing import start_server

FLAGS = ("--cores-per-slot", "2", "--lease-seconds", "5")  # 2 cores: worker processes


@pytest.fixture(scope="module")
def pool_server(service_lab, tmp_path_factory, module_gates):
    home = tmp_path_factory.mktemp("cancel") / "home"
    running = start_server(home, service_lab["data"], service_lab["stores"], *FLAGS,
                           env=module_gates.environ())
    yield running
    running.stop()


def _statuses(store) -> dict:
    """Read while the job's workers write (a video begun is deleted and created afresh)."""
    return video_statuses(store)


def _lines(log: str) -> list[str]:
    """The log's lines without their time stamps."""
    return [re.sub(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d ", "", line) for line in log.splitlines()]


@pytest.mark.slow
def test_cancel_interrupts_the_video_in_progress_keeps_the_complete_ones_and_resumes(
        pool_server, service_lab, module_gates):
    client, gates = pool_server.client(), module_gates
    store = service_lab["stores"] / "cancel" / "tiny.zarr"
    job = {"source": "tiny", "store": "cancel/tiny.zarr", "resize": 64}
    gates.hold("extract-*")
    try:
        job_id = client.submit("extract", job)["id"]
        gates.hold(f"end-job-{job_id}")
        first, _ = gates.arrival("extract-*", what="the first video is held")
        gates.let_through(first)
        wait_until(lambda: _statuses(store).get(first.split("-", 1)[1]) == "complete",
                   "the first video is complete")
        second, worker = gates.arrival("extract-*", what="the second video is held")
        answer = client.cancel(job_id)
        assert answer["state"] == "cancelling" and answer["cancel_requested"]
        gates.arrival(f"end-job-{job_id}", what="the runner has stopped its work")
        assert client.job(job_id)["state"] == "cancelling"  # until the runner writes its end
        assert [j["id"] for j in client.jobs("cancelling")] == [job_id]
        assert not alive(worker)  # the worker of the video in progress was stopped, not awaited
        gates.let_through(f"end-job-{job_id}")
        cancelled = client.wait(job_id, timeout=DEADLINE, every=0.2)
    finally:
        gates.open_all()
    assert cancelled["state"] == "cancelled", cancelled
    assert "1 of 2 videos are complete" in cancelled["progress"]["message"]
    statuses = _statuses(store)
    assert statuses[first.split("-", 1)[1]] == "complete"
    assert statuses.get(second.split("-", 1)[1]) != "complete"  # interrupted, not finished
    log = client.log(job_id)
    lines = _lines(log)
    assert len(lines) == len(set(lines)), log  # each line once
    assert "killed" not in log and "leaked" not in log and "Traceback" not in log, log
    assert any(line.startswith("cancel requested") for line in lines)

    gates.hold("extract-*")  # the resumed job: its progress counts the video already complete
    try:
        again = client.submit("extract", job)["id"]
        gates.arrival("extract-*", what="the resumed job's video is held")
        progress = client.job(again)["progress"]
        assert progress["total"] == 120 and progress["done"] >= 60, progress
    finally:
        gates.open_all()
    done = client.wait(again, timeout=DEADLINE, every=0.2)
    assert done["state"] == "done", done
    assert done["result"]["skipped"] == 1 and done["result"]["complete"] == 1
    assert done["progress"]["done"] == done["progress"]["total"] == 120
    assert set(_statuses(store).values()) == {"complete"}
    assert "leaked" not in client.log(again)


@pytest.mark.slow
def test_cancel_interrupts_a_training_which_resumes_from_its_last_epoch(pool_server,
                                                                        module_gates):
    client, gates = pool_server.client(), module_gates
    body = {"store": "tiny.zarr", "annotations": "tiny/ground_truth.csv", "run": "cancel/run",
            "epochs": 3, "batch_size": 2}
    gates.hold("train-*-epoch-1")
    try:
        job_id = client.submit("train", body)["id"]
        gates.arrival("train-*-epoch-1", what="a fold's first epoch is saved")
        assert client.cancel(job_id)["state"] == "cancelling"
        cancelled = client.wait(job_id, timeout=DEADLINE, every=0.2)
    finally:
        gates.open_all()
    assert cancelled["state"] == "cancelled", cancelled
    assert "resumes from the last one" in cancelled["progress"]["message"]
    assert "killed" not in client.log(job_id)
    again = client.clone(job_id)
    done = client.wait(again["id"], timeout=DEADLINE, every=0.2)
    assert done["state"] == "done", client.log(again["id"])
    assert [f["subject"] for f in done["result"]["folds"]] and done["progress"]["done"] == 6
