"""The CUDA kernels of `kernels/` (in the wheel: `flowcore/kernels/`), compiled at run time with
CuPy (NVRTC, no CUDA toolkit needed) once per process, launched on torch CUDA tensors through
DLPack (no copies) on torch's current stream.

The `cuda` flow backend (experimental) runs on them: `fused_iteration` is one whole TV-L1
iteration per launch, and `fused_step` plugs it into the `torch` backend's pyramid, warps and
per-sample stopping (`flowcore.flow.level_solver('cuda', device)`). Its arithmetic is tested on
the host against the `torch` backend (tests/test_kernels_host.py); the launch itself only by the
`gpu` tests beside it, which benchmarks/device_check.sh runs on a GPU machine.
"""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path

import numpy as np
import torch

# threads per block: one warp per row of 32 pixels (the error reduction needs 32 | size)
BLOCK = (32, 8, 1)


def kernel_dir() -> Path:
    """The folder of the .cu sources: the `flowcore.kernels` package (wheel or editable install),
    else `kernels/` beside the `flowcore` folder of a source tree."""
    spec = importlib.util.find_spec("flowcore.kernels")
    if spec is not None and spec.submodule_search_locations:
        return Path(list(spec.submodule_search_locations)[0])
    return Path(__file__).resolve().parents[2] / "kernels"


@functools.lru_cache(maxsize=None)
def _module(name: str):
    import cupy

    folder = kernel_dir()
    return cupy.RawModule(code=(folder / f"{name}.cu").read_text(), options=(f"-I{folder}",))


def fused_iteration(
    I1wx, I1wy, grad, rho_c, u, px, py, active, l_t: float, theta: float, taut: float, gamma: float
):
    """One TV-L1 iteration of a batch on the GPU, as torch_tvl1._inner_step: I1wx, I1wy, grad,
    rho_c (N, 1, H, W), u, px, py (N, C, H, W) float32 CUDA tensors, active (N,) bool. Returns
    new (u, px, py) tensors and error (N,) the sums of squared updates (0 where not active)."""
    import cupy

    n, c, h, w = u.shape
    fields = [t.contiguous() for t in (I1wx, I1wy, grad, rho_c, u, px, py)]
    outputs = [torch.empty_like(t) for t in fields[4:]]
    error = torch.zeros(n, dtype=torch.float32, device=u.device)
    flags = active.to(torch.uint8).contiguous()
    grid = ((w + BLOCK[0] - 1) // BLOCK[0], (h + BLOCK[1] - 1) // BLOCK[1], n)
    arrays = [cupy.from_dlpack(t) for t in (*fields, *outputs, error, flags)]
    scalars = (
        np.int32(c),
        np.int32(h),
        np.int32(w),
        np.float32(l_t),
        np.float32(theta),
        np.float32(taut),
        np.float32(gamma),
    )
    with (
        cupy.cuda.Device(u.device.index or 0),
        cupy.cuda.ExternalStream(torch.cuda.current_stream(u.device).cuda_stream),
    ):
        _module("tvl1_iteration").get_function("tvl1_iteration")(grid, BLOCK, (*arrays, *scalars))
    return (*outputs, error)


def fused_step(
    I1wx, I1wy, grad, rho_c, u, px, py, keep, l_t: float, theta: float, taut: float, gamma: float
):
    """`fused_iteration` with torch_tvl1._inner_step's signature (keep: (N, 1, 1, 1) bool)."""
    return fused_iteration(
        I1wx, I1wy, grad, rho_c, u, px, py, keep.reshape(-1), l_t, theta, taut, gamma
    )
