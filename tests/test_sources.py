"""Dataset sources and lazy frame decoding: layouts, numbering, subsampling, repairs, errors."""

import json

import numpy as np
import pytest

from flowcore.sources import SourceError, open_source
from mespot.testing import face_frames, write_casme2, write_frames, write_samm, write_video_file
from flowcore.video import FrameError, FrameStream, VideoSpec, list_frame_files


def test_casme2_rawpic(tmp_path):
    write_casme2(tmp_path, {"15_0101disgustingteeth": 3, "16_0502funnyerrors": 2})
    (tmp_path / "rawpic" / "s16" / "15_0102eatingworms").mkdir()  # filed under the wrong subject
    src = open_source(tmp_path)
    assert (src.name, src.layout) == ("casme2", "rawpic")
    ids = [(v.video_id, v.subject, v.fps, v.subsample) for v in src.videos]
    assert ids == [("15_0101disgustingteeth", "s15", 30.0, 1),
                   ("15_0102eatingworms", "s15", 30.0, 1), ("16_0502funnyerrors", "s16", 30.0, 1)]
    assert any("filed under s16" in w for w in src.warnings)
    assert open_source(tmp_path / "rawpic").layout == "rawpic"


def _casme2_workbook(path, naming2):
    import openpyxl

    book = openpyxl.Workbook()
    book.active.append((1, "disgust1_1", 10, 12, 20, 4, "disgust", "macro-expression", "disgust"))
    book.create_sheet("naming rule1").append((15, "s15", 1))
    book.create_sheet("naming rule2").append(naming2)
    book.save(path)


def test_casme2_workbook_found_and_read_in_either_sheet3_order(tmp_path):
    from flowcore.errors import UserError
    from spotting.annotations import read_source_annotations

    write_casme2(tmp_path, {"15_0101disgustingteeth": 2})
    assert open_source(tmp_path).workbook is None
    updated = tmp_path / "CAS(ME)^2code_final(Updated).xlsx"
    _casme2_workbook(updated, (101, "disgust1"))  # the public copy's order: code first
    src = open_source(tmp_path)
    assert src.workbook == updated and not src.warnings
    assert list(read_source_annotations(src).frame["video_id"]) == ["15_0101disgustingteeth"]
    _casme2_workbook(tmp_path / "CAS(ME)^2code_final.xlsx", ("disgust1", "0101"))
    src = open_source(tmp_path)
    assert src.workbook == updated  # the updated copy over the first release, with a warning
    assert any(
        "using CAS(ME)^2code_final(Updated).xlsx, not CAS(ME)^2code_final.xlsx" in w
        for w in src.warnings
    )
    _casme2_workbook(updated, (101, "anger1"))  # names no row of sheet 1: the reader's own error
    with pytest.raises(
        UserError, match=r"Updated\)\.xlsx: 0 of 1 rows usable: 1 unknown video name"
    ):
        read_source_annotations(open_source(tmp_path))


def test_casme2_cropped_release_and_rawvideo(tmp_path):
    cropped = tmp_path / "longVideoFaceCropped"
    write_frames(cropped / "s15" / "15_0101disgustingteeth", face_frames(2), "img_{}.jpg")
    src = open_source(tmp_path)
    assert src.layout == "cropped" and src.videos[0].video_id == "15_0101disgustingteeth"
    write_video_file(tmp_path / "raw" / "rawvideo" / "s15" / "15_0101disgustingteeth.avi", 4)
    src = open_source(tmp_path / "raw")
    assert src.layout == "rawvideo" and src.videos[0].fps == 25.0


def test_frames_sort_numerically(tmp_path):
    for name in ("img999.jpg", "img1000.jpg", "img998.jpg", "notes.txt"):
        (tmp_path / name).write_bytes(b"")
    assert list(list_frame_files(tmp_path)) == [998, 999, 1000]


def test_samm_subsampling_keeps_original_numbers(tmp_path):
    write_samm(tmp_path, {"006_1": 20})
    src = open_source(tmp_path)
    assert src.name == "samm" and src.videos[0].subject == "006"
    spec = src.videos[0]
    assert spec.subsample == 8 and spec.fps_kept == 25.0
    stream = FrameStream(spec)
    assert stream.frame_numbers == [1, 9, 17]
    numbers = [n for n, _ in stream]
    assert numbers == [1, 9, 17]
    assert open_source(tmp_path, subsample=1).videos[0].subsample == 1


def test_video_folder_subjects_from_folder_and_csv(tmp_path):
    write_video_file(tmp_path / "alice" / "take1.avi", 3)
    write_video_file(tmp_path / "take2.avi", 3)
    src = open_source(tmp_path)
    assert {(v.video_id, v.subject) for v in src.videos} == {
        ("take1", "alice"),
        ("take2", tmp_path.name),
    }
    (tmp_path / "subjects.csv").write_text("video,subject\ntake2.avi,bob\n")
    src = open_source(tmp_path, subjects_csv=tmp_path / "subjects.csv")
    assert {v.subject for v in src.videos} == {"alice", "bob"}
    frames = list(FrameStream(src.videos[0]))
    assert [n for n, _ in frames] == [1, 2, 3] and frames[0][1].ndim == 2


def test_synth_output_is_recognised(tmp_path):
    write_samm(tmp_path, {"006_1": 2})
    (tmp_path / "synth.json").write_text(json.dumps({"config": {"layout": "samm", "fps": 200.0}}))
    src = open_source(tmp_path)
    assert src.name == "synth-samm" and src.videos[0].subsample == 8


def test_unrecognised_folder_says_what_was_expected(tmp_path):
    (tmp_path / "x.txt").write_text("hi")
    with pytest.raises(SourceError, match="CAS\\(ME\\)\\^2 copy"):
        open_source(tmp_path)
    with pytest.raises(SourceError, match="no such"):
        open_source(tmp_path / "missing")


def test_stream_is_lazy(tmp_path):
    write_frames(tmp_path, face_frames(5), "img{:03d}.jpg")
    stream = FrameStream(VideoSpec("v", "s1", tmp_path, 30.0))
    iterator = iter(stream)
    number, frame = next(iterator)
    assert number == 1 and frame.shape == (192, 192) and frame.dtype == np.uint8
    (tmp_path / "img003.jpg").unlink()  # not read yet: the stream has not decoded it
    assert [n for n, _ in iterator] == [2, 3, 4, 5] and stream.repairs["corrupt"] == [3]


def test_missing_and_corrupt_frames_are_held(tmp_path):
    frames = face_frames(12)
    paths = write_frames(tmp_path, frames, "img{:03d}.jpg")
    paths[2].unlink()  # frame 3 missing
    data = paths[4].read_bytes()
    paths[4].write_bytes(data[: len(data) // 2])  # frame 5 truncated
    paths[5].write_bytes(b"not a jpeg at all" * 10)  # frame 6 garbage (ends without EOI)
    stream = FrameStream(VideoSpec("v", "s1", tmp_path, 30.0))
    out = list(stream)
    assert [n for n, _ in out] == list(range(1, 13))
    assert stream.repairs == {"missing": [3], "corrupt": [5, 6]}
    np.testing.assert_array_equal(out[2][1], out[1][1])  # frame 3 holds frame 2
    np.testing.assert_array_equal(out[5][1], out[3][1])  # frames 5, 6 hold frame 4


def test_bad_first_frame_takes_the_next_good_one(tmp_path):
    paths = write_frames(tmp_path, face_frames(4), "img{:03d}.jpg")
    paths[0].write_bytes(b"")
    out = list(FrameStream(VideoSpec("v", "s1", tmp_path, 30.0)))
    np.testing.assert_array_equal(out[0][1], out[1][1])


def test_too_many_bad_frames_or_none_fail_clearly(tmp_path):
    paths = write_frames(tmp_path, face_frames(4), "img{:03d}.jpg")
    for p in paths[1:3]:
        p.write_bytes(b"")
    with pytest.raises(FrameError, match="2 of 4 frames missing or unreadable"):
        list(FrameStream(VideoSpec("v", "s1", tmp_path, 30.0)))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FrameError, match="no frame images"):
        FrameStream(VideoSpec("v", "s1", empty, 30.0))
