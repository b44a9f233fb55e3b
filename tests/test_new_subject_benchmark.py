"""benchmarks/new_subject.py: the store copy without a subject and the statistics, on small
hand-made inputs (the benchmark itself takes more than an hour)."""

import importlib.util
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "new_subject.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("new_subject", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(spec.name, None)
        sys.modules.pop("spotting_quality", None)
        if str(SCRIPT.parent) in sys.path:  # the script puts benchmarks/ first on the path
            sys.path.remove(str(SCRIPT.parent))


def test_a_store_without_one_subject(bench, tmp_path):
    from flowcore.store import load_features
    from mespot.testing import write_tiny_store

    base = write_tiny_store(tmp_path)
    copy = bench.without(base / "store.zarr", "s2", tmp_path / "without-s2.zarr")
    features = load_features(copy)
    assert features.subjects == ["s1", "s3"] and "s2_v" not in features.videos
    assert features.params_hash == load_features(base / "store.zarr").params_hash
    assert bench.without(base / "store.zarr", "s3", copy) == copy  # made once: kept as it is
    assert load_features(copy).subjects == ["s1", "s3"]


def test_statistics_pool_the_held_out_subjects_and_pair_the_variants(bench):
    counts = {  # per subject, per type: TP, proposals, truths
        "evaluate": {"a": {"me": [1, 2, 2], "mae": [2, 2, 4]},
                     "b": {"me": [0, 1, 1], "mae": [3, 4, 4]}},
        "ensemble": {"a": {"me": [2, 2, 2], "mae": [2, 3, 4]},
                     "b": {"me": [1, 1, 1], "mae": [3, 3, 4]}},
        "ensemble-fixed": {"a": {"me": [1, 4, 2], "mae": [2, 5, 4]},
                           "b": {"me": [1, 3, 1], "mae": [3, 6, 4]}},
    }
    stats = bench.statistics({"subjects": ["a", "b"], "counts": counts}, 200)
    overall = stats["evaluate"]["overall"]
    assert overall["TP_N_M"] == [6, 9, 11] and overall["f1"] == pytest.approx(12 / 20)
    assert stats["ensemble"]["me"]["f1"] == pytest.approx(6 / 6)  # TP 3, N 3, M 3
    gain = stats["ensemble"]["overall"]["minus_evaluate"]
    assert gain["f1"] == pytest.approx(2 * 8 / (9 + 11) - 12 / 20)
    assert gain["ci95"][0] <= gain["f1"] <= gain["ci95"][1]
    assert "minus_ensemble-fixed" in stats["ensemble"]["mae"]
    assert "minus_evaluate" not in stats["evaluate"]["overall"]
