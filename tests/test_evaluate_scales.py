"""Evaluation's scales and proposal arithmetic: SAMM-LV kept 1 in 8 counted in original frames
(MEGC) or in the reference's rows, each table naming its scale (issue 13, point 7)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from flowcore.errors import UserError
from flowcore.store import FeatureSet, VideoFeatures
from mespot.testing import create_store, write_video
from spotting.evaluate import SpotOptions, count, evaluate_run, scale_label
from spotting.metrics import MEGC, REFERENCE
from spotting.truths import TRUTH_COLUMNS

PLAIN = SpotOptions(calibrate=False, flip=False)  # AUW-GCN's own rules on the face alone

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
    assert reference.out.name == "last+flip+rule-reference"  # beside MEGC's, not over it
    assert json.loads((out / "metrics.json").read_text())["rule"] == "megc"
    summary = json.loads((reference.out / "metrics.json").read_text())
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
    mespot_arithmetic = evaluate_run(run, "last", proposals="mespot")
    assert mespot_arithmetic.proposals == "mespot"
    assert mespot_arithmetic.out.name == "last+proposals-mespot"  # not the compat default's
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


