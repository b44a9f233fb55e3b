"""Time LOSO training of AUW-GCN on random feature stores shaped like real datasets.

Presets (random MDMO features with expression-shaped bumps; only the sizes matter here):
  synth-default  6 subjects x 3 videos x 1,800 frames, ~3 expressions per minute (the shape of
                 `mespot synth`'s default set)
  casme2         22 subjects, 95 videos of 2,000-4,500 frames, 300 MaE + 57 ME (CAS(ME)^2-sized)

Writes one JSON per preset to benchmarks/results/train_<preset>_<device>.json with the machine,
versions, parameters, seconds to load the store and build windows, seconds per fold and for the
whole LOSO. `--folds K` trains only the first K folds and scales their wall time to all folds
(marked as such in the JSON); `whole_loso_at_100_epochs` scales the time to the paper's 100 epochs
when fewer were run. `--workers N` trains N folds side by side (`mespot train --workers`); given
several values (`--workers 1 2`) the call times each on the same store and writes their speed-up
over the first into train_<preset>_<device>_workers1-2.json. `--epochs` and `--inner-val` default
to `mespot train`'s; with inner models the file is train_<preset>_e<epochs>_inner<K>_<device>...

    python benchmarks/train_speed.py --preset synth-default --threads 2
    python benchmarks/train_speed.py --preset casme2 --threads 2 --workers 1 2 --folds 4
    python benchmarks/train_speed.py --preset casme2 --device cuda --workers 1 4
    python benchmarks/train_speed.py --preset casme2 --threads 2 --workers 2  # train's defaults
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import resource
import tempfile
import time
from pathlib import Path

# Idle OpenMP threads sleep instead of spinning: on shared cores spinning threads steal the time
# their partners need (measured here: 4x faster wall time under load). Set before torch loads.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from flowcore.version import __version__
from mespot.testing import create_store, write_video
from spotting.config import RunConfig, TrainParams, resolve_inner_val
from spotting.data import prepare
from spotting.loso import train_loso

PRESETS = {
    "synth-default": dict(subjects=6, videos=18, frames=(1800, 1800), mae=41, me=13, fps=30.0),
    "casme2": dict(subjects=22, videos=95, frames=(2000, 4500), mae=300, me=57, fps=30.0),
}


def make_store(folder: Path, preset: str, seed: int = 0) -> tuple[Path, Path]:
    """A random store + ground-truth CSV of the preset's size in `folder`."""
    p = PRESETS[preset]
    rng = np.random.default_rng(seed)
    root = create_store(folder / "store.zarr", dataset=f"random-{preset}")
    subject_of = np.sort(
        np.concatenate(
            [np.arange(p["subjects"]), rng.integers(0, p["subjects"], p["videos"] - p["subjects"])]
        )
    )
    lengths = rng.integers(p["frames"][0], p["frames"][1] + 1, p["videos"])
    kinds = ["mae"] * p["mae"] + ["me"] * p["me"]
    video_of = rng.integers(0, p["videos"], len(kinds))
    lines = ["subject,video,onset,apex,offset,type,au"]
    for v in range(p["videos"]):
        subject = f"s{subject_of[v] + 1:02d}"
        video_id = f"{subject_of[v] + 1:02d}_{v:04d}"
        t = int(lengths[v])
        mdmo = rng.normal(0, 0.3, (t - 1, 12, 2)).astype(np.float32)
        for k in np.flatnonzero(video_of == v):
            n = (
                int(np.clip(rng.lognormal(np.log(35), 0.5), 15, 118))
                if kinds[k] == "mae"
                else int(rng.integers(9, 18))
            )
            on = int(rng.integers(1, t - n - 1))
            mdmo[on - 1 : on - 1 + n, 8:12, 1] += rng.uniform(0.5, 3.0)
            lines.append(f"{subject},{video_id},{on},{on + n // 2},{on + n - 1},{kinds[k]},12+25")
        write_video(root, video_id, subject, mdmo, np.arange(1, t + 1), fps=p["fps"])
    (folder / "gt.csv").write_text("\n".join(lines) + "\n")
    return folder / "store.zarr", folder / "gt.csv"


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run(
    preset: str, epochs: int, folds: int | None, device: str, workers: int = 1, threads: int = 2,
    inner_val: int | None = 0,
) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        store, gt = make_store(tmp, preset)
        config = RunConfig(store=str(store), annotations=str(gt), train=TrainParams(epochs=epochs,
                                                                         inner_val=inner_val))
        t0 = time.perf_counter()
        prep = prepare(store, gt, config.windows)
        prepare_s = time.perf_counter() - t0
        subjects = prep.features.subjects
        config = dataclasses.replace(config, train=resolve_inner_val(config.train, len(subjects)))
        chosen = subjects if folds is None else subjects[:folds]
        t0, c0 = time.perf_counter(), _cpu_seconds()
        results = train_loso(
            config,
            tmp / "run",
            device=device,
            subjects=chosen,
            prepared=prep,
            workers=workers,
            threads=threads if workers > 1 else 0,
        )
        train_s, train_cpu = time.perf_counter() - t0, _cpu_seconds() - c0
    per_fold = [r.seconds for r in results]
    mean_fold = float(np.mean(per_fold))
    # folds side by side: the whole LOSO takes the folds' time shared over the workers
    share = min(workers, len(chosen))
    whole = train_s if folds is None else train_s / len(chosen) * len(subjects)
    return {
        "benchmark": "train_speed",
        "preset": preset,
        "dataset_shape": PRESETS[preset]
        | {
            "n_windows": len(prep.windows),
            "n_train_windows_per_fold": [r.n_train_windows for r in results],
        },
        "parameters": {
            "epochs": epochs,
            "inner_val": config.train.inner_val,
            "inner_val_note": "each fold also trains an inner model without that many training "
            "subjects (same epochs), inside the whole_loso wall time"
            if config.train.inner_val else None,
            "init": config.train.init,
            "batch_size": config.train.batch_size,
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
            "folds_run": len(chosen),
            "folds_total": len(subjects),
            "device": device,
            "workers": workers,
            "torch_threads": threads if workers > 1 else torch.get_num_threads(),
            "torch_threads_note": "per worker process" if workers > 1 else "in this process",
        },
        "seconds": {
            "load_and_windows": prepare_s,
            "per_fold": per_fold,
            "mean_per_fold": mean_fold,
            "whole_loso": whole,
            "whole_loso_extrapolated": folds is not None,
            "whole_loso_at_100_epochs": prepare_s + whole / epochs * 100,
            "per_epoch": mean_fold / epochs,
            "training_wall": train_s,
            "process_cpu_seconds": train_cpu if workers == 1 else None,
            "note": "whole_loso is wall time (with --folds K: the K folds' wall time scaled to "
            "all folds); per_fold are each fold's own seconds, which overlap when "
            f"{share} workers train side by side",
        },
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(),
            "load_average_at_end": os.getloadavg(),
            "gpu": torch.cuda.get_device_name(0) if device.startswith("cuda") else None,
        },
        "versions": {
            "mespot": __version__,
            "torch": torch.__version__,
            "numpy": np.__version__,
            "python": platform.python_version(),
        },
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--preset", choices=[*PRESETS, "both"], default="both")
    parser.add_argument("--epochs", type=int, default=TrainParams().epochs,
                        help="epochs per fold (default: mespot train's)")
    parser.add_argument("--inner-val", type=int, default=TrainParams().inner_val,
                        help="inner-validation subjects per fold (default: mespot train's, 2)")
    parser.add_argument("--folds", type=int, default=None, help="train only the first K folds")
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--threads",
        type=int,
        default=2,
        help="torch CPU threads in all (default 2); N workers get threads // N each",
    )
    parser.add_argument(
        "--workers",
        type=int,
        nargs="+",
        default=[1],
        help="folds trained side by side; several values run one after the other "
        "in this call and the JSON gives each one's speed-up over the first",
    )
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    device = args.device.split(":")[0]
    for preset in PRESETS if args.preset == "both" else [args.preset]:
        runs = []
        for workers in args.workers:
            threads = max(1, args.threads // workers)  # the same cores, shared out
            torch.set_num_threads(args.threads)
            result = run(preset, args.epochs, args.folds, args.device, workers, threads,
                         args.inner_val)
            runs.append(result)
            s = result["seconds"]
            print(
                f"{preset}, {workers} worker(s): load+windows {s['load_and_windows']:.1f} s, "
                f"{s['mean_per_fold']:.1f} s per fold, whole LOSO {s['whole_loso']:.0f} s"
                f"{' (scaled from the folds run)' if s['whole_loso_extrapolated'] else ''}"
                f" ({s['whole_loso_at_100_epochs']:.0f} s at 100 epochs)"
            )
            inner = result["parameters"]["inner_val"]
            tag = f"_e{args.epochs}_inner{inner}" if inner else ""
            path = _write(args.out, preset + tag, device, args.workers, runs)  # after every run
        print("->", path)


def _write(out: Path, preset: str, device: str, workers: list[int], runs: list[dict]) -> Path:
    """One run: its JSON as it is; several: the runs so far and their speed-up over the first."""
    if len(workers) == 1:
        suffix = f"_workers{workers[0]}" if workers[0] > 1 else ""
        path = out / f"train_{preset}_{device}{suffix}.json"
        path.write_text(json.dumps(runs[0], indent=1))
        return path
    base = runs[0]["seconds"]["whole_loso"]
    ratios = {str(w): base / r["seconds"]["whole_loso"] for w, r in zip(workers, runs)}
    path = out / f"train_{preset}_{device}_workers{'-'.join(map(str, workers))}.json"
    path.write_text(
        json.dumps(
            {
                "benchmark": "train_speed (workers compared in one call)",
                "speedup_vs_first": ratios,
                "runs": runs,
            },
            indent=1,
        )
    )
    print("speed-up over", workers[0], "worker(s):", {w: round(r, 3) for w, r in ratios.items()})
    return path


if __name__ == "__main__":
    main()
