"""Videos with frames without the face: windows, logits and proposals never span a gap, and
rows without a face count nowhere (spotting/windows.py, inference.py, proposals.py, data.py)."""

import numpy as np
import pandas as pd

from flowcore.store import VideoFeatures
from spotting.data import prepare
from spotting.inference import video_logits
from spotting.proposals import ProposalParams, candidates, segment_bounds, spot_video
from spotting.windows import NONE, WindowParams, build_windows, video_targets

PARAMS = WindowParams(length=16, context=3)


def _video(n_rows=60, gap=(20, 30), seed=0) -> VideoFeatures:
    """A video of `n_rows` rows whose rows gap[0]..gap[1]-1 were not computed (no face)."""
    mdmo = np.random.default_rng(seed).normal(1.0, 0.5, (n_rows, 12, 2)).astype(np.float32)
    valid = np.ones(n_rows, bool)
    valid[gap[0] : gap[1]] = False
    mdmo[~valid] = 0
    return VideoFeatures("v", "s1", 30.0, mdmo, np.arange(1, n_rows + 2), valid=valid,
                         no_face=((22, 30),))


def test_segments_are_the_runs_of_valid_rows():
    assert _video().segments == [(0, 20), (30, 60)]
    assert _video(gap=(0, 5)).segments == [(5, 60)]
    plain = VideoFeatures("p", "s", 30.0, np.zeros((7, 12, 2), np.float32), np.arange(1, 9))
    assert plain.segments == [(0, 7)] and plain.row_valid.all()


def test_windows_start_at_each_segment_and_never_take_a_row_of_the_gap():
    video = _video()
    expressions = [(1, 12, 16, 25), (0, 40, 42, 45)]  # the first runs into the gap
    targets = {"v": video_targets(video.n_rows, expressions, PARAMS)}
    ws = build_windows([video], targets, PARAMS)
    assert ws.first_row.tolist() == [0, 16, 30, 46]  # 20 rows: 2 windows; 30 rows: 2 windows
    L, C = PARAMS.length, PARAMS.context
    covered = []
    for w in range(len(ws)):
        rows = ws.first_row[w] - C + np.arange(L + 2 * C)
        inside = ws.valid[w]
        assert video.row_valid[rows[inside]].all()  # never a row without a face
        np.testing.assert_array_equal(ws.x[w][inside], video.mdmo[rows[inside]])
        assert not ws.x[w][~inside].any()
        central = rows[C : C + L][inside[C : C + L]]
        covered += central.tolist()
        # central rows outside the segment are targets "none", like padding past the end
        assert (ws.start_end[w][:, ~inside[C : C + L]] == NONE).all()
        assert not ws.action[w][:, ~inside[C : C + L]].any()
    assert sorted(covered) == [r for r in range(60) if video.row_valid[r]]  # each once


def test_a_video_without_gaps_is_cut_as_before():
    plain = VideoFeatures("p", "s", 30.0, np.ones((40, 12, 2), np.float32), np.arange(1, 42))
    ws = build_windows([plain], {"p": video_targets(40, [], PARAMS)}, PARAMS)
    assert ws.first_row.tolist() == [0, 16, 32]
    assert ws.valid[2].sum() == 3 + 8  # context before + the video's last 8 rows


def test_video_logits_fill_each_row_once_and_nan_where_there_was_no_face():
    video = _video()
    ws = build_windows([video], {"v": video_targets(60, [], PARAMS)}, PARAMS)
    L = PARAMS.length
    # each window's logits say which window and central row they are: decodable per row
    logits = np.zeros((len(ws), 10, L), np.float32)
    logits[:, 0, :] = (ws.first_row[:, None] + np.arange(L)[None, :]).astype(np.float32)
    rows = video_logits(logits, ws, np.ones(len(ws), bool))["v"]
    assert rows.shape == (60, 10)
    gap = ~video.row_valid
    assert np.isnan(rows[gap]).all() and np.isfinite(rows[~gap]).all()
    np.testing.assert_array_equal(rows[~gap, 0], np.flatnonzero(~gap))


def test_no_proposal_spans_a_gap():
    n = 80
    logits = np.full((n, 10), -8.0)
    logits[:, [2, 5]] = 8.0  # "none" everywhere
    logits[30:40] = np.nan  # no face in rows 30..39
    # a macro-expression right after the gap: apex at 44, its best start would lie in the gap
    logits[44, 7] = 8.0
    logits[41:46, 3] = np.linspace(1.0, 3.0, 5)  # start probability rises towards the apex
    logits[60, 4] = 9.0  # an end
    params = ProposalParams(window=256, mae_distance=(3, 16), mae_length=(5, 40))
    found = candidates(logits, "mae", params)
    assert len(found) == 1
    assert found["start"].iloc[0] >= 40 and found["end"].iloc[0] <= 79
    first, last = segment_bounds(logits)
    assert first[44] == 40 and last[44] == 79 and first[10] == 0 and last[10] == 29
    kept = spot_video(logits, params)
    for s, e in zip(kept["start"], kept["end"]):
        assert not np.isnan(logits[s : e + 1]).any()


def test_proposals_of_finite_logits_are_unchanged_by_the_segment_rule():
    rng = np.random.default_rng(3)
    logits = rng.normal(0, 3, (600, 10))
    params = ProposalParams()
    got = candidates(logits, "me", params)
    # the rule before gaps existed: windows at multiples of 256 from row 0
    apex = got["apex"].to_numpy()
    first = (apex // 256) * 256
    assert (got["start"].to_numpy() >= first).all()
    assert (got["end"].to_numpy() <= np.minimum(first + 255, 599)).all()
    assert isinstance(got, pd.DataFrame) and len(got) > 0


def test_normalisation_ignores_the_rows_without_a_face(tmp_path):
    from mespot.testing import create_store, write_video

    root = create_store(tmp_path / "s.zarr")
    video = _video()
    write_video(root, "v", "s1", video.mdmo, video.frame_numbers)
    root["videos/v"].create_array("mdmo_valid", data=video.row_valid)
    (tmp_path / "gt.csv").write_text("subject,video,onset,apex,offset,type,au\n"
                                     "s1,v,5,8,12,mae,12\n")
    prep = prepare(tmp_path / "s.zarr", tmp_path / "gt.csv", PARAMS)
    count, total, _ = prep.sums["s1"]
    assert count == 50 * 12  # 50 valid rows x 12 ROIs
    np.testing.assert_allclose(total / count, video.mdmo[video.row_valid].reshape(-1, 2).mean(0),
                               rtol=1e-5)
