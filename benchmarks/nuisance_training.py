"""What training with the synthetic nuisances of everyday footage changes: two runs on the same
subjects and expressions, one rendered without and one with `mespot synth --nuisances`, each
tested on both sets' videos.

    python benchmarks/nuisance_training.py --clean runs/demo/run --nuisance runs/demo-nz/run

The two sets share seed, identities, expressions, blinks and quick head movements (the opt-in
nuisances have their own seed stream, mespot/synth/nuisances.py); the second adds talking, nods,
turns and lighting changes. Each run is trained with `mespot train`'s defaults and evaluated
(`mespot evaluate`, which records its precision maps). Every fold's model, as `predict --fold S`
applies it, spots subject S's videos in each set's store (S is its held-out subject in both),
and the intervals are counted as MEGC against that set's truths, pooled over the folds: at
--min-precision 0 (every proposal) and at the default minimum expected precision. The runs'
false alarms per minute on footage without expressions come from benchmarks/false_alarms.py.
Results: benchmarks/results/nuisance_training.json.
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


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clean", type=Path, required=True, help="run trained without them")
    parser.add_argument("--nuisance", type=Path, required=True, help="run trained with them")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "nuisance_training.json")
    args = parser.parse_args(argv)
    from spotting.precision import DEFAULT_MIN_PRECISION

    runs = {"trained without nuisances": args.clean, "trained with nuisances": args.nuisance}
    tests = {"tested without nuisances": args.clean, "tested with nuisances": args.nuisance}
    result = {name: {test: cross_counts(run, store, DEFAULT_MIN_PRECISION)
                     for test, store in tests.items()} for name, run in runs.items()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "benchmark": "nuisance_training", "environment": environment(),
        "load_average": [round(v, 2) for v in os.getloadavg()],
        "runs": {k: str(v) for k, v in runs.items()}, "results": result}, indent=1))
    for name, tested in result.items():
        for test, levels in tested.items():
            print(name, "|", test, "|", {k: v["overall"]["f1"] for k, v in levels.items()})
    print("->", args.out)


if __name__ == "__main__":
    main()
