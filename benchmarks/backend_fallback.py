"""How far the features move when `mespot predict` falls back from a run's flow backend.

    python benchmarks/backend_fallback.py              # CPU: what can be measured without a GPU
    python benchmarks/backend_fallback.py --gpu        # a GPU with CuPy: the fallback itself
    python benchmarks/backend_fallback.py --run RUN    # also: do the spotted intervals change?

A run trained on features of the `cuda` flow backend (a GPU's: the `torch` backend's TV-L1 with
the warp, the median filter and each iteration one kernel launch, and the MDMO features one
kernel launch, kernels/) predicts on a CPU-only machine with the `torch` backend on the CPU
(numba kernels), the same algorithm in another arithmetic order. This extracts the same
videos both ways and compares their MDMO features (and, with --run, what the run spots on each).

- `--gpu`: `cuda` on the GPU against `torch` on the CPU: exactly what the fallback changes.
- without: `torch` on the CPU (numba kernels) against the `torch` backend's tensor path on the
  CPU (the unfused tensor operations a GPU runs, here on the CPU, the torch backend's level_solver
  bypassed): the part of the difference that comes from computing the same TV-L1 another way.
  What the GPU's own rounding and the kernels add is not in it; `--gpu` measures that (an H200
  check of the backend's first version, one fused iteration kernel, found its flow's EPE within
  0.35 % of the tensor path's per class of known motion:
  benchmarks/results/flow_accuracy_cuda_h200.json).

Videos: `mespot synth --small` (3 subjects x 2 videos x 8 s at 30 fps, 1,440 frames), faces
resized to 128 px as `make demo`. JSON: benchmarks/results/backend_fallback_<mode>.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from spotting_quality import environment  # noqa: E402


def extract(data: Path, out: Path, backend: str, device: str, tensor_path_on_cpu: bool = False):
    """Extract `data` into the store `out` (one process); the flowcore FeatureSet."""
    from flowcore import ExtractParams, extract_source
    from flowcore.extract import RunOptions
    from flowcore.faces import FaceParams
    from flowcore.flow.backends import BACKENDS
    from flowcore.flow.torch_tvl1 import solve_level_tensors
    from flowcore.store import load_features

    params = ExtractParams(flow_backend=backend, faces=FaceParams(resize=128))
    torch_backend = BACKENDS["torch"]
    if tensor_path_on_cpu:  # this instance's solver chooser bypassed
        torch_backend.level_solver = lambda device: solve_level_tensors
    try:
        report = extract_source(data, out, params, RunOptions(device=device), workers=1)
    finally:
        vars(torch_backend).pop("level_solver", None)
    if report.failed:
        sys.exit(f"extraction failed: {report.summary()}")
    return load_features(out)


def compare(a, b) -> dict:
    """MDMO differences (px) between two extractions of the same videos."""
    diffs, values = [], []
    for video_id, va in a.videos.items():
        vb = b.videos[video_id]
        diffs.append(np.abs(va.mdmo - vb.mdmo).ravel())
        values.append(np.abs(va.mdmo).ravel())
    d, v = np.concatenate(diffs), np.concatenate(values)
    return {"videos": len(a.videos), "values": int(d.size),
            "max_abs_px": float(d.max()), "mean_abs_px": float(d.mean()),
            "p99_abs_px": float(np.percentile(d, 99)),
            "mean_abs_feature_px": float(v.mean()),
            "mean_abs_relative_to_mean_abs_feature": float(d.mean() / v.mean()),
            "identical_values_fraction": float((d == 0).mean())}


def spotted_differences(run: Path, a, b) -> dict:
    """What the run (every fold, predict's default) spots on each extraction: intervals of
    each and how many differ (type, onset, offset, apex)."""
    from spotting.spot import mean_logits, spot_rows
    from spotting.trained import load_trained

    trained = load_trained(run)
    same = differ = 0
    for video_id in a.videos:
        found = [spot_rows(mean_logits(list(trained.models), s.videos[video_id], "cpu",
                                       trained.options.flip), trained.rules)
                 for s in (a, b)]
        keys = [set(map(tuple, f[["type", "start", "end", "apex"]].values.tolist()))
                for f in found]
        same += len(keys[0] & keys[1])
        differ += len(keys[0] ^ keys[1])
    return {"run": str(run), "intervals_in_both": same, "intervals_in_one_only": differ}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gpu", action="store_true", help="cuda on the GPU vs torch on the CPU")
    parser.add_argument("--run", type=Path, help="a run on torch-backend features, 128 px")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args(argv)
    from mespot.synth import SMALL, generate_dataset

    work = Path(tempfile.mkdtemp(prefix="backend-fallback-"))
    data = generate_dataset(SMALL, work / "data", preview=False, workers=1).root
    started = time.perf_counter()
    fallback = extract(data, work / "torch-cpu.zarr", "torch", "cpu")
    seconds = {"torch_cpu": round(time.perf_counter() - started, 1)}
    started = time.perf_counter()
    if args.gpu:
        other, mode = extract(data, work / "cuda.zarr", "cuda", "cuda"), "cuda_gpu_vs_torch_cpu"
    else:
        other = extract(data, work / "tensor-cpu.zarr", "torch", "cpu", tensor_path_on_cpu=True)
        mode = "torch_numba_vs_tensor_path_cpu"
    seconds["other"] = round(time.perf_counter() - started, 1)
    result = {"benchmark": "backend_fallback", "mode": mode, "environment": environment(),
              "videos": "mespot synth --small (3 subjects x 2 videos x 8 s, 30 fps), 128 px",
              "mdmo": compare(other, fallback), "seconds": seconds}
    if args.run:
        result["spotted"] = spotted_differences(args.run, other, fallback)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"backend_fallback_{'gpu' if args.gpu else 'cpu'}.json"
    path.write_text(json.dumps(result, indent=1))
    print(json.dumps({k: result[k] for k in ("mode", "mdmo", "seconds")}, indent=1))
    print("->", path)


if __name__ == "__main__":
    main()
