"""The fault corpus, part 4: interruptions. Workers die with their parent, Ctrl-C stops at once and
says what was saved, a killed synth leaves nothing behind after the next run, and a log shows
progress lines. Each drives the `mespot` command in a subprocess of its own session."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from safetensors.torch import load_file

from mespot.testing import write_casme2

MESPOT = [sys.executable, "-m", "mespot.cli"]
DEADLINE = 240  # s: generous bounds on waits, never asserted as durations


def _group(pgid: int) -> list[int]:
    """Living (not zombie) processes of process group `pgid`, from /proc."""
    alive = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            alive.append(int(stat.parent.name))
    return alive


def _wait_until(condition, what: str, process=None):
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        if condition():
            return
        if process is not None and process.poll() is not None:
            pytest.fail(f"the command ended before {what}: {process.stderr.read()[-2000:]}")
        time.sleep(0.05)
    pytest.fail(f"timed out waiting until {what}")


def _statuses(store: Path) -> dict:
    out = {}
    for meta in (store / "videos").glob("*/zarr.json"):
        try:
            out[meta.parent.name] = json.loads(meta.read_text())["attributes"].get("status")
        except (OSError, ValueError, KeyError):
            out[meta.parent.name] = None
    return out


def _start(argv, env=None):
    return subprocess.Popen(
        MESPOT + [str(a) for a in argv],
        start_new_session=True,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )


def _run(argv):
    """`mespot ARGV` to its end: the finished process, output captured as text."""
    return subprocess.run(
        MESPOT + [str(a) for a in argv], capture_output=True, text=True, timeout=600
    )


def _resume_extract(videos: Path, store: Path):
    return _run(["extract", videos, "--out", store, "--resize", "48", "--workers", "1", "-q"])


@pytest.fixture(scope="module")
def six_videos(tmp_path_factory):
    return write_casme2(
        tmp_path_factory.mktemp("six") / "data",
        {f"15_0{code}x": 16 for code in ("101", "102", "401", "402", "502", "503")},
    )


@pytest.mark.slow
def test_extract_workers_die_with_a_killed_parent(six_videos, tmp_path):
    store = tmp_path / "f.zarr"
    process = _start(
        ["extract", six_videos, "--out", store, "--resize", "48", "--workers", "2", "-q"]
    )
    _wait_until(
        lambda: store.exists() and "running" in _statuses(store).values(),
        "a worker writes",
        process,
    )
    workers = [pid for pid in _group(process.pid) if pid != process.pid]
    assert workers
    os.kill(process.pid, signal.SIGKILL)  # the main process only, as `kill -9 PID` does
    process.wait()
    _wait_until(lambda: not _group(process.pid), "the workers are gone")
    statuses = _statuses(store)
    assert list(statuses.values()).count("complete") < 6  # killed mid-way, not left to finish
    rerun = _resume_extract(six_videos, store)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert set(_statuses(store).values()) == {"complete"}


@pytest.mark.slow
def test_ctrl_c_on_extract_stops_at_once_and_says_what_was_saved(six_videos, tmp_path):
    store = tmp_path / "f.zarr"
    process = _start(
        ["extract", six_videos, "--out", store, "--resize", "48", "--workers", "2", "-q"]
    )
    _wait_until(
        lambda: store.exists() and "complete" in _statuses(store).values(),
        "a video is complete",
        process,
    )
    os.killpg(process.pid, signal.SIGINT)  # what Ctrl-C in a terminal sends
    _, err = process.communicate(timeout=DEADLINE)
    assert process.returncode == 130, err[-2000:]
    complete = list(_statuses(store).values()).count("complete")
    assert complete < 6, "the queued videos were extracted before stopping"
    assert (
        f"interrupted: {complete} of 6 videos are complete in {store}; the other "
        f"{6 - complete} are extracted by running the same command again" in err
    )
    assert "Traceback" not in err
    _wait_until(lambda: not _group(process.pid), "the workers are gone")
    rerun = _resume_extract(six_videos, store)
    assert rerun.returncode == 0 and f"{complete} already complete (skipped)" in rerun.stdout, (
        rerun.stderr
    )


@pytest.mark.slow
def test_train_workers_die_with_a_killed_parent_and_the_rerun_equals_a_clean_run(
    tiny_run, tmp_path
):
    argv = [
        "train",
        tiny_run["store"],
        "-a",
        tiny_run["truth"],
        "--epochs",
        "600",  # a few seconds per fold: long enough to kill one mid-training
        "--batch-size",
        "2",
        "--workers",
        "2",
        "--no-tensorboard",
        "-q",
    ]
    clean = _run(argv + ["--out", tmp_path / "clean"])
    assert clean.returncode == 0, clean.stderr[-2000:]
    run = tmp_path / "run"
    process = _start(argv + ["--out", run])
    _wait_until(lambda: any(run.glob("folds/*/resume.safetensors")), "a fold trains", process)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    _wait_until(lambda: not _group(process.pid), "the workers are gone")
    assert not list(run.glob("folds/*/fold.json"))  # nothing finished behind our back
    rerun = _run(argv + ["--out", run])
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    for fold in ("s15", "s16"):
        got = load_file(str(run / "folds" / fold / "weights_epoch_600.safetensors"))
        want = load_file(str(tmp_path / "clean" / "folds" / fold / "weights_epoch_600.safetensors"))
        for key in want:
            np.testing.assert_array_equal(got[key].numpy(), want[key].numpy())


@pytest.mark.slow
def test_a_killed_synth_leaves_nothing_after_the_next_run(tmp_path):
    out = tmp_path / "synth"
    argv = [
        "synth",
        "--small",
        "--subjects",
        "2",
        "--videos-per-subject",
        "1",
        "--seconds",
        "1.5",
        "--workers",
        "2",
        "--out",
        out,
    ]
    process = _start(argv)
    partial = lambda: [p for p in tmp_path.glob(".synth.partial-*") if p.is_dir()]  # noqa: E731
    _wait_until(
        lambda: any(any(p.rglob("*.jpg")) for p in partial()), "frames are written", process
    )
    os.killpg(process.pid, signal.SIGKILL)  # the whole command, workers included
    process.wait()
    assert partial() and not out.exists()  # what a kill leaves (nobody could clean up)
    done = _run(argv)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (out / "synth.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["synth"]  # no hidden leftovers


def test_a_live_synth_work_folder_is_left_alone(tmp_path):
    import fcntl

    from mespot.synth.generate import remove_leftovers

    out = tmp_path / "synth"
    live_lock, dead_lock = (
        tmp_path / ".synth.partial-live.lock",
        tmp_path / ".synth.partial-dead.lock",
    )
    for lock in (live_lock, dead_lock):
        lock.touch()
        lock.with_suffix("").mkdir()
    orphan = tmp_path / ".synth.partial-orphan"  # its lock file was already removed
    orphan.mkdir()
    with open(live_lock) as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        removed = remove_leftovers(out)
    assert sorted(p.name for p in removed) == [".synth.partial-dead", ".synth.partial-orphan"]
    assert live_lock.exists() and live_lock.with_suffix("").is_dir()
    assert not dead_lock.exists() and not orphan.exists()


def test_progress_lines_when_the_output_is_not_a_terminal(tiny_run, tmp_path, monkeypatch, capsys):
    from mespot.cli import main

    monkeypatch.setenv("MESPOT_PROGRESS_SECONDS", "0.2")  # instead of 30 s, to see some quickly
    line = re.compile(r"^\d\d:\d\d:\d\d \[\d+:\d\d\] (extract|train): ", re.MULTILINE)
    assert (
        main(
            [
                "extract",
                str(tiny_run["data"]),
                "--out",
                str(tmp_path / "f.zarr"),
                "--resize",
                "48",
                "--workers",
                "1",
            ]
        )
        == 0
    )  # pytest's captured stderr is not a terminal
    err = capsys.readouterr().err
    assert [m.group(1) for m in line.finditer(err)].count("extract") >= 2, err[-2000:]
    assert (
        main(
            [
                "train",
                str(tiny_run["store"]),
                "-a",
                str(tiny_run["truth"]),
                "--out",
                str(tmp_path / "run"),
                "--epochs",
                "20",
                "--batch-size",
                "2",
                "--no-tensorboard",
            ]
        )
        == 0
    )
    err = capsys.readouterr().err
    assert re.search(r"train: fold \d/2 s1[56] epoch \d+/20 loss", err), err[-2000:]
