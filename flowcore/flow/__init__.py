"""Dense TV-L1 optical flow between grey image pairs: one interface, several backends.

Convention: images (N, H, W) or (H, W), uint8 or float32 grey values 0..255; flow
(N, 2, H, W) float32 in pixels holding (dx, dy), y pointing down, from the first image to the
second: first(y, x) ~ second(y + dy, x + dx).

Backends (all take the same `TVL1Params`, defaults = OpenCV's DualTVL1 defaults):
    opencv  OpenCV contrib's CPU DualTVL1, the accuracy reference (CPU only).
    torch   the same algorithm on batched tensors, CPU (numba-fused iterations) or CUDA.
    cuda    experimental: the `torch` algorithm on a CUDA device with each pass over a pyramid
            level (warp, median filter, iteration) one kernel launch over the batch (kernels/
            through CuPy; flowcore/flow/cuda_tvl1.py); its arithmetic and stopping are tested on
            the host, its launch by the GPU tests. Listed only where CuPy and a CUDA device are
            present.
"""

from __future__ import annotations

import functools

import numpy as np

from .params import TVL1Params

__all__ = ["TVL1Params", "available_backends", "check_backend", "compute_flow", "level_solver"]

_ALL_BACKENDS = ("opencv", "torch", "cuda")


def _backend_importable(name: str) -> bool:
    try:
        if name == "opencv":
            import cv2

            return hasattr(cv2, "optflow")  # the contrib build ships DualTVL1
        if name == "torch":
            import numba  # noqa: F401  (CPU iterations)
            import torch  # noqa: F401

            return True
        if name == "cuda":
            import cupy  # noqa: F401  (kernel compilation and launch)
            import torch

            return torch.cuda.is_available()
    except ImportError:
        return False
    return False


def available_backends() -> list[str]:
    """Names of the flow backends usable in this environment, e.g. ["opencv", "torch"]."""
    return [name for name in _ALL_BACKENDS if _backend_importable(name)]


def _is_tensor(x) -> bool:
    return type(x).__module__.split(".")[0] == "torch"


def _check_pair(first, second) -> None:
    """Raise TypeError / ValueError naming expected and actual shapes and dtypes."""
    if _is_tensor(first) != _is_tensor(second):
        raise TypeError(
            f"first and second must both be numpy arrays or both torch tensors, got "
            f"{type(first).__name__} and {type(second).__name__}"
        )
    if not _is_tensor(first):
        for name, x in (("first", first), ("second", second)):
            if not isinstance(x, np.ndarray):
                raise TypeError(
                    f"{name} must be a numpy array or torch tensor, got {type(x).__name__}"
                )
    allowed = ("uint8", "float32")
    for name, x in (("first", first), ("second", second)):
        dtype = str(x.dtype).replace("torch.", "")
        if dtype not in allowed:
            raise TypeError(f"{name}: expected dtype uint8 or float32 (grey 0..255), got {dtype}")
        if x.ndim not in (2, 3):
            raise ValueError(
                f"{name}: expected shape (N, H, W) or (H, W), got {tuple(x.shape)}"
            )
        if min(x.shape) < 1:
            raise ValueError(f"{name}: expected non-empty images, got shape {tuple(x.shape)}")
        if dtype == "float32":
            finite = bool(x.isfinite().all()) if _is_tensor(x) else bool(np.isfinite(x).all())
            if not finite:
                raise ValueError(f"{name}: expected finite grey values, found NaN or inf")
    if first.dtype != second.dtype:
        raise TypeError(
            f"first and second must share a dtype, got {first.dtype} and {second.dtype}"
        )
    if tuple(first.shape) != tuple(second.shape):
        raise ValueError(
            f"second: expected shape {tuple(first.shape)} (same as first), "
            f"got {tuple(second.shape)}"
        )


def check_backend(backend: str, device: str, here: bool = True) -> None:
    """ValueError saying why `backend` cannot compute on `device` (unknown, opencv off the CPU,
    cuda off a GPU; with `here`, also not importable or no GPU on this machine: a Ray driver
    passes False, its nodes may differ); None when it can."""
    if not here:
        if backend not in _ALL_BACKENDS:
            raise ValueError(f"unknown flow backend {backend!r}; known: {list(_ALL_BACKENDS)}")
    elif backend not in _ALL_BACKENDS or not _backend_importable(backend):
        # only `backend` is tried: trying the others would import torch (seconds) for opencv
        known = "" if backend not in _ALL_BACKENDS else " (not importable here)"
        raise ValueError(f"unknown flow backend {backend!r}{known}; "
                         f"available: {available_backends()}")
    device = str(device)
    if backend == "opencv" and device != "cpu":
        raise ValueError(f"the opencv flow backend runs on cpu only, not on {device!r}; for a GPU "
                         f"choose the torch backend (--backend torch)")
    if backend == "cuda" and not device.startswith("cuda"):
        raise ValueError(f"the cuda flow backend runs on a GPU, not on {device!r}: "
                         f"add --device cuda")
    if here and device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise ValueError(f"device {device!r} requested but CUDA is not available here")


COMPILE_ENV = "MESPOT_TORCH_COMPILE"  # "1": torch.compile the tensor iteration on a GPU


def level_solver(backend: str, device: str):
    """The pyramid-level solver `flow_torch` runs for the `torch` or `cuda` backend on `device`:
    the only place the solver is chosen. CPU: the fused numba kernels; a GPU: the tensor path,
    its iteration torch.compile'd when $MESPOT_TORCH_COMPILE is 1 (about a minute of compiling
    per process, for long GPU runs); `cuda`: the kernels of kernels/ (cuda_tvl1)."""
    import os

    from .torch_tvl1 import solve_level_tensors

    if backend == "cuda":
        from .cuda_tvl1 import solve_level_cuda

        return solve_level_cuda
    if not str(device).startswith("cuda"):
        from .tvl1_numba import solve_level_numba

        return solve_level_numba
    if os.environ.get(COMPILE_ENV, "0") == "1":
        return functools.partial(solve_level_tensors, step=_compiled_step())
    return solve_level_tensors


@functools.lru_cache(maxsize=1)
def _compiled_step():
    import torch

    from .torch_tvl1 import _inner_step

    return torch.compile(_inner_step, dynamic=True)


def compute_flow(
    first,
    second,
    *,
    params: TVL1Params = TVL1Params(),
    backend: str = "opencv",
    device: str = "cpu",
):
    """TV-L1 flow from each `first` image to the matching `second` image.

    first, second: (N, H, W) or (H, W) uint8 or float32 grey 0..255, numpy arrays or torch
        tensors (both the same kind, dtype and shape).
    params: TV-L1 parameters (defaults equal OpenCV's).
    backend: one of `available_backends()`.
    device: where the `torch` backend computes ("cpu", "cuda", "cuda:1", ...); `opencv` is CPU
        only, `cuda` CUDA only (`check_backend`). The result goes back to where the input was.
    Returns (N, 2, H, W) float32 flow in pixels, (dx, dy), y down; (2, H, W) for (H, W) input.
        numpy in, numpy out; torch in, torch out on the input's device.
    """
    if not isinstance(params, TVL1Params):
        raise TypeError(f"params must be a TVL1Params, got {type(params).__name__}")
    check_backend(backend, device)
    _check_pair(first, second)
    single = first.ndim == 2
    tensor_in = _is_tensor(first)
    if tensor_in:
        out_device = first.device

    if backend == "opencv":
        a = first.detach().cpu().numpy() if tensor_in else first
        b = second.detach().cpu().numpy() if tensor_in else second
        from .opencv_backend import flow_opencv

        flow = flow_opencv(a.reshape(-1, *a.shape[-2:]), b.reshape(-1, *b.shape[-2:]), params)
        if tensor_in:
            import torch

            flow = torch.from_numpy(flow).to(out_device)
    else:  # torch, or cuda: the torch algorithm on the CUDA kernels (level_solver)
        import torch

        from .torch_tvl1 import flow_torch

        a = first if tensor_in else torch.from_numpy(np.ascontiguousarray(first))
        b = second if tensor_in else torch.from_numpy(np.ascontiguousarray(second))
        a = a.to(device=device, dtype=torch.float32).reshape(-1, *a.shape[-2:])
        b = b.to(device=device, dtype=torch.float32).reshape(-1, *b.shape[-2:])
        with torch.no_grad():
            flow = flow_torch(a, b, params, level_solver(backend, device))
        flow = flow.to(out_device) if tensor_in else flow.cpu().numpy()
    return flow[0] if single else flow
