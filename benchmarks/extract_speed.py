"""End-to-end extraction speed (frames -> store), with the time split by stage.

For each face size, writes a few fixture videos in the CAS(ME)^2 layout (mespot.testing: the
astronaut face, drifting), extracts them with `run_extraction` (the code `mespot extract` runs)
into a fresh store, and reports frames/s over the wall time, the seconds per stage summed over
videos (decode, face, landmarks, flow, mdmo, write), and the ratio
(landmarks + mdmo + write) / flow, whose target on the CPU is < 0.2.

    python benchmarks/extract_speed.py [--sizes 128 256] [--frames 24] [--videos 2]
        [--workers 2] [--backend opencv] [--device cpu] [--batch-size 16] [--out PATH]

Writes benchmarks/results/extract_<device>_<backend>.json (or --out) and prints a table.
On a GPU: `--backend torch --device cuda --sizes 256 --videos 8 --frames 256` (enough work for
the default 8 worker processes and 128-pair batches; the goal is >= 1,000 frames/s).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _flow_env import RESULTS, environment  # noqa: E402  (machine and versions record)

from flowcore.batch import run_extraction  # noqa: E402
from flowcore.extract import STAGES, ExtractParams, RunOptions  # noqa: E402
from flowcore.faces import FaceParams  # noqa: E402
from flowcore.sources import open_source  # noqa: E402
from mespot.testing import write_casme2  # noqa: E402

CODES = ("0101", "0102", "0401", "0402", "0502", "0503", "0505", "0507", "0508")


def measure(size: int, args) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_casme2(root, {f"15_{CODES[i % 9]}v{i}": args.frames for i in range(args.videos)})
        source = open_source(root)
        params = ExtractParams(flow_backend=args.backend, faces=FaceParams(resize=size))
        options = RunOptions(device=args.device, batch_size=args.batch_size)
        start = time.perf_counter()
        report = run_extraction(source, root / "f.zarr", params, options, workers=args.workers)
        wall = time.perf_counter() - start
    if report.failed:
        raise SystemExit(report.summary())
    stages = {s: round(sum(r.timings.get(s, 0.0) for r in report.results), 3) for s in STAGES}
    frames = sum(r.n_frames for r in report.results)
    overhead = stages["landmarks"] + stages["mdmo"] + stages["write"]
    return {
        "face_px": size, "videos": args.videos, "frames": frames, "wall_s": round(wall, 3),
        "frames_per_s": round(frames / wall, 2),
        "flow_pairs_per_s_per_worker": round((frames - args.videos) / max(stages["flow"], 1e-9), 2),
        "stage_seconds_summed_over_videos": stages,
        "landmarks_mdmo_write_over_flow": round(overhead / max(stages["flow"], 1e-9), 4),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 256])
    parser.add_argument("--frames", type=int, default=24, help="frames per video")
    parser.add_argument("--videos", type=int, default=2)
    parser.add_argument("--workers", type=int, default=None, help="default: as mespot extract")
    parser.add_argument("--backend", default="opencv")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=None, help="default: 16 CPU, 128 GPU")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)

    rows = []
    for size in args.sizes:
        row = measure(size, args)
        rows.append(row)
        s = row["stage_seconds_summed_over_videos"]
        print(f"{size:4d} px  {row['frames_per_s']:8.2f} frames/s  wall {row['wall_s']:7.1f} s  "
              + "  ".join(f"{k} {v:.2f}" for k, v in s.items())
              + f"  (landmarks+mdmo+write)/flow {row['landmarks_mdmo_write_over_flow']:.3f}")
    result = {"benchmark": "extract_speed", **environment(threads=1),
              "settings": {"backend": args.backend, "device": args.device,
                           "workers": args.workers, "batch_size": args.batch_size,
                           "frames_per_video": args.frames, "videos": args.videos,
                           "tvl1": "OpenCV defaults (flowcore.flow.TVL1Params())",
                           "note": "each worker process runs one thread; stage seconds are "
                                   "summed over videos (worker time), wall time is end to end"},
              "results": rows}
    out = args.out or RESULTS / f"extract_{args.device.replace(':', '')}_{args.backend}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
