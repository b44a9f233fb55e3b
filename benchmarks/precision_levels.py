"""What each minimum expected precision keeps and scores on a run's held-out LOSO test intervals:
the measurement behind `mespot predict`'s default `--min-precision` (spotting/precision.py).

    python benchmarks/precision_levels.py runs/demo/run [--store STORE]

Reads the run's evaluation (`mespot evaluate RUN`: RUN/evaluation/<name>/intervals.csv, each
interval with the expected precision of the map fitted without its own subject) and its
ground truth, and for each level counts, as MEGC (IoU >= 0.5 on inclusive frame counts, one
match per truth, pooled over the folds), the intervals of at least that expected precision:
intervals kept, TP, FP, precision, recall, F1, per type and overall; and how far the expected
precision of the kept intervals is from their observed precision. Results:
benchmarks/results/precision_levels.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import pandas as pd

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from spotting_quality import environment  # noqa: E402

LEVELS = (0.0, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8)


def levels(run: Path, store: Path | None, name: str) -> dict:
    """Per level: the MEGC counts of the evaluation's intervals reaching it."""
    from spotting.evaluate import prepare_run
    from spotting.metrics import MEGC, match_all, summarise
    from spotting.run_folder import RunFolder
    from spotting.truths import AT, ground_truth
    from spotting.windows import WindowParams

    folder = RunFolder(run)
    config = folder.read_config()
    prep = prepare_run(folder, store)
    truths = ground_truth(prep, WindowParams(**config["windows"]))
    truths = truths.assign(at_onset=truths["onset"], at_offset=truths["offset"])
    intervals = pd.read_csv(folder.evaluation(name) / "intervals.csv", dtype={"subject": str})
    intervals = intervals.assign(at_onset=intervals["onset"], at_offset=intervals["offset"])
    seconds = sum(v.n_rows / v.fps for v in prep.features.videos.values())
    out = {}
    for level in LEVELS:
        shown = intervals[intervals["precision"] >= level] if level else intervals
        matches = match_all(shown, truths, MEGC, on=AT)
        table = summarise(matches).set_index("type")
        hits = matches[matches["outcome"] != "FN"]
        out[f"{level:g}"] = {
            "intervals": len(shown),
            "per_minute_of_footage": round(len(shown) / seconds * 60, 2),
            "expected_precision_mean": float(shown["precision"].mean()) if len(shown) else None,
            "observed_precision": float((hits["outcome"] == "TP").mean()) if len(hits) else None,
            **{kind: {k: (float(v) if k in ("precision", "recall", "f1") else int(v))
                      for k, v in table.loc[kind, ["precision", "recall", "f1", "TP", "FP",
                                                    "FN"]].items()}
               for kind in ("me", "mae", "overall")}}
    return {"run": str(run), "evaluation": name, "truths": len(truths),
            "subjects": len(prep.features.subjects), "minutes": round(seconds / 60, 2),
            "levels": out}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", type=Path, nargs="+")
    parser.add_argument("--store", type=Path, default=None, help="the run's store elsewhere")
    parser.add_argument("--evaluation", default="last+calibrated+flip")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "precision_levels.json")
    args = parser.parse_args(argv)
    results = [levels(run, args.store, args.evaluation) for run in args.runs]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"benchmark": "precision_levels", "environment": environment(),
                                    "load_average": [round(v, 2) for v in os.getloadavg()],
                                    "results": results}, indent=1))
    for result in results:
        for level, entry in result["levels"].items():
            o = entry["overall"]
            print(f"{result['run']} >= {level:4s}: {entry['intervals']:3d} intervals, P "
                  f"{o['precision']:.3f} R {o['recall']:.3f} F1 {o['f1']:.3f} "
                  f"(expected {entry['expected_precision_mean'] or 0:.3f})")
    print("->", args.out)


if __name__ == "__main__":
    main()
