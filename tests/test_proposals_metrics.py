"""Proposals, NMS and MEGC metrics on hand-made score sequences with known answers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from spotting.metrics import MEGC, REFERENCE, match_all, match_intervals, summarise
from spotting.proposals import PRESETS, ProposalParams, candidates, length_iou, nms, spot_video

QUIET = 5.0  # "none" logit everywhere: nothing starts or ends


def quiet_logits(n: int) -> np.ndarray:
    logits = np.zeros((n, 10))
    logits[:, 2] = logits[:, 5] = QUIET  # ME none, MaE none
    logits[:, 6] = logits[:, 7] = -6.0  # apex off
    return logits


def add_expression(logits, kind, start, apex, end, apex_rows=None, strength=8.0):
    base = 0 if kind == "me" else 3
    logits[start, base + 0] = strength  # start class
    logits[end, base + 1] = strength  # end class
    for row in apex_rows or [apex]:
        logits[row, 6 if kind == "me" else 7] = 3.0


def softmax(x):
    z = np.exp(x - x.max())
    return z / z.sum()


def test_one_micro_expression_gives_its_proposal_and_score():
    logits = quiet_logits(100)
    add_expression(logits, "me", 47, 50, 54)
    found = candidates(logits, "me")
    assert found[["start", "apex", "end"]].values.tolist() == [[47, 50, 54]]
    p_start = softmax(logits[47, 0:3])[0]
    p_end = softmax(logits[54, 0:3])[1]
    p_apex = 1 / (1 + np.exp(-3.0))
    assert found["score"].iloc[0] == pytest.approx(p_start * p_end * p_apex)
    assert candidates(logits, "mae").empty  # the other type saw nothing


def test_start_and_end_search_ranges():
    logits = quiet_logits(100)
    add_expression(logits, "me", 40, 50, 54)  # start 10 rows before apex: outside d in [2, 7]
    found = candidates(logits, "me")
    assert found.empty  # the best start in range is a "none" row: p_start(s) > p_end(s) fails
    wide = ProposalParams(me_distance=(2, 10))
    assert candidates(logits, "me", wide)[["start", "end"]].values.tolist() == [[40, 54]]


def test_length_limits():
    logits = quiet_logits(100)
    add_expression(logits, "me", 48, 50, 52)  # e - s = 4 < 5
    assert candidates(logits, "me").empty
    assert len(candidates(logits, "me", ProposalParams(me_length=(4, 30)))) == 1


def test_search_stays_inside_the_window():
    logits = quiet_logits(600)
    add_expression(logits, "me", 254, 258, 262)  # onset in window 0, apex in window 1
    assert candidates(logits, "me").empty
    assert len(candidates(logits, "me", ProposalParams(window=512))) == 1


def test_end_search_stops_at_the_video_end():
    logits = quiet_logits(60)
    add_expression(logits, "me", 53, 56, 59)
    assert candidates(logits, "me")[["start", "end"]].values.tolist() == [[53, 59]]


def test_plateau_of_apex_rows_collapses_in_nms():
    logits = quiet_logits(200)
    add_expression(logits, "mae", 60, 75, 100, apex_rows=range(72, 79))
    found = candidates(logits, "mae")
    assert len(found) == 7 and set(found["start"]) == {60} and set(found["end"]) == {100}
    kept = spot_video(logits)
    assert kept[["type", "start", "end"]].values.tolist() == [["mae", 60, 100]]


def test_nms_by_hand():
    proposals = pd.DataFrame(
        {
            "type": "mae",
            "start": [0, 2, 30, 31, 60, 90],
            "apex": 0,
            "end": [20, 22, 50, 60, 80, 95],
            "score": [0.9, 0.8, 0.7, 0.6, 0.0, 0.5],
        }
    )
    # IoU(0-20, 2-22) = 18 / 22 > 0.5 -> dropped; IoU(30-50, 31-60) = 19 / 30 > 0.5 -> dropped;
    # score 0 stops the loop before 60-80; 90-95 kept in score order.
    kept = nms(proposals, 0.5, top_k=5)
    assert kept[["start", "end"]].values.tolist() == [[0, 20], [30, 50], [90, 95]]
    assert nms(proposals, 0.5, top_k=2)[["start"]].values.ravel().tolist() == [0, 30]
    assert length_iou(np.array([0]), np.array([20]), 2, 22)[0] == pytest.approx(18 / 22)


def test_presets_differ_where_the_datasets_do():
    casme, samm = PRESETS["casme2"], PRESETS["samm"]
    assert casme.mae_distance == (7, 29) and samm.mae_distance == (6, 27)
    assert (casme.me_length, samm.me_length) == ((5, 30), (4, 13))
    assert (casme.mae_top_k, samm.mae_top_k, casme.me_top_k) == (5, 6, 5)


def test_empty_video_and_bad_shape():
    assert spot_video(quiet_logits(0)).empty
    assert spot_video(quiet_logits(300)).empty  # no proposals
    with pytest.raises(ValueError, match=r"\(N, 10\)"):
        spot_video(np.zeros((5, 8)))


# ---------------------------------------------------------------- metrics


def frame(rows, with_score=True):
    cols = ["video", "subject", "type", "onset", "offset"] + (["score"] if with_score else [])
    return pd.DataFrame(rows, columns=cols)


def test_megc_match_inclusive_iou():
    truths = frame([("v", "s", "me", 10, 20)], with_score=False)
    proposals = frame([("v", "s", "me", 12, 21, 0.9)])
    m = match_intervals(proposals, truths)
    assert m["outcome"].tolist() == ["TP"] and m["iou"].iloc[0] == pytest.approx(9 / 12)


def test_reference_variant_differs_on_a_boundary_case():
    truths = frame([("v", "s", "mae", 0, 9)], with_score=False)
    proposals = frame([("v", "s", "mae", 0, 4, 0.9)])
    # inclusive counts: 5 / 10 = 0.5 -> TP under MEGC (>=); lengths e - s: 4 / 9 -> not > 0.5
    assert match_intervals(proposals, truths, MEGC)["outcome"].tolist() == ["TP"]
    assert sorted(match_intervals(proposals, truths, REFERENCE)["outcome"]) == ["FN", "FP"]


def test_each_truth_matches_once_best_score_first():
    truths = frame([("v", "s", "me", 10, 20)], with_score=False)
    proposals = frame([("v", "s", "me", 10, 19, 0.2), ("v", "s", "me", 11, 20, 0.8)])
    m = match_intervals(proposals, truths)
    assert m.set_index("proposal")["outcome"].to_dict() == {1: "TP", 0: "FP"}


def test_pooled_counts_and_overall_is_not_a_mean():
    truths = frame(
        [
            ("a", "s1", "me", 10, 20),
            ("a", "s1", "mae", 100, 140),
            ("b", "s2", "mae", 10, 60),
            ("b", "s2", "mae", 200, 230),
        ],
        with_score=False,
    )
    proposals = frame(
        [
            ("a", "s1", "me", 11, 20, 0.9),
            ("a", "s1", "me", 50, 60, 0.8),
            ("a", "s1", "mae", 101, 139, 0.7),
        ]
    )
    matches = match_all(proposals, truths)
    table = summarise(matches).set_index("type")
    assert table.loc["me", ["TP", "FP", "FN"]].tolist() == [1, 1, 0]
    assert table.loc["mae", ["TP", "FP", "FN"]].tolist() == [1, 0, 2]
    overall = table.loc["overall"]
    assert (overall["TP"], overall["proposals"], overall["truths"]) == (2, 3, 4)
    assert overall["f1"] == pytest.approx(2 * (2 / 3) * 0.5 / (2 / 3 + 0.5))
    assert overall["f1"] != pytest.approx((table.loc["me", "f1"] + table.loc["mae", "f1"]) / 2)
    per_subject = summarise(matches, by=["subject"]).set_index(["subject", "type"])
    assert (
        per_subject.loc[("s2", "mae"), "FN"] == 2 and per_subject.loc[("s2", "overall"), "f1"] == 0
    )
    tp = matches[matches["outcome"] == "TP"]
    pairs = sorted(tp[["truth_onset", "proposal_onset"]].values.tolist())
    assert pairs == [[10, 11], [100, 101]]  # which proposal matched which truth


def test_no_proposals_and_no_truths():
    empty = frame([])
    truths = frame([("v", "s", "me", 10, 20)], with_score=False)
    m = match_all(empty, truths)
    assert m["outcome"].tolist() == ["FN"]
    t = summarise(m).set_index("type")
    assert t.loc["overall", "precision"] == 0 and t.loc["overall", "f1"] == 0
    assert summarise(match_all(empty, frame([], with_score=False)))["truths"].sum() == 0
