"""Source identity (flowcore/fingerprint.py): a store knows which frames each video came from;
resume skips a video only when they are the same, copies are said, and `train` says what it
does with videos nobody annotated."""

import shutil

import cv2
import numpy as np
import pytest
import zarr

from flowcore.fingerprint import copy_warnings, source_fingerprint
from flowcore.video import VideoSpec
from mespot.cli import main
from mespot.testing import face_frames, write_casme2, write_frames, write_video_file


def _extract(source, store, *flags) -> int:
    return main(["extract", str(source), "--out", str(store), "--resize", "48", "--workers", "1",
                 "-q", *flags])


def _folder(root, video="15_0101a"):
    return root / "rawpic" / "s15" / video


def test_fingerprint_of_a_frame_folder(tmp_path):
    root = write_casme2(tmp_path, {"15_0101a": 12})
    spec = VideoSpec("15_0101a", "s15", _folder(root), 30.0)
    got = source_fingerprint(spec)
    assert got["frames"] == 12 and got["size"] == [192, 192]
    assert [n for n, _ in got["sampled"]] == [1, 4, 7, 9, 12]  # spread, first and last
    assert source_fingerprint(spec) == got  # the same frames, the same fingerprint
    cv2.imwrite(str(_folder(root) / "img007.jpg"), face_frames(1, drift=(5, 5))[0])
    changed = source_fingerprint(spec)
    assert changed["sampled"][2] != got["sampled"][2]  # frame 7 is the third sampled
    assert changed["sampled"][:2] == got["sampled"][:2]
    (_folder(root) / "img012.jpg").unlink()
    assert source_fingerprint(spec)["frames"] == 11


def test_fingerprint_of_a_video_file(tmp_path):
    path = write_video_file(tmp_path / "clip.avi", 10)
    spec = VideoSpec("clip", "lab", path, 25.0)
    got = source_fingerprint(spec)
    assert got["frames"] == 10 and got["size"] == [192, 192] and len(got["sampled"]) == 5
    assert source_fingerprint(spec) == got
    other = source_fingerprint(VideoSpec("c2", "lab", write_video_file(tmp_path / "b.avi", 9),
                                         25.0))
    assert other != got


def test_copies_are_said_by_their_frames_and_by_their_names(tmp_path):
    root = write_casme2(tmp_path, {"15_0101a": 6, "15_0102b": 7})
    shutil.copytree(_folder(root), _folder(root, "15_0101a_old"))
    shutil.copytree(_folder(root, "15_0102b"), _folder(root, "15_0102b (1)"))
    specs = [VideoSpec(p.name, "s15", p, 30.0) for p in sorted(_folder(root).parent.iterdir())]
    lines = copy_warnings(specs, {s.video_id: source_fingerprint(s) for s in specs})
    assert lines[0].startswith("videos 15_0101a, 15_0101a_old have identical frames (6 frames "
                               "of 192x192")
    assert lines[1].startswith("videos 15_0102b, 15_0102b (1) have identical frames")
    assert any(line.startswith("15_0101a_old (") and "named like a copy ('_old')" in line
               for line in lines)
    assert any("named like a copy ('(1)')" in line for line in lines)
    assert len(lines) == 4  # the originals' names are not suspects


@pytest.fixture(scope="module")
def extracted(tmp_path_factory):
    """A 2-video copy extracted by the command at 48 px."""
    base = tmp_path_factory.mktemp("identity")
    root = write_casme2(base / "data", {"15_0101a": 6, "15_0102b": 6})
    store = base / "f.zarr"
    assert _extract(root, store) == 0
    return base, root, store


def test_the_store_records_where_each_video_came_from(extracted):
    _, root, store = extracted
    attrs = dict(zarr.open_group(str(store), mode="r")["videos/15_0101a"].attrs)
    assert attrs["source"] == str(_folder(root))
    assert attrs["source_fingerprint"] == source_fingerprint(
        VideoSpec("15_0101a", "s15", _folder(root), 30.0))


def test_resume_skips_the_same_frames_even_moved(extracted, capsys):
    base, root, store = extracted
    moved = base / "moved"
    shutil.copytree(root, moved)
    assert _extract(moved, store) == 0
    assert "0 extracted, 2 already complete (skipped)" in " ".join(capsys.readouterr().out.split())


def test_other_frames_under_the_same_ids_are_refused_then_overwritten(extracted, tmp_path, capsys):
    base, root, store = extracted
    other = tmp_path / "other"
    write_casme2(other, {"15_0101a": 6})
    write_frames(_folder(other, "15_0102b"), face_frames(8, drift=(1.0, 0.0)), "img{:03d}.jpg")
    copy = tmp_path / "copy.zarr"
    shutil.copytree(store, copy)
    assert _extract(other, copy) == 2
    err = capsys.readouterr().err
    assert err.strip().count("\n") == 0  # one line
    assert "holds video 15_0102b extracted from other frames" in err
    assert "recorded: 6 frames of 192x192 from" in err and "there now: 8 frames of 192x192" in err
    assert "--overwrite" in err
    assert _extract(other, copy, "--overwrite") == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "1 extracted, 1 already complete (skipped)" in out  # 15_0101a: the same frames
    assert zarr.open_group(str(copy), mode="r")["videos/15_0102b"].attrs["n_frames"] == 8


def test_extraction_warns_of_copies(tmp_path, capsys):
    root = write_casme2(tmp_path / "data", {"15_0101a": 5})
    shutil.copytree(_folder(root), _folder(root, "15_0101a_old"))
    assert _extract(root, tmp_path / "f.zarr") == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "warning: videos 15_0101a, 15_0101a_old have identical frames" in out
    assert "warning: 15_0101a_old (" in out and "is named like a copy ('_old')" in out


def test_train_says_what_it_does_with_videos_nobody_annotated(tmp_path):
    from mespot.testing import write_tiny_store
    from spotting.data import prepare
    from spotting.loso import unused_data_lines
    from spotting.windows import WindowParams

    base = write_tiny_store(tmp_path)
    root = zarr.open_group(str(base / "store.zarr"), mode="r+")
    from mespot.testing import write_video

    write_video(root, "s2_v_old", "s2", np.ones((300, 12, 2)), np.arange(1, 302))
    gap = np.ones(300, bool)
    gap[100:120] = False
    root["videos/s1_v"].create_array("mdmo_valid", data=gap)
    lines = unused_data_lines(prepare(base / "store.zarr", base / "gt.csv", WindowParams()))
    assert lines[0].startswith("1 video(s) of the store have no annotation: s2_v_old. They give "
                               "no training window")
    assert "counts as a false positive" in lines[0]
    assert lines[1] == ("1 video(s) lost frames without the face (20 feature rows in all): "
                        "s1_v; no window spans those rows")
