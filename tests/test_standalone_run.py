"""A saved run delivers what it promises (issue 25): `predict` applies what `evaluate` applies, from
the run folder alone, which records everything needed to spot a new video."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import command_fails
from flowcore.errors import UserError
from mespot.cli import main
from mespot.synth import SMALL, generate_dataset


@pytest.fixture(scope="module")
def lab(tmp_path_factory) -> dict:
    """3 subjects x 1 video x 2 s of synthetic data, extracted at 64 px with the torch backend,
    trained 2 epochs with an inner model per fold (1 inner subject): calibrated rules."""
    from flowcore import ExtractParams, extract_source
    from flowcore.faces import FaceParams
    from spotting.config import RunConfig, TrainParams
    from spotting.loso import train_loso

    base = tmp_path_factory.mktemp("standalone")
    data = generate_dataset(SMALL.replace(subjects=3, videos_per_subject=1, seconds=2.0),
                            base / "data", preview=False, workers=1).root
    params = ExtractParams(flow_backend="torch", faces=FaceParams(resize=64))
    report = extract_source(data, base / "features.zarr", params, workers=1)
    assert not report.failed, report.summary()
    config = RunConfig(store=str(base / "features.zarr"),
                       annotations=str(data / "ground_truth.csv"),
                       train=TrainParams(epochs=2, batch_size=2, inner_val=1))
    train_loso(config, base / "run", tensorboard=False)
    return {"base": base, "data": data, "store": base / "features.zarr", "run": base / "run"}


def _frames_of(data: Path, video: str) -> Path:
    return next(data.glob(f"rawpic/*/{video}"))


def test_train_records_what_spotting_a_new_video_needs(lab):
    from flowcore.store import load_features
    from spotting.initial_weights import PRETRAINED

    config = json.loads((lab["run"] / "config.json").read_text())
    store = load_features(lab["store"])
    features = config["features"]
    assert features["params"] == store.params and features["params"]["flow_backend"] == "torch"
    assert features["params"]["faces"]["resize"] == 64 and "tvl1" in features["params"]
    assert features["params_hash"] == config["store_params_hash"] == store.params_hash
    assert features["devices"] == ["cpu"] and features["fps"] == 30.0
    assert features["subjects"] == store.subjects and features["preset"] == "casme2"
    init = config["init_weights"]
    import hashlib

    assert init["file"] == PRETRAINED.name
    assert init["sha256"] == hashlib.sha256(PRETRAINED.read_bytes()).hexdigest()
    assert config["environment"]["code"]["version"] == config["environment"]["mespot"]
    assert "windows" in config
    for subject in store.subjects:
        fold = lab["run"] / "folds" / subject
        rules = json.loads((fold / "rules.json").read_text())
        assert rules["key"] == {"epoch": 2, "rule": "megc", "flip": True,
                                "proposals": rules["key"]["proposals"]}
        assert set(rules["rules"]) == {"me", "mae"} and rules["val_subjects"]
        assert len(json.loads((fold / "fold.json").read_text())["prior"]) == 12  # the AU prior


def test_predicting_a_folds_test_videos_with_its_model_gives_evaluates_intervals(lab):
    """Every LOSO fold: the fold's model alone, as `predict --fold S` applies it by default, on
    S's videos (the store's features) gives exactly `evaluate`'s default intervals, with the
    same expected precision (the map fitted without S): every one at --min-precision 0 (the
    MEGC listing), and at the default threshold those of evaluate's reaching it."""
    from flowcore.store import load_features
    from spotting.evaluate import evaluate_run
    from spotting.precision import DEFAULT_MIN_PRECISION
    from spotting.predict import spot_features
    from spotting.trained import load_trained

    evaluation = evaluate_run(lab["run"], "last")
    assert evaluation.out.name == "last+calibrated+flip"
    store = load_features(lab["store"])
    compared, kept = 0, 0
    for subject in store.subjects:
        trained = load_trained(lab["run"], fold=subject)
        assert trained.options == evaluation.options and trained.note == ""
        assert trained.precision is not None and f"other than {subject}" in trained.precision_note
        recorded = evaluation.calibration[subject]
        assert trained.rules.to_json() == {k: recorded[k] for k in ("me", "mae")}
        for video in store.videos_of([subject]):
            want = evaluation.intervals[evaluation.intervals["video"] == video.video_id]
            for level in (0.0, DEFAULT_MIN_PRECISION):
                got = spot_features(video, trained, "cpu", lab["base"] / "c.png", lab["base"],
                                    level)
                wanted = want[want["precision"] >= level] if level else want
                _same_intervals(got.intervals, wanted)
                assert got.left_out == len(want) - len(wanted)
                kept += len(wanted) if level else 0
            compared += len(want)
    assert compared > 0
    assert (evaluation.intervals["precision"].notna()).any()
    assert (evaluation.out / "metrics_at_precision.csv").is_file()
    assert (evaluation.out / "reliability.csv").is_file()
    record = json.loads((lab["run"] / "precision" / "last+calibrated+flip.json").read_text())
    assert set(record["maps"]["folds"]) == set(store.subjects) and record["key"]["rule"] == "megc"
    table = evaluation.at_threshold.set_index("type")
    assert table.loc["overall", "proposals"] == (
        evaluation.intervals["precision"] >= DEFAULT_MIN_PRECISION).sum()


def _same_intervals(got: pd.DataFrame, want: pd.DataFrame) -> None:
    """The same rows, frames, scores and expected precisions (exactly)."""
    columns = ["onset", "offset", "apex"]
    got = got.sort_values(["type", "onset", "offset"]).reset_index(drop=True)
    want = want.sort_values(["type", "onset", "offset"]).reset_index(drop=True)
    assert got["type"].tolist() == want["type"].tolist()
    assert got[columns].astype(int).values.tolist() == want[columns].astype(int).values.tolist()
    assert got["score"].tolist() == want["score"].astype(float).tolist()
    np.testing.assert_array_equal(got["precision"].to_numpy(float),
                                  want["precision"].to_numpy(float))
    assert got["precision_n"].tolist() == want["precision_n"].tolist()


@pytest.mark.slow
def test_a_run_folder_copied_alone_predicts_identically(lab, tmp_path):
    """The run folder without its store, elsewhere: the same intervals and curves; the default
    is evaluate's (calibrated rules, flip), said in prediction.json and the output."""
    video = _frames_of(lab["data"], "16_0101disgustingteeth")
    assert main([str(a) for a in ("predict", video, "--model", lab["run"], "--out",
                                  tmp_path / "here", "-q")]) == 0
    alone = tmp_path / "moved" / "run"
    shutil.copytree(lab["run"], alone, ignore=shutil.ignore_patterns("evaluation", "report*"))
    hidden = lab["base"] / "hidden.zarr"
    lab["store"].rename(hidden)  # the training store is gone from where the run says it is
    try:
        assert main([str(a) for a in ("predict", video, "--model", alone, "--out",
                                      tmp_path / "there", "-q")]) == 0
    finally:
        hidden.rename(lab["store"])
    here = pd.read_csv(tmp_path / "here" / "intervals.csv")
    there = pd.read_csv(tmp_path / "there" / "intervals.csv")
    pd.testing.assert_frame_equal(here, there)
    meta = json.loads((tmp_path / "there" / "prediction.json").read_text())
    assert meta["calibrated"] is True and meta["flip"] is True and meta["rules_note"] is None
    assert meta["applied"].startswith("last epoch (proposal rules calibrated on "
                                      "inner-validation subjects; test-time flip); the mean of 3")
    assert meta["extraction"] == {"backend": "torch", "device": "cpu", "fallback": None,
                                  "trained_backend": "torch"}
    assert set(meta["fold_rules"]) == {"s15", "s16", "s19"}


@pytest.mark.slow
def test_predict_on_the_real_video_reproduces_evaluate_for_its_fold(lab, tmp_path):
    """The whole path: the fold's test video extracted again from its frames by predict."""
    from spotting.evaluate import evaluate_run

    evaluation = evaluate_run(lab["run"], "last")
    name = _frames_of(lab["data"], "19_*").name
    assert main([str(a) for a in ("predict", _frames_of(lab["data"], name), "--model", lab["run"],
                                  "--fold", "s19", "--out", tmp_path / "p", "-q", "-a",
                                  lab["data"] / "ground_truth.csv", "--min-precision", 0)]) == 0
    got = pd.read_csv(tmp_path / "p" / "intervals.csv")
    want = evaluation.intervals[evaluation.intervals["video"] == name]
    _same_intervals(got, want)
    meta = json.loads((tmp_path / "p" / "prediction.json").read_text())
    assert meta["min_precision"] == 0 and meta["left_out"] == {name: 0}
    assert meta["models"] == ["s19"] and "test subject of fold s19" in meta["as_evaluate"]
    # scored against the annotations: evaluate's counts for that video
    scored = json.loads((tmp_path / "p" / "metrics.json").read_text())["metrics"]
    per_video = evaluation.per_video[evaluation.per_video["video"] == name].set_index("type")
    for kind in ("me", "mae", "overall"):
        assert [scored[kind][c] for c in ("TP", "proposals", "truths")] == [
            per_video.loc[kind, c] for c in ("TP", "proposals", "truths")]


def test_the_spotter_loads_once_and_never_reads_the_store(lab, tmp_path, monkeypatch):
    import flowcore.store
    import mespot
    import spotting.spot

    loads, opened = [], []
    load_weights, load_features = spotting.spot.load_weights, flowcore.store.load_features
    monkeypatch.setattr(spotting.spot, "load_weights",
                        lambda *a, **k: loads.append(a[0]) or load_weights(*a, **k))
    counted = lambda path: opened.append(Path(path)) or load_features(path)  # noqa: E731
    monkeypatch.setattr(flowcore.store, "load_features", counted)
    monkeypatch.setattr("spotting.predict.load_features", counted)
    spotter = mespot.Spotter.load(lab["run"])  # reads and checks, builds no network yet
    assert loads == [] and spotter.trained.options.calibrate
    assert [f.name for f in spotter.trained.files] == ["s15", "s16", "s19"]
    video = _frames_of(lab["data"], "15_0101disgustingteeth")
    first = spotter.spot(video, tmp_path / "a")
    assert len(loads) == 3  # built by the first spot, once its video's features were there
    second = spotter.spot(video, tmp_path / "b")
    assert len(loads) == 3  # the networks were loaded once
    assert first.applied.startswith("last epoch (proposal rules calibrated on inner-validation")
    assert opened == [tmp_path / "a" / "features.zarr", tmp_path / "b" / "features.zarr"]
    pd.testing.assert_frame_equal(first.intervals, second.intervals)


def test_calibrate_asked_for_where_a_fold_has_no_rules_is_one_line(lab, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(lab["run"], run)
    (run / "folds" / "s16" / "rules.json").unlink()
    from spotting.trained import load_trained

    trained = load_trained(run)  # the default: fixed rules, saying why
    assert not trained.options.calibrate and "s16" in trained.note
    with pytest.raises(UserError, match="--calibrate: fold.s. s16 record no proposal rules"):
        load_trained(run, calibrate=True)
    # another epoch than the one the rules were calibrated for: not evaluate's default either
    assert not load_trained(lab["run"], select="fixed:1").options.calibrate
    video = _frames_of(lab["data"], "15_0101disgustingteeth")
    line = command_fails(capsys, ["predict", video, "--model", run, "--calibrate", "--out",
                                  tmp_path / "p"])
    assert "--calibrate: fold(s) s16 record no proposal rules" in line


def test_evaluate_takes_a_copy_of_the_store_and_refuses_another(lab, tmp_path, capsys):
    from spotting.evaluate import evaluate_run

    copy = tmp_path / "elsewhere.zarr"
    shutil.copytree(lab["store"], copy)
    here = evaluate_run(lab["run"], "last")
    there = evaluate_run(lab["run"], "last", store=copy)
    pd.testing.assert_frame_equal(here.metrics, there.metrics)
    other = tmp_path / "other.zarr"
    shutil.copytree(lab["store"], other)
    import zarr

    zarr.open_group(str(other), mode="r+").attrs["params_hash"] = "another"
    line = command_fails(capsys, ["evaluate", lab["run"], "--store", other, "--no-report"])
    assert line.startswith(f"error: {other}: not the store run {lab['run']} was trained on")


# ---- device and flow backend (item 3)

def test_extraction_follows_the_runs_backend_on_the_device_it_can_run_on(lab):
    from flowcore.flow import available_backends
    from spotting.predict import extraction_setup

    params = json.loads((lab["run"] / "config.json").read_text())["features"]["params"]
    chosen, options, what = extraction_setup(params, 1, None, "cuda:1")  # torch: any device
    assert (chosen.flow_backend, options.device, what["fallback"]) == ("torch", "cuda:1", None)
    chosen, options, _ = extraction_setup({**params, "flow_backend": "opencv"}, 1, None, "cuda")
    assert (chosen.flow_backend, options.device) == ("opencv", "cpu")  # OpenCV: the CPU only
    chosen, options, what = extraction_setup({**params, "flow_backend": "cuda"}, 2, None, "cpu")
    assert chosen.subsample == 2 and what["trained_backend"] == "cuda"
    if "cuda" in available_backends():  # a GPU and CuPy: the run's own backend, on the GPU
        assert (chosen.flow_backend, options.device, what["fallback"]) == ("cuda", "cuda", None)
    else:  # the torch backend on the CPU, said once
        assert (chosen.flow_backend, options.device) == ("torch", "cpu")
        assert what["fallback"].startswith("the run's features were extracted with the cuda "
                                           "flow backend, which needs a GPU and CuPy, not here")
    chosen, _, _ = extraction_setup({**params, "flow_backend": "cuda"}, 1, "opencv", "cpu")
    assert chosen.flow_backend == "opencv"  # asked for: no fallback chosen for the user


def test_a_run_on_cuda_features_predicts_on_a_cpu_only_machine_saying_so(lab, tmp_path, capsys):
    from flowcore.flow import available_backends

    if "cuda" in available_backends():
        pytest.skip("a GPU with CuPy is here: the cuda backend runs, nothing falls back")
    run = tmp_path / "run"
    shutil.copytree(lab["run"], run, ignore=shutil.ignore_patterns("evaluation", "report*"))
    from flowcore.store import params_hash

    config = json.loads((run / "config.json").read_text())
    config["features"]["params"]["flow_backend"] = "cuda"  # as if extracted on a GPU
    config["features"]["params_hash"] = config["store_params_hash"] = params_hash(
        config["features"]["params"])  # as such a run records it
    (run / "config.json").write_text(json.dumps(config))
    video = _frames_of(lab["data"], "15_0101disgustingteeth")
    assert main([str(a) for a in ("predict", video, "--model", run, "--out", tmp_path / "p",
                                  "-q")]) == 0
    notes = [line for line in capsys.readouterr().err.splitlines() if "cuda flow backend" in line]
    assert len(notes) == 1 and "torch backend on the CPU instead" in notes[0]
    meta = json.loads((tmp_path / "p" / "prediction.json").read_text())
    assert meta["extraction"]["backend"] == "torch" and meta["extraction"]["device"] == "cpu"
    assert meta["extraction"]["trained_backend"] == "cuda" and meta["extraction"]["fallback"]


def test_videos_much_longer_than_the_calibration_videos_get_a_note(lab):
    from flowcore.store import VideoFeatures, load_features
    from spotting.trained import load_trained

    trained = load_trained(lab["run"])
    rows = [json.loads((lab["run"] / "folds" / s / "rules.json").read_text())["val_video_rows"]
            for s in ("s15", "s16", "s19")]
    assert trained.calibrated_on_rows == max(max(r) for r in rows) == 59  # 2 s at 30 fps
    same = list(load_features(lab["store"]).videos.values())
    assert trained.length_note(same) == ""
    long = VideoFeatures("long", "x", 30.0, np.zeros((200, 12, 2), np.float32),
                         np.arange(1, 202))
    note = trained.length_note(same + [long])
    assert note.startswith("long: more than 1.5x as long as the videos the proposal rules were "
                           "calibrated on (up to 59 rows)")
    assert load_trained(lab["run"], calibrate=False).length_note([long]) == ""
