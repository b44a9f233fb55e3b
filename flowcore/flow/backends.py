"""The flow backends, one object each with the same interface; adding a backend is adding its
object here (its algorithm in a module of its own).

Each backend: `name`; `importable()` (its packages, and a device where it needs one, are here);
`check_device(device)` (ValueError when it cannot compute on that device); `where(device)` (the
device it computes on when `device` is asked for); `flow(first, second, params, device)`:
(N, H, W) grey pairs, numpy arrays or torch tensors -> (N, 2, H, W) float32 flow in pixels
(dx, dy), as a numpy array or a tensor (`compute_flow` hands it back as its input came);
`batched`: it computes a batch of pairs at once (not one by one); `mdmo_kernel`: extraction
computes the float MDMO with the MDMO kernel (flowcore.mdmo_cuda) on this backend's flow.
New videos of a trained run are extracted with the run's backend (spotting.predict): on
`run_where(device)`, or, where the backend is not importable, with its `fallback` backend on
the CPU (None: no fallback), `fallback_note` saying so.

The `torch` and `cuda` backends share the coarse-to-fine skeleton (`torch_tvl1.flow_torch`: the
pyramid, each level's solve, the upsampling) and differ in the solver of one level they give it
(`level_solver`); `opencv` runs OpenCV's own DualTVL1, pyramid included.
"""

from __future__ import annotations

import functools
import os

import numpy as np

from .params import TVL1Params

# The default everywhere (ExtractParams, compute_flow, the CLI, the service): `torch` computes the
# same TV-L1 as `opencv` (flow end-point error within 1 % of OpenCV's on every class of known
# motion, benchmarks/results/flow_accuracy.json) 2.5 to 5.7 times faster on the CPU (128 px faces:
# 8 to 18 pairs/s against OpenCV's 3.3, benchmarks/results/flow_speed.json), and runs on a GPU
# too (72 pairs/s at batch 32 on an H200, flow_speed_cuda_h200.json); `cuda` is experimental.
DEFAULT_BACKEND = "torch"
COMPILE_ENV = "MESPOT_TORCH_COMPILE"  # "1": torch.compile the tensor iteration on a GPU


class FlowBackend:
    """The interface every backend has (see the module docstring)."""

    name = ""
    batched = True
    mdmo_kernel = False
    fallback: str | None = None  # the backend extracting a run's new videos where this is missing
    fallback_note = ""  # the sentence saying so

    def run_where(self, device: str) -> str:
        """The device new videos of a run extracted with this backend are extracted on."""
        return self.where(device)

    def importable(self) -> bool:
        raise NotImplementedError

    def check_device(self, device: str) -> None:
        """ValueError when this backend cannot compute on `device`; None when it can."""

    def where(self, device: str) -> str:
        return device

    def flow(self, first, second, params: TVL1Params, device: str):
        raise NotImplementedError


class OpenCVBackend(FlowBackend):
    """OpenCV contrib's CPU DualTVL1, the accuracy reference (CPU only)."""

    name = "opencv"
    batched = False  # one solver call per pair

    def importable(self) -> bool:
        try:
            import cv2
        except ImportError:
            return False
        return hasattr(cv2, "optflow")  # the contrib build ships DualTVL1

    def check_device(self, device: str) -> None:
        if device != "cpu":
            raise ValueError(f"the opencv flow backend runs on cpu only, not on {device!r}; for "
                             f"a GPU choose the torch backend (--backend torch)")

    def where(self, device: str) -> str:
        return "cpu"

    def flow(self, first, second, params: TVL1Params, device: str):
        from .opencv_backend import flow_opencv

        return flow_opencv(_numpy(first), _numpy(second), params)


class TorchBackend(FlowBackend):
    """The same algorithm on batched tensors, CPU (numba-fused iterations) or CUDA."""

    name = "torch"

    def importable(self) -> bool:
        """torch and numba (the CPU iterations) are installed: found, not imported (importing
        torch takes seconds that a command's start-up need not wait for)."""
        from importlib.util import find_spec

        return find_spec("torch") is not None and find_spec("numba") is not None

    def level_solver(self, device: str):
        """The pyramid-level solver on `device`. CPU: the fused numba kernels; a GPU: the tensor
        path, its iteration torch.compile'd when $MESPOT_TORCH_COMPILE is 1 (about a minute of
        compiling per process, for long GPU runs)."""
        from .torch_tvl1 import solve_level_tensors

        if not str(device).startswith("cuda"):
            from .tvl1_numba import solve_level_numba

            return solve_level_numba
        if os.environ.get(COMPILE_ENV, "0") == "1":
            return functools.partial(solve_level_tensors, step=_compiled_step())
        return solve_level_tensors

    def flow(self, first, second, params: TVL1Params, device: str):
        import torch

        from .torch_tvl1 import flow_torch

        a = _tensor(first).to(device=device, dtype=torch.float32)
        b = _tensor(second).to(device=device, dtype=torch.float32)
        with torch.no_grad():
            return flow_torch(a, b, params, self.level_solver(device))


class CudaBackend(TorchBackend):
    """Experimental: the `torch` algorithm on a CUDA device with each pass over a pyramid level
    (warp, median filter, iteration) one kernel launch over the batch (kernels/ through CuPy;
    flowcore/flow/cuda_tvl1.py); its arithmetic and stopping are tested on the host, its launch
    by the GPU tests. Listed only where CuPy and a CUDA device are present."""

    name = "cuda"
    mdmo_kernel = True
    fallback = "torch"
    fallback_note = ("the run's features were extracted with the cuda flow backend, which needs a "
                     "GPU and CuPy, not here: extracted with the torch backend on the CPU instead "
                     "(the same TV-L1; features close, not identical: docs/datasets.md)")

    def run_where(self, device: str) -> str:
        return device if device.startswith("cuda") else "cuda"  # a run's GPU backend: a GPU

    def importable(self) -> bool:
        try:
            import cupy  # noqa: F401  (kernel compilation and launch)
            import torch
        except ImportError:
            return False
        return torch.cuda.is_available()

    def check_device(self, device: str) -> None:
        if not device.startswith("cuda"):
            raise ValueError(f"the cuda flow backend runs on a GPU, not on {device!r}: "
                             f"add --device cuda")

    def level_solver(self, device: str):
        from .cuda_tvl1 import solve_level_cuda

        return solve_level_cuda


BACKENDS: dict[str, FlowBackend] = {b.name: b for b in (OpenCVBackend(), TorchBackend(),
                                                        CudaBackend())}


@functools.lru_cache(maxsize=1)
def _compiled_step():
    import torch

    from .torch_tvl1 import _inner_step

    return torch.compile(_inner_step, dynamic=True)


def _numpy(x) -> np.ndarray:
    return x if isinstance(x, np.ndarray) else x.detach().cpu().numpy()


def _tensor(x):
    import torch

    return x if isinstance(x, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(x))
