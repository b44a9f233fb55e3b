"""How long `predict` takes on an ordinary clip: start-up, frames/s and peak memory.

    python benchmarks/predict_speed.py                 # a 4 s clip, on 2 cores
    python benchmarks/predict_speed.py --seconds 30 --cores 1 --repeats 3
    python benchmarks/predict_speed.py --startup-only --repeats 5   # a minute: start-up alone

The clip is what a lab films: 640 x 360 px, 24 fps, one person with a face about 180 px wide
(mespot.synth's renderer, face_size 180, set in a wider frame), written as an MJPG .avi. The run
is a small one trained here on mespot.synth data with the default extraction parameters (3
subjects, 3 folds, an inner model per fold: calibrated rules, as `mespot train` writes by
default), cached with the clip in --cache.

Each repeat starts a fresh Python process pinned to --cores cores (`taskset`), twice: `cli` runs
`mespot predict CLIP --model RUN --out OUT -q` itself (mespot.cli.main), `api` does
`mespot.Spotter.load(RUN).spot(CLIP, OUT)`. Times count from the moment the process was started:
- `startup_s`: to the first frame processed (the face pass's first frame: interpreter, imports,
  reading and checking the run, opening the clip and the store, the dlib models);
- `imports_s`, `load_s` (api): importing mespot.api, and Spotter.load;
- `frames_per_s`: the clip's frames over the time from the first frame processed to the end
  (both passes of the extraction, the networks, the outputs written);
- `startup_cpu_s`, `frames_per_cpu_s`, `total_cpu_s`: the same in CPU seconds (user + system,
  getrusage): on a loaded machine the wall times are mostly waiting for a core;
- `peak_rss_mb`: the process's peak resident memory (getrusage);
- `torch_imported_at_first_frame`: whether torch was imported before the first frame.

The machine is shared (other processes, a stress test): the load average before and after each
repeat is recorded beside the numbers, which are medians over the repeats. Results:
benchmarks/results/predict_speed_cpu.json; with `--startup-only` each process ends at its first
frame (start-up only, in seconds rather than minutes: for a moment the machine is idle),
benchmarks/results/predict_startup_cpu.json.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
CLIP_SIZE = (640, 360)  # px
CLIP_FPS = 24.0
FACE_SIZE = 180  # px, the rendered face box's width
DEFAULT_OUT = HERE / "results" / "predict_speed_cpu.json"


def default_cache() -> Path:
    return Path(os.environ.get("MESPOT_PREDICT_SPEED_CACHE")
                or Path.home() / ".cache" / "mespot-predict-speed")


# ---- the run and the clip (built once, cached) -------------------------------------------------


def build_run(cache: Path) -> Path:
    """A small run on mespot.synth data with the default extraction (cache/run)."""
    run = cache / "run"
    if (run / "config.json").is_file() and all(
            json.loads(p.read_text()).get("status") == "complete"
            for p in run.glob("folds/*/fold.json")):
        return run
    from flowcore import ExtractParams, extract_source
    from mespot.synth import SMALL, generate_dataset
    from spotting.config import RunConfig, TrainParams
    from spotting.loso import train_loso

    data = cache / "train-data"
    if not data.exists():
        generate_dataset(SMALL.replace(subjects=3, videos_per_subject=1, seconds=4.0), data,
                         preview=False, workers=1)
    report = extract_source(data, cache / "train.zarr", ExtractParams(), workers=1)
    if report.failed:
        raise SystemExit(f"extraction of the training data failed: {report.summary()}")
    config = RunConfig(store=str(cache / "train.zarr"), annotations=str(data / "ground_truth.csv"),
                       train=TrainParams(epochs=2, batch_size=4, inner_val=1))
    train_loso(config, run, tensorboard=False)
    return run


def build_clip(cache: Path, seconds: float) -> Path:
    """A 640 x 360, 24 fps MJPG clip of `seconds` s: a synthetic person, face about 180 px."""
    import cv2
    import numpy as np

    from mespot.synth import SMALL, generate_dataset

    clip = cache / f"clip_{CLIP_SIZE[0]}x{CLIP_SIZE[1]}_{seconds:g}s.avi"
    if clip.is_file():
        return clip
    rendered = cache / f"clip-frames-{seconds:g}s"
    if not rendered.exists():
        generate_dataset(SMALL.replace(subjects=1, videos_per_subject=1, seconds=seconds,
                                       fps=CLIP_FPS, face_size=FACE_SIZE, seed=7),
                         rendered, preview=False, workers=1)
    frames = sorted(rendered.glob("rawpic/*/*/*.jpg"))
    width, height = CLIP_SIZE
    y, x = np.mgrid[:height, :width]
    room = (110 + 40 * np.sin(x / 23.0) * np.cos(y / 31.0)).astype(np.uint8)  # a wall
    room = np.dstack([room, room, room])
    tmp = clip.with_suffix(".tmp.avi")
    writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"MJPG"), CLIP_FPS, CLIP_SIZE)
    for path in frames:
        picture = cv2.imread(str(path))
        side = picture.shape[0]
        scale = height / side
        person = cv2.resize(picture, (int(side * scale), height), interpolation=cv2.INTER_AREA)
        frame = room.copy()
        left = (width - person.shape[1]) // 2
        frame[:, left:left + person.shape[1]] = person
        writer.write(frame)
    writer.release()
    tmp.replace(clip)
    return clip


# ---- one measured run (in its own process) ------------------------------------------------------


def child(mode: str, run: str, clip: str, out: str, launched: float,
          startup_only: bool = False) -> None:
    """Spot `clip` with `run` (mode `cli`: `mespot predict CLIP --model RUN --out OUT -q`, the
    command itself; `api`: Spotter.load(RUN).spot(CLIP, OUT)); print the timings as JSON, from
    `launched`, the moment the parent started this process. The first frame processed is seen
    by wrapping flowcore's face pass (flowcore.extract.track_face), which `import mespot`
    imports anyway. `startup_only`: print the start-up and end the process there."""
    began = time.time()
    import flowcore.extract as extract

    first = []
    track_face = extract.track_face

    def tracked(stream, params, timer, cache, progress):
        def seen(done):
            if not first:
                first.append((time.time(), _cpu(), "torch" in sys.modules))
                if startup_only:
                    _startup_and_exit(first[0], launched, began, steps)
            progress(done)
        return track_face(stream, params, timer, cache, seen)

    extract.track_face = tracked
    steps = {}
    if mode == "cli":
        from mespot.cli import main

        if main(["predict", clip, "--model", run, "--out", out, "-q"]) != 0:
            raise SystemExit("mespot predict failed")
    else:
        from mespot.api import Spotter

        steps["imports_s"] = time.time() - began
        loaded = time.time()
        spotter = Spotter.load(run)
        steps["load_s"] = time.time() - loaded
        spotter.spot(clip, out)
    done, cpu = time.time(), _cpu()
    at, cpu_at, torch_then = first[0]
    print(json.dumps({
        "startup_s": at - launched, "startup_cpu_s": cpu_at, "interpreter_s": began - launched,
        **steps, "after_first_frame_s": done - at, "after_first_frame_cpu_s": cpu - cpu_at,
        "total_s": done - launched, "total_cpu_s": cpu,
        "torch_imported_at_first_frame": torch_then,
        "frames": _frames(Path(out) / "features.zarr"),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }))


def _startup_and_exit(first: tuple, launched: float, began: float, steps: dict) -> None:
    """Print the start-up timings (`first`: wall time, CPU seconds, torch imported, at the
    first frame) as JSON and end the process at once."""
    at, cpu_at, torch_then = first
    print(json.dumps({"startup_s": at - launched, "startup_cpu_s": cpu_at,
                      "interpreter_s": began - launched, **steps,
                      "torch_imported_at_first_frame": torch_then,
                      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}),
          flush=True)
    os._exit(0)


def _cpu() -> float:
    """CPU seconds (user + system) this process has used, all its threads."""
    used = resource.getrusage(resource.RUSAGE_SELF)
    return used.ru_utime + used.ru_stime


def _frames(store: Path) -> int:
    import zarr

    videos = zarr.open_group(str(store), mode="r")["videos"]
    return int(sum(videos[name].attrs["n_frames"] for name in videos))


def measure(mode: str, run: Path, clip: Path, out: Path, cores: int,
            startup_only: bool = False) -> dict:
    pin = ["taskset", "-c", ",".join(str(c) for c in range(cores))] if shutil.which(
        "taskset") else []
    if out.exists():
        shutil.rmtree(out)
    before = os.getloadavg()
    launched = time.time()
    done = subprocess.run([*pin, sys.executable, __file__, "--child", mode, str(run), str(clip),
                           str(out), repr(launched), *(["--startup-only"] if startup_only
                                                       else [])], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": _pythonpath()})
    if done.returncode != 0:
        raise SystemExit(done.stderr[-3000:])
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["load_average_before_after"] = [list(before), list(os.getloadavg())]
    if startup_only:
        return result
    result["frames_per_s"] = result["frames"] / result["after_first_frame_s"]
    result["frames_per_cpu_s"] = result["frames"] / result["after_first_frame_cpu_s"]
    return result


def _pythonpath() -> str:
    root = str(HERE.parent)
    return os.pathsep.join([root, *filter(None, [os.environ.get("PYTHONPATH")])])


def _median(values):
    ordered = sorted(values)
    return ordered[len(ordered) // 2]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=4.0, help="clip length")
    parser.add_argument("--cores", type=int, default=2, help="cores the process is pinned to")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--cache", type=Path, default=default_cache())
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--startup-only", action="store_true",
                        help="measure the start-up alone (to predict_startup_cpu.json)")
    parser.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        mode, run, clip, out, launched = args.child
        child(mode, run, clip, out, float(launched), args.startup_only)
        return 0
    if args.startup_only:
        return startup_only(args)
    from mespot.environment import describe

    args.cache.mkdir(parents=True, exist_ok=True)
    run, clip = build_run(args.cache), build_clip(args.cache, args.seconds)
    found = {mode: [measure(mode, run, clip, args.cache / f"out-{mode}", args.cores)
                    for _ in range(args.repeats)] for mode in ("cli", "api")}
    keys = ("startup_s", "startup_cpu_s", "frames_per_s", "frames_per_cpu_s", "peak_rss_mb",
            "total_s", "total_cpu_s", "interpreter_s")
    medians = {mode: {k: round(_median([r[k] for r in runs]), 3)
                      for k in (*keys, "imports_s", "load_s") if k in runs[0]}
               for mode, runs in found.items()}
    result = {
        "what": "`mespot predict` (cli) and Spotter.load + spot (api) on a rendered clip: "
                "start-up (process start to the first frame processed), frames/s after it, "
                "peak memory; medians over the repeats",
        "clip": {"file": clip.name, "size": list(CLIP_SIZE), "fps": CLIP_FPS,
                 "seconds": args.seconds, "face_px": FACE_SIZE,
                 "frames": found["cli"][0]["frames"]},
        "run": {"folds": len(list(run.glob("folds/*/fold.json"))),
                "note": "3 subjects of mespot.synth, default extraction, 2 epochs, an inner "
                        "model per fold (calibrated rules)"},
        "cores": args.cores,
        **medians,
        "repeats": found,
        "load_note": "the machine is shared with other jobs (a stress test, other sessions): "
                     "the load averages (1, 5, 15 min) before and after each repeat are in "
                     "`repeats`. Under load the wall times (`startup_s`, `frames_per_s`) are "
                     "mostly waiting for a core; the CPU times (`startup_cpu_s`: user + system "
                     "seconds of the process to the first frame, its start-up being one "
                     "thread; `frames_per_cpu_s`) are what the work costs, close to the wall "
                     "time on an idle machine",
        "environment": describe(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(medians, indent=1))
    return 0


def startup_only(args) -> int:
    """The start-up alone, --repeats times per mode, to predict_startup_cpu.json (or --out)."""
    from mespot.environment import describe

    args.cache.mkdir(parents=True, exist_ok=True)
    run, clip = build_run(args.cache), build_clip(args.cache, args.seconds)
    found = {mode: [measure(mode, run, clip, args.cache / f"out-{mode}", args.cores, True)
                    for _ in range(args.repeats)] for mode in ("cli", "api")}
    keys = ("startup_s", "startup_cpu_s", "interpreter_s", "imports_s", "load_s", "peak_rss_mb")
    medians = {mode: {k: round(_median([r[k] for r in runs]), 3) for k in keys if k in runs[0]}
               for mode, runs in found.items()}
    result = {"what": "start-up of `mespot predict` (cli) and Spotter.load + spot (api): from "
                      "the process's start to the first frame processed, medians over the "
                      "repeats; each process ends there",
              "clip": {"file": clip.name, "size": list(CLIP_SIZE), "fps": CLIP_FPS,
                       "face_px": FACE_SIZE},
              "run": {"folds": len(list(run.glob("folds/*/fold.json")))},
              "cores": args.cores, **medians, "repeats": found,
              "load_note": "load averages (1, 5, 15 min) before and after each repeat are in "
                           "`repeats`: near 0 means the wall times are those of an idle machine",
              "environment": describe()}
    out = args.out if args.out != DEFAULT_OUT else HERE / "results" / "predict_startup_cpu.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(medians, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
