"""The score -> precision maps (spotting/precision.py): isotonic fit, counts, held-out maps."""

import json

import numpy as np
import pandas as pd
import pytest

from spotting.precision import (
    PrecisionMap,
    fit_isotonic,
    held_out,
    kept,
    maps_from_json,
    read_precision,
    reliability,
    with_precision,
    write_precision,
)
from tests.test_train import tiny  # noqa: F401 - the 3-subject store fixture


def test_fit_is_monotone_and_keeps_counts():
    scores = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8]
    hits = [0, 1, 0, 0, 1, 1, 0, 1]
    fitted = fit_isotonic(scores, hits, prior=0)
    values = [b["precision"] for b in fitted.blocks]
    assert values == sorted(values)
    assert fitted.n == 8 and sum(b["tp"] for b in fitted.blocks) == 4
    # without the prior each block's precision is its own share of hits
    assert all(b["precision"] == b["tp"] / b["n"] for b in fitted.blocks)
    # pool adjacent violators by hand: [0] [1,0,0 -> 1/3] [1,1] ... 0.7 (0) pools with 0.5-0.6
    assert values[0] == 0.0 and values[-1] == 1.0


def test_prior_pulls_small_blocks_toward_the_overall_share():
    fitted = fit_isotonic([0.1, 0.2, 0.3, 0.9, 0.95], [0, 0, 0, 1, 1], prior=2)
    low, high = fitted.blocks[0], fitted.blocks[-1]
    assert (low["n"], low["tp"]) == (3, 0) and (high["n"], high["tp"]) == (2, 2)
    assert low["precision"] == pytest.approx((0 + 2 * 0.4) / 5)
    assert high["precision"] == pytest.approx((2 + 2 * 0.4) / 4)


def test_step_function_lookup():
    fitted = fit_isotonic([0.1, 0.2, 0.8, 0.9], [0, 0, 1, 1], prior=0)
    assert list(fitted.at([0.0, 0.15, 0.5, 0.85, 1.0])) == [0.0, 0.0, 0.0, 1.0, 1.0]
    assert list(fitted.support([0.05, 0.95])) == [2, 2]
    assert np.isnan(PrecisionMap().at([0.5])).all()
    assert PrecisionMap.from_json(fitted.to_json()) == fitted


def _found():
    rng = np.random.default_rng(0)
    rows = []
    for subject in ("a", "b", "c"):
        for kind in ("me", "mae"):
            for _ in range(10):
                score = rng.random()
                rows.append({"video": f"{subject}1", "subject": subject, "type": kind,
                             "onset": 0, "apex": 1, "offset": 2, "score": score})
    found = pd.DataFrame(rows)
    hits = found["score"] > 0.5
    matches = pd.DataFrame({"outcome": np.where(hits, "TP", "FP"), "proposal": found.index})
    return found, matches


def test_held_out_maps_never_use_the_subject_they_are_applied_to():
    found, matches = _found()
    shown, maps = held_out(found, matches, ["a", "b", "c"])
    assert list(shown.index) == list(found.index)
    for subject in ("a", "b", "c"):
        others = shown[shown["subject"] != subject].assign()
        expected = with_precision(found[found["subject"] == subject],
                                  {kind: fit_isotonic(part["score"], part["hit"])
                                   for kind in ("me", "mae")
                                   for part in [others[others["type"] == kind]]})
        got = shown[shown["subject"] == subject]
        assert np.allclose(got["precision"], expected["precision"])
        assert maps_from_json({"maps": maps}, subject)["me"].n == 20
    assert maps_from_json({"maps": maps})["me"].n == 30
    assert maps_from_json({"maps": maps}, "z") is None
    # intervals above 0.5 are all right: the held-out precision says so
    assert (shown.loc[shown["score"] > 0.6, "precision"] > 0.7).all()


def test_kept_and_reliability(tmp_path):
    found, matches = _found()
    shown, maps = held_out(found, matches, ["a", "b", "c"])
    assert kept(shown, 0).all()
    assert (kept(shown, 0.5) == (shown["precision"] >= 0.5)).all()
    table = reliability(shown)
    assert set(table["type"]) == {"me", "mae", "overall"}
    assert table.loc[table["type"] == "overall", "n"].sum() == len(shown)
    write_precision(tmp_path / "p" / "x.json", {"selection": "last"}, maps, table)
    record = read_precision(tmp_path / "p" / "x.json")
    assert record["key"] == {"selection": "last"} and record["maps"] == maps
    assert read_precision(tmp_path / "none.json") is None


def test_train_fits_the_precision_maps_that_predict_applies(tiny, tmp_path, capsys):  # noqa: F811
    """`mespot train` ends with the run's default evaluation: RUN/precision/ holds the maps
    fitted on the folds' held-out test intervals, and the trained run, never evaluated by hand,
    gives each interval its expected precision."""
    from mespot.api import Spotter
    from mespot.cli import main

    run = tmp_path / "run"
    assert main(["train", str(tiny / "store.zarr"), "-a", str(tiny / "gt.csv"), "--out", str(run),
                 "--epochs", "2", "--batch-size", "2", "--no-tensorboard"]) == 0
    said = "".join(capsys.readouterr())
    records = sorted((run / "precision").glob("*.json"))
    assert [r.name for r in records] == ["last+flip.json"]  # no inner models: no calibration
    record = json.loads(records[0].read_text())
    assert sorted(record["maps"]["folds"]) == ["s1", "s2", "s3"]
    assert "precision maps fitted on the" in " ".join(said.split())
    trained = Spotter.load(run).trained
    assert trained.precision is not None and "fitted on the held-out" in trained.precision_note
