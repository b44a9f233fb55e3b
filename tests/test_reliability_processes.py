"""The fault corpus, part 4: interruptions. Workers die with their parent, Ctrl-C stops at once and
says what was saved, a killed synth leaves nothing behind after the next run, and a log shows
progress lines. Each drives the `mespot` command in a subprocess of its own session, its work held
at the test hook's gates (tests/waiting.py) so it cannot finish before the interruption."""

import contextlib
import io
import json
import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from safetensors.torch import load_file
from waiting import DEADLINE, diagnosable, finish, group_of, wait_until

from mespot.testing import write_casme2
from spotting.run_folder import FoldFolder

MESPOT = [sys.executable, "-m", "mespot.cli"]


def _statuses(store: Path) -> dict:
    out = {}
    for meta in (store / "videos").glob("*/zarr.json"):
        try:
            out[meta.parent.name] = json.loads(meta.read_text())["attributes"].get("status")
        except (OSError, ValueError, KeyError):
            out[meta.parent.name] = None
    return out


def _complete(store: Path) -> int:
    return list(_statuses(store).values()).count("complete") if store.exists() else 0


def _start(argv, env=None):
    """`mespot ARGV` started in a process group of its own, with Ctrl-C's default meaning: a
    shell without job control starts background commands with SIGINT ignored, and Python keeps
    an ignored SIGINT, so a suite run that way would send its Ctrl-C to a deaf command."""
    return subprocess.Popen(
        MESPOT + [str(a) for a in argv],
        start_new_session=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
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


def _extract_one_then_hold(videos: Path, store: Path, gates):
    """`mespot extract` with 2 workers, started with every video held at its gate: one video
    is let through and completes, the others wait (begun, nothing computed written)."""
    gates.hold("extract-*")
    process = _start(
        ["extract", videos, "--out", store, "--resize", "48", "--workers", "2", "-q"],
        env=diagnosable(gates.environ()),
    )
    first, _ = gates.arrival("extract-*", process)
    gates.let_through(first)
    wait_until(lambda: _complete(store) == 1, "the video let through is complete", process=process)
    gates.arrival("extract-*", process)  # the next video is held (the pool goes on)
    return process


@pytest.mark.slow
def test_extract_workers_die_with_a_killed_parent(six_videos, tmp_path, gates):
    store = tmp_path / "f.zarr"
    process = _extract_one_then_hold(six_videos, store, gates)
    workers = [pid for pid in group_of(process.pid) if pid != process.pid]
    assert workers
    os.kill(process.pid, signal.SIGKILL)  # the main process only, as `kill -9 PID` does
    process.wait(DEADLINE)
    wait_until(lambda: not group_of(process.pid), "the workers are gone")
    statuses = _statuses(store)
    assert list(statuses.values()).count("complete") == 1  # the held videos never finished
    assert "running" in statuses.values()  # begun, killed mid-way: redone by the rerun
    rerun = _resume_extract(six_videos, store)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert set(_statuses(store).values()) == {"complete"}


@pytest.mark.slow
def test_ctrl_c_on_extract_stops_at_once_and_says_what_was_saved(six_videos, tmp_path, gates):
    store = tmp_path / "f.zarr"
    process = _extract_one_then_hold(six_videos, store, gates)
    os.killpg(process.pid, signal.SIGINT)  # what Ctrl-C in a terminal sends
    _, err = finish(process, "the interrupted extraction ended")
    assert process.returncode == 130, err[-2000:]
    complete = list(_statuses(store).values()).count("complete")
    assert complete == 1, "a held video was finished instead of stopped"
    assert (
        f"interrupted: {complete} of 6 videos are complete in {store}; the other "
        f"{6 - complete} are extracted by running the same command again" in err
    )
    assert "Traceback" not in err
    wait_until(lambda: not group_of(process.pid), "the workers are gone")
    rerun = _resume_extract(six_videos, store)
    assert rerun.returncode == 0 and f"{complete} already complete (skipped)" in rerun.stdout, (
        rerun.stderr
    )


@pytest.mark.slow
def test_train_workers_die_with_a_killed_parent_and_the_rerun_equals_a_clean_run(
    tiny_run, tmp_path, gates
):
    argv = [
        "train",
        tiny_run["store"],
        "-a",
        tiny_run["truth"],
        "--epochs",
        "6",
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
    gates.hold("train-*-epoch-2")  # each fold stops after its second epoch (saved to resume)
    process = _start(argv + ["--out", run], env=gates.environ())
    held, _ = gates.arrival("train-*", process, what="a fold has trained 2 epochs")
    os.kill(process.pid, signal.SIGKILL)
    process.wait(DEADLINE)
    wait_until(lambda: not group_of(process.pid), "the workers are gone")
    assert not list(run.glob("folds/*/fold.json"))  # nothing finished behind our back
    rerun = _run(argv + ["--out", run])
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    subject = held.split("-")[1]
    assert json.loads((run / "folds" / subject / "fold.json").read_text())["resumed_from"] == 2
    for fold in ("s15", "s16"):
        got = load_file(str(FoldFolder(run / "folds" / fold).weights_path(6)))
        want = load_file(str(FoldFolder(tmp_path / "clean" / "folds" / fold).weights_path(6)))
        for key in want:
            np.testing.assert_array_equal(got[key].numpy(), want[key].numpy())


@pytest.mark.slow
def test_a_killed_synth_leaves_nothing_after_the_next_run(tmp_path, gates):
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
    gates.hold("synth-*")  # each video stops after its first frame
    process = _start(argv, env=gates.environ())
    partial = lambda: [p for p in tmp_path.glob(".synth.partial-*") if p.is_dir()]  # noqa: E731
    gates.arrival("synth-*", process, what="a video's first frame is written")
    assert any(any(p.rglob("*.jpg")) for p in partial())
    os.killpg(process.pid, signal.SIGKILL)  # the whole command, workers included
    process.wait(DEADLINE)
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


class _Lines(io.TextIOBase):
    """A stderr that is not a terminal and keeps what is written (from any thread)."""

    encoding = "utf-8"

    def __init__(self):
        self.parts, self.lock = [], threading.Lock()

    def write(self, text: str) -> int:
        with self.lock:
            self.parts.append(text)
        return len(text)

    def text(self) -> str:
        with self.lock:
            return "".join(self.parts)


def _open_once_seen(gates, written: _Lines, pattern: str, count: int, errors: list):
    """In the background: once `written` shows `count` matches of `pattern`, open the gates
    (also if that never comes, so the command ends and the test says why)."""

    def watch():
        try:
            wait_until(lambda: len(re.findall(pattern, written.text(), re.MULTILINE)) >= count,
                       f"{count} line(s) matching {pattern!r} are written")
        except BaseException as err:  # noqa: BLE001 - reported by the test's thread
            errors.append(err)
        finally:
            gates.open_all()

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def test_progress_lines_when_the_output_is_not_a_terminal(tiny_run, tmp_path, monkeypatch,
                                                          gates):
    """The work is held (first video, first epoch) until the lines came: however fast the
    machine, the heartbeat has time to print."""
    from flowcore.testhooks import ENVIRONMENT
    from mespot.cli import main

    monkeypatch.setenv("MESPOT_PROGRESS_SECONDS", "0.2")  # instead of 30 s, to see some quickly
    monkeypatch.setenv(ENVIRONMENT, str(gates.folder))
    extract_line = r"^\d\d:\d\d:\d\d \[\d+:\d\d\] extract: "
    train_line = r"train: fold \d/2 s1[56] epoch \d+/20 loss"
    errors, written = [], _Lines()
    gates.hold("extract-*")
    watcher = _open_once_seen(gates, written, extract_line, 2, errors)
    with contextlib.redirect_stderr(written):
        code = main(["extract", str(tiny_run["data"]), "--out", str(tmp_path / "f.zarr"),
                     "--resize", "48", "--workers", "1"])
    watcher.join(DEADLINE)
    assert code == 0 and not errors, (errors, written.text()[-2000:])
    assert len(re.findall(extract_line, written.text(), re.MULTILINE)) >= 2

    written = _Lines()
    gates.hold("train-*-epoch-1")
    watcher = _open_once_seen(gates, written, train_line, 1, errors)
    with contextlib.redirect_stderr(written):
        code = main(["train", str(tiny_run["store"]), "-a", str(tiny_run["truth"]), "--out",
                     str(tmp_path / "run"), "--epochs", "20", "--batch-size", "2",
                     "--no-tensorboard"])
    watcher.join(DEADLINE)
    assert code == 0 and not errors, (errors, written.text()[-2000:])
    assert re.search(train_line, written.text())
