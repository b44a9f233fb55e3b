"""benchmarks/spotting_quality.py: its cache folder, its refusal of variants that cannot run,
and its statistics on small hand-made counts (the benchmark itself takes hours)."""

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "spotting_quality.py"


@pytest.fixture(scope="module")
def quality():
    spec = importlib.util.spec_from_file_location("spotting_quality", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(spec.name, None)


def test_cache_defaults_to_the_variable_then_the_home_cache(quality, monkeypatch, tmp_path):
    monkeypatch.setenv("MESPOT_QUALITY_CACHE", str(tmp_path / "here"))
    assert quality.default_cache() == tmp_path / "here"
    monkeypatch.delenv("MESPOT_QUALITY_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert quality.default_cache() == tmp_path / ".cache" / "mespot-quality"


def test_variants_needing_missing_pretrained_weights_are_refused_up_front(quality, monkeypatch,
                                                                          tmp_path):
    import spotting.initial_weights as initial_weights

    monkeypatch.setattr(initial_weights, "PRETRAINED", tmp_path / "none.safetensors")
    why = quality.unavailable(["baseline", "pretrained", "flip"])
    assert "pretrained" in why and "mespot pretrain" in why and "--variants baseline flip" in why
    assert quality.unavailable(["baseline", "flip"]) is None
    with pytest.raises(SystemExit, match="do not exist yet"):
        quality.main(["--cache", str(tmp_path / "cache"), "--variants", "pretrained"])
    assert not (tmp_path / "cache" / "sets").exists()  # nothing rendered


def _result(counts: dict) -> dict:
    """A cached per-seed result: {selection: {subject: {type: [TP, N, M]}}}."""
    return {"counts": {s: counts for s in ("last", "inner-val", "oracle")}}


def test_statistics_pool_counts_and_pair_gains_with_the_baseline(quality):
    subjects = [f"s{i}" for i in range(6)]
    base = {s: {"me": [0, 2, 1], "mae": [1, 2, 2]} for s in subjects}
    better = {s: {"me": [1, 2, 1], "mae": [2, 2, 2]} for s in subjects}
    stats = quality.statistics({"baseline": [_result(base)] * 2, "better": [_result(better)] * 2,
                                "same": [_result(base)] * 2}, subjects, n_boot=200)
    overall = stats["baseline"]["last"]["overall"]
    # pooled over subjects: TP 6, N 24, M 18 -> F1 = 2 * 6 / (24 + 18)
    assert overall["f1"] == pytest.approx(12 / 42)
    assert overall["TP_N_M_per_seed"] == [[6, 24, 18]] * 2
    gain = stats["better"]["last"]["overall"]["gain"]
    assert gain["f1"] == pytest.approx(2 * 18 / 42 - 12 / 42) and gain["excludes_zero"]
    same = stats["same"]["inner-val"]["overall"]["gain"]
    assert same["f1"] == 0 and same["ci95"] == [0, 0] and not same["excludes_zero"]
    table = quality.markdown({"casme2": stats}, quality.VARIANTS)
    assert "oracle (TEST-SET selection)" in table and "| better | last |" in table
    assert np.isfinite(stats["better"]["oracle"]["me"]["ci95"]).all()


def test_each_step_is_paired_with_the_row_it_adds_to(quality):
    subjects = [f"s{i}" for i in range(5)]
    base = {s: {"me": [0, 2, 1], "mae": [1, 2, 2]} for s in subjects}
    one_more = {**base, "s0": {"me": [1, 2, 1], "mae": [1, 2, 2]}}  # one more ME hit, on s0
    results = {"baseline": [_result(base)] * 3, "pretrained": [_result(base)] * 3,
               "pretrained-flip": [_result(one_more)] * 3}
    steps = quality.step_gains(results, subjects, n_boot=300)
    # only the steps whose two rows are there, each for the honest selections
    assert [(s["variant"], s["over"], s["selection"]) for s in steps] == [
        ("pretrained", "baseline", "last"), ("pretrained", "baseline", "inner-val"),
        ("pretrained-flip", "pretrained", "last"), ("pretrained-flip", "pretrained", "inner-val")]
    flip = steps[2]["gain"]
    # ME pooled: TP 0 -> 1 of N 10, M 5: F1 0 -> 2/15; MaE unchanged
    assert flip["me"]["f1"] == pytest.approx(2 / 15) and flip["mae"]["f1"] == 0
    assert flip["overall"]["f1"] == pytest.approx(2 * 6 / 35 - 2 * 5 / 35)  # N 20, M 15
    # resamples without s0 gain nothing, so the interval reaches zero and is not claimed
    assert flip["overall"]["ci95"][0] == 0 and not flip["overall"]["excludes_zero"]
    assert steps[0]["gain"]["overall"]["f1"] == 0
    stats = quality.statistics(results, subjects, n_boot=300)
    table = quality.markdown({"casme2": stats}, quality.VARIANTS, {"casme2": steps})
    assert "| pretrained-flip | pretrained | last | +0.133 [" in table
