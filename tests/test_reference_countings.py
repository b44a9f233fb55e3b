"""The reference's two countings (`--rule reference`: AUW-GCN's `iou_for_find` since its commit
a15701b; `--rule reference-2023`: its `iou_for_tp`, the published numbers) beside MEGC, on
hand-counted cases and against plain restatements of the reference's loops."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from spotting.metrics import MEGC, REFERENCE, REFERENCE_2023, RULES, MatchRule, match_all, summarise


def frame(rows, with_score=True):
    cols = ["video", "subject", "type", "onset", "offset"] + (["score"] if with_score else [])
    return pd.DataFrame(rows, columns=cols)


def counts(matches, kind="overall"):
    """(TP, proposals N, truths M) of a match table."""
    row = summarise(matches).set_index("type").loc[kind]
    return int(row["TP"]), int(row["proposals"]), int(row["truths"])


def tp_pairs(matches) -> dict:
    """{proposal label: truth label} of the TP rows."""
    tp = matches[matches["outcome"] == "TP"]
    return dict(zip(tp["proposal"].tolist(), tp["truth"].tolist()))


def test_the_rules_are_named_as_the_command_line_names_them():
    assert set(RULES) == {"megc", "reference", "reference-2023"}
    assert "a15701b" in REFERENCE.label and "iou_for_find" in REFERENCE.label
    assert "iou_for_tp" in REFERENCE_2023.label
    assert (REFERENCE.counting, REFERENCE_2023.counting) == ("per-truth", "per-proposal")


# ---- hand-counted cases. IoU on e - s for both reference rules, on e - s + 1 for MEGC.

def test_two_proposals_on_one_truth():
    truths = frame([("v", "s", "mae", 0, 40)], with_score=False)
    # P0 [0, 36]: 36 / 40 = 0.9; P1 [4, 40]: 36 / 40 = 0.9 (inclusive: 37 / 41 each)
    proposals = frame([("v", "s", "mae", 0, 36, 0.9), ("v", "s", "mae", 4, 40, 0.5)])
    assert counts(match_all(proposals, truths, MEGC)) == (1, 2, 1)  # P0 takes T, P1 is FP
    old = match_all(proposals, truths, REFERENCE_2023)
    assert counts(old) == (2, 2, 1)  # both proposals pass: TP 2 > M 1
    assert summarise(old).set_index("type").loc["mae", "FN"] == -1  # M - TP, as it prints
    new = match_all(proposals, truths, REFERENCE)
    assert counts(new) == (1, 2, 1)  # the truth chooses one proposal
    assert tp_pairs(new) == {0: 0} and sorted(new["outcome"]) == ["FP", "TP"]


def test_one_proposal_best_for_two_truths():
    truths = frame([("v", "s", "me", 0, 40), ("v", "s", "me", 8, 48)], with_score=False)
    proposals = frame([
        ("v", "s", "me", 4, 44, 0.9),  # 36 / 44 with T0 and with T1: the best of both
        ("v", "s", "me", 16, 48, 0.5),  # 32 / 40 = 0.8 with T1; 24 / 48 = 0.5 with T0
    ])
    new = match_all(proposals, truths, REFERENCE)
    assert counts(new) == (1, 2, 2)  # both truths choose P0, which counts once; P1 is FP
    assert tp_pairs(new) == {0: 0}  # named for the first truth that chose it
    assert new.loc[new["outcome"] == "FN", "truth"].tolist() == [1]
    assert counts(match_all(proposals, truths, REFERENCE_2023)) == (2, 2, 2)  # both pass
    assert tp_pairs(match_all(proposals, truths, REFERENCE_2023)) == {0: 0, 1: 1}
    assert counts(match_all(proposals, truths, MEGC)) == (2, 2, 2)  # P0 -> T0, P1 -> T1


def test_a_high_scoring_proposal_takes_another_truths_only_match_under_megc():
    truths = frame([("v", "s", "mae", 0, 40), ("v", "s", "mae", 8, 48)], with_score=False)
    # P0 overlaps T0 (38/42) and T1 (34/46), T1's only match; P1 overlaps T0 (30/40) only
    proposals = frame([("v", "s", "mae", 2, 42, 0.9), ("v", "s", "mae", 0, 30, 0.5)])
    megc = match_all(proposals, truths, MEGC)
    assert counts(megc) == (1, 2, 2)  # P0 takes T0, T1 is missed and P1 is a false positive
    old = match_all(proposals, truths, REFERENCE_2023)
    assert counts(old) == (2, 2, 2) and tp_pairs(old) == {0: 0, 1: 0}  # each its best truth
    assert old["outcome"].tolist() == ["TP", "TP", "FN"]  # T1: no proposal has it as its best
    new = match_all(proposals, truths, REFERENCE)
    assert counts(new) == (1, 2, 2) and tp_pairs(new) == {0: 0}  # both truths choose P0


@pytest.mark.parametrize("rule, tp", [(MEGC, 1), (REFERENCE, 0), (REFERENCE_2023, 0)])
def test_iou_exactly_one_half_on_lengths(rule, tp):
    truths = frame([("v", "s", "mae", 0, 20)], with_score=False)
    proposals = frame([("v", "s", "mae", 0, 10, 0.9)])  # e - s: 10 / 20 = 0.5, not > 0.5
    matches = match_all(proposals, truths, rule)  # inclusive: 11 / 21 > 0.5
    assert counts(matches) == (tp, 1, 1)
    if rule is not MEGC:
        assert matches.loc[matches["outcome"] == "FP", "iou"].tolist() == [0.5]


@pytest.mark.parametrize("rule, tp", [(MEGC, 1), (REFERENCE, 0), (REFERENCE_2023, 0)])
def test_iou_exactly_one_half_on_inclusive_counts(rule, tp):
    truths = frame([("v", "s", "mae", 0, 19)], with_score=False)
    proposals = frame([("v", "s", "mae", 0, 9, 0.9)])  # inclusive 10 / 20 = 0.5 (>= passes)
    matches = match_all(proposals, truths, rule)  # e - s: 9 / 19
    assert counts(matches) == (tp, 1, 1)
    if rule is MEGC:
        assert matches["iou"].tolist() == [0.5]


@pytest.mark.parametrize("rule", [MEGC, REFERENCE, REFERENCE_2023])
def test_a_truth_with_no_proposal(rule):
    truths = frame([("v", "s", "mae", 0, 40), ("v", "s", "mae", 100, 130),
                    ("w", "s", "me", 10, 20)], with_score=False)  # w: no proposal at all
    proposals = frame([("v", "s", "mae", 2, 40, 0.7)])  # 38 / 40 with T0, nothing with T1
    matches = match_all(proposals, truths, rule)
    assert counts(matches) == (1, 1, 3)
    assert sorted(matches.loc[matches["outcome"] == "FN", "truth"]) == [1, 2]
    assert counts(matches, "me") == (0, 0, 1)


def test_ties_in_iou():
    truths = frame([("v", "s", "me", 10, 30)], with_score=False)
    # both 18 / 20 = 0.9 with the truth; P1 scores higher, so comes first in score order
    proposals = frame([("v", "s", "me", 10, 28, 0.4), ("v", "s", "me", 12, 30, 0.8)])
    assert tp_pairs(match_all(proposals, truths, REFERENCE)) == {1: 0}  # first in score order
    assert tp_pairs(match_all(proposals, truths, MEGC)) == {1: 0}  # best score first
    assert tp_pairs(match_all(proposals, truths, REFERENCE_2023)) == {0: 0, 1: 0}
    # equal scores too: the proposals' own order decides (the reference's row order)
    same = proposals.assign(score=0.5)
    assert tp_pairs(match_all(same, truths, REFERENCE)) == {0: 0}
    # a proposal as close to two truths: its TP row names the first truth
    two = frame([("v", "s", "me", 0, 20), ("v", "s", "me", 4, 24)], with_score=False)
    middle = frame([("v", "s", "me", 2, 22, 0.9)])  # 18 / 22 with each
    for rule in (REFERENCE, REFERENCE_2023, MEGC):
        assert tp_pairs(match_all(middle, two, rule)) == {0: 0}, rule.name
    assert counts(match_all(middle, two, REFERENCE)) == (1, 1, 2)


# ---- the reference's loops, restated plainly, on random cases

def _iou(s, e, gs, ge) -> float:
    """The reference's iou_with_anchors: lengths e - s."""
    inter = max(0, min(e, ge) - max(s, gs))
    union = (e - s) + (ge - gs) - inter
    return inter / union if union > 0 else 0.0


def restated(proposals: pd.DataFrame, truths: pd.DataFrame, counting: str) -> dict:
    """AUW-GCN's counts in plain words, per (video, type) group of proposals in their score
    order (its NMS output), summed over videos and subjects; overall = ME + MaE.
    `iou_for_tp`: a proposal is TP when its largest IoU with a truth is > 0.5.
    `iou_for_find`: each truth marks its largest-IoU proposal (the first on a tie) when that
    IoU is > 0.5; the TP are the marked proposals."""
    totals = {kind: [0, 0, 0] for kind in ("me", "mae")}
    for kind in ("me", "mae"):
        totals[kind][2] = int((truths["type"] == kind).sum())
        for video in sorted(set(proposals["video"])):
            mine = proposals[(proposals["video"] == video) & (proposals["type"] == kind)]
            mine = mine.sort_values("score", ascending=False, kind="stable")
            theirs = truths[(truths["video"] == video) & (truths["type"] == kind)]
            spans = list(zip(mine["onset"], mine["offset"]))
            totals[kind][1] += len(spans)
            if counting == "iou_for_tp":
                totals[kind][0] += sum(
                    max([_iou(s, e, t.onset, t.offset) for t in theirs.itertuples()] or [0]) > 0.5
                    for s, e in spans)
            else:
                marked = set()
                for t in theirs.itertuples():
                    ious = [_iou(s, e, t.onset, t.offset) for s, e in spans]
                    if ious and max(ious) > 0.5:
                        marked.add(ious.index(max(ious)))
                totals[kind][0] += len(marked)
    totals["overall"] = [a + b for a, b in zip(totals["me"], totals["mae"])]
    return {kind: tuple(v) for kind, v in totals.items()}


def random_case(rng):
    rows_p, rows_t = [], []
    for v in range(3):
        subject = f"s{v % 2}"
        for kind in ("me", "mae"):
            centres = rng.integers(20, 200, size=rng.integers(0, 4))
            for c in centres:
                length = int(rng.integers(8, 40))
                rows_t.append((f"v{v}", subject, kind, int(c), int(c) + length))
                for _ in range(rng.integers(0, 3)):  # proposals near the truth
                    s = int(c + rng.integers(-8, 9))
                    rows_p.append((f"v{v}", subject, kind, s, s + int(length + rng.integers(-8, 9)),
                                   float(rng.random())))
            for _ in range(rng.integers(0, 2)):  # and some far off
                s = int(rng.integers(0, 240))
                rows_p.append((f"v{v}", subject, kind, s, s + int(rng.integers(8, 40)),
                               float(rng.random())))
    return frame(rows_p), frame(rows_t, with_score=False)


def _table_counts(matches) -> dict:
    table = summarise(matches).set_index("type")
    return {kind: tuple(int(table.loc[kind, c]) for c in ("TP", "proposals", "truths"))
            for kind in ("me", "mae", "overall")}


@pytest.mark.parametrize("rule, counting", [(REFERENCE, "iou_for_find"),
                                            (REFERENCE_2023, "iou_for_tp")])
def test_both_reference_countings_agree_with_plain_restatements(rule, counting):
    rng = np.random.default_rng(25)
    for _ in range(30):
        proposals, truths = random_case(rng)
        matches = match_all(proposals, truths, rule)
        assert _table_counts(matches) == restated(proposals, truths, counting)
        table = summarise(matches).set_index("type")
        for kind in ("me", "mae", "overall"):
            tp, n, m = (table.loc[kind, c] for c in ("TP", "proposals", "truths"))
            p, r = (tp / n if n else 0), (tp / m if m else 0)
            assert table.loc[kind, "f1"] == pytest.approx(2 * p * r / (p + r) if p + r else 0)


def test_the_two_reference_countings_differ_on_random_cases():
    rng = np.random.default_rng(3)
    new = old = 0
    for _ in range(30):
        proposals, truths = random_case(rng)
        new += counts(match_all(proposals, truths, REFERENCE))[0]
        old += counts(match_all(proposals, truths, REFERENCE_2023))[0]
        per_truth = match_all(proposals, truths, REFERENCE)
        tp = per_truth[per_truth["outcome"] == "TP"]
        assert not tp["proposal"].duplicated().any() and not tp["truth"].duplicated().any()
    assert old > 1.3 * new  # several proposals per truth count under iou_for_tp only


def test_a_match_rule_names_a_known_counting():
    with pytest.raises(ValueError, match="counting"):
        MatchRule("x", inclusive=True, threshold=0.5, strict=False, counting="greedy",
                  scale="frames", label="x")


def test_calibration_counts_each_prefix_under_the_per_truth_counting():
    """Calibration keeps prefixes of the score-ordered proposals; under `reference` a truth's
    best proposal in a prefix may not be its best in the whole list."""
    from spotting.calibrate import _prefix_tp

    truths = frame([("v", "s", "mae", 0, 40)], with_score=False)
    # P0 [0, 24]: 24 / 40 = 0.6 with the truth; P1 [4, 40]: 36 / 40 = 0.9; P0-P1: 20 / 40
    kept = pd.DataFrame({"type": "mae", "start": [0, 4], "end": [24, 40], "score": [0.9, 0.5]})

    def true_positives(found, video):
        found = found.rename(columns={"start": "onset", "end": "offset"}).assign(video=video,
                                                                                subject="s")
        matches = match_all(found, truths, REFERENCE)
        return found.index.isin(matches.loc[matches["outcome"] == "TP", "proposal"])

    assert true_positives(kept, "v").tolist() == [False, True]  # the truth chooses P1
    assert _prefix_tp(kept, "v", true_positives, REFERENCE.prefix_stable).tolist() == [0, 1, 1]
    assert _prefix_tp(kept, "v", true_positives, True).tolist() == [0, 0, 1]  # would be wrong
    assert MEGC.prefix_stable and REFERENCE_2023.prefix_stable
