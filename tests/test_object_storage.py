"""Object storage (flowcore/locations.py, flowcore/locks.py): s3:// wherever a path goes, against
a real S3-compatible server (moto's server mode, in its own process: tests/s3_server.py).

A tiny synthetic set (2 subjects x 1 video x 2 s) is uploaded to the server; it is extracted from
there into a store there with two Ray workers, a run is trained from that store and annotations
there into a run folder there, evaluated there, and every number is the local run's, bit for bit.
The lease lock on object storage refuses a second holder, is taken over once the lease of a
holder killed with SIGKILL has run out, and of two takers of a stale lease one wins. A server
that disappears mid-extraction (its relay cut) loses no video already complete, and the same
command resumes. Credentials reach mespot only through the standard AWS_* variables.
"""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import safetensors.numpy
import zarr
from waiting import DEADLINE, finish, wait_until

pytest.importorskip("s3fs", reason='object storage needs s3fs: pip install "mespot[s3]"')
pytest.importorskip("moto", reason="the S3 server of these tests is moto's: pip install moto")

from s3_server import BUCKET  # noqa: E402

from flowcore.locations import is_url, location  # noqa: E402

TINY = {"subjects": 2, "videos_per_subject": 1, "seconds": 2.0}


@pytest.fixture(scope="module")
def tiny_data(s3, tmp_path_factory):
    """(local copy, its URL on the server) of a tiny synthetic CAS(ME)^2-layout set."""
    from mespot.synth import SMALL, generate_dataset

    root = tmp_path_factory.mktemp("object-storage") / "tiny"
    generate_dataset(SMALL.replace(**TINY), root, workers=1)
    return root, s3.upload(root, "tiny")


def test_a_url_is_a_location_and_a_local_path_stays_a_path(tmp_path):
    assert is_url("s3://lab/store.zarr") and is_url("memory://x")
    assert not is_url(tmp_path) and not is_url(f"file://{tmp_path}")
    assert location(f"file://{tmp_path}") == tmp_path and isinstance(location(tmp_path), Path)
    where = location("s3://lab/store.zarr") / "videos"
    assert str(where) == "s3://lab/store.zarr/videos" and where.name == "videos"


# ---- the lease lock ------------------------------------------------------------------------


def test_a_lock_on_object_storage_refuses_a_second_holder_until_released(s3, monkeypatch):
    from flowcore.locks import LEASE_ENV, folder_lock

    monkeypatch.setenv(LEASE_ENV, "600")  # held by its lease alone, whatever the renewer's pace

    folder = f"s3://{BUCKET}/locked.zarr"
    with folder_lock(folder, "video-1") as first:
        assert first is None
        with folder_lock(folder, "video-1") as second:
            assert second is not None and second.endswith(f":{os.getpid()}")
        with folder_lock(folder, "video-2") as other:  # another name is another lock
            assert other is None
    with folder_lock(folder, "video-1") as again:
        assert again is None
    assert not s3.filesystem().exists(f"{BUCKET}/locked.zarr.locks/video-1.lock")


HOLDER = """
import sys, time
from flowcore.locks import folder_lock
with folder_lock(sys.argv[1], "video") as holder:
    assert holder is None
    print("held", flush=True)
    time.sleep(600)
"""


HOLDER_LEASE = 12.0  # s: renewed every 4 s; the checks below take a fraction of it, under load


def test_the_lock_of_a_holder_killed_with_sigkill_is_taken_once_its_lease_ran_out(s3):
    from flowcore.locks import LEASE_ENV, folder_lock

    folder = f"s3://{BUCKET}/killed.zarr"
    fs, lease = s3.filesystem(), f"{BUCKET}/killed.zarr.locks/video.lock"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, folder], stdout=subprocess.PIPE,
                              text=True, env={**os.environ, LEASE_ENV: str(HOLDER_LEASE)})
    try:
        assert holder.stdout.readline().strip() == "held"
        first = json.loads(fs.cat_file(lease))["expires"]
        wait_until(lambda: json.loads(fs.cat_file(lease))["expires"] > first,
                   "the holder renewed its lease", process=holder, every=0.2)
        with folder_lock(folder, "video") as refused:  # just renewed: held for 12 s more
            assert refused == f"{os.uname().nodename}:{holder.pid}"
        holder.send_signal(signal.SIGKILL)
        holder.wait(DEADLINE)
        with folder_lock(folder, "video") as still:  # killed, but its lease has not run out yet
            assert still == f"{os.uname().nodename}:{holder.pid}"
        taken = []

        def take():
            with folder_lock(folder, "video") as got:
                taken.append(got)
            return got is None

        wait_until(take, "the dead holder's lease ran out and the lock was taken", every=0.5)
        assert taken[-1] is None and all(t is not None for t in taken[:-1])
    finally:
        holder.kill()


def test_of_two_takers_of_a_stale_lease_exactly_one_wins(s3):
    from flowcore.locations import filesystem
    from flowcore.locks import _take

    fs, path = filesystem(f"s3://{BUCKET}/race.zarr.locks/video.lock")
    for attempt in range(5):
        stale = {"holder": "gone:1", "token": "old", "expires": time.time() - 1}
        fs.pipe_file(path, json.dumps(stale).encode())
        start, results = threading.Barrier(2, timeout=DEADLINE), {}

        def taker(name):
            start.wait()
            results[name] = _take(fs, path, f"here:{name}", name)

        threads = [threading.Thread(target=taker, args=(n,)) for n in ("a", "b")]
        for t in threads:
            t.start()
        for t in threads:
            t.join(DEADLINE)
        winners = [n for n, held_by in results.items() if held_by is None]
        assert len(winners) == 1, (attempt, results)
        assert json.loads(fs.cat_file(path))["token"] == winners[0]


# ---- extract, train, evaluate on object storage -----------------------------------------


def _same_stores(got: str, want: Path, video_ids) -> None:
    """Arrays equal bit for bit; video attributes equal but timings and `source` (the URL)."""
    a, b = zarr.open_group(got, mode="r"), zarr.open_group(str(want), mode="r")
    assert dict(a.attrs) == dict(b.attrs)
    for video_id in video_ids:
        mine, theirs = a[f"videos/{video_id}"], b[f"videos/{video_id}"]
        assert sorted(n for n, _ in mine.arrays()) == sorted(n for n, _ in theirs.arrays())
        for name, array in theirs.arrays():
            x, y = mine[name][...], array[...]
            assert x.dtype == y.dtype and x.tobytes() == y.tobytes(), (video_id, name)
        skip = ("timings", "source")
        assert ({k: v for k, v in mine.attrs.items() if k not in skip}
                == {k: v for k, v in theirs.attrs.items() if k not in skip})
        assert mine.attrs["status"] == "complete"


@pytest.mark.slow
def test_extract_train_evaluate_on_s3_with_ray_give_the_local_numbers_bit_for_bit(
        s3, tiny_data, local_ray, tmp_path):
    from flowcore.extract import ExtractParams
    from flowcore.faces import FaceParams
    from flowcore.ray_engine import RayEngine
    from mespot import api

    root, url = tiny_data
    params = ExtractParams(faces=FaceParams(resize=64))
    local = api.extract(root, tmp_path / "local.zarr", params, workers=1)
    remote = api.extract(url, f"s3://{BUCKET}/tiny.zarr", params, engine=RayEngine())
    ids = [r.video_id for r in local.results]
    assert [r.status for r in remote.results] == ["complete"] * 2, remote.summary()
    _same_stores(f"s3://{BUCKET}/tiny.zarr", tmp_path / "local.zarr", ids)
    again = api.extract(url, f"s3://{BUCKET}/tiny.zarr", params, workers=1)  # resumes
    assert [r.status for r in again.results] == ["skipped"] * 2

    train = {"epochs": 2, "batch_size": 4, "threads": 1}
    api.train(tmp_path / "local.zarr", root / "ground_truth.csv", tmp_path / "run", **train)
    api.train(f"s3://{BUCKET}/tiny.zarr", f"{url}/ground_truth.csv", f"s3://{BUCKET}/run",
              **train)
    here, there = api.evaluate(tmp_path / "run"), api.evaluate(f"s3://{BUCKET}/run")
    assert str(there.out) == f"s3://{BUCKET}/run/evaluation/{here.out.name}"  # written back
    assert here.metrics.equals(there.metrics) and here.intervals.equals(there.intervals)
    fs = s3.filesystem()
    for subject in ("s15", "s16"):  # the folds' weights, written back to the server
        name = f"folds/{subject}/weights_epoch_002.safetensors"
        theirs = safetensors.numpy.load(fs.cat_file(f"{BUCKET}/run/{name}"))
        mine = safetensors.numpy.load_file(tmp_path / "run" / name)
        assert sorted(theirs) == sorted(mine) and all(
            theirs[k].tobytes() == mine[k].tobytes() for k in mine)
    written = json.loads(fs.cat_file(f"{BUCKET}/run/evaluation/{there.out.name}/metrics.json"))
    assert written == json.loads((here.out / "metrics.json").read_text())
    config = fs.cat_file(f"{BUCKET}/run/config.json").decode()
    assert f"s3://{BUCKET}/tiny.zarr" in config and "testing" not in config  # no credentials


@pytest.mark.slow
def test_a_server_gone_mid_extraction_loses_nothing_written_and_the_command_resumes(
        s3, tiny_data, gates, tmp_path):
    root, url = tiny_data
    store = f"s3://{BUCKET}/gone.zarr"
    command = [sys.executable, "-m", "mespot", "extract", url, "--out", store, "--resize", "64",
               "--workers", "1", "--quiet"]
    first, second = "15_0101disgustingteeth", "16_0101disgustingteeth"
    gates.hold("extract-*")
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, env=gates.environ())
    try:
        gates.arrival(f"extract-{first}", process, what="the first video is held")
        gates.let_through(f"extract-{first}")
        gates.arrival(f"extract-{second}", process, what="the second video is held")
        s3.relay.cut()  # the server is gone for the command, mid-way through the second video
        gates.open_all()
        out, err = finish(process, "the command ends without its server")
    finally:
        s3.relay.restore()
        gates.open_all()
        process.kill()
    assert process.returncode == 1, (out, err)
    said = err.strip().splitlines()[-1]
    assert said.startswith("error: object storage unreachable") and "resume" in said, err
    direct = s3.filesystem()
    status = json.loads(direct.cat_file(f"{BUCKET}/gone.zarr/videos/{first}/zarr.json"))
    assert status["attributes"]["status"] == "complete"
    reference = tmp_path / "reference.zarr"
    from mespot import api
    from flowcore.extract import ExtractParams
    from flowcore.faces import FaceParams

    api.extract(root, reference, ExtractParams(faces=FaceParams(resize=64)), workers=1)
    _same_stores(store, reference, [first])  # what was complete before is intact
    resumed = subprocess.run(command, capture_output=True, text=True, timeout=DEADLINE)
    assert resumed.returncode == 0, resumed.stderr
    assert "1 extracted, 1 already complete" in resumed.stdout + resumed.stderr
    _same_stores(store, reference, [first, second])


def test_a_missing_object_is_named_by_its_url(s3, capsys):
    from conftest import command_fails

    line = command_fails(capsys, ["train", f"s3://{BUCKET}/nothing.zarr", "-a",
                                  f"s3://{BUCKET}/nothing.csv", "--out", f"s3://{BUCKET}/r"])
    assert f"s3://{BUCKET}/nothing" in line


def test_a_local_copy_is_fetched_again_only_when_the_object_changed(s3):
    from flowcore.locations import local_file

    fs = s3.filesystem()
    fs.pipe_file(f"{BUCKET}/notes/a.csv", b"subject,video\n")
    first = local_file(f"s3://{BUCKET}/notes/a.csv")
    assert first.read_bytes() == b"subject,video\n"
    stamp = first.stat().st_mtime_ns
    assert local_file(f"s3://{BUCKET}/notes/a.csv").stat().st_mtime_ns == stamp  # cached
    fs.pipe_file(f"{BUCKET}/notes/a.csv", b"subject,video,onset\n")
    assert local_file(f"s3://{BUCKET}/notes/a.csv").read_bytes() == b"subject,video,onset\n"
    assert np.all([not p.name.endswith(".part") for p in first.parent.iterdir()])


@pytest.mark.slow
def test_predict_a_video_on_s3_with_a_run_folder_on_s3_as_from_local_copies(
        s3, tiny_run, tmp_path, capsys):
    from mespot.cli import main
    from mespot.testing import write_video_file

    clip = write_video_file(tmp_path / "clips" / "take1.avi", 12)
    clips, run = s3.upload(tmp_path / "clips", "clips"), s3.upload(tiny_run["run"], "tiny-run")
    assert main(["predict", str(clip), "--model", str(tiny_run["run"]), "--out",
                 str(tmp_path / "here"), "--min-precision", "0"]) == 0
    assert main(["predict", f"{clips}/take1.avi", "--model", run, "--out",
                 f"s3://{BUCKET}/predicted", "--min-precision", "0"]) == 0
    s3.filesystem().get(f"{BUCKET}/predicted/", str(tmp_path / "there"), recursive=True)
    here = (tmp_path / "here" / "intervals.csv").read_text()
    assert here == (tmp_path / "there" / "intervals.csv").read_text()
    features = [zarr.open_group(str(tmp_path / side / "features.zarr"), mode="r")
                for side in ("here", "there")]
    mdmo = [f["videos/take1/mdmo"][...] for f in features]  # the video read from s3: same bits
    assert mdmo[0].shape == (11, 12, 2) and mdmo[0].tobytes() == mdmo[1].tobytes()
    said = json.loads((tmp_path / "there" / "prediction.json").read_text())
    assert said["source"] == f"{clips}/take1.avi"


def test_a_second_train_into_a_run_folder_on_s3_is_refused_while_one_holds_it(
        s3, tiny_run, monkeypatch):
    from flowcore.errors import UserError
    from flowcore.locks import LEASE_ENV, folder_lock
    from mespot import api

    monkeypatch.setenv(LEASE_ENV, "600")  # held by its lease alone, whatever the renewer's pace

    run = f"s3://{BUCKET}/busy-run"
    with folder_lock(run, "run") as holder:  # what a `mespot train` on another machine holds
        assert holder is None
        with pytest.raises(UserError, match="another `mespot train`"):
            api.train(tiny_run["store"], tiny_run["truth"], run, epochs=1)
    assert not s3.filesystem().exists(f"{BUCKET}/busy-run/config.json")  # nothing written


def test_a_store_on_s3_reads_as_a_local_one_with_the_library_and_with_xarray(s3):
    from flowcore.store import FeatureStore, load_features, open_video, video_statuses

    url = f"s3://{BUCKET}/read.zarr"
    store = FeatureStore(url, {"flow_backend": "opencv"}, "synthetic")  # the extraction's writer
    mdmo = np.arange(9 * 12 * 2, dtype=np.float32).reshape(9, 12, 2)
    group = store.begin("v1", {"subject": "s1", "fps": 30.0})
    store.write_array(group, "mdmo", mdmo)
    store.write_array(group, "frame_numbers", np.arange(1, 11, dtype=np.int32))
    store.complete(group, {"n_frames": 10})
    store.fail("v2", "decode", "unreadable", {"subject": "s1"})
    features = load_features(url)
    assert list(features.videos) == ["v1"] and "unreadable" in features.skipped["v2"]
    assert features.videos["v1"].mdmo.tobytes() == mdmo.tobytes()
    assert video_statuses(url) == {"v1": "complete", "v2": "failed"}
    video = open_video(url, "v1")  # xarray, as someone without mespot would read it
    assert video["mdmo"].dims == ("pair", "roi", "xy") and video.attrs["subject"] == "s1"
    assert video["mdmo"].values.tobytes() == mdmo.tobytes()


def _epoch_of(resume: bytes) -> int:
    """The epoch a resume state (safetensors) records in its header's metadata."""
    size = int.from_bytes(resume[:8], "little")
    return int(json.loads(resume[8:8 + size])["__metadata__"]["epoch"])


@pytest.mark.slow
def test_a_train_into_s3_killed_with_sigkill_resumes_from_what_was_written_back(
        s3, tiny_run, gates, tmp_path):
    argv = [sys.executable, "-m", "mespot", "train", str(tiny_run["store"]), "-a",
            str(tiny_run["truth"]), "--epochs", "4", "--batch-size", "2", "--threads", "1",
            "--no-tensorboard", "-q"]
    clean = subprocess.run(argv + ["--out", str(tmp_path / "clean")], capture_output=True,
                           text=True, timeout=DEADLINE)
    assert clean.returncode == 0, clean.stderr[-2000:]
    run, fs = f"s3://{BUCKET}/killed-run", s3.filesystem()
    gates.hold("train-*-epoch-2")  # the first fold stops after its second epoch, saved
    process = subprocess.Popen(argv + ["--out", run], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True,
                               env=gates.environ(MESPOT_WRITE_BACK_SECONDS="0.2"))
    try:
        held, _ = gates.arrival("train-*-epoch-2", process, what="a fold saved its 2nd epoch")
        subject = held.split("-")[1]
        resume = f"{BUCKET}/killed-run/folds/{subject}/resume.safetensors"
        wait_until(lambda: fs.exists(resume) and _epoch_of(fs.cat_file(resume)) == 2,
                   "the second epoch's resume state is written back to the server")
        process.send_signal(signal.SIGKILL)  # no cleanup, no last write-back
        process.wait(DEADLINE)
    finally:
        gates.open_all()
        process.kill()
    lock = f"{BUCKET}/killed-run.locks/run.lock"
    wait_until(lambda: not fs.exists(lock)
               or json.loads(fs.cat_file(lock))["expires"] < time.time(),
               "the killed train's lease on the run folder ran out")
    rerun = subprocess.run(argv + ["--out", run], capture_output=True, text=True,
                           timeout=DEADLINE)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    fold = json.loads(fs.cat_file(f"{BUCKET}/killed-run/folds/{subject}/fold.json"))
    assert fold["resumed_from"] == 2
    for name in ("s15", "s16"):  # the same weights as a run never killed
        path = f"folds/{name}/weights_epoch_004.safetensors"
        got = safetensors.numpy.load(fs.cat_file(f"{BUCKET}/killed-run/{path}"))
        want = safetensors.numpy.load_file(tmp_path / "clean" / path)
        assert all(got[k].tobytes() == want[k].tobytes() for k in want)
