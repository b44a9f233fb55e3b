"""`mespot extract` on faces that come and go: what the store holds and what the command says
(the tracking itself: tests/test_tracking.py)."""

import numpy as np
import pytest
import zarr

from flowcore.store import load_features, no_face_frames
from mespot.cli import main
from mespot.testing import scene_frames, write_frames

STEADY = (100, 30, 1.0)


@pytest.fixture(scope="module")
def extracted(tmp_path_factory):
    """Three videos, extracted by the command at 48 px: 15_0101gap (face gone in frames 11-18),
    15_0102late (face from frame 6), 15_0103none (no face at all)."""
    base = tmp_path_factory.mktemp("comego")
    scenes = {"15_0101gap": [[STEADY]] * 10 + [[]] * 8 + [[STEADY]] * 10,
              "15_0102late": [[]] * 5 + [[STEADY]] * 12,
              "15_0103none": [[]] * 6}
    for video, placements in scenes.items():
        frames, _ = scene_frames(placements)
        write_frames(base / "data" / "rawpic" / "s15" / video, frames, "img{:03d}.jpg")
    store = base / "f.zarr"
    code = main(["extract", str(base / "data"), "--out", str(store), "--resize", "48",
                 "--workers", "1", "-q", "--face", "center"])
    return base, store, code


def test_the_command_says_which_frames_had_no_face(extracted, capsys):
    _, store, code = extracted
    assert code == 1  # one video has no face at all
    group = zarr.open_group(str(store), mode="r")["videos"]
    assert group["15_0103none"].attrs["status"] == "failed"
    assert group["15_0103none"].attrs["error"] == ("no face found in 15_0103none (searched 2 "
                                                   "frames of its 6, one in every 8 and the last)")
    assert dict(zarr.open_group(str(store), mode="r").attrs)["params"]["faces"]["choose"] == \
        "center"


def test_a_gap_is_marked_and_no_feature_spans_it(extracted):
    _, store, _ = extracted
    g = zarr.open_group(str(store), mode="r")["videos/15_0101gap"]
    present = g["face_present"][...]
    assert present.tolist() == [True] * 10 + [False] * 8 + [True] * 10
    valid = g["mdmo_valid"][...]
    assert valid.tolist() == [True] * 9 + [False] * 9 + [True] * 9  # rows 9..17 touch the gap
    mdmo = g["mdmo"][...]
    assert mdmo.shape == (27, 12, 2) and not mdmo[~valid].any()
    assert np.isnan(g["landmarks"][10:18]).all() and np.isfinite(g["landmarks"][:10]).all()
    assert (g["crop_box"][10:18] == -1).all() and (g["crop_box"][:10] >= 0).all()
    quality = g["fit_quality"][...]
    assert (quality[present] > 0).all()
    assert g.attrs["no_face_frames"] == [[11, 18]]
    assert g.attrs["notes"] == ["no face in frames 11-18: no features there"]
    # the face came back where it was: one crop, two runs
    assert [s["crop_box"] for s in g.attrs["face_segments"]] == [list(g["face_box"][...])] * 2


def test_a_late_face_starts_the_video_at_its_first_frame(extracted):
    _, store, _ = extracted
    g = zarr.open_group(str(store), mode="r")["videos/15_0102late"]
    assert g["frame_numbers"][...].tolist() == list(range(6, 18))
    assert g["face_present"][...].all() and g["mdmo"].shape == (11, 12, 2)
    assert g.attrs["face_found_in_frame"] == 6 and g.attrs["no_face_frames"] == [[1, 5]]


def test_the_reader_gives_valid_rows_segments_and_the_faceless_frames(extracted):
    _, store, _ = extracted
    features = load_features(store)
    gap = features.videos["15_0101gap"]
    assert gap.segments == [(0, 9), (18, 27)]
    assert gap.no_face == ((11, 18),)
    assert features.videos["15_0102late"].segments == [(0, 11)]
    assert no_face_frames(store) == {"15_0101gap": [(11, 18)], "15_0102late": [(1, 5)]}


def test_a_store_from_before_tracking_reads_as_without_gaps(tmp_path):
    from mespot.testing import create_store, write_video

    root = create_store(tmp_path / "old.zarr")
    write_video(root, "v", "s1", np.ones((20, 12, 2)), np.arange(1, 22))
    video = load_features(tmp_path / "old.zarr").videos["v"]
    assert video.valid is None and video.row_valid.all() and video.segments == [(0, 20)]
    assert video.no_face == ()


def test_the_summary_prints_the_notes(extracted, tmp_path, capsys):
    base, store, _ = extracted
    again = main(["extract", str(base / "data"), "--out", str(tmp_path / "g.zarr"), "--resize",
                  "48", "--workers", "1", "-q", "--face", "center", "--video", "15_0102late"])
    out = " ".join(capsys.readouterr().out.split())
    assert again == 0
    assert ("note: 15_0102late: no face in frames 1-5: the video starts at frame 6, where the "
            "face first is") in out
