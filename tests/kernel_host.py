"""The kernels of kernels/ built for the host (tests/host_kernels.cpp, g++) and a launcher that
runs them, with flowcore.cuda_kernels.CudaLauncher's call: the tests drive the code that launches
the kernels (flowcore/flow/cuda_tvl1.py, flowcore/mdmo_cuda.py) with CPU tensors."""

from __future__ import annotations

import ctypes
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from flowcore.cuda_kernels import KERNELS

HERE = Path(__file__).resolve().parent
KERNELS_DIR = HERE.parent / "kernels"  # this source tree's, not an installed copy's
_C_TYPES = {np.uint64: ctypes.c_uint64, np.int32: ctypes.c_int, np.float32: ctypes.c_float,
            np.float64: ctypes.c_double}


def build(folder: Path) -> ctypes.CDLL:
    """Compiles tests/host_kernels.cpp into folder (skips the test without a C++ compiler).
    -ffp-contract=off: no fused multiply-adds, so the float arithmetic is the torch path's."""
    compiler = shutil.which("g++") or shutil.which("c++")
    if compiler is None:
        pytest.skip("no C++ compiler to build the kernels' host version")
    library = folder / "host_kernels.so"
    subprocess.run([compiler, "-O2", "-ffp-contract=off", "-shared", "-fPIC", f"-I{KERNELS_DIR}",
                    str(HERE / "host_kernels.cpp"), "-o", str(library)],
                   check=True, capture_output=True)
    return ctypes.CDLL(str(library))


class HostLauncher:
    """Runs kernel `name` as its host build `name_host` over the grid and the kernel's block.
    Counts the launches of each kernel in .launches."""

    def __init__(self, library: ctypes.CDLL):
        self.library = library
        self.launches: dict[str, int] = {}

    def __call__(self, name: str, grid: tuple[int, int, int], args: tuple) -> None:
        dims = (*grid, *KERNELS[name].block)
        converted = [_C_TYPES[type(a)](a) for a in args]  # a KeyError names an unexpected type
        getattr(self.library, f"{name}_host")(*(ctypes.c_uint(d) for d in dims), *converted)
        self.launches[name] = self.launches.get(name, 0) + 1


def lazy_launchers(folder_factory):
    """A function giving a fresh HostLauncher per call (launch counts from 0), compiling the
    host build at the first call only: the GPU variants of a test never need a C++ compiler.
    folder_factory: returns the folder to build in (e.g. a tmp_path_factory's mktemp)."""
    library = []

    def launcher() -> HostLauncher:
        if not library:
            library.append(build(folder_factory()))
        return HostLauncher(library[0])

    return launcher
