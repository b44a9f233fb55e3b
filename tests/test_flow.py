"""Tests of flowcore.flow: interface, both backends, known answers and agreement.

Small images only (64 px face crops, a few 17 x 23 odd sizes); no timings asserted.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from flowcore.flow import TVL1Params, available_backends, compute_flow
from flowcore.flow.synthetic import (
    bump_flow,
    end_point_error,
    face_texture,
    render_second,
    translation_flow,
)
from flowcore.flow.torch_tvl1 import (flow_torch, median_filter, resize_linear, solve_level_tensors,
                                      warp_cubic)
from flowcore.flow.tvl1_numba import solve_level_numba

BACKENDS = ["opencv", "torch"]
SIZE = 64
INNER = slice(6, -6)  # border excluded from known-answer errors: content enters the frame there


def _interior(flow):
    return flow[..., INNER, INNER]


@pytest.fixture(scope="module")
def texture():
    return np.array(face_texture(SIZE))


@pytest.fixture(scope="module")
def shifted_pair(texture):
    """A 64 px face and the same face moved by (0.4, -0.25) px, with its truth."""
    truth = translation_flow(texture.shape, 0.4, -0.25)
    return texture, render_second(texture, truth), truth


@pytest.fixture(scope="module")
def bump_pair(texture):
    """A smooth local deformation of at most 1 px around the image centre."""
    truth = bump_flow(texture.shape, [(32, 30)], [(0.8, 0.6)], sigma=12.0)
    return texture, render_second(texture, truth), truth


@pytest.fixture(scope="module")
def shifted_flows(shifted_pair):
    first, second, _ = shifted_pair
    return {b: compute_flow(first, second, backend=b) for b in BACKENDS}


# ---------------------------------------------------------------------------------------------
# Parameters and interface
# ---------------------------------------------------------------------------------------------
def test_params_defaults_equal_opencv():
    import cv2

    cv = cv2.optflow.DualTVL1OpticalFlow_create()
    p = TVL1Params()
    assert (p.tau, p.lambda_, p.theta, p.gamma) == pytest.approx(
        (cv.getTau(), cv.getLambda(), cv.getTheta(), cv.getGamma()))
    assert (p.n_scales, p.n_warps, p.inner_iterations, p.outer_iterations, p.median_filtering) == (
        cv.getScalesNumber(), cv.getWarpingsNumber(), cv.getInnerIterations(),
        cv.getOuterIterations(), cv.getMedianFiltering())
    assert (p.scale_step, p.epsilon) == pytest.approx((cv.getScaleStep(), cv.getEpsilon()))


def test_params_frozen_and_json():
    import json

    p = TVL1Params(tau=0.2)
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.tau = 0.1
    assert json.loads(json.dumps(p.to_dict()))["tau"] == 0.2
    with pytest.raises(ValueError, match="scale_step"):
        TVL1Params(scale_step=1.5)


def test_available_backends():
    assert set(BACKENDS) <= set(available_backends())


def test_unknown_backend_lists_available():
    a = np.zeros((8, 8), np.uint8)
    with pytest.raises(ValueError, match=r"'nope'.*available: \['opencv', 'torch'"):
        compute_flow(a, a, backend="nope")


@pytest.mark.parametrize(
    "first, second, error, message",
    [
        (np.zeros((2, 8, 8), np.uint8), np.zeros((2, 8, 9), np.uint8), ValueError,
         r"expected shape \(2, 8, 8\).*got \(2, 8, 9\)"),
        (np.zeros((2, 8, 8), np.uint8), np.zeros((3, 8, 8), np.uint8), ValueError,
         r"expected shape \(2, 8, 8\).*got \(3, 8, 8\)"),
        (np.zeros((8, 8), np.uint8), np.zeros((8, 8), np.float32), TypeError, "share a dtype"),
        (np.zeros((8, 8), np.float64), np.zeros((8, 8), np.float64), TypeError,
         "expected dtype uint8 or float32.*got float64"),
        (np.zeros((1, 1, 8, 8), np.uint8), np.zeros((1, 1, 8, 8), np.uint8), ValueError,
         r"expected shape \(N, H, W\) or \(H, W\), got \(1, 1, 8, 8\)"),
        (np.zeros((8, 8), np.uint8), torch.zeros(8, 8, dtype=torch.uint8), TypeError,
         "both be numpy arrays or both torch tensors"),
        ([[0, 1]], [[0, 1]], TypeError, "numpy array or torch tensor"),
        (np.full((8, 8), np.nan, np.float32), np.zeros((8, 8), np.float32), ValueError,
         "first: expected finite grey values"),
    ],
)
@pytest.mark.parametrize("backend", BACKENDS)
def test_bad_input_clear_error(backend, first, second, error, message):
    with pytest.raises(error, match=message):
        compute_flow(first, second, backend=backend)


@pytest.mark.skipif("opencv" not in available_backends(),
                    reason="needs OpenCV contrib's DualTVL1 (the GPU image has plain OpenCV)")
def test_opencv_rejects_gpu_device():
    a = np.zeros((8, 8), np.uint8)
    with pytest.raises(ValueError, match="cpu only"):
        compute_flow(a, a, backend="opencv", device="cuda")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message where CUDA is missing")
def test_torch_cuda_missing_clear_error():
    a = np.zeros((8, 8), np.uint8)
    with pytest.raises(ValueError, match="CUDA is not available"):
        compute_flow(a, a, backend="torch", device="cuda")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("shape", [(17, 23), (1, 20, 16), (3, 19, 21)])
@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
def test_shapes_and_dtypes(backend, shape, dtype):
    rng = np.random.default_rng(0)
    first = rng.integers(0, 256, shape).astype(dtype)
    second = np.roll(first, 1, axis=-1)
    flow = compute_flow(first, second, backend=backend)
    expected = (2, *shape) if len(shape) == 2 else (shape[0], 2, *shape[1:])
    assert flow.shape == expected and flow.dtype == np.float32
    assert np.isfinite(flow).all()


@pytest.mark.parametrize("backend", BACKENDS)
def test_torch_tensors_in_torch_out(backend):
    first = torch.from_numpy(np.array(face_texture(32)))
    flow = compute_flow(first[None], torch.roll(first, 1, 1)[None], backend=backend)
    assert isinstance(flow, torch.Tensor) and flow.shape == (1, 2, 32, 32)
    assert flow.dtype == torch.float32 and flow.device == first.device


@pytest.mark.parametrize("backend", BACKENDS)
def test_identical_images_zero_flow(backend, texture):
    flow = compute_flow(texture, texture, backend=backend)
    assert np.abs(flow).max() == 0.0


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("value", [0, 128])
def test_constant_images_no_nan(backend, value):
    first = np.full((2, 24, 24), value, np.uint8)
    second = np.full((2, 24, 24), 255 - value, np.uint8)  # no texture, only a brightness jump
    flow = compute_flow(first, second, backend=backend)
    assert np.isfinite(flow).all()


# ---------------------------------------------------------------------------------------------
# Known answers and agreement
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("backend", BACKENDS)
def test_known_subpixel_translation(backend, shifted_pair, shifted_flows):
    _, _, truth = shifted_pair
    flow = shifted_flows[backend]
    # a 64 px face has little texture: TV-L1 recovers the shift to ~0.03 px here (both backends)
    assert _interior(flow).mean(axis=(1, 2)) == pytest.approx([0.4, -0.25], abs=0.05)
    assert end_point_error(_interior(flow), _interior(truth)) < 0.06
    assert np.abs(_interior(flow - truth)).max() < 0.15


@pytest.mark.parametrize("backend", BACKENDS)
def test_known_smooth_field(backend, bump_pair):
    first, second, truth = bump_pair
    flow = compute_flow(first, second, backend=backend)
    # mean EPE under 0.09 px (peak 1 px; 0.063 measured); within 8 px of the centre the mean
    # flow vector is within 0.2 px of the truth's (0.72, 0.54): a 64 px face has little texture
    # and TV regularisation flattens the peak (0.61, 0.39 measured, both backends)
    assert end_point_error(_interior(flow), _interior(truth)) < 0.09
    y, x = np.mgrid[0:SIZE, 0:SIZE]
    bump = (x - 32) ** 2 + (y - 30) ** 2 < 8**2
    assert flow[:, bump].mean(axis=1) == pytest.approx(truth[:, bump].mean(axis=1), abs=0.2)


def test_backends_agree(shifted_flows, bump_pair):
    a, b = shifted_flows["opencv"], shifted_flows["torch"]
    assert end_point_error(_interior(a), _interior(b)) < 0.01
    first, second, _ = bump_pair
    a = compute_flow(first, second, backend="opencv")
    b = compute_flow(first, second, backend="torch")
    assert end_point_error(_interior(a), _interior(b)) < 0.01


def test_backends_agree_with_other_params(shifted_pair):
    """Non-default parameters reach both backends (fewer scales and warps, 3 x 3 median)."""
    first, second, _ = shifted_pair
    params = TVL1Params(n_scales=3, n_warps=2, median_filtering=3, lambda_=0.3, epsilon=0.02)
    a = compute_flow(first, second, params=params, backend="opencv")
    b = compute_flow(first, second, params=params, backend="torch")
    assert end_point_error(_interior(a), _interior(b)) < 0.01
    default = compute_flow(first, second, backend="torch")
    assert end_point_error(_interior(b), _interior(default)) > 1e-4  # the parameters mattered


def test_gamma_illumination_term_agrees(bump_pair):
    """With gamma > 0 (illumination term u3) both backends agree and beat gamma = 0 on a
    brightness change of 10 % + 10 grey levels."""
    first, second, truth = bump_pair
    brighter = np.clip(second * 1.1 + 10, 0, 255).astype(np.float32)
    params = TVL1Params(gamma=0.5)
    a = compute_flow(first, brighter, params=params, backend="opencv")
    b = compute_flow(first, brighter, params=params, backend="torch")
    assert end_point_error(_interior(a), _interior(b)) < 0.05
    plain = compute_flow(first, brighter, backend="torch")
    assert end_point_error(b, truth) < 0.5 * end_point_error(plain, truth)


@pytest.mark.parametrize("solver", [solve_level_numba, solve_level_tensors],
                         ids=["numba", "tensors"])
def test_batch_equals_single_pairs(solver):
    """Per-sample stopping: a pair's flow does not depend on the rest of its batch."""
    texture = np.array(face_texture(32))
    shifts = [(0.3, 0.0), (0.0, 0.0), (1.5, -1.0)]  # the identical pair stops at once
    first = torch.from_numpy(np.stack([texture] * 3))
    second = torch.from_numpy(
        np.stack([render_second(texture, translation_flow(texture.shape, *s)) for s in shifts])
    )
    batch = flow_torch(first, second, TVL1Params(), solver)
    for i in range(3):
        single = flow_torch(first[i : i + 1], second[i : i + 1], TVL1Params(), solver)
        torch.testing.assert_close(batch[i : i + 1], single, rtol=0, atol=1e-5)


def test_numba_kernel_matches_tensor_path():
    """The CPU kernel (numba) and the readable tensor path (also the CUDA path) agree."""
    first = np.array(face_texture(40))
    truth = bump_flow(first.shape, [(20, 18)], [(0.8, -0.6)], sigma=8.0)
    second = render_second(first, truth)
    a = torch.from_numpy(np.stack([first, second]))
    b = torch.from_numpy(np.stack([second, first]))
    fused = flow_torch(a, b, TVL1Params(), solve_level_numba)
    tensors = flow_torch(a, b, TVL1Params(), solve_level_tensors)
    # float rounding moves a stopping decision now and then; the paths drift apart that little
    assert (fused - tensors).abs().mean() < 0.02


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu(shifted_pair):
    first, second, _ = shifted_pair
    cpu = compute_flow(first, second, backend="torch")
    gpu = compute_flow(first, second, backend="torch", device="cuda")
    assert end_point_error(_interior(cpu), _interior(gpu)) < 1e-3
    tensors = compute_flow(
        torch.from_numpy(first).cuda(),
        torch.from_numpy(second).cuda(),
        backend="torch",
        device="cuda",
    )
    assert tensors.device.type == "cuda"


# ---------------------------------------------------------------------------------------------
# Building blocks against OpenCV
# ---------------------------------------------------------------------------------------------
def test_building_blocks_match_opencv():
    import cv2

    rng = np.random.default_rng(1)
    image = rng.uniform(0, 255, (19, 26)).astype(np.float32)
    t = torch.from_numpy(image)[None, None]
    flow = rng.uniform(-3, 3, (2, 19, 26)).astype(np.float32)
    ys, xs = np.mgrid[0:19, 0:26].astype(np.float32)
    remapped = cv2.remap(image, xs + flow[0], ys + flow[1], cv2.INTER_CUBIC)
    # OpenCV quantises positions to 1/32 px: allow that much
    warped = warp_cubic(t, torch.from_numpy(flow)[None])[0, 0]
    np.testing.assert_allclose(warped, remapped, atol=0.5)
    np.testing.assert_array_equal(median_filter(t, 5)[0, 0], cv2.medianBlur(image, 5))
    small = cv2.resize(image, None, fx=0.8, fy=0.8, interpolation=cv2.INTER_LINEAR)
    np.testing.assert_allclose(resize_linear(t, small.shape, (1.25, 1.25))[0, 0], small, atol=1e-3)


def test_numba_median_matches_opencv():
    import cv2

    from flowcore.flow.tvl1_numba import _median_filter

    rng = np.random.default_rng(2)
    for size, shape in [(5, (17, 23)), (3, (9, 4)), (5, (3, 3))]:
        u = rng.standard_normal(shape).astype(np.float32)
        out = np.empty_like(u)
        _median_filter(u, out, size, np.empty((size * size, shape[1]), np.float32))
        np.testing.assert_array_equal(out, cv2.medianBlur(u, size))


def test_shipped_astronaut_landmarks_are_dlibs_fit():
    """The test face's landmarks travel as numbers (the GPU image has no dlib): they must be what
    dlib fits, and land on the crop's face."""
    pytest.importorskip("dlib", reason="the fit needs dlib")
    from flowcore.flow.synthetic import ASTRONAUT_LANDMARKS, face_landmarks, fit_astronaut_landmarks

    np.testing.assert_allclose(fit_astronaut_landmarks(), np.float32(ASTRONAUT_LANDMARKS), atol=0.5)
    points = face_landmarks(128)
    assert points.shape == (68, 2) and ((points > 10) & (points < 118)).all()
