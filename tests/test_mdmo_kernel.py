"""The per-ROI MDMO kernel (kernels/mdmo_rois.cu through flowcore.mdmo_cuda), built for the host
with the C++ compiler (tests/host_kernels.cpp), against flowcore's float MDMO (flowcore.mdmo.mdmo)
to 1e-5; the same tests launch the real kernel where a CUDA device and CuPy are present."""

import numpy as np
import pytest
import torch

from flowcore.flow.synthetic import face_landmarks, make_cases
from flowcore.mdmo import MDMOParams, mdmo
from flowcore.mdmo_cuda import mdmo_cuda
from flowcore.rois import ROI_LANDMARKS
from kernel_host import lazy_launchers

CUDA = torch.cuda.is_available()
DEVICES = ["cpu", pytest.param("cuda", marks=[
    pytest.mark.gpu, pytest.mark.skipif(not CUDA, reason="needs a CUDA device")])]


@pytest.fixture(scope="module")
def host(tmp_path_factory):
    """host() gives a host launcher (built at the first call: GPU tests need no compiler)."""
    return lazy_launchers(lambda: tmp_path_factory.mktemp("kernels"))


def _mdmo_kernel(flow, lm, params, device, host):
    """mdmo_cuda on `device`: the host build on the CPU, the kernel through CuPy on a GPU."""
    if device == "cuda":
        pytest.importorskip("cupy", reason="the CUDA kernels are launched with CuPy")
    out = mdmo_cuda(torch.from_numpy(flow).to(device), torch.from_numpy(lm).to(device), params,
                    launch=host() if device == "cpu" else None)
    assert out.device.type == device and out.dtype == torch.float32
    return out.cpu().numpy()


def _random_case(seed, n=6, size=48, rounded=True):
    """Random flows (some rows rounded: exact ties, zero vectors, vectors on sector edges) and
    landmarks anywhere around the image (ROIs cut by the border or outside it, halves)."""
    rng = np.random.default_rng(seed)
    flow = rng.normal(scale=2.0, size=(n, 2, size, size)).astype(np.float32)
    if rounded:
        flow[:, :, ::3] = np.round(flow[:, :, ::3])
    lm = rng.uniform(-4, size + 4, size=(n, 68, 2)).astype(np.float32)
    lm[1] = np.round(lm[1]) + 0.5
    return flow, lm


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("seed", [3, 4])
def test_kernel_matches_the_float_mdmo_on_random_flows(host, device, seed):
    # the GPU's atan2 may round a vector lying exactly on a sector edge otherwise: rounded
    # (integer) flows only on the host
    flow, lm = _random_case(seed, rounded=device == "cpu")
    out = _mdmo_kernel(flow, lm, MDMOParams(), device, host)
    np.testing.assert_allclose(out, mdmo(flow, lm), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("device", DEVICES)
def test_kernel_matches_the_float_mdmo_on_face_motion(host, device):
    size = 96
    landmarks = face_landmarks(size)
    cases = make_cases(size, landmarks, per_class=1, seed=2)
    flow = np.stack([c.flow for c in cases])  # smooth local motion of the face, px
    lm = np.repeat(landmarks[None], len(cases), 0)
    out = _mdmo_kernel(flow, lm, MDMOParams(), device, host)
    want = mdmo(flow, lm)
    assert np.abs(want).max() > 0.1  # the ROIs moved
    np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("device", DEVICES)
def test_kernel_follows_the_parameters(host, device):
    flow, lm = _random_case(5, n=3)
    params = MDMOParams(roi_landmarks=ROI_LANDMARKS[:5] + (33,), roi_radius=3, head_keep=0.5,
                        roi_keep=0.9)
    out = _mdmo_kernel(flow, lm, params, device, host)
    assert out.shape == (3, 6, 2)
    np.testing.assert_allclose(out, mdmo(flow, lm, params), rtol=1e-5, atol=1e-5)


def test_kernel_known_answer_head_motion_and_empty_rois(host):
    # the whole face moves 2 px right; one mouth corner also 3 px down; ROI 1 lies outside
    size = 64
    lm = np.tile(face_landmarks(size)[None], (2, 1, 1))
    lm[:, 19] = (-20, 10)
    flow = np.zeros((2, 2, size, size), np.float32)
    flow[:, 0] = 2.0
    x, y = np.floor(lm[0, 48] + 0.5).astype(int)
    flow[1, 1, y - 5 : y + 6, x - 5 : x + 6] = 3.0
    out = _mdmo_kernel(flow, lm, MDMOParams(), "cpu", host)
    head = 2 / (2 + 1e-6) * 2
    np.testing.assert_allclose(out[0], [[2 - head, 0]] * 12, atol=1e-5)
    np.testing.assert_allclose(out[1, 8], [2 - head, 3], atol=1e-5)
    np.testing.assert_array_equal(out[:, 1], 0)  # nothing inside the image: (0, 0)


def test_kernel_breaks_magnitude_ties_at_the_cut_by_row_major_order(host):
    # ROI 0's 121 vectors all point down (its main sector), magnitudes distinct except two of 29
    # at ranks 71 and 72: int(121 * 0.6) = 72 are kept, so only the earlier, (20, 21), is
    size = 64
    lm = np.zeros((1, 68, 2), np.float32)
    lm[0, :] = (50, 50)  # every other ROI and the eyes: still flow (zero vectors)
    lm[0, 29], lm[0, 30], lm[0, 39], lm[0, 42] = (32, 30), (32, 36), (26, 24), (38, 24)
    lm[0, ROI_LANDMARKS[0]] = (12, 12)
    patch = np.zeros((121, 2), np.float32)
    patch[:71, 1] = 40 + (71 - np.arange(71)) * 0.25
    patch[71], patch[72] = (20, 21), (-20, 21)
    patch[73:, 1] = 28 - (np.arange(73, 121) - 73) * 0.1
    flow = np.zeros((1, 2, size, size), np.float32)
    flow[0, :, 7:18, 7:18] = patch.T.reshape(2, 11, 11)
    out = _mdmo_kernel(flow, lm, MDMOParams(), "cpu", host)
    want = mdmo(flow, lm)
    assert want[0, 0, 0] > 0  # (20, 21) kept, not (-20, 21)
    np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-5)


def test_compat_and_bad_input_are_refused(host):
    launch = host()
    flow, lm = _random_case(1, n=2)
    with pytest.raises(ValueError, match="compat MDMO runs on the CPU"):
        mdmo_cuda(torch.from_numpy(flow), lm, MDMOParams(compat=True), launch=launch)
    with pytest.raises(ValueError, match=r"landmarks must be \(2, 68, 2\)"):
        mdmo_cuda(torch.from_numpy(flow), lm[:1], launch=launch)
    with pytest.raises(ValueError, match=r"flow must be \(N, 2, H, W\)"):
        mdmo_cuda(torch.from_numpy(flow[:, :1]), lm, launch=launch)
    with pytest.raises(TypeError, match="float32"):
        mdmo_cuda(torch.from_numpy(flow).double(), lm, launch=launch)


def test_extraction_with_the_cuda_backend_takes_the_kernel():
    from flowcore.extract import ExtractParams, _mdmo_function

    assert _mdmo_function(ExtractParams(flow_backend="cuda")) is mdmo_cuda
    compat = ExtractParams(flow_backend="cuda", mdmo=MDMOParams(compat=True))
    assert _mdmo_function(compat) is mdmo
    assert _mdmo_function(ExtractParams(flow_backend="torch")) is mdmo
