"""MDMO rules (AUWGCN.md section 3) pinned by hand-computed cases, and the fast versions against
the readable reference."""

import math

import numpy as np
import pytest
import torch

from flowcore.mdmo import (
    HEAD_SECTOR_EDGES,
    ROI_SECTOR_EDGES,
    MDMOParams,
    _boxes,
    flow_angles,
    main_direction_mean,
    mdmo,
    mdmo_reference,
    quantise_flow,
    round_landmarks,
    sector_index,
)
from flowcore.rois import ROI_LANDMARKS

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
EPS = 1e-6


def _face_landmarks(n=1, size=64):
    """Plausible (n, 68, 2) landmarks for a size x size face: all points well inside."""
    lm = np.full((n, 68, 2), size / 2, dtype=np.float32)
    lm[:, 29] = (32, 30)
    lm[:, 30] = (32, 36)
    lm[:, 39] = (26, 24)
    lm[:, 42] = (38, 24)  # b = int(0.35 * 12 / 2) = 2
    xs = (12, 17, 22, 42, 47, 52, 32, 32, 22, 32, 42, 32)
    ys = (14, 12, 13, 13, 12, 14, 26, 36, 48, 45, 48, 54)
    for i, x, y in zip(ROI_LANDMARKS, xs, ys):
        lm[:, i] = (x, y)
    return lm


# ---- angles and sectors -------------------------------------------------------------------


def test_angles_known_answers():
    dx = np.array([0.0, 1.0, 0.0, -1.0, 0.0, 1.0, -1.0])
    dy = np.array([0.0, 0.0, 1.0, 0.0, -1.0, 1.0, -0.0])
    expected = [0, 0, math.pi / 2, math.pi, 3 * math.pi / 2, math.pi / 4, math.pi]
    np.testing.assert_allclose(flow_angles(dx, dy), expected, atol=1e-12)
    # a vector just below the x axis rounds to 2 pi: it still falls in the wrap-around sector
    tiny = flow_angles(np.array([1.0]), np.array([-1e-300]))
    assert sector_index(tiny, ROI_SECTOR_EDGES)[0] == 3


def test_compat_angles_close_to_exact():
    rng = np.random.default_rng(1)
    dx, dy = rng.normal(size=1000), rng.normal(size=1000)
    diff = flow_angles(dx, dy, compat=True) - flow_angles(dx, dy)
    diff = (diff + math.pi) % (2 * math.pi) - math.pi
    assert np.abs(diff).max() < math.radians(0.5)


@pytest.mark.parametrize("edges", [HEAD_SECTOR_EDGES, ROI_SECTOR_EDGES])
def test_sector_edges_are_half_open(edges):
    e0, e1, e2, e3 = edges
    angles = np.array([0.0, e0, np.nextafter(e0, 0), e1, np.nextafter(e1, 0), e2,
                       np.nextafter(e2, 0), e3, np.nextafter(e3, 0), 2 * math.pi,
                       np.nextafter(2 * math.pi, 0)])
    np.testing.assert_array_equal(sector_index(angles, edges), [3, 0, 3, 1, 0, 2, 1, 3, 2, 3, 3])


def test_head_sector_of_diagonal_vector():
    # (1, 1) lies exactly on pi/4: the first head sector [pi/4, 3pi/4), not the wrap-around one
    assert sector_index(flow_angles(np.array([1.0]), np.array([1.0])), HEAD_SECTOR_EDGES)[0] == 0


# ---- the main-direction mean ---------------------------------------------------------------


def test_keep_fraction_keeps_largest():
    # five vectors pointing down (sector 0 of the ROI table); int(5 * 0.6) = 3 kept: 5, 4, 3
    v = np.array([[0, 1], [0, 5], [0, 2], [0, 4], [0, 3]], dtype=float)
    out = main_direction_mean(v, ROI_SECTOR_EDGES, 0.6)
    np.testing.assert_allclose(out, [0, 12 / (12 + EPS) * 4], rtol=1e-12)


def test_most_populated_sector_wins_and_direction_comes_from_sum():
    # sector 0 (down): (1, 2) and (-1, 2) and (0, 1); sector 3 (right): (5, 0) and (6, 0)
    v = np.array([[1, 2], [5, 0], [-1, 2], [6, 0], [0, 1]], dtype=float)
    out = main_direction_mean(v, ROI_SECTOR_EDGES, 0.6)  # keep int(3 * 0.6) = 1 ... of sector 0
    # the two largest of sector 0 tie (|v| = sqrt 5): the earliest, (1, 2), is kept
    np.testing.assert_allclose(out, np.array([1, 2]) / (math.sqrt(5) + EPS) * math.sqrt(5))
    out = main_direction_mean(v, ROI_SECTOR_EDGES, 0.7)  # int(2.1) = 2: (1, 2) and (-1, 2)
    np.testing.assert_allclose(out, [0, 4 / (4 + EPS) * math.sqrt(5)])


def test_sector_tie_goes_to_earliest_sector():
    # two vectors up (sector 2) and two left (sector 1): the tie goes to sector 1
    v = np.array([[0, -3], [-2, 0], [0, -3], [-2, 0]], dtype=float)
    out = main_direction_mean(v, ROI_SECTOR_EDGES, 1.0)
    np.testing.assert_allclose(out, [-4 / (4 + EPS) * 2, 0])


def test_zero_vectors_fall_in_wraparound_sector():
    v = np.array([[0, 0], [0, 0], [0, 0], [0, 2]], dtype=float)  # three zeros: sector 3 wins
    np.testing.assert_allclose(main_direction_mean(v, ROI_SECTOR_EDGES, 0.6), [0, 0])


def test_nothing_kept_gives_zero():
    assert np.all(main_direction_mean(np.array([[0.0, 3.0]]), ROI_SECTOR_EDGES, 0.6) == 0)
    assert np.all(main_direction_mean(np.zeros((0, 2)), ROI_SECTOR_EDGES, 0.6) == 0)


# ---- geometry: rounding, the nose rectangle, borders ---------------------------------------


def test_landmarks_round_half_up():
    lm = np.array([[10.5, 10.49], [-0.5, 2.5]])
    np.testing.assert_array_equal(round_landmarks(lm), [[11, 10], [0, 3]])


def test_nose_rectangle_and_roi_boxes():
    lm = round_landmarks(_face_landmarks())
    lm[:, 39, 0], lm[:, 42, 0] = 40, 63  # b = int(0.35 * 23 / 2) = int(4.025) = 4
    lm[:, 29], lm[:, 30] = (30, 30), (31, 40)
    boxes = _boxes(lm, 5, ROI_LANDMARKS, np)
    np.testing.assert_array_equal(boxes[0, 0], [26, 35, 26, 44])  # x0, x1, y0, y1 inclusive
    x, y = lm[0, 48]
    np.testing.assert_array_equal(boxes[0, 1 + 8], [x - 5, x + 5, y - 5, y + 5])
    lm[:, 42, 0] = 30  # eyes in the wrong order: b is 0, not negative
    np.testing.assert_array_equal(_boxes(lm, 5, ROI_LANDMARKS, np)[0, 0], [30, 31, 30, 40])


def test_head_motion_is_subtracted():
    lm = _face_landmarks()
    flow = np.zeros((1, 2, 64, 64), np.float32)
    flow[:, 0] = 2.0  # the whole face moves 2 px right
    x, y = lm[0, 48].astype(int)
    flow[:, 1, y - 5 : y + 6, x - 5 : x + 6] = 3.0  # mouth corner also moves 3 px down
    out = mdmo(flow, lm)[0]
    head = 2 / (2 + EPS) * 2  # main-direction mean of identical (2, 0) vectors
    np.testing.assert_allclose(out[8], [2 - head, 3], atol=1e-5)
    others = np.delete(out, 8, axis=0)
    np.testing.assert_allclose(others, 0, atol=1e-5)


def test_roi_at_border_is_clipped_not_padded():
    lm = _face_landmarks()
    lm[0, 18] = (0, 0)  # ROI 0 centred on the corner: 6 x 6 pixels remain
    lm[0, 19] = (-6, 10)  # ROI 1 entirely outside the image
    flow = np.zeros((1, 2, 64, 64), np.float32)
    flow[0, 1, :6, :6] = 1.0  # the 36 remaining pixels move down; the head rectangle is still
    out = mdmo(flow, lm)[0]
    # 36 vectors (0, 1), int(36 * 0.6) = 21 kept; padding with zeros would give (0, 0) instead
    np.testing.assert_allclose(out[0], [0, 21 / (21 + EPS)], rtol=1e-6)
    np.testing.assert_array_equal(out[1], [0, 0])
    np.testing.assert_array_equal(mdmo_reference(flow[0], lm[0]), out)


# ---- compat ---------------------------------------------------------------------------------


def test_quantisation_known_answers():
    q = quantise_flow(np.array([0.0, 10.0, -10.0, 15.0, -15.0, 2.0]))
    codes = np.array([128, 255, 0, 255, 0, 153], np.float32)  # 0 px -> rint(127.5) = 128
    assert q.dtype == np.float32  # read back in float32, as the reference did
    np.testing.assert_array_equal(q, codes / np.float32(255) - np.float32(0.5))


def test_compat_features_are_in_twenty_pixel_units():
    lm = _face_landmarks()
    flow = np.zeros((1, 2, 64, 64), np.float32)
    x, y = lm[0, 48].astype(int)
    flow[:, 1, y - 5 : y + 6, x - 5 : x + 6] = 4.0
    out = mdmo(flow, lm, MDMOParams(compat=True))[0]
    zero = 128 / 255 - 0.5  # still flow reads back as +0.00196 in both components
    head = np.array([zero, zero]) / (math.hypot(zero, zero) + EPS) * math.hypot(zero, zero)
    down = np.array([zero, round(14 / 20 * 255) / 255 - 0.5]) - head
    np.testing.assert_allclose(out[8], down, atol=1e-6)


# ---- the fast versions agree with the reference ---------------------------------------------


def _random_case(seed, n=6, size=48):
    rng = np.random.default_rng(seed)
    flow = rng.normal(scale=2.0, size=(n, 2, size, size)).astype(np.float32)
    flow[:, :, ::3] = np.round(flow[:, :, ::3])  # exact ties and zero vectors
    lm = rng.uniform(-4, size + 4, size=(n, 68, 2)).astype(np.float32)
    lm[1] = np.round(lm[1]) + 0.5  # rounding halves
    return flow, lm


@pytest.mark.parametrize("compat", [False, True])
def test_numpy_matches_reference(compat):
    params = MDMOParams(compat=compat)
    flow, lm = _random_case(3)
    expected = np.stack([mdmo_reference(f, marks, params) for f, marks in zip(flow, lm)])
    out = mdmo(flow, lm, params)
    assert out.dtype == np.float32 and out.shape == (6, 12, 2)
    np.testing.assert_array_equal(out, expected)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("compat", [False, True])
def test_torch_matches_numpy(device, compat):
    params = MDMOParams(compat=compat)
    flow, lm = _random_case(4)
    expected = mdmo(flow, lm, params)
    out = mdmo(torch.from_numpy(flow).to(device), torch.from_numpy(lm).to(device), params)
    assert out.device.type == device and out.dtype == torch.float32
    np.testing.assert_allclose(out.cpu().numpy(), expected, atol=1e-6)


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError, match=r"flow must be \(N, 2, H, W\)"):
        mdmo(np.zeros((2, 3, 8, 8), np.float32), np.zeros((2, 68, 2)))
    with pytest.raises(ValueError, match=r"landmarks must be \(2, 68, 2\)"):
        mdmo(np.zeros((2, 2, 8, 8), np.float32), np.zeros((3, 68, 2)))


def test_bad_params_are_refused():
    with pytest.raises(ValueError, match="landmark indices"):
        MDMOParams(roi_landmarks=(18, 68))
    with pytest.raises(ValueError, match="roi_keep"):
        MDMOParams(roi_keep=0.0)
