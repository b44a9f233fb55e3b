"""Speed of every flow backend: pairs per second at 128x128, 256x256 and 480x640, batch sizes
1..N, with ratios to `opencv` timed in the same run (CPU timings are noisy on shared machines:
compare ratios, not absolute numbers, across runs).

    python benchmarks/flow_speed.py [--threads 2] [--batches 1 2 4 8] [--device cpu|cuda]

Each measurement is the median of --repeats timed calls after one warm-up call (numba
compilation and caches excluded); the calls of one image size run in turns so that every
configuration sees the same machine load. Wall-clock rates are the headline; the CPU time per
pair (all threads of the process) is printed beside them: on a machine shared with other work
it shows the work done, which scheduling noise disturbs less. Writes
benchmarks/results/flow_speed.json and prints a table.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time


from _flow_env import default_backends, environment, set_threads, write_json

from flowcore.flow import TVL1Params, compute_flow
from flowcore.flow.synthetic import face_pairs

SIZES = ((128, 128), (256, 256), (480, 640))


def time_call(fn, sync=None) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process, all threads) of one call of fn."""
    if sync:
        sync()
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    if sync:
        sync()
    return time.perf_counter() - wall, time.process_time() - cpu


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument(
        "--max-pixels-per-call",
        type=float,
        default=4 * 480 * 640,
        help="skip batches larger than this many pixels (time budget)",
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--sizes",
        type=int,
        nargs="+",
        default=[0, 1, 2],
        help="indices into 128x128, 256x256, 480x640",
    )
    parser.add_argument("--opencv-pairs", type=int, default=2, help="pairs per opencv call")
    parser.add_argument("--backends", nargs="*", default=None, help="default: all available")
    parser.add_argument("--device", default="cpu", help="device of the torch backend")
    parser.add_argument("--out", default=None, help="JSON path (default benchmarks/results/)")
    args = parser.parse_args(argv)

    set_threads(args.threads)
    params = TVL1Params()
    backends = args.backends or default_backends(args.device)
    sync = None
    if args.device.startswith("cuda"):
        import torch

        sync = torch.cuda.synchronize

    rows = []
    for shape in (SIZES[i] for i in args.sizes):
        # the configurations of one size, timed in turns (opencv, torch b1, b2, ..., opencv, ...)
        # so that all of them see the same machine load
        configs = []
        if "opencv" in backends:  # OpenCV works pair by pair: its rate does not depend on batch
            configs.append(("opencv", "cpu", args.opencv_pairs))
        for backend in (b for b in backends if b != "opencv"):
            configs += [
                (backend, args.device, n)
                for n in args.batches
                if n * shape[0] * shape[1] <= args.max_pixels_per_call
            ]
        calls = {}
        for backend, device, batch in configs:
            first, second = face_pairs(shape, batch)
            calls[backend, batch] = lambda f=first, s=second, b=backend, d=device: compute_flow(
                f, s, params=params, backend=b, device=d
            )
            calls[backend, batch]()  # warm-up
        times = {key: [] for key in calls}
        for _ in range(args.repeats):
            for key, call in calls.items():
                times[key].append(time_call(call, sync))
        reference = None
        for backend, device, batch in configs:
            wall = statistics.median(t[0] for t in times[backend, batch])
            cpu = statistics.median(t[1] for t in times[backend, batch])
            row = {
                "size": list(shape),
                "backend": backend,
                "device": device,
                "batch": batch,
                "seconds_per_call": wall,
                "cpu_seconds_per_call": cpu,
                "seconds_all_repeats": [t[0] for t in times[backend, batch]],
                "pairs_per_s": batch / wall,
                "cpu_seconds_per_pair": cpu / batch,
            }
            if backend == "opencv":
                reference = row
            if reference is not None:
                row["ratio_to_opencv"] = row["pairs_per_s"] / reference["pairs_per_s"]
                row["cpu_ratio_to_opencv"] = (
                    reference["cpu_seconds_per_pair"] / row["cpu_seconds_per_pair"]
                )
            rows.append(row)
            ratios = (
                ""
                if reference is None
                else (
                    f"{row['ratio_to_opencv']:6.2f}x   (CPU time per pair "
                    f"{row['cpu_seconds_per_pair']:.3f} s, {row['cpu_ratio_to_opencv']:.2f}x)"
                )
            )
            print(
                f"{shape[0]:>4}x{shape[1]:<4} {backend:<8} {device:<6} batch {batch:>3}  "
                f"{row['pairs_per_s']:8.2f} pairs/s  {ratios}",
                flush=True,
            )

    payload = {
        "benchmark": "flow_speed",
        **environment(args.threads),
        "params": params.to_dict(),
        "settings": {
            "batches": args.batches,
            "repeats": args.repeats,
            "device": args.device,
            "backends": backends,
            "opencv_pairs_per_call": args.opencv_pairs,
        },
        "results": rows,
    }
    print(f"wrote {write_json('flow_speed.json', payload, args.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
