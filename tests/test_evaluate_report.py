"""Evaluation of a LOSO run (epoch selection, files, frame numbers) and the HTML report."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from flowcore.errors import UserError
from spotting.evaluate import (
    ORACLE_FIRST_EPOCH,
    SpotOptions,
    count,
    evaluate_run,
    ground_truth,
    spot_subjects,
)
from spotting.selection import parse_selection
from mespot.testing import write_subsampled_store
from spotting.metrics import MEGC, summarise
from spotting.proposals import PRESETS
from spotting.report import build_report
from spotting.config import RunConfig, TrainParams
from spotting.data import prepare
from spotting.loso import train_loso
from spotting.windows import WindowParams

EPOCHS = 18
PLAIN = SpotOptions(calibrate=False, flip=False)  # AUW-GCN's own rules on the face alone


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """3 subjects x 1 video x 600 rows subsampled 1-in-2 (frame numbers 1, 3, 5, ...), two macro-
    and one micro-expression each, trained 18 epochs with weights kept every epoch."""
    base = write_subsampled_store(tmp_path_factory.mktemp("evaluate"))
    config = RunConfig(
        store=str(base / "store.zarr"),
        annotations=str(base / "gt.csv"),
        train=TrainParams(epochs=EPOCHS, batch_size=4, save_every=1, inner_val=1),
    )
    train_loso(config, base / "run", tensorboard=True)
    return base / "run"


def test_selection_parsing():
    assert parse_selection("last").name == "last"
    assert parse_selection("fixed:12").epoch == 12
    assert "TEST-SET" in parse_selection("oracle").label
    with pytest.raises(UserError, match="--select"):
        parse_selection("best")


@pytest.mark.slow
def test_last_epoch_evaluation_files_and_frames(run):
    e = evaluate_run(run, "last", options=PLAIN)
    assert set(e.epochs.values()) == {EPOCHS}
    out = run / "evaluation" / "last"
    for name in (
        "metrics.csv",
        "metrics.json",
        "intervals.csv",
        "matches.csv",
        "metrics_per_subject.csv",
        "metrics_per_video.csv",
        "curves.npz",
    ):
        assert (out / name).is_file(), name
    summary = json.loads((out / "metrics.json").read_text())
    assert summary["test_set_selection"] is False and summary["rule"] == "megc"
    metrics = pd.read_csv(out / "metrics.csv").set_index("type")
    assert metrics.loc["overall", "truths"] == 9
    assert metrics.loc["overall", "TP"] == metrics.loc["me", "TP"] + metrics.loc["mae", "TP"]
    intervals = pd.read_csv(out / "intervals.csv")
    assert list(intervals.columns[:7]) == [
        "video",
        "subject",
        "type",
        "onset",
        "offset",
        "apex",
        "score",
    ]
    assert (intervals["onset"] % 2 == 1).all()  # original numbering: kept frames are 1, 3, 5, ...
    matches = pd.read_csv(out / "matches.csv")
    truth = matches.dropna(subset=["truth_onset"])
    assert set(truth["truth_onset"]) <= set(1 + 2 * np.arange(601))
    assert len(truth) == 9


def f1_per_epoch(run: Path, folder: Path, subjects: list[str], epochs) -> dict[int, float]:
    """Overall F1 on `subjects` of the weights in `folder`, epoch by epoch, computed here."""
    config = json.loads((run / "config.json").read_text())
    windows = WindowParams(**config["windows"])
    prep = prepare(config["store"], config["annotations"], windows)
    truths = ground_truth(prep, windows)
    f1 = {}
    for epoch in epochs:
        found, _ = spot_subjects(
            prep,
            folder / f"weights_epoch_{epoch:03d}.safetensors",
            subjects,
            PRESETS["casme2"],
            windows,
        )
        table = summarise(
            count(found, truths[truths["subject"].isin(subjects)], MEGC, prep.features)
        )
        f1[epoch] = table.set_index("type").loc["overall", "f1"]
    return f1


@pytest.mark.slow
def test_oracle_picks_the_best_test_epoch_and_says_so(run):
    e = evaluate_run(run, "oracle", options=PLAIN)
    for subject, chosen in e.epochs.items():
        f1 = f1_per_epoch(
            run, run / "folds" / subject, [subject], range(ORACLE_FIRST_EPOCH["casme2"], EPOCHS + 1)
        )
        assert f1[chosen] == max(f1.values())
        assert chosen == min(k for k, v in f1.items() if v == f1[chosen])  # ties: the earliest
    assert json.loads((run / "evaluation" / "oracle" / "metrics.json").read_text())[
        "test_set_selection"
    ]


@pytest.mark.slow
def test_fixed_epoch_and_missing_epoch(run):
    assert set(evaluate_run(run, "fixed:5").epochs.values()) == {5}
    with pytest.raises(UserError, match="no weights for epoch 99"):
        evaluate_run(run, "fixed:99")


@pytest.mark.slow
def test_inner_validation_picks_the_epoch_on_held_out_training_subjects(run, tmp_path):
    e = evaluate_run(run, "inner-val", options=PLAIN)
    for subject, chosen in e.epochs.items():
        inner = run / "folds" / subject / "inner"
        val = json.loads((inner / "inner.json").read_text())["val_subjects"]
        assert len(val) == 1 and subject not in val
        assert json.loads((inner / "fold.json").read_text())["train_subjects"] == sorted(
            {"s1", "s2", "s3"} - {subject} - set(val)
        )
        f1 = f1_per_epoch(run, inner, val, range(1, EPOCHS + 1))
        assert chosen == min(k for k, v in f1.items() if v == max(f1.values()))
    # a run without inner models says how to get them
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    for inner in copy.glob("folds/*/inner"):
        shutil.rmtree(inner)
    with pytest.raises(UserError, match="--inner-val"):
        evaluate_run(copy, "inner-val")


def test_not_a_run_folder(tmp_path):
    with pytest.raises(UserError, match="not a run folder"):
        evaluate_run(tmp_path)
    with pytest.raises(UserError, match="not a run folder"):
        build_report(tmp_path)


@pytest.mark.slow
def test_report_embeds_every_picture(run):
    from PIL import Image

    evaluate_run(run, "last", options=PLAIN)
    evaluate_run(run, "oracle", options=PLAIN)
    page = build_report(run, "last").read_text()
    pictures = sorted((run / "report").glob("*.png"))
    names = {p.stem for p in pictures}
    assert {
        "metrics_last",
        "metrics_oracle",
        "subject_f1",
        "losses",
        "prior",
        "lengths",
        "curves_s1_v",
        "curves_s2_v",
        "curves_s3_v",
    } <= names
    embedded = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(embedded) == len(pictures)
    for path in pictures:
        with Image.open(path) as image:
            pixels = np.asarray(image.convert("L"), dtype=np.float32)
        assert pixels.std() > 5, f"{path.name} looks blank"
    assert "Test-set selection" in page and "Repaired or skipped annotations" in page
    assert "matched in frames: original 60 fps numbering; proposals: mespot arithmetic" in page
    assert page.index("last epoch") < page.index("TEST-SET SELECTION")


@pytest.mark.slow
def test_report_of_a_run_without_true_positives(run, tmp_path):
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    config = json.loads((copy / "config.json").read_text())
    gt = Path(config["annotations"])
    shifted = pd.read_csv(gt)
    shifted[["onset", "apex", "offset"]] = (
        shifted[["onset", "apex", "offset"]] + 600
    )  # truth moved away
    moved = tmp_path / "gt.csv"
    shifted.to_csv(moved, index=False)
    config["annotations"] = str(moved)
    (copy / "config.json").write_text(json.dumps(config))
    e = evaluate_run(copy, "last")
    assert e.metrics.set_index("type").loc["overall", "TP"] == 0
    assert build_report(copy).is_file()


def test_report_finds_an_evaluation_by_its_selection_alone(tmp_path):
    from spotting.report import _primary
    from spotting.run_folder import RunFolder

    run = RunFolder(tmp_path)
    folders = {name: tmp_path / name for name in ("last+calibrated+flip", "oracle",
                                                  "oracle+flip")}
    assert _primary(run, folders, None) == "last+calibrated+flip"  # the first
    assert _primary(run, folders, "last") == "last+calibrated+flip"  # the only `last`
    assert _primary(run, folders, "oracle") == "oracle"  # the exact name first
    assert _primary(run, folders, "oracle+flip") == "oracle+flip"
    with pytest.raises(UserError, match="no evaluation 'inner-val'.*have: last"):
        _primary(run, folders, "inner-val")
    del folders["oracle"]
    folders["oracle+calibrated"] = tmp_path / "oracle+calibrated"
    with pytest.raises(UserError, match="several: name one"):
        _primary(run, folders, "oracle")


def test_long_video_curves_are_split_into_rows(tmp_path):
    from spotting.plots import FRAMES_PER_ROW, plot_video_curves

    n = 12000
    curves = np.random.default_rng(0).random((n, 8)).astype(np.float32)
    matches = pd.DataFrame(
        {
            "type": ["me", "mae"],
            "outcome": ["FP", "FN"],
            "truth_onset": [np.nan, 5000],
            "truth_offset": [np.nan, 5040],
            "proposal_onset": [200, np.nan],
            "proposal_offset": [210, np.nan],
        }
    )
    path = plot_video_curves("long", curves, np.arange(1, n + 1), matches, tmp_path / "long.png")
    from PIL import Image

    with Image.open(path) as image:
        width, height = image.size
    rows = int(np.ceil(n / FRAMES_PER_ROW))
    assert height > rows * 2 * 150  # one ME and one MaE panel per row of frames


@pytest.mark.slow
def test_command_line_evaluate_and_report(run, capsys):
    from mespot.cli import main

    assert main(["evaluate", str(run), "--select", "last", "--select", "oracle"]) == 0
    printed = capsys.readouterr().out
    assert "last epoch" in printed and "TEST-SET" in printed and "overall" in printed
    assert (run / "report.html").is_file()
    assert main(["report", str(run), "--select", "oracle"]) == 0
    assert main(["evaluate", str(run), "--select", "best"]) == 2
    assert "--select must be" in capsys.readouterr().err


# --- evaluation options: test-time flip, calibrated proposals --------------------------------


@pytest.mark.slow
def test_flip_averages_the_face_and_its_mirror(run):
    config = json.loads((run / "config.json").read_text())
    windows = WindowParams(**config["windows"])
    prep = prepare(config["store"], config["annotations"], windows)
    weights = run / "folds" / "s1" / "weights_epoch_018.safetensors"
    _, plain = spot_subjects(prep, weights, ["s1"], PRESETS["casme2"], windows)
    _, flipped = spot_subjects(prep, weights, ["s1"], PRESETS["casme2"], windows, flip=True)
    # the mirror's own logits, computed the long way: mirror the raw features, then normalise
    from dataclasses import replace

    from spotting.augment import mirror_features
    from spotting.data import window_tensors
    from spotting.inference import predict_logits, video_logits
    from spotting.run_folder import load_weights

    model, meta = load_weights(weights)
    mask = prep.windows.of_subjects(["s1"])
    mirror_ws = replace(prep.windows, x=mirror_features(prep.windows.x))
    norm = meta["normalisation"]
    data = window_tensors(mirror_ws, mask, norm["mean"], norm["std"], "cpu")
    mirror = video_logits(predict_logits(model, data["x"], windows.context).numpy(),
                          prep.windows, mask)
    for video, rows in flipped.items():
        np.testing.assert_allclose(rows, (plain[video] + mirror[video]) / 2, atol=1e-5)
        assert not np.allclose(rows, plain[video], atol=1e-3)


@pytest.mark.slow
def test_evaluate_with_calibration_and_flip_chooses_on_inner_subjects_only(run, capsys):
    e = evaluate_run(run, "last", options=SpotOptions(calibrate=True, flip=True))
    assert e.out.name == "last+calibrated+flip"
    summary = json.loads((e.out / "metrics.json").read_text())
    assert summary["options"] == {"calibrate": True, "flip": True}
    for subject, chosen in summary["calibration"].items():
        inner = json.loads((run / "folds" / subject / "inner" / "inner.json").read_text())
        assert chosen["val_subjects"] == inner["val_subjects"]
        assert subject not in chosen["val_subjects"]
        assert set(chosen) >= {"me", "mae", "inner_epoch", "val_f1"}
    from mespot.cli import main

    assert main(["evaluate", str(run), "--calibrate", "--no-flip", "--no-report"]) == 0
    assert "last+calibrated:" in capsys.readouterr().out


@pytest.mark.slow
def test_default_options_are_calibration_and_flip_where_the_run_allows(run, tmp_path, capsys):
    import shutil

    from mespot.cli import main

    explicit = evaluate_run(run, "last", options=SpotOptions(calibrate=True, flip=True))
    default = evaluate_run(run, "last")  # the fixture's folds have inner models
    assert default.options == SpotOptions(calibrate=True, flip=True)
    assert default.out.name == "last+calibrated+flip"
    pd.testing.assert_frame_equal(default.metrics, explicit.metrics)
    pd.testing.assert_frame_equal(default.intervals, explicit.intervals)
    copy = tmp_path / "run"  # without inner models: the flip only
    shutil.copytree(run, copy, ignore=shutil.ignore_patterns("inner", "evaluation"))
    e = evaluate_run(copy, "last")
    assert e.options == SpotOptions(calibrate=False, flip=True) and e.out.name == "last+flip"
    assert main(["evaluate", str(copy), "--no-flip", "--no-report"]) == 0
    assert (copy / "evaluation" / "last" / "metrics.json").is_file()
    assert "+flip" not in capsys.readouterr().out
    summary = json.loads((copy / "evaluation" / "last" / "metrics.json").read_text())
    assert summary["options"] == {"calibrate": False, "flip": False}


@pytest.mark.slow
def test_calibration_needs_inner_models(run, tmp_path):
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(run, copy, ignore=shutil.ignore_patterns("inner", "rules.json"))
    with pytest.raises(UserError, match="--inner-val"):
        evaluate_run(copy, "last", options=SpotOptions(calibrate=True))
    # the rules train recorded (folds/<subject>/rules.json) are enough for evaluate's default
    recorded = tmp_path / "recorded"
    shutil.copytree(run, recorded, ignore=shutil.ignore_patterns("inner"))
    e = evaluate_run(recorded, "last", options=SpotOptions(calibrate=True))
    assert all(c["recorded"] for c in e.calibration.values()) and len(e.calibration) == 3
