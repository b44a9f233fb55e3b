"""Extraction throughput with Ray: 1 and 2 Ray workers next to the in-process runs.

Renders a synthetic set (`mespot synth --small`, shortened to --seconds per video), then
extracts it into a fresh store several ways with `run_extraction` (the code `mespot extract`
runs) and reports frames/s over the wall time of each:

  in-process   one process (`--workers 1`; OpenCV and torch use their default threads)
  pool         N local worker processes (`--workers N`, one thread each)
  ray          a local Ray instance with --cpus CPUs, at most N tasks at once (one thread each)

Ray is started once before the timings (its start-up time is reported on its own) and stays up
through every run (its idle services take a little CPU from the local runs too); each run's
wall time includes loading the face models once per worker process, as a real run does. With
--rounds R every way runs R times, in reverse order every other round (other jobs on a shared
machine come and go); the summary keeps each way's best round. Every run's arrays are hashed:
equal hashes mean the same store bit for bit.

    python benchmarks/extract_scaling.py [--seconds 4] [--resize 64] [--workers 1 2] [--cpus 2]
        [--rounds 1] [--out PATH]

Writes benchmarks/results/extract_scaling.json (or --out) and prints a table.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _flow_env import environment, write_json  # noqa: E402  (machine and versions record)

from flowcore.batch import run_extraction  # noqa: E402
from flowcore.extract import ExtractParams, RunOptions  # noqa: E402
from flowcore.faces import FaceParams  # noqa: E402
from flowcore.sources import open_source  # noqa: E402

ARRAYS = ("mdmo", "landmarks", "face_box", "frame_numbers")


def arrays_digest(store: Path) -> str:
    """sha256 (16 hex digits) of every video's arrays (name, dtype, shape, bytes) in id order."""
    import zarr

    digest = hashlib.sha256()
    videos = zarr.open_group(str(store), mode="r")["videos"]
    for video_id in sorted(videos.group_keys()):
        for name in ARRAYS:
            array = videos[video_id][name][...]
            digest.update(f"{video_id}/{name}/{array.dtype}/{array.shape}".encode())
            digest.update(array.tobytes())
    return digest.hexdigest()[:16]


def timed_run(label: str, source, folder: Path, params, workers: int, engine=None) -> dict:
    """Extract `source` into a fresh store under `folder`; the row of the table."""
    store = Path(tempfile.mkdtemp(dir=folder)) / f"{label.replace(' ', '-')}.zarr"
    start = time.perf_counter()
    report = run_extraction(source, store, params, RunOptions(), workers=workers, engine=engine)
    wall = time.perf_counter() - start
    if report.failed:
        raise SystemExit(report.summary())
    frames = sum(r.n_frames for r in report.results)
    row = {"run": label, "workers": workers, "videos": len(report.results), "frames": frames,
           "wall_s": round(wall, 2), "frames_per_s": round(frames / wall, 2),
           "arrays_sha256": arrays_digest(store)}
    print(f"{label:22s} {row['frames_per_s']:8.2f} frames/s  wall {wall:7.1f} s  "
          f"arrays {row['arrays_sha256']}", flush=True)
    return row


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=4.0, help="per video (30 fps)")
    parser.add_argument("--resize", type=int, default=64, help="face crops, px")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--cpus", type=int, default=2, help="CPUs of the local Ray instance")
    parser.add_argument("--rounds", type=int, default=1, help="times each way runs")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)

    import ray

    from flowcore.ray_engine import RayEngine
    from mespot.synth import SMALL, generate_dataset

    config = SMALL.replace(seconds=args.seconds)
    params = ExtractParams(flow_backend="opencv", faces=FaceParams(resize=args.resize))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        generate_dataset(config, folder / "synth", workers=1)
        source = open_source(folder / "synth")
        ways = [("in-process", 1, None)]
        ways += [(f"pool {n} processes", n, None) for n in args.workers if n > 1]
        ways += [(f"ray {n} workers", n, RayEngine()) for n in args.workers]
        start = time.perf_counter()
        ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False,
                 logging_level="WARNING")
        ray_start = time.perf_counter() - start
        print(f"ray.init: {ray_start:.1f} s (not counted below)")
        try:
            for round_ in range(args.rounds):
                for label, workers, engine in ways if round_ % 2 == 0 else ways[::-1]:
                    row = timed_run(label, source, folder, params, workers, engine)
                    rows.append({"round": round_ + 1, **row})
        finally:
            ray.shutdown()
    same = len({row["arrays_sha256"] for row in rows}) == 1
    print("same arrays in every run" if same else "WARNING: the runs' arrays differ")
    best = {label: max(r["frames_per_s"] for r in rows if r["run"] == label)
            for label, _, _ in ways}
    print("best round: " + ", ".join(f"{label} {fps:.2f}" for label, fps in best.items())
          + " frames/s")

    import zarr

    env = environment(threads=1)
    env["versions"].update({"ray": ray.__version__, "zarr": zarr.__version__})
    result = {"benchmark": "extract_scaling", **env,
              "settings": {"synth": f"mespot synth --small with {args.seconds:g} s per video "
                                    f"({config.subjects} subjects x {config.videos_per_subject} "
                                    f"videos, {config.fps:g} fps)",
                           "face_px": args.resize, "flow_backend": "opencv", "device": "cpu",
                           "tvl1": "OpenCV defaults (flowcore.flow.TVL1Params())",
                           "ray_cpus": args.cpus, "ray_init_s": round(ray_start, 2),
                           "rounds": args.rounds,
                           "note": "in-process: one process, default OpenCV/torch threads; pool "
                                   "and ray: one thread per worker; 'workers' for ray is the "
                                   "most tasks at once; wall time includes model loading per "
                                   "worker; other jobs may share this machine's CPUs (see the "
                                   "load average)"},
              "same_arrays_in_every_run": same, "best_frames_per_s": best, "results": rows}
    path = write_json("extract_scaling.json", result, args.out)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
