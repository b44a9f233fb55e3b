"""Extraction end to end on tiny fixtures: layouts, failures and repairs, resume, the command.

Speed: faces are resized to 48 px and TV-L1 runs with few scales and iterations (QUICK) except
where the command's defaults are exercised; results are still real flow of real frames.
"""

import numpy as np
import pytest
import zarr

from flowcore.batch import run_extraction
from flowcore.extract import ExtractParams, RunOptions
from flowcore.faces import FaceParams
from flowcore.flow import TVL1Params
from flowcore.sources import open_source
from spotting.annotations import read_source_annotations
from mespot.testing import write_casme2, write_samm, write_video_file

QUICK = ExtractParams(tvl1=TVL1Params(n_scales=2, n_warps=1, outer_iterations=2),
                      faces=FaceParams(resize=48))
OPTIONS = RunOptions(batch_size=3)


def _arrays(store, video_id):
    group = zarr.open_group(str(store), mode="r")[f"videos/{video_id}"]
    return {name: group[name][...] for name in ("mdmo", "landmarks", "face_box", "frame_numbers")}


@pytest.fixture(scope="module")
def casme2_run(tmp_path_factory):
    """A CAS(ME)^2 copy with one good video and one of each failure, extracted once."""
    root = tmp_path_factory.mktemp("casme2")
    write_casme2(root, {"15_0101disgustingteeth": 7, "15_0102eatingworms": 12})
    write_casme2(root, {"16_0401girlcrashing": 4}, face=False)
    (root / "rawpic/s16/16_0502funnyerrors").mkdir()  # an empty video folder
    damaged = root / "rawpic/s15/15_0102eatingworms"
    (damaged / "img004.jpg").unlink()  # a missing frame number
    data = (damaged / "img008.jpg").read_bytes()
    (damaged / "img008.jpg").write_bytes(data[: len(data) // 3])  # a corrupt JPEG mid-video
    (root / "CAS(ME)^2code_final.xlsx").write_bytes(b"PK\x03\x04 not really a workbook")
    source = open_source(root)
    report = run_extraction(source, root / "features.zarr", QUICK, OPTIONS, workers=1)
    return root, source, report


def test_casme2_store_shapes_and_attrs(casme2_run):
    root, _, report = casme2_run
    store = zarr.open_group(str(root / "features.zarr"), mode="r")  # plain zarr
    assert store.attrs["format_version"] == 1 and store.attrs["dataset"] == "casme2"
    params = store.attrs["params"]
    assert params["flow_backend"] == "torch" and params["faces"]["resize"] == 48  # the default
    assert params["compat"] is False and params["subsample"] == 1
    assert params["tvl1"]["n_scales"] == 2
    video = store["videos/15_0101disgustingteeth"]
    assert video["mdmo"].shape == (6, 12, 2) and video["mdmo"].dtype == np.float32
    assert video["landmarks"].shape == (7, 68, 2) and video["face_box"].dtype == np.int32
    assert video["frame_numbers"][...].tolist() == list(range(1, 8))
    attrs = dict(video.attrs)
    assert (attrs["status"], attrs["subject"], attrs["fps"], attrs["n_frames"]) == (
        "complete", "s15", 30.0, 7)
    assert set(attrs["timings"]) == {"setup", "decode", "face", "landmarks", "flow", "mdmo",
                                      "write"}
    assert np.isfinite(video["mdmo"][...]).all() and np.abs(video["mdmo"][...]).max() > 0


def test_missing_and_corrupt_frames_are_repaired_and_recorded(casme2_run):
    root, _, report = casme2_run
    arrays = _arrays(root / "features.zarr", "15_0102eatingworms")
    assert arrays["frame_numbers"].tolist() == list(range(1, 13))  # rows stay aligned in time
    assert arrays["mdmo"].shape == (11, 12, 2)
    attrs = dict(zarr.open_group(str(root / "features.zarr"))["videos/15_0102eatingworms"].attrs)
    assert attrs["frame_repairs"] == {"missing": [4], "corrupt": [8], "outlier": []}


def test_each_bad_video_fails_alone_with_a_clear_reason(casme2_run):
    root, _, report = casme2_run
    by_id = {r.video_id: r for r in report.results}
    assert by_id["15_0101disgustingteeth"].status == "complete"
    assert by_id["15_0102eatingworms"].status == "complete"
    no_face, empty = by_id["16_0401girlcrashing"], by_id["16_0502funnyerrors"]
    assert (no_face.status, no_face.stage) == ("failed", "face")
    assert "no face found in 16_0401girlcrashing (searched 2 frames of its 4" in no_face.error
    assert (empty.status, empty.stage) == ("failed", "decode")
    assert "no frame images in the folder" in empty.error and "16_0502funnyerrors" in empty.error
    store = zarr.open_group(str(root / "features.zarr"), mode="r")
    attrs = dict(store["videos/16_0401girlcrashing"].attrs)
    assert (attrs["status"], attrs["stage"]) == ("failed", "face") and "no face" in attrs["error"]
    assert "2 extracted, 0 already complete (skipped), 2 failed" in report.summary()


def test_unreadable_workbook_does_not_stop_extraction(casme2_run):
    root, source, report = casme2_run
    assert report.count("complete") == 2  # the workbook is not needed to extract
    with pytest.raises(Exception, match=r"code_final\.xlsx"):
        read_source_annotations(source)


def test_resume_redoes_only_incomplete_videos(casme2_run, tmp_path):
    root, source, _ = casme2_run
    before = _arrays(root / "features.zarr", "15_0101disgustingteeth")
    report = run_extraction(source, root / "features.zarr", QUICK, OPTIONS, workers=1)
    statuses = {r.video_id: r.status for r in report.results}
    assert statuses == {"15_0101disgustingteeth": "skipped", "15_0102eatingworms": "skipped",
                        "16_0401girlcrashing": "failed", "16_0502funnyerrors": "failed"}
    after = _arrays(root / "features.zarr", "15_0101disgustingteeth")
    for name in before:
        np.testing.assert_array_equal(before[name], after[name])


def test_other_parameters_are_refused(casme2_run):
    from flowcore.store import StoreMismatchError

    root, source, _ = casme2_run
    other = ExtractParams(tvl1=QUICK.tvl1, faces=FaceParams(resize=64))
    with pytest.raises(StoreMismatchError, match=r"faces.resize: stored 48, now 64"):
        run_extraction(source, root / "features.zarr", other, OPTIONS, workers=1)


def test_samm_layout_subsamples_by_8(tmp_path):
    write_samm(tmp_path, {"006_1": 17, "007_2": 9})
    source = open_source(tmp_path)
    report = run_extraction(source, tmp_path / "f.zarr", QUICK, OPTIONS, workers=1)
    assert report.count("complete") == 2, report.summary()
    store = zarr.open_group(str(tmp_path / "f.zarr"), mode="r")
    assert store.attrs["params"]["subsample"] == 8 and store.attrs["dataset"] == "samm"
    video = store["videos/006_1"]
    assert video["frame_numbers"][...].tolist() == [1, 9, 17]
    assert video["mdmo"].shape == (2, 12, 2)
    attrs = dict(video.attrs)
    assert (attrs["fps"], attrs["subject"], attrs["subsample"]) == (25.0, "006", 8)


def test_video_file_flow_saved_and_compat(tmp_path):
    write_video_file(tmp_path / "videos" / "ann" / "take1.avi", 5)
    source = open_source(tmp_path / "videos")
    from dataclasses import replace

    from flowcore.mdmo import MDMOParams

    params = replace(QUICK, save_flow=True, mdmo=MDMOParams(compat=True))
    report = run_extraction(source, tmp_path / "f.zarr", params, OPTIONS, workers=1)
    assert report.count("complete") == 1, report.summary()
    video = zarr.open_group(str(tmp_path / "f.zarr"), mode="r")["videos/take1"]
    assert video.attrs["subject"] == "ann" and video.attrs["fps"] == 25.0
    flow = video["flow"][...]
    assert flow.shape == (4, 2, 48, 48) and flow.dtype == np.float16
    assert np.abs(video["mdmo"][...]).max() <= 1.0  # compat: "20 px" units


def test_pictures(casme2_run, tmp_path):
    import cv2

    from flowcore.pictures import write_pictures

    root, source, _ = casme2_run
    paths = write_pictures(root / "features.zarr", tmp_path, source, ["15_0101disgustingteeth"])
    image = cv2.imread(str(paths[0]))
    assert image.shape[0] == 256 and image.shape[1] > 3 * 200


def test_command_exit_codes(casme2_run, tmp_path, capsys):
    from mespot.cli import main

    root, _, _ = casme2_run
    code = main(["extract", str(root), "--out", str(root / "features.zarr"), "--resize", "48",
                 "-q"])
    assert code == 2  # other parameters (default TV-L1) than the store: refused, one line
    assert "other extraction parameters" in capsys.readouterr().err
    assert main(["extract", str(tmp_path / "nothing"), "--out", str(tmp_path / "f.zarr")]) == 2
    one = tmp_path / "one"
    write_casme2(one, {"15_0101disgustingteeth": 3})
    write_casme2(one, {"16_0401girlcrashing": 3}, face=False)
    code = main(["extract", str(one), "--out", str(tmp_path / "g.zarr"), "--resize", "48", "-q",
                 "--workers", "1", "--pictures", str(tmp_path / "pictures")])
    captured = capsys.readouterr()
    assert code == 1, captured.err  # one video failed
    assert "1 extracted" in captured.out and "1 failed" in captured.out
    assert "no face found" in captured.out
    assert "error: 1 of 2 video(s) failed" in captured.err
    assert [p.name for p in (tmp_path / "pictures").iterdir()] == ["15_0101disgustingteeth.png"]


def test_command_config_file_sets_any_parameter_and_flags_win(casme2_run, tmp_path, capsys):
    import json

    from mespot.cli import main

    root, _, _ = casme2_run
    store = root / "features.zarr"  # made with QUICK (few TV-L1 scales, 48 px faces)
    recorded = dict(zarr.open_group(str(store), mode="r").attrs)["params"]
    config = tmp_path / "same.json"
    config.write_text(json.dumps(recorded))  # a store's parameters, given back as a file
    code = main(["extract", str(root), "--out", str(store), "--config", str(config), "-q"])
    captured = capsys.readouterr()
    assert "other extraction parameters" not in captured.err  # the same parameters: resumed
    # the bad ones fail again
    assert code == 1 and "2 already complete (skipped), 2 failed" in captured.out

    quick = tmp_path / "quick.yaml"
    quick.write_text(
        "tvl1:\n  n_scales: 2\n  n_warps: 1\n  outer_iterations: 2\nfaces:\n  resize: 48\n"
    )
    one = tmp_path / "one"
    write_casme2(one, {"15_0101disgustingteeth": 3})
    assert (
        main(
            [
                "extract",
                str(one),
                "--out",
                str(tmp_path / "a.zarr"),
                "--config",
                str(quick),
                "--resize",
                "64",
                "--backend",
                "torch",
                "-q",
            ]
        )
        == 0
    )
    params = dict(zarr.open_group(str(tmp_path / "a.zarr"), mode="r").attrs)["params"]
    assert params["tvl1"]["n_scales"] == 2 and params["tvl1"]["n_warps"] == 1  # from the file
    assert params["tvl1"]["tau"] == TVL1Params().tau  # not in the file: the default
    assert params["faces"]["resize"] == 64 and params["flow_backend"] == "torch"  # flags win
    assert params["faces"]["margin"] == 0.1

    for text, message in (
        ("tvl1:\n  taus: 1\n", "unknown key 'taus'"),
        ("tvl1:\n  tau: -1\n", "tau must be > 0"),
        ("tvl1: 3\n", "'tvl1' must be a mapping"),
        ("- a list\n", "expected a mapping"),
    ):
        bad = tmp_path / "bad.yaml"
        bad.write_text(text)
        assert (
            main(
                ["extract", str(one), "--out", str(tmp_path / "b.zarr"), "--config", str(bad), "-q"]
            )
            == 2
        )
        error = capsys.readouterr().err
        assert message in error and str(bad) in error, error
    assert not (tmp_path / "b.zarr").exists()


@pytest.mark.gpu
def test_cuda_flow_and_mdmo_on_the_device(tmp_path):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    from dataclasses import replace

    write_casme2(tmp_path, {"15_0101disgustingteeth": 5})
    source = open_source(tmp_path)
    params = replace(QUICK, flow_backend="torch")
    cpu = run_extraction(source, tmp_path / "cpu.zarr", params, OPTIONS, workers=1)
    gpu = run_extraction(
        source, tmp_path / "gpu.zarr", params, RunOptions(device="cuda"), workers=1
    )
    assert cpu.count("complete") == gpu.count("complete") == 1, gpu.summary()
    a = _arrays(tmp_path / "cpu.zarr", "15_0101disgustingteeth")["mdmo"]
    b = _arrays(tmp_path / "gpu.zarr", "15_0101disgustingteeth")["mdmo"]
    assert a.shape == b.shape == (4, 12, 2)
    assert np.median(np.abs(a - b)) < 0.05  # same algorithm; float differences only


def test_explicit_subsampling_through_the_public_entry_point(tmp_path):
    from dataclasses import replace

    from flowcore import extract_source

    write_casme2(tmp_path / "data", {"15_0101disgustingteeth": 7})
    report = extract_source(
        tmp_path / "data", tmp_path / "f.zarr", replace(QUICK, subsample=2), OPTIONS, workers=1
    )
    assert report.count("complete") == 1, report.summary()
    store = zarr.open_group(str(tmp_path / "f.zarr"), mode="r")
    video = store["videos/15_0101disgustingteeth"]
    assert video["frame_numbers"][...].tolist() == [1, 3, 5, 7]
    assert (video.attrs["fps"], video.attrs["subsample"], store.attrs["params"]["subsample"]) == (
        15.0,
        2,
        2,
    )


def test_known_translation_gives_its_flow_and_no_roi_motion(tmp_path):
    from dataclasses import replace

    from mespot.testing import DRIFT

    write_casme2(tmp_path / "data", {"15_0101disgustingteeth": 5})
    report = run_extraction(
        open_source(tmp_path / "data"),
        tmp_path / "f.zarr",
        replace(QUICK, save_flow=True),
        OPTIONS,
        workers=1,
    )
    assert report.count("complete") == 1, report.summary()
    video = zarr.open_group(str(tmp_path / "f.zarr"), mode="r")["videos/15_0101disgustingteeth"]
    box = video["face_box"][...]
    scale = 48 / (box[2] - box[0])  # the crop is resized to 48 px
    flow = video["flow"][...].astype(np.float32)[:, :, 8:-8, 8:-8]  # away from the borders
    np.testing.assert_allclose(flow.mean(axis=(0, 2, 3)), np.array(DRIFT) * scale, atol=0.05)
    steps = np.diff(video["landmarks"][...], axis=0).mean(axis=(0, 1))
    np.testing.assert_allclose(steps, np.array(DRIFT) * scale, atol=0.1)
    # the whole face moves together: the head vector takes most of it, the ROIs keep little
    features = video["mdmo"][...]
    residual = np.hypot(features[..., 0], features[..., 1]).mean()
    assert residual < 0.3 * np.hypot(*DRIFT) * scale


def test_frame_cache_gives_the_same_bytes_as_decoding_again(casme2_run, tmp_path):
    root, source, _ = casme2_run
    one = open_source(root)
    from dataclasses import replace

    one = replace(one, videos=tuple(v for v in one.videos if v.video_id == "15_0102eatingworms"))
    report = run_extraction(
        one, tmp_path / "f.zarr", QUICK, RunOptions(batch_size=3, frame_cache_mb=0), workers=1
    )
    assert report.count("complete") == 1, report.summary()
    again = _arrays(tmp_path / "f.zarr", "15_0102eatingworms")  # decoded twice (no cache)
    cached = _arrays(root / "features.zarr", "15_0102eatingworms")  # crops cached
    for name in again:
        assert again[name].tobytes() == cached[name].tobytes(), name


def test_a_video_locked_by_another_process_is_left_to_it(tmp_path):
    from flowcore.store import FeatureStore

    write_casme2(tmp_path / "data", {"15_0101disgustingteeth": 3, "15_0102eatingworms": 3})
    source = open_source(tmp_path / "data")
    other = FeatureStore(tmp_path / "f.zarr", QUICK.to_dict() | {"subsample": 1}, "casme2")
    with other.video_lock("15_0101disgustingteeth") as mine:  # "another run" holds this one
        assert mine
        report = run_extraction(source, tmp_path / "f.zarr", QUICK, OPTIONS, workers=1)
    statuses = {r.video_id: r.status for r in report.results}
    assert statuses == {"15_0101disgustingteeth": "busy", "15_0102eatingworms": "complete"}
    assert "1 left to another process" in report.summary() and not report.failed
