"""The TV-L1 kernels of kernels/ (warp, median filter, iteration), built for the host with the C++
compiler (tests/host_kernels.cpp), against the `torch` backend: each kernel's arithmetic and
per-sample stopping, then the `cuda` backend's whole level solver (flowcore/flow/cuda_tvl1.py:
its buffers, launches and stopping on the device) run on the CPU with the host build. The same
tests launch the real kernels where a CUDA device and CuPy are present (marked gpu)."""

from functools import partial

import numpy as np
import pytest
import torch

from flowcore.cuda_kernels import CudaLauncher, device_guard, grid_over, pointer
from flowcore.flow import TVL1Params
from flowcore.flow.cuda_tvl1 import fused_iteration, new_stats, solve_level_cuda
from flowcore.flow.synthetic import face_pairs
from flowcore.flow.torch_tvl1 import (
    _inner_step,
    centered_gradient,
    flow_torch,
    median_filter,
    solve_level_tensors,
    warp_cubic,
)
from kernel_host import lazy_launchers

CUDA = torch.cuda.is_available()
L_T, THETA, TAUT = 0.15 * 0.3, 0.3, 0.25 / 0.3  # OpenCV's defaults: lambda theta, theta, tau/theta


@pytest.fixture(scope="module")
def host(tmp_path_factory):
    """host() gives a fresh host launcher (its launch counts start at 0)."""
    return lazy_launchers(lambda: tmp_path_factory.mktemp("kernels"))


def _launcher(device, host):
    """The host build on the CPU; the real kernels (CuPy) on a GPU."""
    if device == "cpu":
        return host()
    pytest.importorskip("cupy", reason="the CUDA kernels are launched with CuPy "
                                       "(pip install mespot[gpu])")
    return None  # the default: CudaLauncher


def _fields(n, c, h, w, seed, device="cpu"):
    """Random fields that reach every branch of the thresholding (and |grad I1|^2 = 0)."""
    rng = np.random.default_rng(seed)
    I1wx, I1wy = rng.normal(0, 3, (2, n, 1, h, w)).astype(np.float32)
    I1wx[:, :, 0, :3] = I1wy[:, :, 0, :3] = 0  # no image gradient: the "inside" branch gives 0
    grad = (I1wx * I1wx + I1wy * I1wy).astype(np.float32)
    rho_c = rng.normal(0, 4, (n, 1, h, w)).astype(np.float32)
    u, px, py = rng.normal(0, 0.5, (3, n, c, h, w)).astype(np.float32)
    return [torch.from_numpy(a).to(device) for a in (I1wx, I1wy, grad, rho_c, u, px, py)]


def _device_param():
    """cpu (the host build) and cuda (the kernels through CuPy, marked gpu)."""
    return pytest.mark.parametrize("device", ["cpu", 
        pytest.param("cuda", marks=[pytest.mark.gpu, pytest.mark.skipif(
            not CUDA, reason="needs a CUDA device")])])


@_device_param()
@pytest.mark.parametrize("components, gamma", [(2, 0.0), (3, 0.4)])
def test_fused_iteration_matches_the_torch_step(host, device, components, gamma):
    n, h, w = 3, 37, 70  # several (32, 8) blocks, partial ones at the edges
    fields = _fields(n, components, h, w, seed=components, device=device)
    active = torch.tensor([True, False, True], device=device)  # the middle sample has stopped
    got = fused_iteration(*fields, active, L_T, THETA, TAUT, gamma,
                          launch=_launcher(device, host))
    want = _inner_step(*fields, active[:, None, None, None], L_T, THETA, TAUT, gamma)
    tol = 1e-5 if device == "cpu" else 1e-4  # the GPU fuses multiplies and adds
    for name, a, b in zip(("u", "px", "py"), got[:3], want[:3]):
        torch.testing.assert_close(a, b, rtol=tol, atol=tol, msg=name)
    assert torch.equal(got[0][1], fields[4][1])  # the stopped sample is copied through
    torch.testing.assert_close(got[3][[0, 2]], want[3][[0, 2]], rtol=1e-4, atol=1e-3)
    assert float(got[3][1]) == 0.0


def _stack_and_flow(n, h, w, seed, device):
    """(I1, I1x, I1y) stacks of random images, I0, and flows reaching past every border."""
    rng = np.random.default_rng(seed)
    I1 = torch.from_numpy(rng.uniform(0, 255, (n, 1, h, w)).astype(np.float32))
    stack = torch.cat((I1, *centered_gradient(I1)), dim=1)
    I0 = torch.from_numpy(rng.uniform(0, 255, (n, 1, h, w)).astype(np.float32))
    u = torch.from_numpy(rng.normal(0, 3, (n, 3, h, w)).astype(np.float32))
    u[0, :2, :4] = 40.0  # far outside: every tap reads 0
    u[1, :2] = torch.from_numpy(np.round(u[1, :2].numpy()))  # integer positions: w1 = 1 exactly
    return stack.to(device), I0.to(device), u.to(device)


@_device_param()
def test_warp_kernel_matches_the_torch_warp(host, device):
    n, h, w = 3, 21, 45
    stack, I0, u = _stack_and_flow(n, h, w, seed=5, device=device)
    out = [torch.full_like(I0, np.nan) for _ in range(4)]
    launch = _launcher(device, host)
    with device_guard(device):
        (launch or CudaLauncher(device))("tvl1_warp", grid_over(h, w, n), (
            pointer(stack), pointer(I0), pointer(u), *(pointer(t) for t in out),
            np.int32(3), np.int32(h), np.int32(w)))
    I1w, I1wx, I1wy = warp_cubic(stack, u[:, :2]).split(1, dim=1)
    want = (I1wx, I1wy, I1wx.square() + I1wy.square(),
            I1w - I1wx * u[:, :1] - I1wy * u[:, 1:2] - I0)
    for name, a, b in zip(("I1wx", "I1wy", "grad", "rho_c"), out, want):
        if device == "cpu":  # operation for operation, without fused multiply-adds: the same bits
            assert torch.equal(a, b), name
        else:
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-2, msg=name)
    assert torch.all(out[0][0, :, :4] == 0)  # warped from outside the image


@_device_param()
@pytest.mark.parametrize("size", [3, 5])
def test_median_kernel_matches_the_torch_median_filter(host, device, size):
    n, c, h, w = 3, 3, 19, 40
    u = torch.from_numpy(np.random.default_rng(size).normal(0, 2, (n, c, h, w)).astype(np.float32))
    u[0, 0, 5:9, 5:9] = 1.5  # ties
    u = u.to(device)
    out = torch.full_like(u, np.nan)
    # sample 0 runs, sample 1 stopped in the iteration before (copied), sample 2 earlier (left)
    errors = torch.tensor([[np.inf] * 3, [1.0, 1.0, 0.0], [1.0, 0.0, 0.0]], device=device)
    launch = _launcher(device, host)
    with device_guard(device):
        (launch or CudaLauncher(device))("tvl1_median", grid_over(h, w, n), (
            pointer(u), pointer(out), pointer(errors), np.int32(2), np.float32(0.5),
            np.int32(c), np.int32(h), np.int32(w), np.int32(size)))
    assert torch.equal(out[0, :2], median_filter(u[:, :2], size)[0])  # a median picks a value
    assert torch.equal(out[0, 2], u[0, 2])  # u3 is not filtered
    assert torch.equal(out[1], u[1])
    assert torch.isnan(out[2]).all()


def _level_inputs(n=3, size=(40, 48), device="cpu"):
    """Face pairs at the finest level, a start flow, and a third sample with more motion (the
    samples stop at different iterations)."""
    first, second = (torch.from_numpy(a.astype(np.float32)) for a in face_pairs(size, n))
    second[2] = torch.roll(second[2], 1, dims=1)
    I0, I1 = first[:, None].to(device), second[:, None].to(device)
    u = torch.zeros(n, 2, *size, device=device)
    u[1, 0] = 0.3
    return I0, I1, u


class _Counted:
    """torch_tvl1._inner_step, counting its calls."""

    def __init__(self):
        self.calls = 0

    def __call__(self, *args):
        self.calls += 1
        return _inner_step(*args)


def test_level_solver_matches_the_torch_level(host):
    params = TVL1Params(n_warps=3, outer_iterations=4, inner_iterations=12, epsilon=0.02)
    I0, I1, u = _level_inputs()
    launch, stats, step = host(), new_stats(), _Counted()
    got = solve_level_cuda(I0, I1, u, params, launch=launch, stats=stats)
    want = solve_level_tensors(I0, I1, u, params, step=step)
    assert torch.all(u[1, 0] == 0.3)  # the input is not written to
    assert stats["iterations"] == step.calls  # the same stopping decisions
    assert launch.launches == {"tvl1_warp": 3, "tvl1_median": stats["medians"],
                               "tvl1_iteration": stats["iterations"]}
    assert 3 <= stats["medians"] < 12  # some warps stopped before their last outer iteration
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("gamma", [0.0, 0.3])
def test_whole_flow_with_the_kernels_matches_the_torch_path(host, gamma):
    first, second = (torch.from_numpy(a.astype(np.float32)) for a in face_pairs((40, 48), 2))
    second[1] = torch.roll(second[1], 1, dims=1)  # the two samples stop at different iterations
    params = TVL1Params(n_scales=3, n_warps=2, outer_iterations=3, gamma=gamma)
    kernels = flow_torch(first, second, params, partial(solve_level_cuda, launch=host()))
    tensors = flow_torch(first, second, params, solve_level_tensors)
    assert kernels.shape == (2, 2, 40, 48) and tensors.abs().mean() > 0.1  # real motion found
    # float rounding may move a stopping decision now and then; the paths drift apart that little
    assert (kernels - tensors).abs().mean() < 0.02


def test_median_filter_one_turns_the_kernel_off(host):
    params = TVL1Params(n_warps=1, outer_iterations=2, median_filtering=1)
    I0, I1, u = _level_inputs(size=(24, 32))
    launch = host()
    solve_level_cuda(I0, I1, u, params, launch=launch)
    assert "tvl1_median" not in launch.launches


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs a CUDA device")
def test_cuda_level_solver_matches_the_host_build(host):
    pytest.importorskip("cupy", reason="the CUDA kernels are launched with CuPy")
    params = TVL1Params(n_warps=3, outer_iterations=4, inner_iterations=12, epsilon=0.02)
    I0, I1, u = _level_inputs()
    stats_cpu, stats_gpu = new_stats(), new_stats()
    cpu = solve_level_cuda(I0, I1, u, params, launch=host(), stats=stats_cpu)
    gpu = solve_level_cuda(I0.cuda(), I1.cuda(), u.cuda(), params, stats=stats_gpu)
    assert abs(stats_gpu["iterations"] - stats_cpu["iterations"]) <= 10 * params.n_warps
    assert (gpu.cpu() - cpu).abs().mean() < 0.01


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs a CUDA device")
def test_cuda_backend_flow_matches_the_torch_backend_on_the_gpu():
    pytest.importorskip("cupy", reason="the CUDA kernels are launched with CuPy")
    from flowcore.flow import compute_flow

    first, second = (torch.from_numpy(a).cuda() for a in face_pairs((96, 96), 4))
    fused = compute_flow(first, second, backend="cuda", device="cuda")
    tensors = compute_flow(first, second, backend="torch", device="cuda")
    assert fused.device.type == "cuda" and fused.shape == (4, 2, 96, 96)
    assert (fused - tensors).abs().mean() < 0.02

