"""Mirror features (spotting/augment.py) and calibrated proposals (spotting/calibrate.py); their
use in `mespot evaluate` is tested in test_evaluate_report.py (on its trained run)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from flowcore.mdmo import mdmo
from spotting.augment import MIRROR_NODES, mirror_features, mirror_normalised
from spotting.calibrate import calibrate
from spotting.metrics import MEGC, match_all, match_intervals, summarise
from spotting.proposals import PRESETS, spot_video

# iBUG 300-W landmark of the mirrored face: point i of the mirror is point MIRROR_68[i]
MIRROR_68 = (
    [16 - i for i in range(17)]
    + [26, 25, 24, 23, 22, 21, 20, 19, 18, 17]
    + [27, 28, 29, 30]
    + [35, 34, 33, 32, 31]
    + [45, 44, 43, 42, 47, 46, 39, 38, 37, 36, 41, 40]
    + [54, 53, 52, 51, 50, 49, 48, 59, 58, 57, 56, 55]
    + [64, 63, 62, 61, 60, 67, 66, 65]
)


def test_mirror_features_swaps_the_sides_and_negates_x():
    x = np.arange(24, dtype=np.float32).reshape(12, 2)
    m = mirror_features(x)
    np.testing.assert_array_equal(m[0], [-x[5, 0], x[5, 1]])  # right brow outer <- left brow outer
    np.testing.assert_array_equal(m[8], [-x[10, 0], x[10, 1]])  # mouth corners swap
    np.testing.assert_array_equal(m[9], [-x[9, 0], x[9, 1]])  # upper lip stays
    np.testing.assert_array_equal(mirror_features(m), x)
    assert torch.equal(mirror_features(torch.from_numpy(x)), torch.from_numpy(m))


def test_mirror_features_are_the_features_of_the_mirrored_video():
    """MDMO of a mirrored flow field with mirrored landmarks = mirror_features of the original."""
    import cv2

    from mespot.testing import face_frames
    from flowcore.landmarks import detect_faces, fit_landmarks

    frame = face_frames(1)[0]
    landmarks = np.round(fit_landmarks(frame, detect_faces(frame)[0]))
    width = frame.shape[1]
    mirrored_lm = np.stack([width - 1 - landmarks[:, 0], landmarks[:, 1]], 1)[MIRROR_68]
    rng = np.random.default_rng(0)
    same = 0
    for _ in range(5):
        coarse = rng.normal(0, 1.5, (2, 12, 12)).astype(np.float32)
        flow = np.stack(
            [cv2.resize(c, frame.shape[::-1], interpolation=cv2.INTER_CUBIC) for c in coarse]
        )
        flow += rng.normal(0, 0.05, flow.shape).astype(np.float32)
        mirrored = np.stack([-flow[0, :, ::-1], flow[1, :, ::-1]])
        a = mirror_features(mdmo(flow[None], landmarks[None].astype(np.float32))[0])
        b = mdmo(np.ascontiguousarray(mirrored)[None], mirrored_lm[None].astype(np.float32))[0]
        same += int(np.isclose(a, b, atol=1e-4).all(axis=1).sum())
    assert same == 5 * 12


def test_mirror_of_normalised_windows_keeps_padding_and_normalisation():
    rng = np.random.default_rng(1)
    raw = rng.normal(0.2, 1.0, (2, 6, 12, 2)).astype(np.float32)
    valid = np.ones((2, 6), bool)
    valid[1, 4:] = False
    raw[~valid] = 0
    mean, std = [0.1, -0.2], [2.0, 0.5]
    norm = torch.from_numpy((raw - np.float32(mean)) / np.float32(std) * valid[..., None, None])
    got = mirror_normalised(norm, torch.from_numpy(valid), mean, std).numpy()
    want = (mirror_features(raw) - np.float32(mean)) / np.float32(std) * valid[..., None, None]
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert sorted(MIRROR_NODES) == list(range(12))


# --- calibration --------------------------------------------------------------------------------


def _logits(n: int, spots: list[tuple[str, int, int, int]], apex_p: float) -> np.ndarray:
    """(n, 10) logits with clean start/end peaks and an apex probability of `apex_p` at each
    spot."""
    x = np.zeros((n, 10), np.float32)
    x[:, [2, 5]] = 4.0  # "none" everywhere
    x[:, [6, 7]] = -6.0
    for kind, s, a, e in spots:
        se, apex = (0, 6) if kind == "me" else (3, 7)
        x[s, se] = 8.0
        x[e, se + 1] = 8.0
        x[a, apex] = np.log(apex_p / (1 - apex_p))
    return x


def _matcher(truths):
    """true_positives(found, video) for calibrate: MEGC matching on rows."""

    def true_positives(found, video):
        found = found.rename(columns={"start": "onset", "end": "offset"})
        kind = found["type"].iloc[0]
        wanted = truths[(truths["video"] == video) & (truths["type"] == kind)]
        matched = match_intervals(found, wanted, MEGC)
        return np.isin(found.index, matched.loc[matched["outcome"] == "TP", "proposal"])

    return true_positives


def test_calibration_finds_the_threshold_the_network_needs():
    truths = pd.DataFrame(
        [("v1", "me", 20, 26), ("v1", "mae", 100, 130), ("v2", "mae", 50, 80)],
        columns=["video", "type", "onset", "offset"],
    )
    per_video = {
        "v1": _logits(256, [("me", 20, 23, 26), ("mae", 100, 115, 130)], 0.35),
        "v2": _logits(256, [("mae", 50, 65, 80)], 0.35),
    }
    base = PRESETS["casme2"]
    assert sum(len(spot_video(v, base)) for v in per_video.values()) == 0  # 0.35 < 0.5: nothing
    rules, f1 = calibrate(per_video, len(truths), base, _matcher(truths))
    assert f1 == 1.0
    assert all(p.apex_threshold < 0.35 for p in rules.params)
    # the F1 the search reports is what spotting with the chosen rules gives
    found = pd.concat([rules.spot(v).assign(video=k, subject="s") for k, v in per_video.items()])
    found = found.rename(columns={"start": "onset", "end": "offset"})
    summary = summarise(match_all(found, truths.assign(subject="s"), MEGC)).set_index("type")
    assert summary.loc["overall", "f1"] == pytest.approx(f1)


def test_calibration_drops_weak_extra_proposals_and_keeps_the_reference_rules_on_ties():
    truths = pd.DataFrame([("v1", "mae", 100, 130)], columns=["video", "type", "onset", "offset"])
    x = _logits(256, [("mae", 100, 115, 130)], 0.9)
    x[:, 7] = np.where(np.arange(256) == 115, x[:, 7], -6.0)
    extra = _logits(256, [("mae", 180, 195, 210)], 0.55)  # a false one, weaker
    x[180], x[195], x[210] = extra[180], extra[195], extra[210]
    rules, f1 = calibrate({"v1": x}, len(truths), PRESETS["casme2"], _matcher(truths))
    assert f1 == 1.0 and len(rules.spot(x)) == 1
    # where the reference rules are already best, they are kept
    clean = _logits(256, [("mae", 100, 115, 130)], 0.9)
    kept, _ = calibrate({"v1": clean}, len(truths), PRESETS["casme2"], _matcher(truths))
    assert kept.to_json()["mae"] == {"apex_threshold": 0.5, "top_k": 5, "min_score": 0.0}


def test_several_folds_rules_combine_per_type_by_the_lower_median():
    from dataclasses import replace

    from spotting.calibrate import Calibrated

    base = PRESETS["casme2"]

    def rules(me, mae):
        (t1, k1, f1), (t2, k2, f2) = me, mae
        return Calibrated((replace(base, apex_threshold=t1, me_top_k=k1),
                           replace(base, apex_threshold=t2, mae_top_k=k2)), (f1, f2))

    folds = [rules((0.4, 1, 0.0), (0.5, 5, 0.2)), rules((0.6, 5, 0.1), (0.3, 2, 0.0)),
             rules((0.5, 3, 0.05), (0.7, 8, 0.3))]
    combined = Calibrated.combined(folds).to_json()
    assert combined["me"] == {"apex_threshold": 0.5, "top_k": 3, "min_score": 0.05}
    assert combined["mae"] == {"apex_threshold": 0.5, "top_k": 5, "min_score": 0.2}
    two = Calibrated.combined(folds[:2]).to_json()  # the lower of the two middle values
    assert two["me"] == {"apex_threshold": 0.4, "top_k": 1, "min_score": 0.0}
    assert Calibrated.combined(folds[2:]).to_json() == folds[2].to_json()
    assert Calibrated.from_json(base, combined).to_json() == combined
