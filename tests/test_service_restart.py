"""kill -9 of `mespot serve` during a running extraction, then a restart: the job resumes
through the store's own resume, nothing is marked done that is not, and no video is worked on
by two processes at once."""

import os

import pytest
import zarr

from mespot.service.jobs import JobStore
from mespot.service.scheduler import group_members
from mespot.synth import SMALL, generate_dataset
from mespot.service.testing import start_server, wait_for


def _statuses(store) -> dict:
    if not (store / "zarr.json").exists():
        return {}
    group = zarr.open_group(str(store), mode="r")
    return {k: group[f"videos/{k}"].attrs.get("status") for k in group.get("videos", {})}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return not open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] == "Z"


@pytest.mark.slow
def test_kill_9_during_an_extraction_then_restart_resumes_the_job(tmp_path):
    data, stores, home = tmp_path / "data", tmp_path / "stores", tmp_path / "home"
    stores.mkdir()
    generate_dataset(SMALL.replace(subjects=3, videos_per_subject=2, seconds=1.0), data / "six",
                     preview=False, workers=1)
    server = start_server(home, data, stores, "--lease-seconds", "3")  # all cores: a worker pool
    job_id = server.client().submit("extract", {"source": "six", "store": "six.zarr", "resize": 64})["id"]
    store = stores / "six.zarr"
    wait_for(lambda: "complete" in _statuses(store).values(), 600, what="a first complete video")
    runner = JobStore(home / "jobs.sqlite").get(job_id).pid
    server.process.kill()  # SIGKILL: no cleanup of any kind
    server.process.wait()
    wait_for(lambda: not _alive(runner), 10, what="the runner to die with the server")
    before = _statuses(store)
    complete_before = sorted(v for v, s in before.items() if s == "complete")
    assert len(complete_before) < 6, "the job ended before the kill; make the videos longer"
    crashed = JobStore(home / "jobs.sqlite").get(job_id)
    assert crashed.state == "running" and crashed.attempts == 1  # not marked done

    restarted = start_server(home, data, stores, "--lease-seconds", "3")
    try:
        job = restarted.client().wait(job_id, timeout=900)
        assert job["state"] == "done", job
        assert job["attempts"] == 2
        result = job["result"]
        assert result["failed"] == 0 and result["busy"] == 0  # no video held by two processes
        assert result["complete"] + result["skipped"] == 6
        assert result["skipped"] >= len(complete_before)  # resumed, not redone
        after = _statuses(store)
        assert len(after) == 6 and set(after.values()) == {"complete"}
        group = zarr.open_group(str(store), mode="r")
        for video in after:
            assert group[f"videos/{video}/mdmo"].shape == (29, 12, 2)
        assert group_members(runner) == []  # the old runner's workers are gone
        log = restarted.client().log(job_id)
        assert "server restarted" in log and "attempt 2" in log
        assert restarted.client().jobs("running") == []
    finally:
        restarted.stop()
