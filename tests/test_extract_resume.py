"""Kill a running `mespot extract` (SIGKILL, worker processes included) and rerun it: the store
equals an uninterrupted in-process run bit for bit, and no unfinished video is ever "complete".
The work is held at the test hook's gates (tests/waiting.py), so the kill comes mid-run."""

import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
import zarr
from waiting import DEADLINE, wait_until

from flowcore.batch import run_extraction
from flowcore.extract import ExtractParams, RunOptions
from flowcore.faces import FaceParams
from flowcore.sources import open_source
from flowcore.testhooks import ENVIRONMENT
from mespot.testing import write_casme2

VIDEOS = {f"15_0{code}x": 10 for code in ("101", "102", "401", "402", "502", "503")}
ARRAYS = ("mdmo", "landmarks", "face_box", "frame_numbers")


def _statuses(store):
    out = {}
    for meta in sorted((store / "videos").glob("*/zarr.json")):
        try:
            out[meta.parent.name] = json.loads(meta.read_text())["attributes"].get("status")
        except (OSError, ValueError, KeyError):
            out[meta.parent.name] = None
    return out


@pytest.mark.slow
def test_sigkill_then_resume_equals_uninterrupted_run(tmp_path, gates):
    root = write_casme2(tmp_path / "data", VIDEOS)
    source = open_source(root)
    # the command's defaults with --resize 48: the same parameters, so the same hash
    reference = tmp_path / "reference.zarr"
    report = run_extraction(source, reference, ExtractParams(faces=FaceParams(resize=48)),
                            RunOptions(), workers=1)
    assert report.count("complete") == len(VIDEOS), report.summary()

    store = tmp_path / "killed.zarr"
    command = [sys.executable, "-m", "mespot.cli", "extract", str(root), "--out", str(store),
               "--resize", "48", "--workers", "2", "-q"]
    gates.hold("extract-*")  # every video waits, begun, until let through
    process = subprocess.Popen(command, start_new_session=True, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True, env=gates.environ())
    first, _ = gates.arrival("extract-*", process)
    gates.let_through(first)
    wait_until(lambda: _statuses(store).get(first.removeprefix("extract-")) == "complete",
               f"{first} is complete", process=process)
    gates.arrival("extract-*", process)  # the next one is held, begun
    os.killpg(process.pid, signal.SIGKILL)  # the command and its worker processes
    process.wait(DEADLINE)
    killed = _statuses(store)
    assert list(killed.values()).count("complete") == 1 and "running" in killed.values(), killed
    expected = zarr.open_group(str(reference), mode="r")
    for video_id, status in killed.items():  # whatever says complete really is complete
        if status == "complete":
            group = zarr.open_group(str(store), mode="r")[f"videos/{video_id}"]
            for name in ARRAYS:
                np.testing.assert_array_equal(group[name][...],
                                              expected[f"videos/{video_id}/{name}"][...])

    command[command.index("--workers") + 1] = "1"  # resuming in one process: same bytes
    rerun = subprocess.run(command, capture_output=True, text=True, timeout=DEADLINE)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert "already complete (skipped)" in rerun.stdout
    result = zarr.open_group(str(store), mode="r")
    assert dict(result.attrs)["params_hash"] == dict(expected.attrs)["params_hash"]
    for video_id in VIDEOS:
        got, want = result[f"videos/{video_id}"], expected[f"videos/{video_id}"]
        assert got.attrs["status"] == "complete"
        for name in ARRAYS:
            a, b = got[name][...], want[name][...]
            assert a.dtype == b.dtype and a.tobytes() == b.tobytes(), (video_id, name)


class _Stop(Exception):
    pass


class _StopAtFirstVideo:
    """A progress display whose `finish` raises, as a cancelled service job's does; the videos
    held at their gates go on from that moment."""

    def __init__(self, gates):
        self.gates, self.held = gates, {}

    def start(self, todo): pass

    def update(self, video_id, phase, done, total): pass

    def finish(self, result):
        self.gates.arrival("extract-*", what="the video beside the first is held")
        self.held = self.gates.waiting()
        self.gates.open_all()
        raise _Stop(result.video_id)

    def close(self): pass


@pytest.mark.slow
def test_an_exception_from_the_progress_stops_the_pool_before_the_videos_not_started(
        tmp_path, gates, monkeypatch):
    videos = {f"15_0{code}x": 10 for code in range(101, 111)}  # 10 short videos
    root = write_casme2(tmp_path / "data", videos)
    store = tmp_path / "stopped.zarr"
    # only the first video can finish before the stop; the others wait at their gates, begun
    monkeypatch.setenv(ENVIRONMENT, str(gates.folder))
    gates.hold("extract-*")
    gates.let_through("extract-15_0101x")
    progress = _StopAtFirstVideo(gates)
    with pytest.raises(_Stop, match="15_0101x"):
        run_extraction(open_source(root), store, ExtractParams(faces=FaceParams(resize=48)),
                       RunOptions(), workers=2, progress=progress)
    statuses = _statuses(store)
    complete = [v for v, s in statuses.items() if s == "complete"]
    # the first video, those running beside it (held at the stop, then let go) and those
    # already in the pool's call queue (workers + 1) are finished; the others never start: no
    # group, no status
    workers = 2
    assert progress.held and {p.removeprefix("extract-") for p in progress.held} <= set(complete)
    assert 1 <= len(complete) <= 1 + workers + workers + 1 < len(videos), statuses
    assert all(s == "complete" for s in statuses.values()), statuses
