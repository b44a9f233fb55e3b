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
    parse_selection,
    scale_label,
    spot_subjects,
)
from flowcore.store import FeatureSet, VideoFeatures
from mespot.testing import create_store, write_subsampled_store, write_video
from spotting.metrics import MEGC, REFERENCE, summarise
from spotting.proposals import PRESETS
from spotting.report import build_report
from spotting.config import RunConfig, TrainParams
from spotting.data import prepare
from spotting.loso import train_loso
from spotting.truths import TRUTH_COLUMNS
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


# ------------------------------------------------ SAMM-LV scales (issue 13, point 7)

SAMM_FRAMES = 1 + 8 * np.arange(41)  # 200 fps kept 1 in 8: original frames 1, 9, 17, ...
ROW_COLUMNS = ["video", "subject", "type", "onset", "apex", "offset", "score"]


def samm_features(videos=("006_1", "006_2")) -> FeatureSet:
    return FeatureSet(
        "samm.zarr",
        "samm-lv",
        "test",
        {},
        {
            v: VideoFeatures(v, "006", 25.0, np.zeros((40, 12, 2), np.float32), SAMM_FRAMES)
            for v in videos
        },
    )


def test_samm_frames_and_rows_count_differently_near_iou_half():
    features = samm_features()
    # the same truth, frames 80..104 (rows 9..12), in two videos
    truths = pd.DataFrame(
        [(v, "006", "me", 80, 92, 104, 9, 11, 12) for v in ("006_1", "006_2")],
        columns=list(TRUTH_COLUMNS),
    )
    proposals = pd.DataFrame(
        [
            ("006_1", "006", "me", 8, 10, 12, 0.9),  # frames 65..97: IoU 18/40
            ("006_2", "006", "me", 10, 11, 13, 0.9),
        ],  # frames 81..105: IoU 24/26
        columns=ROW_COLUMNS,
    )
    megc = count(proposals, truths, MEGC, features)
    assert megc.loc[megc["outcome"] == "TP", "video"].tolist() == ["006_2"]
    # the reference's rows: proposal row + 1 against frame // 8: [9, 13] vs [10, 13] -> 3/4 TP;
    # [11, 14] vs [10, 13] -> 2/4, not > 0.5
    reference = count(proposals, truths, REFERENCE, features)
    assert reference.loc[reference["outcome"] == "TP", "video"].tolist() == ["006_1"]
    # rows in mespot's own mapping ((f - 1) // 8, inclusive counts) would have counted both
    for m in (megc, reference):  # the match table shows original frame numbers either way
        assert sorted(m["proposal_onset"].dropna().tolist()) == [65, 81]
        assert set(m["truth_offset"].dropna()) == {104}
    assert scale_label(MEGC, features) == "frames: original 200 fps numbering"
    assert scale_label(REFERENCE, features) == "rows: subsampled /8"


def fake_run(base: Path, proposals: pd.DataFrame, monkeypatch) -> Path:
    """A SAMM-layout store (1 in 8 of 200 fps), its annotations in original frames, and a run
    folder whose one fold 'spots' `proposals` (rows): the evaluate path without training."""
    import spotting.evaluate

    root = create_store(base / "store.zarr", dataset="samm-lv")
    for video in ("006_1", "006_2"):
        write_video(root, video, "006", np.zeros((40, 12, 2), np.float32), SAMM_FRAMES, fps=25.0)
    (base / "gt.csv").write_text(
        "subject,video,onset,apex,offset,type,au\n"
        "006,006_1,80,92,104,me,R12\n006,006_2,80,92,104,me,R12\n"
    )
    run = base / "run"
    (run / "folds" / "006").mkdir(parents=True)
    (run / "config.json").write_text(
        json.dumps(
            {"store": str(base / "store.zarr"), "annotations": str(base / "gt.csv"), "windows": {}}
        )
    )
    (run / "folds" / "006" / "fold.json").write_text(
        json.dumps({"status": "complete", "test_subject": "006"})
    )
    (run / "folds" / "006" / "weights_epoch_001.safetensors").touch()
    monkeypatch.setattr(
        spotting.evaluate, "spot_subjects", lambda *args, **kwargs: (proposals.copy(), {})
    )
    return run


def test_samm_evaluation_matches_in_original_frames_and_names_its_scale(tmp_path, monkeypatch):
    proposals = pd.DataFrame(
        [("006_1", "006", "me", 8, 10, 12, 0.9), ("006_2", "006", "me", 10, 11, 13, 0.8)],
        columns=ROW_COLUMNS,
    )
    run = fake_run(tmp_path, proposals, monkeypatch)
    megc = evaluate_run(run, "last")
    out = run / "evaluation" / "last+flip"  # the default test-time flip; no inner models
    # an external count on the files a person reads: intervals.csv against the annotations, MEGC
    spotted = pd.read_csv(out / "intervals.csv")
    truth = pd.read_csv(tmp_path / "gt.csv")
    external = 0
    for p in spotted.itertuples():
        for t in truth[truth["video"] == p.video].itertuples():
            inter = max(0, min(p.offset, t.offset) - max(p.onset, t.onset) + 1)
            external += inter / ((p.offset - p.onset + 1) + (t.offset - t.onset + 1) - inter) >= 0.5
    table = megc.metrics.set_index("type")
    assert table.loc["overall", "TP"] == external == 1
    summary = json.loads((out / "metrics.json").read_text())
    assert summary["rule"] == "megc" and summary["scale"] == "frames: original 200 fps numbering"
    assert set(pd.read_csv(out / "metrics.csv")["scale"]) == {"frames: original 200 fps numbering"}
    assert set(pd.read_csv(out / "metrics_per_video.csv")["scale"]) == {
        "frames: original 200 fps numbering"
    }
    reference = evaluate_run(run, "last", rule="reference")
    summary = json.loads((out / "metrics.json").read_text())
    assert summary["rule"] == "reference" and summary["scale"] == "rows: subsampled /8"
    assert reference.metrics.set_index("type").loc["overall", "TP"] == 1
    assert reference.matches.loc[reference.matches["outcome"] == "TP", "video"].tolist() == [
        "006_1"
    ]
    assert megc.matches.loc[megc.matches["outcome"] == "TP", "video"].tolist() == ["006_2"]


def test_proposal_arithmetic_follows_the_store_and_is_stated(tmp_path, monkeypatch, capsys):
    from mespot.commands.results import print_metrics

    run = fake_run(tmp_path, pd.DataFrame(columns=ROW_COLUMNS), monkeypatch)
    seen = []
    monkeypatch.setattr(
        "spotting.evaluate.spot_subjects",
        lambda prep, weights, subjects, params, *a, **k: (
            seen.append(params.variant) or (pd.DataFrame(columns=ROW_COLUMNS), {})
        ),
    )
    e = evaluate_run(run, "last")
    assert e.proposals == "mespot" and seen == ["mespot"]
    assert e.options == SpotOptions(calibrate=False, flip=True) and e.out.name == "last+flip"
    import zarr

    zarr.open_group(str(tmp_path / "store.zarr"), mode="r+").attrs["params"] = {"compat": True}
    e = evaluate_run(run, "last")
    assert e.proposals == "reference" and seen[-1] == "reference"  # --compat features
    assert e.options == PLAIN  # the reference's numbers: no flip, no calibration by default
    summary = json.loads((run / "evaluation" / "last" / "metrics.json").read_text())
    assert (
        summary["proposals"] == "reference" and summary["proposal_params"]["variant"] == "reference"
    )
    print_metrics([e])
    printed = " ".join(capsys.readouterr().out.split())
    assert "reference arithmetic" in printed and "rows" not in printed and "200 fps" in printed
    assert evaluate_run(run, "last", proposals="mespot").proposals == "mespot"
    with pytest.raises(UserError, match="--proposals"):
        evaluate_run(run, "last", proposals="float16")


@pytest.mark.slow
def test_samm_layout_store_end_to_end_names_its_scales(synth_small_samm, tmp_path):
    """`mespot synth` in the SAMM-LV layout (200 fps) -> extract (kept 1 in 8) -> train -> evaluate
    with both rules: each names its scale, and the truths are counted in the workbook's own
    frame numbers. (A 3-epoch model spots nothing here; the counting itself is checked on
    constructed proposals above.)"""
    from flowcore.batch import run_extraction
    from flowcore.extract import ExtractParams
    from flowcore.faces import FaceParams
    from flowcore.flow import TVL1Params
    from flowcore.sources import open_source
    from spotting.annotations import read_annotations
    from spotting.config import RunConfig, TrainParams
    from spotting.loso import train_loso

    quick = ExtractParams(
        tvl1=TVL1Params(n_scales=2, n_warps=1, outer_iterations=2), faces=FaceParams(resize=48)
    )
    report = run_extraction(open_source(synth_small_samm), tmp_path / "f.zarr", quick, workers=1)
    assert not report.failed, report.summary()
    workbook = synth_small_samm / "SAMM_LongVideos_V1_Release.xlsx"
    config = RunConfig(
        store=str(tmp_path / "f.zarr"),
        annotations=str(workbook),
        train=TrainParams(epochs=3, batch_size=2),
    )
    train_loso(config, tmp_path / "run", tensorboard=False)
    truth = read_annotations(workbook).frame
    assert (truth["offset"] > 0).all() and (truth["onset"] % 8 != 1).any()  # not all on kept frames
    for rule, scale in (
        ("reference", "rows: subsampled /8"),
        ("reference-2023", "rows: subsampled /8"),
        ("megc", "frames: original 200 fps numbering"),
    ):
        e = evaluate_run(tmp_path / "run", "last", rule=rule)
        assert e.scale == scale and e.proposals == "mespot"
        assert set(pd.read_csv(e.out / "metrics_per_subject.csv")["scale"]) == {scale}
        assert json.loads((e.out / "metrics.json").read_text())["scale"] == scale
        assert e.metrics.set_index("type").loc["overall", "truths"] == len(truth)
        shown = pd.read_csv(e.out / "matches.csv").dropna(subset=["truth_onset"])
        assert sorted(
            map(tuple, shown[["truth_onset", "truth_offset"]].astype(int).values.tolist())
        ) == sorted(map(tuple, truth[["onset", "offset"]].values.tolist()))


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
