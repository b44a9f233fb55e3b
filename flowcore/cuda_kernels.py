"""The CUDA kernels of `kernels/` (in the wheel: `flowcore/kernels/`): what each one is (its
block, its resource budget, its compiler options), and their launch on torch CUDA tensors.

Each kernel `NAME` is the `extern "C" __global__` function of kernels/NAME.cu. At run time CuPy
compiles it (NVRTC, no CUDA toolkit needed; `kernel_source`: the .cu with its headers written
in) once per process and device; a launch passes raw
device pointers (`pointer`: tensor.data_ptr() as numpy.uint64) and numpy scalars straight to the
compiled function on torch's current stream: no DLPack, no CuPy arrays, no per-launch objects
beyond the argument tuple. Works with CuPy 13 (cupy.cuda.ExternalStream) and 14
(cupy.cuda.Stream.from_external).

A launch goes through a launcher, `launch(name, grid, args)`: `CudaLauncher` on a GPU; the tests
build the same kernel sources for the host with g++ and pass a host launcher instead, so that the
code driving the kernels (flowcore/flow/cuda_tvl1.py, flowcore/mdmo_cuda.py) runs on the CPU too.
`KERNELS` states each kernel's register and stack budget; tests/test_kernels_build.py compiles
every kernel with the NVRTC of CUDA 12 and 13 for sm_80 and sm_90 and fails a compile error, a
spill or a budget exceeded (benchmarks/kernel_resources.py writes the figures).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import importlib.util
import re
from pathlib import Path

import numpy as np
import torch


@dataclasses.dataclass(frozen=True)
class Kernel:
    """One kernel of kernels/: kernels/<name>.cu's `extern "C"` function `name`."""

    name: str
    block: tuple[int, int, int]  # threads per block of every launch
    max_registers: int  # per thread, at sm_80 and sm_90 (the occupancy it buys: see below)
    max_stack_bytes: int = 0  # local memory per thread (stack frame); spills are never allowed
    options: tuple[str, ...] = ()  # NVRTC options beyond COMPILE_OPTIONS


TILE = (32, 8, 1)  # per-pixel kernels: one warp per row of 32 pixels (the error reduction needs it)
# Budgets: 64 registers let 4 blocks of 256 threads share an SM (50 % theoretical occupancy, what
# the memory-bound TV-L1 passes want); mdmo_rois (128 threads, float64) has room to spare but no
# need of more. Its stack is the frame of its per-vector call (kernels/mdmo_rois.cuh says why).
KERNELS = {
    k.name: k
    for k in (
        Kernel("tvl1_warp", TILE, max_registers=64),
        Kernel("tvl1_median", TILE, max_registers=64),
        Kernel("tvl1_iteration", TILE, max_registers=64),
        # --fmad=false: mirrored vectors get equal magnitudes, as on the host (mdmo_rois.cuh)
        Kernel("mdmo_rois", (128, 1, 1), max_registers=64, max_stack_bytes=96,
               options=("--fmad=false",)),
    )
}
COMPILE_OPTIONS = ("--std=c++17",)  # every kernel, at run time (CuPy) and in the build tests


def kernel_dir() -> Path:
    """The folder of the .cu sources: `kernels/` beside the `flowcore` folder in a source tree
    (this tree's, even where an editable install points elsewhere), else the installed
    `flowcore.kernels` package (a wheel)."""
    tree = Path(__file__).resolve().parents[1] / "kernels"
    if (tree / "tvl1_iteration.cu").is_file():
        return tree
    spec = importlib.util.find_spec("flowcore.kernels")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"no CUDA sources: neither {tree} nor an installed "
                                f"flowcore.kernels")
    return Path(list(spec.submodule_search_locations)[0])


def compile_options(kernel: Kernel) -> tuple[str, ...]:
    """NVRTC options of `kernel` (no architecture: CuPy adds the device's)."""
    return (*COMPILE_OPTIONS, *kernel.options)


_INCLUDE = re.compile(r'#include "([^"]+)"\s*')


def kernel_source(name: str, folder: Path | None = None) -> str:
    """kernels/<name>.cu with the headers it includes from kernels/ written in, each once, and
    `#line` directives naming where each line comes from: one self-contained text, so that
    CuPy's compile cache (keyed on the source text) notices a changed header too."""
    folder = folder or kernel_dir()
    seen: set[str] = set()

    def expand(file: str) -> list[str]:
        lines = [f'#line 1 "{file}"']
        for number, line in enumerate((folder / file).read_text().splitlines(), start=1):
            if m := _INCLUDE.fullmatch(line):
                if m.group(1) not in seen:
                    seen.add(m.group(1))
                    lines += expand(m.group(1))
                lines.append(f'#line {number + 1} "{file}"')
            else:  # (#pragma once is meaningless in one text, and NVRTC warns about it)
                lines.append("" if line.strip() == "#pragma once" else line)
        return lines

    return "\n".join(expand(f"{name}.cu")) + "\n"


def pointer(tensor: torch.Tensor) -> np.uint64:
    """A tensor's device address as a kernel argument (the tensor must stay alive meanwhile)."""
    return np.uint64(tensor.data_ptr())


def grid_over(height: int, width: int, samples: int, block=TILE) -> tuple[int, int, int]:
    """Blocks covering (W, H) tiles of every sample (gridDim.z = samples)."""
    return (-(-width // block[0]), -(-height // block[1]), samples)


@functools.lru_cache(maxsize=None)
def _function(name: str, device_index: int):
    """The compiled kernel `name` on one device (cupy.cuda.Function), compiled once."""
    import cupy

    kernel = KERNELS[name]
    with cupy.cuda.Device(device_index):
        module = cupy.RawModule(code=kernel_source(name), options=compile_options(kernel))
        return module.get_function(name).kernel


class _TorchStream:
    """A torch stream's handle in the CUDA stream protocol (what CuPy 14 takes)."""

    def __init__(self, ptr: int):
        self.ptr = ptr

    def __cuda_stream__(self):
        return (0, self.ptr)


@functools.lru_cache(maxsize=None)
def _cupy_stream(ptr: int, device_index: int):
    """CuPy's view of torch's stream `ptr`, made once per stream."""
    import cupy

    if hasattr(cupy.cuda.Stream, "from_external"):  # CuPy 14+ (ExternalStream is deprecated)
        return cupy.cuda.Stream.from_external(_TorchStream(ptr))
    return cupy.cuda.ExternalStream(ptr, device_index)  # CuPy 13


class CudaLauncher:
    """Launches the kernels on one CUDA device, on the torch stream current when it was made.
    The caller keeps that device current meanwhile (`device_guard`)."""

    def __init__(self, device):
        device = torch.device(device)
        self.index = device.index if device.index is not None else torch.cuda.current_device()
        self.stream = _cupy_stream(torch.cuda.current_stream(self.index).cuda_stream, self.index)

    def __call__(self, name: str, grid: tuple[int, int, int], args: tuple) -> None:
        _function(name, self.index)(grid, KERNELS[name].block, args, stream=self.stream)


def device_guard(device):
    """Makes `device` the current CUDA device for the block (nothing for a CPU device, where the
    tests' host launcher runs the kernels)."""
    device = torch.device(device)
    return torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()
