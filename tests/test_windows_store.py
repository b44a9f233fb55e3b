"""Reading feature stores built by hand with plain zarr, in the layout of the store contract."""

import numpy as np
import pytest
import zarr

from flowcore.errors import UserError
from flowcore.store import load_features, params_hash
from mespot.testing import create_store, write_video


def test_only_complete_videos_are_loaded(tmp_path):
    root = create_store(tmp_path / "s.zarr", dataset="casme2")
    write_video(root, "15_0101disgustingteeth", "s15", np.ones((9, 12, 2)), np.arange(1, 11))
    write_video(root, "006_1", "006", np.zeros((4, 12, 2)), np.array([1, 9, 17, 25, 33]), fps=25.0)
    write_video(root, "bad", "s15", np.zeros((4, 12, 2)), np.arange(1, 6), status="running")
    g = root["videos"].create_group("failed_one")
    g.attrs.update(dict(subject="s16", status="failed", error="no face found"))
    fs = load_features(tmp_path / "s.zarr")
    assert sorted(fs.videos) == ["006_1", "15_0101disgustingteeth"]
    assert fs.skipped == {"bad": "status 'running'", "failed_one": "status 'failed': no face found"}
    v = fs.videos["006_1"]
    assert v.mdmo.dtype == np.float32 and v.mdmo.shape == (4, 12, 2) and v.n_rows == 4
    assert v.frame_numbers.tolist() == [1, 9, 17, 25, 33] and v.fps == 25.0 and v.subject == "006"
    assert fs.subjects == ["006", "s15"] and fs.dataset == "casme2"
    assert fs.params_hash == params_hash({})


def test_store_errors_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="not found"):
        load_features(tmp_path / "missing.zarr")
    zarr.open_group(str(tmp_path / "plain.zarr"), mode="w")
    with pytest.raises(UserError, match="format_version"):
        load_features(tmp_path / "plain.zarr")
    root = create_store(tmp_path / "s.zarr")
    write_video(root, "v", "s1", np.zeros((5, 12, 2)), np.arange(1, 6))  # needs 6 frame numbers
    with pytest.raises(UserError, match="frame_numbers"):
        load_features(tmp_path / "s.zarr")
    root = create_store(tmp_path / "e.zarr")
    with pytest.raises(UserError, match="no complete video"):
        load_features(tmp_path / "e.zarr")
