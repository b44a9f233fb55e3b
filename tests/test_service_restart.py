"""A stop (SIGTERM) and a kill -9 of `mespot serve` during a running extraction, each followed
by a restart: the job resumes through the store's own resume, nothing is marked done that is
not, and no video is worked on by two processes at once. The videos are held at the test hook's
gates and let through one at a time, so the stop and the kill come mid-job."""

import os

import pytest
import zarr
from waiting import DEADLINE, wait_until

from flowcore.store import video_statuses
from mespot.service.jobs import JobStore
from mespot.service.scheduler import group_members
from mespot.service.testing import start_server
from mespot.synth import SMALL, generate_dataset


def _statuses(store) -> dict:
    """Read while the job's workers write (a video begun is deleted and created afresh)."""
    return video_statuses(store)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return not open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] == "Z"


def _complete(store) -> int:
    return sum(s == "complete" for s in _statuses(store).values())


@pytest.mark.slow
def _one_more_video(store, gates) -> int:
    """Let one held video through and wait until it is complete; the complete count."""
    seen = _complete(store)
    point, _ = gates.arrival("extract-*", what="the job's next video is held")
    gates.let_through(point)
    wait_until(lambda: _complete(store) > seen, f"{point} is complete")
    gates.arrival("extract-*", what="the video after it is held")
    return seen + 1


@pytest.mark.slow
def test_stop_then_kill_9_during_an_extraction_then_restart_resumes_the_job(tmp_path, gates):
    data, stores, home = tmp_path / "data", tmp_path / "stores", tmp_path / "home"
    stores.mkdir()
    generate_dataset(SMALL.replace(subjects=3, videos_per_subject=2, seconds=1.0), data / "six",
                     preview=False, workers=1)
    flags = ("--lease-seconds", "3")  # all cores: a pool of worker processes
    gates.hold("extract-*")
    server = start_server(home, data, stores, *flags, env=gates.environ())
    job_id = server.client().submit("extract", {"source": "six", "store": "six.zarr",
                                                "resize": 64})["id"]
    store, jobs = stores / "six.zarr", JobStore(home / "jobs.sqlite")
    assert _one_more_video(store, gates) == 1

    server.stop()  # SIGTERM (systemctl stop, docker stop): the job goes back to the queue
    stopped = jobs.get(job_id)
    assert stopped.state == "queued" and stopped.attempts == 1, stopped
    assert "server stopped" in (home / "jobs" / str(job_id) / "log.txt").read_text()

    server = start_server(home, data, stores, *flags, env=gates.environ())
    wait_until(lambda: jobs.get(job_id).state == "running" and jobs.get(job_id).pid,
               "the job runs again after the restart")
    assert _one_more_video(store, gates) == 2
    # its progress counts the video complete before the stop, and the one just complete once
    # the runner has its result (the store says complete a moment before: written first)
    resumed = wait_until(lambda: (lambda j: j if j.done >= 2 * 30 else None)(jobs.get(job_id)),
                         "the job's progress counts both complete videos")
    assert resumed.total == 6 * 30 and resumed.done < resumed.total, resumed
    runner = jobs.get(job_id).pid
    server.process.kill()  # SIGKILL: no cleanup of any kind
    server.process.wait(DEADLINE)
    wait_until(lambda: not _alive(runner), "the runner dies with the server")
    complete_before = _complete(store)
    assert complete_before == 2  # the held videos never finished
    crashed = jobs.get(job_id)
    assert crashed.state == "running" and crashed.attempts == 2  # not marked done

    gates.open_all()
    restarted = start_server(home, data, stores, *flags, env=gates.environ())
    try:
        job = restarted.client().wait(job_id, timeout=DEADLINE)
        assert job["state"] == "done", job
        assert job["attempts"] == 3
        result = job["result"]
        assert result["failed"] == 0 and result["busy"] == 0  # no video held by two processes
        assert result["complete"] + result["skipped"] == 6
        assert result["skipped"] >= complete_before  # resumed, not redone
        after = _statuses(store)
        assert len(after) == 6 and set(after.values()) == {"complete"}
        group = zarr.open_group(str(store), mode="r")
        for video in after:
            assert group[f"videos/{video}/mdmo"].shape == (29, 12, 2)
        assert group_members(runner) == []  # the killed runner's workers are gone
        log = restarted.client().log(job_id)
        assert "server restarted" in log and "attempt 3" in log
        assert restarted.client().jobs("running") == []
    finally:
        restarted.stop()
