"""Every kernel of kernels/ compiled for sm_80 and sm_90 by the NVRTC of CUDA 12 and of CUDA 13
(pip wheels, no GPU and no CUDA toolkit needed; flowcore.kernel_build): a compile error, a
register spill, or registers or stack over the kernel's budget (flowcore.cuda_kernels.KERNELS)
fails. benchmarks/kernel_resources.py writes the same figures as JSON."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from flowcore.cuda_kernels import KERNELS, Kernel, kernel_source
from flowcore.kernel_build import (
    ARCHS,
    NVRTC_WHEELS,
    KernelBuildError,
    budget_problems,
    compile_kernel,
    kernel_resources,
    load_nvrtc,
    nvrtc_path,
    occupancy,
    parse_ptxas,
)

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ROOT / "kernels"  # this tree's sources (an editable install may point elsewhere)


def _nvrtc(major):
    if nvrtc_path(major) is None:
        pytest.skip(f"no NVRTC of CUDA {major}: pip install {NVRTC_WHEELS[major][0]} "
                    f"(the test extra installs it)")
    return load_nvrtc(major)


@pytest.mark.parametrize("major", [12, 13])
@pytest.mark.parametrize("arch", ARCHS)
def test_every_kernel_compiles_within_its_budget(major, arch):
    _nvrtc(major)
    records = kernel_resources(major, arch, SOURCES)
    assert [r["kernel"] for r in records] == list(KERNELS)
    problems = [p for r in records for p in budget_problems(r)]
    assert not problems, "\n".join(problems)
    for r in records:
        assert r["nvrtc"].startswith(f"{major}.") and r["cubin_bytes"] > 0
        assert r["registers"] > 0 and 0 < r["occupancy"] <= 1


def test_a_compile_error_names_the_file_and_the_line(tmp_path):
    library = _nvrtc(13)
    (tmp_path / "broken.cu").write_text('extern "C" __global__ void broken(float* x) {\n'
                                        "    x[0] = undeclared;\n}\n")
    with pytest.raises(KernelBuildError, match=r"broken\.cu does not compile for sm_90(.|\n)*"
                                               r"broken\.cu\(2\).*undeclared"):
        compile_kernel(library, Kernel("broken", (32, 1, 1), 32), "sm_90", tmp_path)


def test_a_spill_and_a_budget_exceeded_are_reported(tmp_path):
    library = _nvrtc(13)
    # 40 floats live at once through a loop with a bound unknown at compile time: forced into
    # 32 registers, ptxas has to spill
    (tmp_path / "greedy.cu").write_text(
        'extern "C" __global__ void __launch_bounds__(1024, 2) greedy(float* x, int n) {\n'
        "    float v[40];\n"
        "#pragma unroll\n"
        "    for (int i = 0; i < 40; ++i) v[i] = x[i * n + threadIdx.x];\n"
        "    for (int k = 0; k < n; ++k)\n"
        "#pragma unroll\n"
        "        for (int i = 0; i < 40; ++i) v[i] = v[i] * v[(i + 1) % 40] + x[k];\n"
        "    float s = 0.0f;\n"
        "#pragma unroll\n"
        "    for (int i = 0; i < 40; ++i) s += v[i];\n"
        "    x[threadIdx.x] = s;\n}\n")
    greedy = Kernel("greedy", (1024, 1, 1), max_registers=16)
    log, _ = compile_kernel(library, greedy, "sm_90", tmp_path)
    found = parse_ptxas(log)["greedy"]
    assert found["spill_stores"] > 0 and found["registers"] > 16
    record = {"kernel": "greedy", "arch": "sm_90", "nvrtc": "13", "called_spill_bytes": 0,
              "budget": {"max_registers": 16, "max_stack_bytes": 0}, **found}
    problems = budget_problems(record)
    assert any("spills registers" in p for p in problems)
    assert any("registers, its budget is 16" in p for p in problems)
    assert any("stack frame" in p for p in problems)


def test_ptxas_report_is_read_per_function():
    log = """ptxas info    : 0 bytes gmem
ptxas info    : Compiling entry function 'k' for 'sm_80'
ptxas info    : Function properties for k
ptxas         .     88 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
ptxas info    : Used 56 registers, used 1 barriers, 88 bytes cumulative stack size, 1072 bytes smem, 424 bytes cmem[0]
ptxas info    : Compile time = 84.486 ms
ptxas info    : Function properties for _Z6helperv
ptxas         .     0 bytes stack frame, 4 bytes spill stores, 8 bytes spill loads
"""  # noqa: E501 -- ptxas's lines as it writes them
    found = parse_ptxas(log)
    assert found["k"] == {"entry": True, "arch": "sm_80", "stack_bytes": 88, "spill_stores": 0,
                          "spill_loads": 0, "registers": 56, "shared_bytes": 1072}
    assert found["_Z6helperv"] == {"entry": False, "stack_bytes": 0, "spill_stores": 4,
                                   "spill_loads": 8}


@pytest.mark.parametrize("registers, shared, threads, arch, blocks, limit", [
    (64, 0, 256, "sm_90", 4, "registers"),  # 2048 registers a warp: 8 warps per sub-partition
    (72, 0, 256, "sm_90", 3, "registers"),  # 2304: 7 warps per sub-partition, 28 per SM
    (30, 0, 256, "sm_90", 8, "warps"),  # 64 warps: the SM is full
    (32, 48 * 1024, 128, "sm_80", 3, "shared memory"),  # (48 + 1) KB of 164 KB
    (32, 48 * 1024, 128, "sm_90", 4, "shared memory"),  # ... of 228 KB
    (16, 0, 32, "sm_90", 32, "blocks"),  # at most 32 blocks
])
def test_occupancy_follows_the_cuda_occupancy_calculator(registers, shared, threads, arch, blocks,
                                                         limit):
    got = occupancy(registers, shared, threads, arch)
    assert got["blocks_per_sm"] == blocks and limit in got["limited_by"]
    assert got["occupancy"] == blocks * (threads // 32) / 64


def test_the_compiled_text_holds_each_header_once_and_says_where_lines_come_from(tmp_path):
    (tmp_path / "a.cuh").write_text('#pragma once\n#include "b.cuh"\nint a;\n')
    (tmp_path / "b.cuh").write_text("#pragma once\nint b;\n")
    (tmp_path / "k.cu").write_text('#include "a.cuh"\n#include "b.cuh"\nint k;\n')
    assert kernel_source("k", tmp_path).splitlines() == [
        '#line 1 "k.cu"', '#line 1 "a.cuh"', "", '#line 1 "b.cuh"', "", "int b;",
        '#line 3 "a.cuh"', "int a;", '#line 2 "k.cu"', '#line 3 "k.cu"', "int k;"]
    # what CuPy compiles changes with a header, not only with the .cu (its cache key)
    assert "tvl1_pixel_step" in kernel_source("tvl1_iteration", SOURCES)


def test_the_mdmo_block_is_the_one_its_source_is_written_for():
    lanes = re.search(r"#define MDMO_LANES (\d+)", (SOURCES / "mdmo_rois.cu").read_text())
    assert KERNELS["mdmo_rois"].block == (int(lanes.group(1)), 1, 1)


@pytest.mark.slow
def test_kernel_resources_benchmark_writes_every_kernel_and_arch(tmp_path):
    for major in (12, 13):
        _nvrtc(major)
    out = tmp_path / "resources.json"
    subprocess.run([sys.executable, str(ROOT / "benchmarks" / "kernel_resources.py"), "--out",
                    str(out)], check=True, capture_output=True, cwd=ROOT)
    record = json.loads(out.read_text())
    rows = {(r["kernel"], r["arch"], r["nvrtc"].split(".")[0]) for r in record["kernels"]}
    assert rows == {(k, a, m) for k in KERNELS for a in ARCHS for m in ("12", "13")}
    assert record["problems"] == [] and record["versions"]["mespot"]
