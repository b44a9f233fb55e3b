"""Where a GPU's TV-L1 time goes: pairs per second by batch, iterations launched per call, GPU busy
(NVML samples and the profiler's kernel time over the wall time), host time per iteration launch.

    python benchmarks/flow_profile.py --device cuda [--size 256] [--batches 32 128 512]

The `torch` backend (tensor operations) and the `cuda` backend (flowcore/flow/cuda_tvl1.py: a
kernel launch per warp, median filter and iteration) on the same face pairs. A backend whose wall
time hardly grows with the batch, or whose GPU is busy a small fraction of the time, is bound by
the host (Python and launches), not by the card. `--device cpu` runs the `torch` backend's
tensor path on the CPU (the plumbing only; numbers meaningless). Writes
benchmarks/results/flow_profile.json (or --out) and prints a table.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import sys
import threading
import time

import torch

from _flow_env import environment, write_json

from flowcore.flow import TVL1Params
from flowcore.flow.synthetic import face_pairs
from flowcore.flow.torch_tvl1 import _inner_step, flow_torch, solve_level_tensors


def sync():
    """Wait for the device's queued work (main() sets it: torch.cuda.synchronize on a GPU)."""


class BusySampler:
    """Mean NVML GPU utilisation (% of time a kernel ran) while the block runs; None without
    NVML."""

    def __init__(self, index: int = 0, every_s: float = 0.02):
        self.samples, self.every_s, self._stop = [], every_s, threading.Event()
        try:
            import pynvml

            pynvml.nvmlInit()
            self._handle, self._nvml = pynvml.nvmlDeviceGetHandleByIndex(index), pynvml
        except Exception:  # no NVML here: the profiler's figure stands alone
            self._nvml = None

    def _run(self):
        while not self._stop.wait(self.every_s):
            self.samples.append(self._nvml.nvmlDeviceGetUtilizationRates(self._handle).gpu)

    def __enter__(self):
        if self._nvml:
            self._thread = threading.Thread(target=self._run, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        if self._nvml:
            self._thread.join()

    @property
    def mean(self):
        return statistics.fmean(self.samples) if self.samples else None


class Solver:
    """A backend's level solver for flow_torch, counting the iterations it runs in .iterations."""

    def __init__(self, backend: str):
        self.backend, self.iterations = backend, 0
        if backend == "cuda":
            from flowcore.flow.cuda_tvl1 import new_stats, solve_level_cuda

            self._stats = new_stats()
            self.solve = functools.partial(solve_level_cuda, stats=self._stats)
        else:
            self.solve = functools.partial(solve_level_tensors, step=self._step)

    def _step(self, *args):
        self.iterations += 1
        return _inner_step(*args)

    def reset(self):
        self.iterations = 0
        if self.backend == "cuda":
            self._stats.update(iterations=0)

    def count(self) -> int:
        return self._stats["iterations"] if self.backend == "cuda" else self.iterations


def kernel_seconds(fn) -> float | None:
    """Seconds of GPU kernel time (profiler, all kernels of the process) of one call of fn."""
    try:
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            fn()
            sync()
        from torch.autograd import DeviceType

        kernels = [e for e in prof.key_averages() if e.device_type == DeviceType.CUDA]
        return sum(e.self_device_time_total for e in kernels) / 1e6  # (the ops' rows repeat it)
    except Exception as err:  # the profiler is a help here, not the measurement
        print(f"profiler failed: {type(err).__name__}: {err}")
        return None


def launch_overhead(backend: str, device: str, batch: int, size: int, calls: int = 200) -> dict:
    """Host microseconds per iteration (no sync between calls) vs the GPU's: `torch`, a call of
    _inner_step; `cuda`, a launch of the iteration kernel with its precomputed arguments."""
    n, c, h, w = batch, 2, size, size
    g = torch.Generator(device="cpu").manual_seed(0)
    make = lambda ch: torch.rand(n, ch, h, w, generator=g).to(device)  # noqa: E731
    fields = [make(1), make(1), make(1), make(1), make(c), make(c), make(c)]
    if backend == "cuda":
        call = _iteration_launch(fields)
    else:
        keep = torch.ones(n, 1, 1, 1, dtype=torch.bool, device=device)
        call = functools.partial(_inner_step, *fields, keep, 0.045, 0.3, 0.25 / 0.3, 0.0)
    call()
    sync()
    start = time.perf_counter()
    for _ in range(calls):
        call()
    host = time.perf_counter() - start
    sync()
    wall = time.perf_counter() - start
    return {"batch": batch, "size": size, "calls": calls, "host_us_per_call": host / calls * 1e6,
            "wall_us_per_call": wall / calls * 1e6}


def _iteration_launch(fields):
    """One tvl1_iteration launch over `fields` (I1wx, I1wy, grad, rho_c, u, px, py), as the cuda
    solver makes it (flowcore/flow/cuda_tvl1.py), repeatable (it reads row 0 of its errors)."""
    import numpy as np

    from flowcore.cuda_kernels import CudaLauncher, grid_over, pointer

    n, c, h, w = fields[4].shape
    outputs = [torch.empty_like(t) for t in fields[4:]]
    errors = torch.zeros(2, n, device=fields[0].device)
    errors[0] = float("inf")
    launch = CudaLauncher(fields[0].device)
    args = (*(pointer(t) for t in (*fields, *outputs, errors)), np.int32(0), np.float32(0.0),
            np.int32(c), np.int32(h), np.int32(w), np.float32(0.045), np.float32(0.3),
            np.float32(0.25 / 0.3), np.float32(0.0))
    grid = grid_over(h, w, n)

    def call():
        launch("tvl1_iteration", grid, args)

    call.tensors = (fields, outputs, errors)  # the memory behind the pointers lives with the call
    return call


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--batches", type=int, nargs="+", default=[32, 128, 512])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--overhead-calls", type=int, default=200,
                        help="iterations timed for the host time per iteration")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("no CUDA device here (--device cpu runs the plumbing, numbers meaningless)")
        return 2
    global sync
    sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)

    backends = ["torch"]
    try:
        import cupy  # noqa: F401

        if args.device.startswith("cuda"):
            backends.append("cuda")
    except ImportError:
        print("no CuPy: the cuda backend is not profiled")
    params = TVL1Params()
    rows, overhead = [], {}
    first_np, second_np = face_pairs((args.size, args.size), max(args.batches))
    for batch in args.batches:
        first = torch.from_numpy(first_np[:batch]).float().to(args.device)
        second = torch.from_numpy(second_np[:batch]).float().to(args.device)
        for name in backends:
            solver = Solver(name)
            call = lambda: flow_torch(first, second, params, solver.solve)  # noqa: E731
            call()  # warm-up: compilation, caches
            sync()
            solver.reset()
            walls = []
            with BusySampler() as busy:
                for _ in range(args.repeats):
                    start = time.perf_counter()
                    call()
                    sync()
                    walls.append(time.perf_counter() - start)
            wall = statistics.median(walls)
            iterations = solver.count() / args.repeats  # (before the profiled call below)
            profiled = batch == args.batches[len(args.batches) // 2]
            kernels = kernel_seconds(call) if profiled else None
            row = {"backend": name, "batch": batch, "size": args.size, "seconds": wall,
                   "pairs_per_s": batch / wall, "steps_per_call": iterations,
                   "nvml_busy_percent": busy.mean, "kernel_seconds": kernels,
                   "kernel_fraction": kernels / wall if kernels else None}
            rows.append(row)
            print(f"{name:<6} {args.size}x{args.size} batch {batch:>4}: {row['pairs_per_s']:8.1f} "
                  f"pairs/s, {row['steps_per_call']:.0f} iterations/call, NVML busy "
                  f"{busy.mean if busy.mean is not None else float('nan'):.0f} %"
                  + (f", kernels {kernels / wall:.0%} of wall" if kernels else ""))
    for name in backends:
        overhead[name] = [launch_overhead(name, args.device, b, args.size, args.overhead_calls)
                          for b in (1, 32)]
        for o in overhead[name]:
            print(f"{name:<6} one iteration, batch {o['batch']:>3}: "
                  f"host {o['host_us_per_call']:.0f} us, wall {o['wall_us_per_call']:.0f} us")
    payload = {"benchmark": "flow_profile", **environment(None), "params": params.to_dict(),
               "settings": vars(args), "rows": rows, "iteration_overhead": overhead}
    print(f"wrote {write_json('flow_profile.json', payload, args.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
