"""Frame -> row mapping, section 6's target rules, and windows, on hand-made cases."""

import math

import numpy as np
import pandas as pd
import pytest

from spotting.annotations import AnnotationTable
from spotting.au_codes import parse_au_string
from flowcore.store import load_features
from mespot.testing import create_store, write_video
from spotting.windows import (
    END, NONE, START, WindowParams, annotation_targets, build_windows, frames_to_rows,
    resolve_expression, rows_to_frames, video_targets,
)


def test_frames_to_rows_full_rate():
    frame_numbers = np.arange(1, 101)  # kept frames 1..100 -> 99 rows
    assert frames_to_rows([1, 2, 50, 100, 0], frame_numbers).tolist() == [0, 1, 49, 99, -1]
    assert rows_to_frames([0, 49], frame_numbers).tolist() == [1, 50]


def test_frames_to_rows_subsampled_by_8():
    frame_numbers = np.arange(1, 801, 8)  # SAMM-LV: kept 1, 9, 17, ...
    got = frames_to_rows([1, 7, 8, 9, 16, 17, 566, 0], frame_numbers)
    assert got.tolist() == [0, 0, 0, 1, 1, 2, (566 - 1) // 8, -1]
    assert rows_to_frames([0, 1, 2], frame_numbers).tolist() == [1, 9, 17]


def test_frames_before_the_first_kept_frame_map_to_row_0():
    assert frames_to_rows([3, 5, 6], np.array([5, 6, 7])).tolist() == [0, 0, 1]


@pytest.mark.parametrize(
    "sae, n, expected",
    [
        ((10, 15, 20), 100, (10, 15, 20)),
        ((10, -1, -1), 100, None),  # two missing
        ((-1, -1, 20), 100, None),
        ((10, 100, 120), 100, None),  # apex >= N
        ((10, 15, -1), 100, (10, 15, 20)),  # e = 2a - s
        ((10, -1, 21), 100, (10, 15, 21)),  # a = (s + e) // 2
        ((-1, 15, 22), 100, (8, 15, 22)),  # s = 2a - e (our rule for a missing onset)
        ((-1, 3, 22), 100, (0, 3, 22)),  # ... clipped at 0
        ((90, 95, 130), 100, (90, 95, 99)),  # e clipped to N - 1
        ((90, 98, -1), 100, (90, 98, 99)),  # filled e clipped too
    ],
)
def test_resolve_expression_rules(sae, n, expected):
    got, notes = resolve_expression(*sae, n)
    assert got == expected
    assert notes  or got == sae  # every change leaves a note


def test_start_end_apex_action_targets_micro():
    t = video_targets(40, [(0, 10, 13, 17)])
    se = t.start_end[0]
    assert np.flatnonzero(se == START).tolist() == [9, 10, 11]  # s - 1 .. s + 1
    assert np.flatnonzero(se == END).tolist() == [16, 17, 18]
    assert (t.start_end[1] == NONE).all()  # the macro channel untouched
    apex = t.apex[0]
    assert apex[13] == 1.0
    assert apex[12] == pytest.approx(math.exp(-1 / 32)) and apex[14] == pytest.approx(
        math.exp(-1 / 32)
    )
    assert np.count_nonzero(apex) == 3
    assert np.flatnonzero(t.action[0]).tolist() == list(range(10, 18))


def test_macro_targets_use_radius_3():
    t = video_targets(100, [(1, 20, 30, 50)])
    assert np.flatnonzero(t.start_end[1] == START).tolist() == list(range(17, 24))
    assert np.flatnonzero(t.start_end[1] == END).tolist() == list(range(47, 54))
    assert t.apex[1, 27] == pytest.approx(math.exp(-9 / 32))
    assert np.count_nonzero(t.apex[1]) == 7


def test_end_overwrites_start_and_later_expressions_overwrite_earlier():
    # Short macro: start range 10..16, end range 12..18 -> end wins on 12..16.
    t = video_targets(60, [(1, 13, 14, 15)])
    assert np.flatnonzero(t.start_end[1] == START).tolist() == [10, 11]
    assert np.flatnonzero(t.start_end[1] == END).tolist() == list(range(12, 19))
    # A second expression starting where the first ends: its start overwrites the first's end.
    t = video_targets(60, [(0, 5, 7, 10), (0, 11, 13, 16)])
    se = t.start_end[0]
    assert se[9] == END and se[10] == START and se[11] == START and se[12] == START
    assert se[15] == END


def test_targets_are_clipped_at_video_ends():
    t = video_targets(30, [(1, 1, 3, 29)])
    assert np.flatnonzero(t.start_end[1] == START).tolist() == [0, 1, 2, 3, 4]
    assert np.flatnonzero(t.start_end[1] == END).tolist() == [26, 27, 28, 29]
    assert t.action[1, 1:30].all() and t.action[1, 0] == 0


def _table(rows):
    frame = pd.DataFrame(
        rows, columns=["subject", "video_id", "expression", "onset", "apex", "offset", "type", "au"]
    )
    frame["au_codes"] = [parse_au_string(a).codes for a in frame["au"]]
    frame["source_row"] = range(2, len(frame) + 2)
    return AnnotationTable(frame, (), "csv", "test")


def test_annotation_targets_map_frames_and_list_skips(tmp_path):
    root = create_store(tmp_path / "s.zarr")
    write_video(root, "v1", "s1", np.zeros((99, 12, 2)), np.arange(1, 101))  # N = 99 rows
    write_video(root, "v2", "s1", np.zeros((9, 12, 2)), np.arange(1, 81, 8))  # 1-in-8, N = 9
    features = load_features(tmp_path / "s.zarr")
    table = _table(
        [
            ("s1", "v1", "e1", 11, 14, 18, "me", "12"),  # rows 10, 13, 17
            ("s1", "v1", "e2", 50, 0, 0, "mae", "4"),  # two missing -> skipped
            ("s1", "v1", "e3", 90, 100, 0, "mae", "4"),  # apex row 99 >= N -> skipped
            ("s1", "v2", "e4", 9, 25, 49, "mae", "4"),  # rows 1, 3, 6
            ("s1", "v9", "e5", 9, 25, 49, "mae", "4"),  # video absent from the store
        ]
    )
    targets, issues = annotation_targets(features, table)
    assert targets["v1"].used == ((0, 10, 13, 17),)
    assert targets["v2"].used == ((1, 1, 3, 6),)
    listed = {(i.expression, i.reason, i.action) for i in issues}
    assert listed == {
        ("e2", "two or more of onset/apex/offset missing", "skipped"),
        ("e3", "apex past the end", "skipped"),
        ("e5", "video not in the feature store", "skipped"),
    }
    # a missing offset is filled and listed
    table = _table([("s1", "v1", "e6", 11, 14, 0, "mae", "12")])
    targets, issues = annotation_targets(features, table)
    assert targets["v1"].used == ((1, 10, 13, 16),)
    assert [(i.reason, i.action, i.detail) for i in issues] == [
        ("offset filled", "repaired", "2*apex - onset = row 16")
    ]


def test_windows_cover_context_and_pad_with_zeros(tmp_path):
    n = 300
    mdmo = (np.arange(n, dtype=np.float32)[:, None, None] + 1) * np.ones((1, 12, 2), np.float32)
    root = create_store(tmp_path / "s.zarr")
    write_video(root, "v", "s1", mdmo, np.arange(1, n + 2))
    features = load_features(tmp_path / "s.zarr")
    targets = {"v": video_targets(n, [(1, 280, 290, 299)])}
    ws = build_windows(list(features.videos.values()), targets, WindowParams())
    assert len(ws) == 2 and ws.x.shape == (2, 270, 12, 2)
    assert ws.first_row.tolist() == [0, 256]
    # window 0: 7 rows of zero padding, then rows 0..262
    assert (ws.x[0, :7] == 0).all() and ws.x[0, 7, 0, 0] == 1 and ws.x[0, 269, 0, 0] == 263
    assert ws.valid[0].tolist() == [False] * 7 + [True] * 263
    # window 1: rows 249..299, then zeros past the end of the video
    assert ws.x[1, 0, 0, 0] == 250 and ws.x[1, 7 + 43, 0, 0] == 300
    assert (ws.x[1, 7 + 44 :] == 0).all() and ws.valid[1].sum() == 51
    # targets past the end are "none" / 0; the expression sits in window 1 only
    assert (ws.start_end[1, :, 44:] == NONE).all() and (ws.action[1, :, 44:] == 0).all()
    assert ws.action[1, 1, 280 - 256] == 1 and ws.has_expression.tolist() == [False, True]
    assert ws.of_subjects(["s1"]).all() and not ws.of_subjects(["s2"]).any()


def test_video_of_exactly_one_window(tmp_path):
    root = create_store(tmp_path / "s.zarr")
    write_video(root, "v", "s1", np.ones((256, 12, 2)), np.arange(1, 258))
    features = load_features(tmp_path / "s.zarr")
    ws = build_windows(list(features.videos.values()), {"v": video_targets(256, [])})
    assert len(ws) == 1 and ws.valid[0].sum() == 256
