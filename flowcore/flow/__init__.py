"""Dense TV-L1 optical flow between grey image pairs: one interface, several backends.

Convention: images (N, H, W) or (H, W), uint8 or float32 grey values 0..255; flow
(N, 2, H, W) float32 in pixels holding (dx, dy), y pointing down, from the first image to the
second: first(y, x) ~ second(y + dy, x + dx).

Backends (all take the same `TVL1Params`, defaults = OpenCV's DualTVL1 defaults): `opencv`
(OpenCV contrib's CPU DualTVL1, the accuracy reference), `torch` (the same algorithm on batched
tensors, CPU or CUDA) and the experimental `cuda` (the `torch` algorithm on CUDA kernels), one
object each in flowcore/flow/backends.py, which says what each does.
"""

from __future__ import annotations

import numpy as np

from flowcore.devices import check_device

from .backends import BACKENDS, DEFAULT_BACKEND, FlowBackend
from .params import TVL1Params

__all__ = ["DEFAULT_BACKEND", "FlowBackend", "TVL1Params", "available_backends", "backend_named",
           "check_backend", "compute_flow"]


def available_backends() -> list[str]:
    """Names of the flow backends usable in this environment, e.g. ["opencv", "torch"]."""
    return [name for name, backend in BACKENDS.items() if backend.importable()]


def backend_named(name: str) -> FlowBackend:
    """The backend called `name`; ValueError naming the known ones for another name."""
    if name not in BACKENDS:
        raise ValueError(f"unknown flow backend {name!r}; known: {list(BACKENDS)}")
    return BACKENDS[name]


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
    if backend not in BACKENDS or (here and not backend_named(backend).importable()):
        # only `backend` is tried: the others are listed only when it cannot run here
        known = "" if backend not in BACKENDS else " (not importable here)"
        listed = available_backends() if here else list(BACKENDS)
        raise ValueError(f"unknown flow backend {backend!r}{known}; available: {listed}")
    device = str(device)
    backend_named(backend).check_device(device)
    if here:
        check_device(device)


def compute_flow(
    first,
    second,
    *,
    params: TVL1Params = TVL1Params(),
    backend: str = DEFAULT_BACKEND,
    device: str = "cpu",
):
    """TV-L1 flow from each `first` image to the matching `second` image.

    first, second: (N, H, W) or (H, W) uint8 or float32 grey 0..255, numpy arrays or torch
        tensors (both the same kind, dtype and shape).
    params: TV-L1 parameters (defaults equal OpenCV's).
    backend: one of `available_backends()` (default DEFAULT_BACKEND, `torch`).
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
    flow = BACKENDS[backend].flow(first.reshape(-1, *first.shape[-2:]),
                                  second.reshape(-1, *second.shape[-2:]), params, device)
    if _is_tensor(first):
        import torch

        flow = torch.as_tensor(flow).to(first.device)
    elif not isinstance(flow, np.ndarray):
        flow = flow.cpu().numpy()
    return flow[0] if single else flow
