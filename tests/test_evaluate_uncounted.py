"""`evaluate` names what its counts pool over when training could not use an annotated video
(issue 25, item 5): the folds (of the subjects annotated) and the truths not counted, and why."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mespot.cli import main
from mespot.testing import write_tiny_store


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """The tiny store (s1, s2, s3; its video `broken` of s1 failed in extraction), with
    annotations that also name `broken` (2 truths) and a video of s4, whose only video never
    reached the store (3 truths); trained 1 epoch."""
    from spotting.config import RunConfig, TrainParams
    from spotting.loso import train_loso

    base = write_tiny_store(tmp_path_factory.mktemp("uncounted"))
    with open(base / "gt.csv", "a") as f:
        f.write("s1,broken,2,4,7,mae,12\ns1,broken,3,4,5,me,4\n"
                "s4,s4_v,10,20,40,mae,12\ns4,s4_v,50,55,60,me,4\ns4,s4_v,100,120,140,mae,12\n")
    config = RunConfig(store=str(base / "store.zarr"), annotations=str(base / "gt.csv"),
                       train=TrainParams(epochs=1, batch_size=4, inner_val=0))
    train_loso(config, base / "run", tensorboard=False)
    return base / "run"


def test_evaluate_names_the_folds_and_the_truths_not_counted(run, capsys):
    from spotting.evaluate import evaluate_run

    e = evaluate_run(run, "last")
    assert e.n_folds == 3 and not e.missing_folds
    assert [(v["video"], v["subject"], v["truths"]) for v in e.uncounted] == [
        ("broken", "s1", 2), ("s4_v", "s4", 3)]
    assert e.uncounted[0]["why"].startswith("in the store with status 'failed'")
    assert e.uncounted[1]["why"] == "not in the feature store"
    assert e.pooled.startswith("pooled over 3 of 4 LOSO folds; the 2 truths of video broken, "
                               "the 3 of s4_v are not counted (")
    assert e.metrics.set_index("type").loc["overall", "truths"] == 6  # 2 per stored video
    summary = json.loads((e.out / "metrics.json").read_text())
    assert summary["pooled"] == e.pooled and len(summary["not_counted"]) == 2
    assert main(["evaluate", str(run), "--no-report"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "pooled over 3 of 4 LOSO folds" in out and "all LOSO folds" not in out
    assert "video s4_v (s4): its 3 truths are not counted: not in the feature store" in out


def test_a_run_that_lost_nothing_says_all_folds(tmp_path):
    from spotting.config import RunConfig, TrainParams
    from spotting.evaluate import evaluate_run
    from spotting.loso import train_loso

    base = write_tiny_store(tmp_path)
    config = RunConfig(store=str(base / "store.zarr"), annotations=str(base / "gt.csv"),
                       train=TrainParams(epochs=1, batch_size=4, inner_val=0))
    train_loso(config, base / "run", tensorboard=False)
    e = evaluate_run(base / "run", "last")
    assert e.pooled == "pooled over all 3 LOSO folds" and e.uncounted == ()
    assert np.isfinite(e.metrics["f1"]).all()
