"""The Ray engine (`mespot extract --engine ray`): one Ray task per video into one shared store.

A local Ray instance with 2 CPUs extracts a tiny synthetic set (2 videos x 60 frames, faces
resized to 64 px); the store equals the in-process one bit for bit. Workers killed with SIGKILL
are retried, and a task lost every time is recorded as failed while the others finish (the
tasks are held at the test hook's gates meanwhile, so each is killed before it can finish).
Tests that need Ray skip with the reason when it is not installed or cannot start here.
"""

import os
import signal
import sys
import threading
from pathlib import Path

import pytest
import zarr
from test_extract import _arrays
from waiting import DEADLINE

from flowcore.batch import run_extraction
from flowcore.extract import ExtractParams, RunOptions
from flowcore.faces import FaceParams
from flowcore.ray_engine import RayEngine
from flowcore.sources import open_source

PARAMS = ExtractParams(faces=FaceParams(resize=64))  # the command's defaults with --resize 64


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(dataset root, its in-process store, video ids): 2 subjects x 1 video x 2 s at 30 fps."""
    from mespot.synth import SMALL, generate_dataset

    root = tmp_path_factory.mktemp("ray") / "tiny"
    generate_dataset(SMALL.replace(subjects=2, videos_per_subject=1, seconds=2.0), root,
                     workers=1)
    reference = root.parent / "in-process.zarr"
    report = run_extraction(open_source(root), reference, PARAMS, workers=1)
    assert report.count("complete") == 2, report.summary()
    return root, reference, [r.video_id for r in report.results]


def _assert_same_store(got: Path, want: Path, video_ids) -> None:
    """Arrays equal bit for bit, root attributes and video attributes (but timings) equal."""
    a, b = zarr.open_group(str(got), mode="r"), zarr.open_group(str(want), mode="r")
    assert dict(a.attrs) == dict(b.attrs)
    for video_id in video_ids:
        mine, theirs = _arrays(got, video_id), _arrays(want, video_id)
        for name, array in mine.items():
            expected = theirs[name]
            assert array.dtype == expected.dtype and array.tobytes() == expected.tobytes(), \
                (video_id, name)
        attrs = {k: v for k, v in a[f"videos/{video_id}"].attrs.items() if k != "timings"}
        expected = {k: v for k, v in b[f"videos/{video_id}"].attrs.items() if k != "timings"}
        assert attrs == expected and attrs["status"] == "complete"


class _Recorder:
    """A progress display that keeps what it is told."""

    def __init__(self):
        self.notes, self.updates, self.finished = [], [], []

    def start(self, todo):
        self.todo = [v.video_id for v in todo]

    def note(self, text):
        self.notes.append(text)

    def update(self, video_id, phase, done, total):
        self.updates.append((video_id, phase, done, total))

    def finish(self, result):
        self.finished.append(result.video_id)

    def close(self):
        pass


def _kill_workers(gates, plan: dict[str, int], killed: list, errors: list) -> threading.Thread:
    """In the background, SIGKILL the Ray worker held at each video's gate `plan[video]` times
    (each time the new worker of Ray's retry), then let the video through; the pids go to
    `killed`. On any failure the gates open (the run ends) and the error goes to `errors`."""

    def work():
        try:
            for video_id, times in plan.items():
                point = f"extract-{video_id}"
                for _ in range(times):
                    _, pid = gates.arrival(point, not_pids=killed, what=f"{point} is held")
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
                gates.let_through(point)  # unused by a video killed on its last try (lost)
        except BaseException as err:  # noqa: BLE001 - reported by the test's thread
            errors.append(err)
            gates.open_all()

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    return thread


@pytest.mark.slow
def test_ray_store_equals_in_process_store(tiny, local_ray, tmp_path):
    root, reference, video_ids = tiny
    progress = _Recorder()
    report = run_extraction(open_source(root), tmp_path / "ray.zarr", PARAMS, RunOptions(),
                            progress=progress, engine=RayEngine())
    assert report.count("complete") == 2, report.summary()
    _assert_same_store(tmp_path / "ray.zarr", reference, video_ids)
    assert "2 CPU(s)" in progress.notes[0] and "2 video task(s)" in progress.notes[0]
    flow = [u for u in progress.updates if u[1] == "flow"]  # from the workers, through the actor
    assert {u[0] for u in flow} == set(video_ids) and all(u[3] == 60 for u in flow)
    assert sorted(progress.finished) == sorted(video_ids)


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="finds workers through /proc")
def test_killed_workers_are_retried_then_the_video_fails_and_a_rerun_finishes(
        tiny, local_ray, module_gates, tmp_path, capsys):
    from mespot.cli import main

    root, reference, video_ids = tiny
    lost, retried = video_ids
    killed, errors = [], []
    # one retry: the first video's worker is killed twice (lost), the second's once (retried)
    module_gates.hold("extract-*")
    killer = _kill_workers(module_gates, {lost: 2, retried: 1}, killed, errors)
    store = tmp_path / "killed.zarr"
    try:
        report = run_extraction(open_source(root), store, PARAMS, RunOptions(),
                                engine=RayEngine(max_retries=1))
    finally:
        module_gates.open_all()
    killer.join(DEADLINE)
    assert not errors and len(killed) == 3, (errors, killed)
    by_id = {r.video_id: r for r in report.results}
    assert by_id[retried].status == "complete", report.summary()
    assert by_id[lost].status == "failed" and by_id[lost].stage == "worker"
    assert "worker died 2 time(s)" in by_id[lost].error
    assert f"FAILED {lost} [worker]" in report.summary()
    attrs = zarr.open_group(str(store), mode="r")[f"videos/{lost}"].attrs
    assert (attrs["status"], attrs["stage"]) == ("failed", "worker")

    # the command resumes: only the lost video is done again, through Ray, and all is equal
    code = main(["extract", str(root), "--out", str(store), "--resize", "64", "--engine", "ray",
                 "-q"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "1 extracted, 1 already complete (skipped), 0 failed" in captured.out
    _assert_same_store(store, reference, video_ids)


def test_ray_engine_checks_its_options():
    engine = RayEngine()
    assert engine.gpus_for("cpu") == 0.0 and engine.gpus_for("cuda:0") == 0.125
    for device, engine, words in [("cuda:1", RayEngine(), "use --device cuda"),
                                  ("cuda", RayEngine(gpus_per_task=0), "would see no GPU"),
                                  ("cpu", RayEngine(gpus_per_task=0.5), "never use"),
                                  ("mps", RayEngine(), "cpu or cuda")]:
        with pytest.raises(ValueError, match=words):
            engine.gpus_for(device)
        with pytest.raises(ValueError, match=words):  # before any Ray is started
            list(engine.run_tasks(print, [], print, device=device))
    with pytest.raises(ValueError, match="max_retries"):
        RayEngine(max_retries=-1)


def test_without_ray_mespot_imports_and_the_ray_engine_says_how_to_install(tmp_path,
                                                                          monkeypatch, capsys):
    import subprocess

    blocked = ("import sys; sys.modules['ray'] = None; import mespot.cli, flowcore.batch, "
               "mespot.commands.extract, flowcore.ray_engine; print('ok')")
    done = subprocess.run([sys.executable, "-c", blocked], capture_output=True, text=True,
                          timeout=120)
    assert done.stdout.strip() == "ok", done.stderr[-2000:]

    from mespot.cli import main

    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    code = main(["extract", str(tmp_path), "--out", str(tmp_path / "f.zarr"), "--engine", "ray"])
    assert code == 2
    assert capsys.readouterr().err.strip().endswith('pip install "mespot[ray]"')
    code = main(["extract", str(tmp_path), "--out", str(tmp_path / "f.zarr"), "--address", "auto"])
    assert code == 2 and "go with --engine ray" in capsys.readouterr().err


def test_command_refuses_ray_flags_that_cannot_work(tmp_path, capsys):
    pytest.importorskip("ray", reason='Ray is not installed: pip install "mespot[ray]"')
    from mespot.cli import main

    out = str(tmp_path / "f.zarr")
    assert main(["extract", str(tmp_path), "--out", out, "--engine", "ray",
                 "--gpus-per-task", "0.5"]) == 2
    assert "never use" in capsys.readouterr().err
    assert main(["extract", str(tmp_path), "--out", out, "--engine", "ray", "--backend", "torch",
                 "--device", "cuda:1"]) == 2
    assert "use --device cuda" in capsys.readouterr().err
    assert main(["extract", str(tmp_path), "--out", out, "--engine", "spark"]) == 2
    assert "'local' or 'ray'" in capsys.readouterr().err
