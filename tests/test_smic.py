"""SMIC-E-long: the layout's reader, the annotation workbook (absolute frames via FirstF, no apex,
trailing text rows), and `mespot synth --layout smic` read back through extraction."""

import numpy as np
import openpyxl
import pytest

from flowcore.errors import UserError
from flowcore.sources import SourceError, open_source
from mespot.testing import write_frames
from spotting.annotations import read_annotations, read_source_annotations

HS = "SMIC-E_raw image/HS_long/SMIC-HS-E/HS"


def _smic_tree(root, modality="HS", videos=(("s1", "s01_01"), ("s02", "s02_03"))):
    frames = root / HS.replace("HS", modality)
    for subject, video in videos:
        write_frames(frames / subject / video, [np.zeros((8, 8, 3), np.uint8)] * 3,
                     pattern="image{:06d}.jpg")
    return frames


def _workbook(path, rows, notes=("Notes: frames are absolute", "see the readme")):
    book = openpyxl.Workbook()
    sheet = book.active
    sheet.append(["Subject", "Filename", "OnsetF", "OffsetF", "FirstF", "Emotion"])
    for row in rows:
        sheet.append(list(row))
    sheet.append([None])
    for line in notes:
        sheet.append([line])
    path.parent.mkdir(parents=True, exist_ok=True)
    book.save(path)
    return path


def test_layout_subjects_videos_rates_and_workbook(tmp_path):
    frames = _smic_tree(tmp_path)
    book = _workbook(frames.parent.parent / "SMIC-HS-E_annotation.xlsx", [])
    src = open_source(tmp_path)
    assert (src.name, src.layout, src.workbook) == ("smic", "smic-HS", book)
    assert [(v.video_id, v.subject, v.fps, v.subsample) for v in src.videos] == [
        ("s01_01", "s01", 100.0, 4), ("s02_03", "s02", 100.0, 4)]  # HS kept 1 in 4: 25 fps
    for inner in (tmp_path / "SMIC-E_raw image", frames.parent, frames):
        assert [v.video_id for v in open_source(inner).videos] == ["s01_01", "s02_03"]


def test_several_modalities_use_hs_first_with_a_warning(tmp_path):
    _smic_tree(tmp_path)
    vis = _smic_tree(tmp_path, "VIS", videos=(("s03", "s03_01"),))
    src = open_source(tmp_path)
    assert src.layout == "smic-HS" and "using HS" in src.warnings[0]
    chosen = open_source(vis)
    assert (chosen.layout, [(v.video_id, v.fps, v.subsample) for v in chosen.videos]) == (
        "smic-VIS", [("s03_01", 25.0, 1)])


def test_a_folder_not_named_for_a_video_is_skipped_with_a_warning(tmp_path):
    frames = _smic_tree(tmp_path)
    (frames / "s1" / "notes-and-stuff").mkdir()
    src = open_source(tmp_path)
    assert len(src.videos) == 2 and "notes-and-stuff" in src.warnings[0]
    with pytest.raises(SourceError, match="no video found"):
        empty = tmp_path / "empty" / HS
        (empty / "s01" / "x-y").mkdir(parents=True)
        open_source(tmp_path / "empty")


def test_workbook_absolute_frames_no_apex_and_trailing_text(tmp_path):
    book = _workbook(tmp_path / "SMIC-HS-E_annotation.xlsx", [
        (1, "HS_s01_01_1", 2741, 2760, 2701, "positive"),
        ("s02", "HS_s02_03_1", 130, 151, 101, "negative"),
        (2, "HS_s02_03_2", 180, 190, "?", "surprise"),  # FirstF unreadable
    ])
    table = read_annotations(book)
    frame = table.frame
    assert table.dataset == "smic"
    assert list(zip(frame.subject, frame.video_id, frame.onset, frame.apex, frame.offset,
                    frame.type)) == [("s01", "s01_01", 41, 0, 60, "me"),
                                     ("s02", "s02_03", 30, 0, 51, "me")]
    skipped = {(i.reason, i.source_row) for i in table.issues if i.action == "skipped"}
    assert skipped == {("unreadable FirstF", 4), ("text row", 6), ("text row", 7)}
    assert sum(i.reason == "missing apex" for i in table.issues) == 2  # filled at targets
    assert "2 x text row -> skipped" in table.summary()


def test_workbook_of_text_only_is_refused_with_the_reason(tmp_path):
    book = _workbook(tmp_path / "SMIC-HS-E_annotation.xlsx", [])
    with pytest.raises(UserError, match=r"0 of 2 rows usable: 2 text row"):
        read_annotations(book)


@pytest.mark.slow
def test_synth_smic_layout_extracts_and_its_annotations_fall_in_the_videos(tmp_path):
    from flowcore import ExtractParams, extract_source
    from flowcore.faces import FaceParams
    from flowcore.store import load_features
    from mespot.commands.synth import _config
    from mespot.synth import SMALL, generate_dataset
    from spotting.windows import frames_to_rows

    given = {"subjects": 2, "videos_per_subject": 1, "seconds": 2.0, "fps": None,
             "face_size": None}
    config = _config(None, SMALL, None, "smic", 0, given)
    assert (config.fps, config.micro_fraction) == (100.0, 1.0)
    root = generate_dataset(config, tmp_path / "smic", workers=1, preview=False).root
    src = open_source(root)
    table = read_source_annotations(src)
    truth = __import__("pandas").read_csv(root / "ground_truth.csv")
    assert set(truth["type"]) == {"me"}
    assert sorted(zip(table.frame.video_id, table.frame.onset, table.frame.offset)) == sorted(
        zip(truth.video, truth.onset, truth.offset))  # FirstF undone: the video's own numbers
    report = extract_source(root, tmp_path / "smic.zarr",
                            ExtractParams(flow_backend="torch", faces=FaceParams(resize=64)),
                            workers=1)
    assert not report.failed, report.summary()
    features = load_features(tmp_path / "smic.zarr")
    for row in table.frame.itertuples():
        video = features.videos[row.video_id]
        assert video.fps == 25.0 and np.all(np.diff(video.frame_numbers) == 4)
        rows = frames_to_rows([row.onset, row.offset], video.frame_numbers)
        assert 0 <= rows[0] < rows[1] < video.n_rows
