"""Resources of every CUDA kernel of kernels/, per architecture and CUDA version, without a GPU:
registers, shared memory, stack frame and spills (ptxas's report through NVRTC), theoretical
occupancy at the kernel's launch block, and its budget (flowcore.cuda_kernels.KERNELS).

    python benchmarks/kernel_resources.py [--majors 12 13] [--archs sm_80 sm_90] [--out PATH]

Needs the NVRTC wheels (`nvidia-cuda-nvrtc-cu12`, `nvidia-cuda-nvrtc`: the test extra installs
both); a CUDA version whose wheel is missing is left out with a note. Writes
benchmarks/results/kernel_resources.json (or --out) and prints a table; exits 1 if a kernel
breaks its budget (tests/test_kernels_build.py fails then too).
"""

from __future__ import annotations

import argparse
import sys

from _flow_env import environment, write_json

from flowcore.kernel_build import (
    ARCHS,
    NVRTC_WHEELS,
    budget_problems,
    kernel_resources,
    nvrtc_path,
)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--majors", type=int, nargs="+", default=sorted(NVRTC_WHEELS))
    parser.add_argument("--archs", nargs="+", default=list(ARCHS))
    parser.add_argument("--out", default=None, help="JSON path (default benchmarks/results/)")
    args = parser.parse_args(argv)

    records, missing = [], []
    for major in args.majors:
        if nvrtc_path(major) is None:
            missing.append(f"CUDA {major}: pip install {NVRTC_WHEELS[major][0]}")
            continue
        for arch in args.archs:
            records += kernel_resources(major, arch)
    problems = [p for r in records for p in budget_problems(r)]
    print(f"{'kernel':<15} {'arch':<6} {'nvrtc':<6} {'regs':>4} {'budget':>6} {'smem':>6} "
          f"{'stack':>5} {'spills':>6} {'blocks/SM':>9} {'occupancy':>9}")
    for r in records:
        print(f"{r['kernel']:<15} {r['arch']:<6} {r['nvrtc']:<6} {r['registers']:>4} "
              f"{r['budget']['max_registers']:>6} {r['shared_bytes']:>6} {r['stack_bytes']:>5} "
              f"{r['spill_stores'] + r['spill_loads'] + r['called_spill_bytes']:>6} "
              f"{r['blocks_per_sm']:>9} {r['occupancy']:>9.0%}")
    for line in missing + problems:
        print(line)
    payload = {"benchmark": "kernel_resources", **environment(None), "device": "none (NVRTC)",
               "kernels": records, "missing": missing, "problems": problems}
    print(f"wrote {write_json('kernel_resources.json', payload, args.out)}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
