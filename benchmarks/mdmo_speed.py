"""Speed of the MDMO features on a batch of flow fields: flowcore.mdmo.mdmo on NumPy (CPU) and on
torch tensors of the device, and the MDMO kernel (flowcore.mdmo_cuda, one launch per batch) on a
GPU; pairs per second, and the kernel's largest difference to the NumPy features.

    python benchmarks/mdmo_speed.py --device cuda [--size 256] [--batches 128 512] [--repeats 5]

Flows: random smooth-ish motion (N, 2, size, size) float32, landmarks of the test face
(flowcore.flow.synthetic.face_landmarks). Without a GPU (`--device cpu`) the kernel is left out
(the plumbing only). Writes benchmarks/results/mdmo_speed.json (or --out) and prints a table.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import numpy as np
import torch

from _flow_env import environment, write_json

from flowcore.flow.synthetic import face_landmarks
from flowcore.mdmo import MDMOParams, mdmo


def _inputs(batch: int, size: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    coarse = rng.normal(0, 1.5, (batch, 2, size // 16, size // 16)).astype(np.float32)
    flow = np.repeat(np.repeat(coarse, 16, axis=2), 16, axis=3)  # patches of common motion
    flow += rng.normal(0, 0.3, flow.shape).astype(np.float32)
    lm = np.repeat(face_landmarks(size)[None], batch, 0)
    return flow, lm


def _time(call, sync, repeats: int) -> float:
    call()  # warm-up: compilation, caches
    sync()
    walls = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        sync()
        walls.append(time.perf_counter() - start)
    return statistics.median(walls)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--batches", type=int, nargs="+", default=[128, 512])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    on_gpu = args.device.startswith("cuda")
    if on_gpu and not torch.cuda.is_available():
        print("no CUDA device here (--device cpu runs the plumbing, numbers meaningless)")
        return 2
    sync = torch.cuda.synchronize if on_gpu else (lambda: None)
    kernel = None
    if on_gpu:
        try:
            import cupy  # noqa: F401

            from flowcore.mdmo_cuda import mdmo_cuda as kernel
        except ImportError:
            print("no CuPy: the MDMO kernel is not timed")
    rows = []
    for batch in args.batches:
        flow, lm = _inputs(batch, args.size)
        flow_t, lm_t = torch.from_numpy(flow).to(args.device), torch.from_numpy(lm).to(args.device)
        calls = {"numpy (cpu)": lambda: mdmo(flow, lm),
                 f"torch ({args.device})": lambda: mdmo(flow_t, lm_t)}
        if kernel:
            calls[f"kernel ({args.device})"] = lambda: kernel(flow_t, lm_t)
        reference = mdmo(flow, lm)
        for name, call in calls.items():
            seconds = _time(call, sync if name != "numpy (cpu)" else (lambda: None), args.repeats)
            out = call()
            out = out if isinstance(out, np.ndarray) else out.cpu().numpy()
            row = {"implementation": name, "batch": batch, "size": args.size, "seconds": seconds,
                   "pairs_per_s": batch / seconds,
                   "max_abs_diff_vs_numpy": float(np.abs(out - reference).max())}
            rows.append(row)
            print(f"{name:<16} {args.size}x{args.size} batch {batch:>4}: "
                  f"{row['pairs_per_s']:>10.0f} pairs/s, max |diff| to numpy "
                  f"{row['max_abs_diff_vs_numpy']:.1e}")
    payload = {"benchmark": "mdmo_speed", **environment(None), "device": args.device,
               "params": MDMOParams().to_dict(), "settings": vars(args), "rows": rows}
    print(f"wrote {write_json('mdmo_speed.json', payload, args.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
