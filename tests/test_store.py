"""The Zarr v3 feature store: layout, parameter hash, refusal, status last, failures."""

import numpy as np
import pytest
import zarr

from flowcore.store import FeatureStore, StoreMismatchError, params_hash

PARAMS = {"flow_backend": "opencv", "tvl1": {"tau": 0.25}, "subsample": 1}


def test_params_hash_ignores_key_order():
    a, b = {"a": 1, "b": {"c": 2, "d": 3}}, {"b": {"d": 3, "c": 2}, "a": 1}
    assert params_hash(a) == params_hash(b)
    assert params_hash({"a": 1}) != params_hash({"a": 2})


def test_layout_readable_with_plain_zarr(tmp_path):
    store = FeatureStore(tmp_path / "f.zarr", PARAMS, "casme2")
    group = store.begin("15_0101x", {"subject": "s15", "fps": 30.0})
    store.write_array(group, "mdmo", np.ones((4, 12, 2), np.float32))
    store.write_array(group, "frame_numbers", np.arange(1, 6, dtype=np.int32))
    assert store.status("15_0101x") == "running"
    store.complete(group, {"n_frames": 5})
    root = zarr.open_group(str(tmp_path / "f.zarr"), mode="r")
    assert root.attrs["format_version"] == 1 and root.attrs["dataset"] == "casme2"
    assert root.attrs["params"] == PARAMS and root.attrs["params_hash"] == params_hash(PARAMS)
    video = root["videos/15_0101x"]
    assert video["mdmo"].shape == (4, 12, 2) and video["mdmo"].dtype == np.float32
    assert dict(video.attrs)["status"] == "complete" and video.attrs["n_frames"] == 5
    assert video.metadata.zarr_format == 3
    assert video["mdmo"].metadata.dimension_names == ("pair", "roi", "xy")


def test_other_params_are_refused_with_the_difference(tmp_path):
    FeatureStore(tmp_path / "f.zarr", PARAMS, "casme2")
    FeatureStore(tmp_path / "f.zarr", dict(PARAMS), "casme2")  # same: fine (resume)
    other = {**PARAMS, "tvl1": {"tau": 0.2}}
    with pytest.raises(StoreMismatchError, match=r"tvl1.tau: stored 0.25, now 0.2"):
        FeatureStore(tmp_path / "f.zarr", other, "casme2")
    with pytest.raises(StoreMismatchError, match="holds dataset 'casme2'"):
        FeatureStore(tmp_path / "f.zarr", PARAMS, "samm")
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "a.txt").write_text("x")
    with pytest.raises(StoreMismatchError, match="not a Zarr store"):
        FeatureStore(tmp_path / "junk", PARAMS, "casme2")


def test_failure_record_and_restart(tmp_path):
    store = FeatureStore(tmp_path / "f.zarr", PARAMS, "casme2")
    group = store.begin("v1", {})
    store.write_array(group, "mdmo", np.ones((2, 12, 2), np.float32))
    store.fail("v1", "face", "v1: no face found")
    root = zarr.open_group(str(tmp_path / "f.zarr"), mode="r")
    attrs = dict(root["videos/v1"].attrs)
    assert (attrs["status"], attrs["stage"]) == ("failed", "face")
    assert attrs["error"] == "v1: no face found"
    assert "mdmo" not in root["videos/v1"]  # a failed video keeps no half-written arrays
    # a garbled metadata file (a kill mid-write) reads as "not complete"
    (tmp_path / "f.zarr/videos/v1/zarr.json").write_text("{trunc")
    assert store.statuses() == {"v1": None}
    store.begin("v1", {})  # and is simply redone
    assert store.status("v1") == "running"
