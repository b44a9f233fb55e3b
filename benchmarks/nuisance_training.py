"""What training with the synthetic nuisances of everyday footage changes: two runs on the same
subjects and expressions, one rendered without and one with `mespot synth --nuisances`, each
tested on both sets' videos.

    python benchmarks/nuisance_training.py --clean runs/demo/run --nuisance runs/demo-nz/run
    python benchmarks/nuisance_training.py --sets samm casme2   # the quality benchmark's sets

The two sets share seed, identities, expressions, blinks and quick head movements (the opt-in
nuisances have their own seed stream, mespot/synth/nuisances.py); the second adds talking, nods,
turns and lighting changes. Each run is trained with `mespot train`'s defaults and evaluated
(`mespot evaluate`, which records its precision maps). Every fold's model, as `predict --fold S`
applies it, spots subject S's videos in each set's store (S is its held-out subject in both),
and the intervals are counted as MEGC against that set's truths, pooled over the folds: at
--min-precision 0 (every proposal) and at the default minimum expected precision. The runs'
false alarms per minute on footage without expressions come from benchmarks/false_alarms.py.
Results: benchmarks/results/nuisance_training.json.

`--sets`: the same on the quality benchmark's sets (benchmarks/quality/, rendered and extracted
as benchmarks/spotting_quality.py does, sharing its cache): the clean run is `mespot train`'s
defaults, seed 1, on the set as rendered (benchmarks/new_subject.py's run of all subjects when
its cache holds it: the same command); the nuisance run the same on the set rendered again with
`mespot synth --config SET.yaml --nuisances` (same seed: same identities and expressions).
`mespot train` ends by fitting the precision maps (its default evaluation). Results:
benchmarks/results/nuisance_training_<set>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import pandas as pd

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from spotting_quality import environment  # noqa: E402


def cross_counts(run: Path, test_run: Path, level: float) -> dict:
    """MEGC counts of `run`'s folds on the videos of `test_run`'s store (each fold on its own
    held-out subject), at min precision 0 and `level`."""
    from spotting.evaluate import prepare_run
    from spotting.metrics import MEGC, summarise
    from spotting.predict import spot_features
    from spotting.run_folder import RunFolder
    from spotting.trained import load_trained
    from spotting.truths import count, ground_truth

    prep = prepare_run(RunFolder(test_run))
    truths = ground_truth(prep, load_trained(run).models[0].windows)
    out, pictures = {}, Path(tempfile.mkdtemp(prefix="nuisance-training-"))
    for minimum in (0.0, level):
        rows = []
        for subject in prep.features.subjects:
            trained = load_trained(run, fold=subject)
            for video in prep.features.videos_of([subject]):
                found = spot_features(video, trained, "cpu", pictures / f"{video.video_id}.png",
                                      pictures, minimum)
                rows.append(found.rows)
        found = pd.concat(rows, ignore_index=True)
        table = summarise(count(found, truths, MEGC, prep.features)).set_index("type")
        out[f"min precision {minimum:g}"] = {
            kind: {k: (round(float(v), 4) if k in ("precision", "recall", "f1") else int(v))
                   for k, v in table.loc[kind, ["precision", "recall", "f1", "TP", "FP",
                                                "FN"]].items()}
            for kind in ("me", "mae", "overall")}
    return out


def set_runs(set_name: str, cache: Path) -> dict[str, Path]:
    """{"clean", "nuisance"}: the two runs of a quality benchmark set (made when missing)."""
    from spotting_quality import EXTRACT_FLAGS, SETS, Timings, mespot, prepare_set

    log, timings = cache / "nuisance_training.log", Timings(cache / "timings.json")
    store, annotations = prepare_set(cache, set_name, "plain", timings, log)
    data = cache / "sets" / f"{set_name}-nuisances" / "data"
    if not (data / "synth.json").is_file():
        timings.add(f"{set_name}-nuisances/render", mespot(
            "synth", "--config", str(SETS[set_name][0]), "--nuisances", "--out", str(data),
            "--overwrite", "--workers", "2", log=log))
    noisy = data.parent / "plain.zarr"
    if not (noisy / ".complete").is_file():
        timings.add(f"{set_name}-nuisances/extract", mespot(
            "extract", str(data), "--out", str(noisy), *EXTRACT_FLAGS, "-q", log=log))
        (noisy / ".complete").write_text("")
    shared = cache / "new_subject" / set_name / "seed1" / "all-subjects"
    runs = {"clean": shared if (shared / "config.json").is_file()  # the same command: resumed
            else cache / "nuisance_training" / set_name / "clean",
            "nuisance": cache / "nuisance_training" / set_name / "nuisance"}
    for name, (features, truth) in (("clean", (store, annotations)),
                                    ("nuisance", (noisy, data / annotations.name))):
        if not (runs[name] / "precision").is_dir():
            timings.add(f"nuisance_training/{set_name}/train-{name}", mespot(
                "train", str(features), "-a", str(truth), "--out", str(runs[name]), "--seed",
                "1", "--workers", "2", "--no-tensorboard", "-q", log=log))
    return runs


def compare(runs: dict[str, Path], out: Path, what: dict) -> None:
    """Both runs on both sets' videos (cross_counts), written to `out` and printed."""
    from spotting.precision import DEFAULT_MIN_PRECISION

    named = {"trained without nuisances": runs["clean"],
             "trained with nuisances": runs["nuisance"]}
    tests = {"tested without nuisances": runs["clean"], "tested with nuisances": runs["nuisance"]}
    result = {name: {test: cross_counts(run, store, DEFAULT_MIN_PRECISION)
                     for test, store in tests.items()} for name, run in named.items()}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "benchmark": "nuisance_training", **what, "environment": environment(),
        "load_average": [round(v, 2) for v in os.getloadavg()],
        "runs": {k: str(v) for k, v in named.items()}, "results": result}, indent=1))
    for name, tested in result.items():
        for test, levels in tested.items():
            print(name, "|", test, "|", {k: v["overall"]["f1"] for k, v in levels.items()})
    print("->", out)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clean", type=Path, help="run trained without them")
    parser.add_argument("--nuisance", type=Path, help="run trained with them")
    parser.add_argument("--sets", nargs="+", choices=("casme2", "samm"),
                        help="the quality benchmark's sets instead of two runs given")
    parser.add_argument("--cache", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "nuisance_training.json")
    args = parser.parse_args(argv)
    if args.sets:
        from spotting_quality import default_cache

        cache = args.cache or default_cache()
        for set_name in args.sets:
            compare(set_runs(set_name, cache),
                    HERE / "results" / f"nuisance_training_{set_name}.json",
                    {"set": set_name, "train": "mespot train's defaults, seed 1, --workers 2"})
        return
    if args.clean is None or args.nuisance is None:
        parser.error("give --clean and --nuisance, or --sets")
    compare({"clean": args.clean, "nuisance": args.nuisance}, args.out, {})


if __name__ == "__main__":
    main()
