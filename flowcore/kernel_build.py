"""Every kernel of kernels/ compiled for a real GPU architecture (sm_80, sm_90, ...) on a machine
without a GPU or a CUDA toolkit, and the resources each one takes.

NVRTC comes from the pip wheels `nvidia-cuda-nvrtc-cu12` (CUDA 12: nvidia/cuda_nvrtc/lib) and
`nvidia-cuda-nvrtc` (CUDA 13: nvidia/cu13/lib), called through ctypes. For a real architecture
NVRTC runs ptxas itself; with `--ptxas-options=-v` ptxas writes each function's registers, shared
memory, stack frame and spills into the program's log, which `parse_ptxas` reads (the simplest
robust source: it is the assembler's own report; no cubin parsing, no cuobjdump). `occupancy`
turns registers and shared memory into the theoretical occupancy by the rules of CUDA's
occupancy calculator (cuda_occupancy.h). Used by tests/test_kernels_build.py (each kernel within
its budget in flowcore.cuda_kernels.KERNELS) and benchmarks/kernel_resources.py (the JSON).
"""

from __future__ import annotations

import ctypes
import functools
import importlib.util
import math
import re
from pathlib import Path

from flowcore.cuda_kernels import KERNELS, Kernel, compile_options, kernel_dir, kernel_source

ARCHS = ("sm_80", "sm_90")  # A100, H100 / H200
# where each CUDA major version's wheel puts the library, under the `nvidia` namespace package
NVRTC_WHEELS = {12: ("nvidia-cuda-nvrtc-cu12", "cuda_nvrtc/lib/libnvrtc.so.12"),
                13: ("nvidia-cuda-nvrtc", "cu13/lib/libnvrtc.so.13")}
# per multiprocessor, for both architectures: 64 warps, 32 blocks, 65,536 registers in 4
# sub-partitions allocated per warp in units of 256, shared memory in units of 128 bytes with
# 1 KB reserved per block
SM = {"max_warps": 64, "max_blocks": 32, "registers": 65536, "sub_partitions": 4,
      "register_unit": 256, "shared_unit": 128, "reserved_shared": 1024}
SHARED_PER_SM = {"sm_80": 167936, "sm_90": 233472}  # bytes: 164 KB, 228 KB


class KernelBuildError(RuntimeError):
    """A kernel that does not compile, or an NVRTC that cannot be found or loaded."""


def nvrtc_path(major: int) -> Path | None:
    """The libnvrtc of CUDA `major` installed from its pip wheel (where the wheel puts it, else
    anywhere under the `nvidia` package), or None."""
    spec = importlib.util.find_spec("nvidia")
    roots = [Path(root) for root in (spec.submodule_search_locations or [])] if spec else []
    for root in roots:
        if (root / NVRTC_WHEELS[major][1]).is_file():
            return root / NVRTC_WHEELS[major][1]
    for root in roots:
        for path in sorted(root.glob(f"*/lib/libnvrtc.so.{major}")):
            return path
    return None


@functools.lru_cache(maxsize=None)
def load_nvrtc(major: int) -> ctypes.CDLL:
    """NVRTC of CUDA `major` (12 or 13) from its wheel; KernelBuildError naming the wheel when
    it is not installed."""
    path = nvrtc_path(major)
    if path is None:
        raise KernelBuildError(f"no NVRTC of CUDA {major}: pip install {NVRTC_WHEELS[major][0]}")
    library = ctypes.CDLL(str(path))
    library.nvrtcGetErrorString.restype = ctypes.c_char_p
    return library


def nvrtc_version(library: ctypes.CDLL) -> str:
    major, minor = ctypes.c_int(), ctypes.c_int()
    library.nvrtcVersion(ctypes.byref(major), ctypes.byref(minor))
    return f"{major.value}.{minor.value}"


def _check(library, status: int, what: str) -> None:
    if status != 0:
        raise KernelBuildError(f"{what}: {library.nvrtcGetErrorString(status).decode()}")


def compile_kernel(library: ctypes.CDLL, kernel: Kernel, arch: str,
                   folder: Path | None = None) -> tuple[str, bytes]:
    """Compiles kernels/<kernel.name>.cu (the text CuPy compiles: `kernel_source`) for `arch` with
    the run time's options and ptxas -v: returns (log, cubin); KernelBuildError with NVRTC's log
    when it does not compile."""
    folder = folder or kernel_dir()
    source = folder / f"{kernel.name}.cu"
    program = ctypes.c_void_p()
    text = kernel_source(kernel.name, folder).encode()
    _check(library, library.nvrtcCreateProgram(ctypes.byref(program), text, source.name.encode(),
                                                0, None, None), source.name)
    try:
        options = [f"-arch={arch}", "--device-as-default-execution-space",
                   "--ptxas-options=-v", *compile_options(kernel)]
        encoded = (ctypes.c_char_p * len(options))(*(o.encode() for o in options))
        status = library.nvrtcCompileProgram(program, len(options), encoded)
        size = ctypes.c_size_t()
        library.nvrtcGetProgramLogSize(program, ctypes.byref(size))
        log = ctypes.create_string_buffer(size.value)
        library.nvrtcGetProgramLog(program, log)
        log = log.value.decode(errors="replace")
        if status != 0:
            raise KernelBuildError(f"{source} does not compile for {arch} (NVRTC "
                                   f"{nvrtc_version(library)}):\n{log}")
        library.nvrtcGetCUBINSize(program, ctypes.byref(size))
        cubin = ctypes.create_string_buffer(size.value)
        _check(library, library.nvrtcGetCUBIN(program, cubin), f"{source.name}: cubin")
        return log, cubin.raw
    finally:
        library.nvrtcDestroyProgram(ctypes.byref(program))


_ENTRY = re.compile(r"Compiling entry function '([^']+)' for '(sm_\d+)'")
_PROPERTIES = re.compile(r"Function properties for (\S+)")
_FRAME = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")
_USED = re.compile(r"Used (\d+) registers")
_SMEM = re.compile(r"(\d+) bytes smem")


def parse_ptxas(log: str) -> dict[str, dict]:
    """ptxas -v's report -> {function: {registers, shared_bytes, stack_bytes, spill_stores,
    spill_loads, entry}} for every function it names (kernels: entry True; functions they call:
    frame and spills only)."""
    functions: dict[str, dict] = {}
    entry = target = None
    for line in log.splitlines():
        if m := _ENTRY.search(line):
            entry = m.group(1)
            functions.setdefault(entry, {}).update(entry=True, arch=m.group(2))
        elif m := _PROPERTIES.search(line):
            target = m.group(1)
            functions.setdefault(target, {"entry": False})
        elif (m := _FRAME.search(line)) and target:
            functions[target].update(stack_bytes=int(m.group(1)), spill_stores=int(m.group(2)),
                                     spill_loads=int(m.group(3)))
        elif (m := _USED.search(line)) and entry:
            smem = _SMEM.search(line)
            functions[entry].update(registers=int(m.group(1)),
                                    shared_bytes=int(smem.group(1)) if smem else 0)
    return functions


def occupancy(registers: int, shared_bytes: int, threads: int, arch: str) -> dict:
    """Theoretical occupancy of a kernel on one multiprocessor of `arch` (no dynamic shared
    memory, the largest shared-memory carveout): blocks per SM, warps per SM, the fraction of the
    SM's 64 warps, and what limits it."""
    warps = math.ceil(threads / 32)
    per_warp = math.ceil(registers * 32 / SM["register_unit"]) * SM["register_unit"]
    warps_by_registers = (SM["registers"] // SM["sub_partitions"] // per_warp * SM["sub_partitions"]
                          if per_warp else SM["max_warps"])
    per_block_shared = (math.ceil((shared_bytes + SM["reserved_shared"]) / SM["shared_unit"])
                        * SM["shared_unit"])
    limits = {"warps": SM["max_warps"] // warps, "blocks": SM["max_blocks"],
              "registers": warps_by_registers // warps,
              "shared memory": SHARED_PER_SM[arch] // per_block_shared}
    blocks = min(limits.values())
    return {"blocks_per_sm": blocks, "warps_per_sm": blocks * warps,
            "occupancy": blocks * warps / SM["max_warps"],
            "limited_by": [name for name, value in limits.items() if value == blocks]}


def kernel_resources(major: int, arch: str, folder: Path | None = None) -> list[dict]:
    """Every kernel of KERNELS compiled by CUDA `major`'s NVRTC for `arch`: one record each with
    its resources, occupancy at its launch block, budget and the spills of the functions it
    calls."""
    library = load_nvrtc(major)
    records = []
    for kernel in KERNELS.values():
        log, cubin = compile_kernel(library, kernel, arch, folder)
        functions = parse_ptxas(log)
        if kernel.name not in functions or "registers" not in functions[kernel.name]:
            raise KernelBuildError(f"ptxas reported nothing for {kernel.name} ({arch}):\n{log}")
        own = functions[kernel.name]
        called = [f for name, f in functions.items() if name != kernel.name]
        threads = math.prod(kernel.block)
        records.append({
            "kernel": kernel.name, "arch": arch, "nvrtc": nvrtc_version(library),
            "registers": own["registers"], "shared_bytes": own["shared_bytes"],
            "stack_bytes": own["stack_bytes"], "spill_stores": own["spill_stores"],
            "spill_loads": own["spill_loads"],
            "called_spill_bytes": sum(f.get("spill_stores", 0) + f.get("spill_loads", 0)
                                      for f in called),
            "block": list(kernel.block),
            **occupancy(own["registers"], own["shared_bytes"], threads, arch),
            "budget": {"max_registers": kernel.max_registers,
                       "max_stack_bytes": kernel.max_stack_bytes},
            "cubin_bytes": len(cubin),
        })
    return records


def budget_problems(record: dict) -> list[str]:
    """What a record breaks: spills anywhere, registers or stack over the kernel's budget."""
    problems = []
    name = f"{record['kernel']} ({record['arch']}, NVRTC {record['nvrtc']})"
    if record["spill_stores"] or record["spill_loads"] or record["called_spill_bytes"]:
        problems.append(f"{name} spills registers: {record['spill_stores']} bytes stored, "
                        f"{record['spill_loads']} loaded, {record['called_spill_bytes']} in the "
                        f"functions it calls")
    if record["registers"] > record["budget"]["max_registers"]:
        problems.append(f"{name} uses {record['registers']} registers, its budget is "
                        f"{record['budget']['max_registers']}")
    if record["stack_bytes"] > record["budget"]["max_stack_bytes"]:
        problems.append(f"{name} has a {record['stack_bytes']}-byte stack frame, its budget is "
                        f"{record['budget']['max_stack_bytes']}")
    return problems
