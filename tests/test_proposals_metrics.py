"""Proposals, NMS and MEGC metrics on hand-made score sequences with known answers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from spotting.metrics import MEGC, REFERENCE_2023, match_all, match_intervals, summarise
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
    assert sorted(match_intervals(proposals, truths, REFERENCE_2023)["outcome"]) == ["FN", "FP"]


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


# --------------------------------- the reference's proposal arithmetic (issue 13, point 4)

REFERENCE_ARITHMETIC = ProposalParams(variant="reference")


def test_start_ties_go_to_the_earliest_row_or_the_row_nearest_the_apex():
    logits = quiet_logits(100)
    add_expression(logits, "me", 44, 50, 56)
    logits[47, 0:3] = logits[44, 0:3]  # an exact tie between d = 6 and d = 3, in any precision
    assert candidates(logits, "me")[["start", "end"]].values.tolist() == [[44, 56]]
    assert candidates(logits, "me", REFERENCE_ARITHMETIC)[["start", "end"]].values.tolist() == [
        [47, 56]
    ]


def test_saturated_starts_tie_in_float32_only():
    logits = quiet_logits(100)
    add_expression(logits, "me", 44, 50, 56, strength=30.0)
    logits[47, 0:3] = [25.0, 0.0, 0.0]  # p_start 1 - 3e-11 against 1 - 2e-13: both 1.0 in float32
    assert candidates(logits, "me")["start"].tolist() == [44]  # float64 sees the larger one
    assert candidates(logits, "me", REFERENCE_ARITHMETIC)["start"].tolist() == [47]


def test_float32_apex_threshold_and_start_end_checks():
    logits = quiet_logits(100)
    add_expression(logits, "me", 44, 50, 56)
    logits[50, 6] = 1e-9  # sigmoid: 0.5000000003 in float64, exactly 0.5 in float32 (not > 0.5)
    assert (
        len(candidates(logits, "me")) == 1 and candidates(logits, "me", REFERENCE_ARITHMETIC).empty
    )
    logits[50, 6] = 3.0
    logits[40:70, 0:3] = [
        0.0,
        10.0,
        120.0,
    ]  # "none" saturated: p_start, p_end ~1e-48 and ~1e-52 ...
    logits[44, 0:3] = [30.0, 0.0, 0.0]
    assert len(candidates(logits, "me")) == 1  # ... float64 still sees p_start(e) < p_end(e)
    assert candidates(logits, "me", REFERENCE_ARITHMETIC).empty  # float32: 0.0 < 0.0 fails


def reference_proposals(logits: np.ndarray, kind: str, params: ProposalParams) -> list[tuple]:
    """The reference's proposal search restated with plain loops: torch float32 softmax and
    sigmoid, per window of `params.window` rows, d ascending with the first maximum kept, start
    clipped at the window's first row, end at its last row and the video's last row; score as
    the product of the float32 values read back from text."""
    t = torch.from_numpy(logits.astype(np.float32))
    base = 0 if kind == "me" else 3
    start_end = torch.softmax(t[:, base : base + 3], dim=1).numpy()
    apex = torch.sigmoid(t[:, 6 if kind == "me" else 7]).numpy()
    dmin, dmax = params.distance(kind)
    low, high = params.length(kind)
    found = []
    for w in range(len(logits)):
        if not apex[w] > 0.5:
            continue
        first = w // params.window * params.window
        last = min(first + params.window - 1, len(logits) - 1)
        s = e = None
        for d in range(dmin, dmax + 1):
            row = max(w - d, first)
            if s is None or start_end[row, 0] > start_end[s, 0]:
                s = row
            row = min(w + d, last)
            if e is None or start_end[row, 1] > start_end[e, 1]:
                e = row
        if (
            start_end[s, 0] > start_end[s, 1]
            and start_end[e, 0] < start_end[e, 1]
            and low <= e - s <= high
        ):
            score = float(str(start_end[s, 0])) * float(str(start_end[e, 1])) * float(str(apex[w]))
            found.append((kind, s, w, e, score))
    return found


def saturated_logits(rng, n: int) -> np.ndarray:
    """Network-like outputs: mostly "none", a few strong starts, ends and apexes, large logits."""
    logits = quiet_logits(n) * 8
    for base, apex_channel, width in ((0, 6, 6), (3, 7, 20)):
        for centre in rng.integers(10, n - 10, size=n // 40):
            s, e = (
                max(centre - rng.integers(2, width), 0),
                min(centre + rng.integers(2, width), n - 1),
            )
            logits[s, base : base + 3] = [rng.uniform(20, 60), 0, rng.uniform(-5, 5)]
            logits[e, base : base + 3] = [0, rng.uniform(20, 60), rng.uniform(-5, 5)]
            logits[max(s - 1, 0), base] = logits[s, base] - rng.choice(
                [0.0, 3.0, 30.0]
            )  # near-ties
            logits[centre - 1 : centre + 2, apex_channel] = rng.uniform(10, 40)
    return logits


def test_reference_arithmetic_agrees_with_a_plain_restatement_on_saturated_outputs():
    rng = np.random.default_rng(4)
    differ = 0
    for n in (300, 520, 700):  # several windows; the last one short
        logits = saturated_logits(rng, n)
        for kind in ("me", "mae"):
            for preset in PRESETS.values():
                params = ProposalParams(**{**vars(preset), "variant": "reference"})
                ours = candidates(logits, kind, params)
                expected = reference_proposals(logits, kind, params)
                assert [
                    tuple(r) for r in ours[["type", "start", "apex", "end"]].values.tolist()
                ] == [r[:4] for r in expected]
                assert ours["score"].tolist() == [r[4] for r in expected]
        last_window = (n - 1) // 256 * 256

        def kept(params):
            found = spot_video(logits, params)
            return set(
                map(
                    tuple,
                    found.loc[found["end"] < last_window, ["type", "start", "end"]].values.tolist(),
                )
            )

        differ += kept(ProposalParams()) != kept(REFERENCE_ARITHMETIC)
    assert differ >= 2  # saturated outputs give other kept proposals, away from the last window


def test_unknown_variant_is_refused():
    with pytest.raises(ValueError, match="variant"):
        ProposalParams(variant="float16")
