"""Registration to the first frame before the flow (`mespot extract --align`, flowcore/align.py)."""

from dataclasses import replace

import numpy as np
import pytest
import zarr

from flowcore.align import AlignParams, apply_to_points, similarity, transforms_to_first, warp_crop
from flowcore.batch import run_extraction
from flowcore.extract import ExtractParams
from flowcore.sources import open_source
from mespot.testing import DRIFT, write_casme2
from tests.test_extract import OPTIONS, QUICK


def _similar(scale, degrees, tx, ty):
    c, s = scale * np.cos(np.radians(degrees)), scale * np.sin(np.radians(degrees))
    return np.array([[c, -s, tx], [s, c, ty]])


def test_similarity_recovers_a_known_transform():
    rng = np.random.default_rng(0)
    src = rng.uniform(0, 100, (8, 2))
    m = _similar(1.07, 4.0, 3.5, -2.0)
    dst = src @ m[:, :2].T + m[:, 2]
    np.testing.assert_allclose(similarity(src, dst), m, atol=1e-9)


def test_transforms_take_every_frame_onto_the_first():
    rng = np.random.default_rng(1)
    first = rng.uniform(20, 100, (68, 2))
    moves = [_similar(1 + 0.01 * t, 0.5 * t, 0.7 * t, -0.3 * t) for t in range(6)]
    landmarks = np.stack([first @ m[:, :2].T + m[:, 2] for m in moves])
    transforms = transforms_to_first(landmarks, AlignParams(smooth=0))
    back = apply_to_points(transforms, landmarks)
    np.testing.assert_allclose(back, np.broadcast_to(first, back.shape), atol=1e-3)


def test_smoothing_removes_landmark_jitter_but_keeps_a_head_movement():
    rng = np.random.default_rng(2)
    first = rng.uniform(20, 100, (68, 2))
    shift = np.where(np.arange(60) < 30, 0.0, 4.0)  # the head moves 4 px right at frame 30
    landmarks = first[None] + np.stack([shift, np.zeros(60)], 1)[:, None]
    landmarks = landmarks + rng.normal(0, 0.4, landmarks.shape)  # per-fit jitter
    clean = first[None] + np.stack([shift, np.zeros(60)], 1)[:, None]

    def registered_x(sigma):  # where the registered frames put the (noise-free) face centre
        moved = apply_to_points(transforms_to_first(landmarks, AlignParams(smooth=sigma)), clean)
        return moved[:, :, 0].mean(axis=1)

    raw, smooth = registered_x(0), registered_x(2.0)
    away = np.r_[5:25, 35:55]  # frames away from the movement
    assert np.abs(np.diff(smooth[away])).mean() < 0.5 * np.abs(np.diff(raw[away])).mean()
    assert np.abs(smooth[away] - first[:, 0].mean()).max() < 0.3  # the movement is undone


def test_warp_crop_moves_the_picture_as_the_transform_says():
    y, x = np.mgrid[:64, :64]
    picture = (127 + 80 * np.sin(x / 5.0) * np.cos(y / 7.0)).astype(np.uint8)
    moved = warp_crop(picture, np.array([[1.0, 0, 3], [0, 1.0, 0]]))  # 3 px right
    np.testing.assert_array_equal(moved[:, 10:50], picture[:, 7:47])


def test_align_is_off_by_default_and_absent_from_old_parameters():
    assert "align" not in ExtractParams().to_dict()  # stores written before keep their hash
    on = replace(ExtractParams(), align=AlignParams(smooth=3.0))
    again = ExtractParams.from_dict(on.to_dict())
    assert (
        again.align == AlignParams(smooth=3.0)
        and ExtractParams.from_dict(ExtractParams().to_dict()).align is None
    )
    with pytest.raises(ValueError, match="align"):
        AlignParams.from_value("yes")


@pytest.mark.slow
def test_aligned_extraction_registers_the_drift_away(tmp_path):
    """The fixture's whole picture drifts by DRIFT px per frame: without --align the flow is that
    drift (test_extract), with it the registered crops barely move."""
    write_casme2(tmp_path / "data", {"15_0101disgustingteeth": 8})
    params = replace(
        QUICK, save_flow=True, align=AlignParams(), faces=replace(QUICK.faces, resize=96)
    )
    report = run_extraction(
        open_source(tmp_path / "data"), tmp_path / "f.zarr", params, OPTIONS, workers=1
    )
    assert report.count("complete") == 1, report.summary()
    root = zarr.open_group(str(tmp_path / "f.zarr"), mode="r")
    assert root.attrs["params"]["align"] == AlignParams().to_dict()
    video = root["videos/15_0101disgustingteeth"]
    flow = video["flow"][...].astype(np.float32)[:, :, 8:-8, 8:-8]
    box = video["face_box"][...]
    drift = np.hypot(*DRIFT) * 96 / (box[2] - box[0])
    assert np.abs(flow.mean(axis=(0, 2, 3))).max() < 0.1 * drift
    alignment = video["alignment"][...]
    assert alignment.shape == (8, 2, 3)
    assert alignment[-1, 0, 2] < alignment[0, 0, 2] - 3 * DRIFT[0] * 96 / (
        box[2] - box[0]
    )  # undoes the drift


def test_command_align_flag_and_config_key(tmp_path):
    from mespot.cli import main

    write_casme2(tmp_path / "data", {"15_0101disgustingteeth": 4})
    config = tmp_path / "x.yaml"
    config.write_text(
        "align: {smooth: 1.5}\nfaces: {resize: 48}\n"
        "tvl1: {n_scales: 2, n_warps: 1, outer_iterations: 2}\n"
    )

    def align_of(name: str, *flags: str) -> dict:
        """The `align` parameters of a store extracted with `flags`."""
        out = str(tmp_path / name)
        assert main(["extract", str(tmp_path / "data"), "--out", out, *flags, "-q",
                     "--workers", "1"]) == 0
        return zarr.open_group(out, mode="r").attrs["params"]["align"]

    assert align_of("a.zarr", "--config", str(config))["smooth"] == 1.5
    assert align_of("b.zarr", "--align", "--resize", "48")["smooth"] == 2.0
