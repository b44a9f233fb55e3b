"""The fused TV-L1 iteration of kernels/ (tvl1_iteration.cuh), built for the host with the C++
compiler, against the `torch` backend's `_inner_step`: the kernel's arithmetic, halo
recomputation and per-sample stopping, checked without a GPU."""

import ctypes
import shutil
import subprocess
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch

from flowcore.flow.torch_tvl1 import _inner_step

KERNELS = Path(__file__).resolve().parents[1] / "kernels"
HOST_LOOP = r"""
#include "tvl1_iteration.cuh"

// The kernel's per-thread work, run over every pixel of every active sample.
extern "C" void tvl1_iteration_host(const float* I1wx, const float* I1wy, const float* grad,
                                    const float* rho_c, const float* u, const float* px,
                                    const float* py, float* u_out, float* px_out, float* py_out,
                                    float* error, const unsigned char* active, int n, int c, int h,
                                    int w, float l_t, float theta, float taut, float gamma) {
    const long plane = (long)h * w, field = c * plane;
    for (int s = 0; s < n; ++s) {
        if (!active[s]) {
            for (long j = 0; j < field; ++j) {
                u_out[s * field + j] = u[s * field + j];
                px_out[s * field + j] = px[s * field + j];
                py_out[s * field + j] = py[s * field + j];
            }
            continue;
        }
        const Tvl1Fields f = {I1wx + s * plane, I1wy + s * plane, grad + s * plane,
                              rho_c + s * plane, u + s * field, px + s * field, py + s * field,
                              c, h, w};
        const Tvl1Constants k = {l_t, theta, taut, gamma};
        float e = 0.0f;
        for (int y = 0; y < h; ++y)
            for (int x = 0; x < w; ++x)
                e += tvl1_pixel_step(f, k, y, x, u_out + s * field, px_out + s * field,
                                     py_out + s * field);
        error[s] = e;
    }
}
"""


@pytest.fixture(scope="module")
def host_kernel(tmp_path_factory):
    compiler = shutil.which("g++") or shutil.which("c++")
    if compiler is None:
        pytest.skip("no C++ compiler to build the kernel's host version")
    folder = tmp_path_factory.mktemp("kernel")
    (folder / "host.cpp").write_text(HOST_LOOP)
    library = folder / "tvl1_host.so"
    subprocess.run(
        [
            compiler,
            "-O2",
            "-ffp-contract=off",
            "-shared",
            "-fPIC",
            f"-I{KERNELS}",
            str(folder / "host.cpp"),
            "-o",
            str(library),
        ],
        check=True,
        capture_output=True,
    )
    function = ctypes.CDLL(str(library)).tvl1_iteration_host
    function.restype = None
    return function


def _fields(n, c, h, w, seed):
    """Random fields that reach every branch of the thresholding (and |grad I1|^2 = 0)."""
    rng = np.random.default_rng(seed)
    I1wx, I1wy = rng.normal(0, 3, (2, n, 1, h, w)).astype(np.float32)
    I1wx[:, :, 0, :3] = I1wy[:, :, 0, :3] = 0  # no image gradient: the "inside" branch gives 0
    grad = (I1wx * I1wx + I1wy * I1wy).astype(np.float32)
    rho_c = rng.normal(0, 4, (n, 1, h, w)).astype(np.float32)
    u, px, py = rng.normal(0, 0.5, (3, n, c, h, w)).astype(np.float32)
    return I1wx, I1wy, grad, rho_c, u, px, py


def _host_step(host_kernel):
    """The host build with torch_tvl1._inner_step's signature (CPU tensors in and out)."""

    def step(I1wx, I1wy, grad, rho_c, u, px, py, keep, l_t, theta, taut, gamma):
        n, c, h, w = u.shape
        fields = [
            np.ascontiguousarray(t.numpy(), dtype=np.float32)
            for t in (I1wx, I1wy, grad, rho_c, u, px, py)
        ]
        outputs = [np.full((n, c, h, w), np.nan, np.float32) for _ in range(3)]
        error = np.zeros(n, np.float32)
        active = keep.reshape(-1).numpy().astype(np.uint8)
        pointer = lambda a: a.ctypes.data_as(ctypes.c_void_p)  # noqa: E731
        host_kernel(
            *(pointer(a) for a in fields),
            *(pointer(o) for o in outputs),
            pointer(error),
            pointer(active),
            ctypes.c_int(n),
            ctypes.c_int(c),
            ctypes.c_int(h),
            ctypes.c_int(w),
            ctypes.c_float(l_t),
            ctypes.c_float(theta),
            ctypes.c_float(taut),
            ctypes.c_float(gamma),
        )
        return (*(torch.from_numpy(o) for o in outputs), torch.from_numpy(error))

    return step


L_T, THETA, TAUT = (
    0.15 * 0.3,
    0.3,
    0.25 / 0.3,
)  # OpenCV's defaults: lambda theta, theta, tau / theta


@pytest.mark.parametrize("components, gamma", [(2, 0.0), (3, 0.4)])
def test_host_build_of_the_fused_iteration_matches_the_torch_step(host_kernel, components, gamma):
    n, h, w = 3, 11, 17
    fields = [torch.from_numpy(a) for a in _fields(n, components, h, w, seed=components)]
    keep = torch.tensor([True, False, True])[:, None, None, None]  # the middle sample has stopped
    got = _host_step(host_kernel)(*fields, keep, L_T, THETA, TAUT, gamma)
    want = _inner_step(*fields, keep, L_T, THETA, TAUT, gamma)
    for name, a, b in zip(("u", "px", "py"), got[:3], want[:3]):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5, err_msg=name)
    assert torch.equal(got[0][1], fields[4][1])  # the stopped sample is untouched
    np.testing.assert_allclose(got[3][[0, 2]], want[3][[0, 2]], rtol=1e-4)
    assert got[3][1] == 0


def test_whole_flow_with_the_fused_iteration_matches_the_torch_path(host_kernel):
    from flowcore.flow import TVL1Params
    from flowcore.flow.synthetic import face_pairs
    from flowcore.flow.torch_tvl1 import flow_torch, solve_level_tensors

    first, second = (torch.from_numpy(a.astype(np.float32)) for a in face_pairs((40, 48), 2))
    second[1] = torch.roll(second[1], 1, dims=1)  # the two samples stop at different iterations
    params = TVL1Params(n_scales=3, n_warps=2, outer_iterations=3)
    fused = flow_torch(
        first, second, params, partial(solve_level_tensors, step=_host_step(host_kernel))
    )
    tensors = flow_torch(first, second, params, solve_level_tensors)
    assert fused.shape == (2, 2, 40, 48) and tensors.abs().mean() > 0.1  # real motion was found
    # float rounding moves a stopping decision now and then; the paths drift apart that little
    assert (fused - tensors).abs().mean() < 0.02


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("components, gamma", [(2, 0.0), (3, 0.4)])
def test_cuda_fused_iteration_matches_the_torch_step(components, gamma):
    pytest.importorskip(
        "cupy", reason="the CUDA kernels are launched with CuPy (pip install mespot[gpu])"
    )
    from flowcore.flow.cuda_kernels import fused_iteration

    n, h, w = 3, 37, 70  # several blocks, partial ones at the edges
    fields = [torch.from_numpy(a).cuda() for a in _fields(n, components, h, w, seed=7)]
    active = torch.tensor([True, False, True], device="cuda")
    got = fused_iteration(*fields, active, L_T, THETA, TAUT, gamma)
    want = _inner_step(*fields, active[:, None, None, None], L_T, THETA, TAUT, gamma)
    for name, a, b in zip(("u", "px", "py"), got[:3], want[:3]):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4, msg=name)
    assert torch.equal(got[0][1], fields[4][1])  # the stopped sample is copied through
    torch.testing.assert_close(got[3][[0, 2]], want[3][[0, 2]], rtol=1e-4, atol=1e-3)
    assert float(got[3][1]) == 0.0


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_flow_with_the_fused_iteration_matches_the_torch_path():
    pytest.importorskip(
        "cupy", reason="the CUDA kernels are launched with CuPy (pip install mespot[gpu])"
    )
    from flowcore.flow import TVL1Params
    from flowcore.flow.cuda_kernels import fused_step
    from flowcore.flow.synthetic import face_pairs
    from flowcore.flow.torch_tvl1 import flow_torch, solve_level_tensors

    first, second = (torch.from_numpy(a.astype(np.float32)).cuda() for a in face_pairs((96, 96), 4))
    fused = flow_torch(first, second, TVL1Params(), partial(solve_level_tensors, step=fused_step))
    tensors = flow_torch(first, second, TVL1Params(), solve_level_tensors)
    assert (fused - tensors).abs().mean() < 0.02
