"""What `mespot predict` scores on a subject no fold saw, and that it reproduces `evaluate`.

    python benchmarks/new_subject.py --sets casme2              # every subject held out once
    python benchmarks/new_subject.py --sets casme2 --held-out 4  # the first 4 subjects only

A lab trains a run on its subjects and spots a new subject with every fold's model together
(`mespot predict VIDEO --model RUN`: the folds' logits averaged, each fold's calibrated proposal
rules combined per type by the median, spotting/trained.py). `evaluate`'s number is another
thing: each subject spotted by the one fold that left it out. This measures both on the quality
benchmark's sets (benchmarks/quality/, rendered and extracted as benchmarks/spotting_quality.py
does, sharing its cache), with `mespot train`'s and `mespot evaluate`'s defaults, one seed:

- `evaluate`: one LOSO run on all n subjects, `mespot evaluate RUN` (last+calibrated+flip);
  per subject, its fold's counts. The same run checks predict = evaluate: every fold's model
  alone, as `predict --fold S` loads it from the run folder, on S's videos gives exactly
  evaluate's intervals (rows and scores; the number of mismatches is recorded, 0 expected).
- `ensemble`: for each held-out subject h, a LOSO run on the other n - 1 subjects (a copy of
  the store without h's videos; n - 1 folds, each with its inner model), then all its folds
  together spot h's videos as `predict` does by default.
- `ensemble-fixed`: the same runs and logits with AUW-GCN's fixed proposal rules
  (`predict --no-calibrate`), for comparison.

Counts are MEGC, pooled over the held-out subjects; F1 with a 95% interval from resampling
subjects, and the paired difference ensemble - evaluate on the same subjects. Results:
benchmarks/results/new_subject_<set>.json (machine, versions, sizes, timings, every count).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from spotting_quality import (SETS, TYPES, Timings, default_cache, environment,  # noqa: E402
                              f1_from, mespot, prepare_set, subject_weights)

TRAIN = ("--workers", "2", "--no-tensorboard", "-q")  # and `mespot train`'s defaults
VARIANTS = ("evaluate", "ensemble", "ensemble-fixed")


def train(store: Path, annotations: Path, run: Path, seed: int, log: Path) -> float:
    """`mespot train` with its defaults (resumes); seconds taken."""
    return mespot("train", str(store), "-a", str(annotations), "--out", str(run), "--seed",
                  str(seed), *TRAIN, log=log)


def _timed(timings: Timings, key: str, seconds: float) -> None:
    """Keep the first timing of `key` (a later call resumes a finished run in seconds)."""
    if key not in timings.values:
        timings.add(key, seconds)


def without(store: Path, subject: str, out: Path) -> Path:
    """A copy of `store` without the videos of `subject` (made once)."""
    import zarr

    done = out / ".complete"
    if done.is_file():
        return out
    shutil.rmtree(out, ignore_errors=True)
    shutil.copytree(store, out)
    videos = zarr.open_group(str(out), mode="r+")["videos"]
    for name, group in list(videos.groups()):
        if group.attrs.get("subject") == subject:
            del videos[name]
    done.write_text("")
    return out


def spotted_rows(trained, video, device: str = "cpu") -> pd.DataFrame:
    """What `predict` spots in one video (rows: video, subject, type, onset, apex, offset,
    score), through the same calls."""
    from spotting.spot import mean_logits, spot_rows

    logits = mean_logits(list(trained.models), video, device, trained.options.flip)
    found = spot_rows(logits, trained.rules).rename(columns={"start": "onset", "end": "offset"})
    return found.assign(video=video.video_id, subject=video.subject)


def counts_of(found: pd.DataFrame, truths: pd.DataFrame, features) -> dict:
    """{type: [TP, proposals, truths]} under MEGC for ME and MaE."""
    from spotting.metrics import MEGC, summarise
    from spotting.truths import count

    table = summarise(count(found, truths, MEGC, features)).set_index("type")
    return {kind: [int(table.loc[kind, c]) for c in ("TP", "proposals", "truths")]
            for kind in ("me", "mae")}


def check_predict_is_evaluate(run: Path, evaluation, features) -> dict:
    """Every fold's model alone, loaded as `predict --fold S` loads it, on S's videos, against
    evaluate's intervals: how many folds, videos and intervals were compared and how many
    intervals differ (in type, onset, offset, apex or score)."""
    from spotting.predict import spot_features
    from spotting.trained import load_trained

    compared = {"folds": 0, "videos": 0, "intervals": 0, "mismatches": 0}
    key = ["type", "onset", "offset", "apex", "score"]
    scratch = run.parent / "scratch"
    for subject in features.subjects:
        trained = load_trained(run, fold=subject)
        compared["folds"] += 1
        for video in features.videos_of([subject]):
            got = spot_features(video, trained, "cpu", scratch / "c.png", scratch).intervals
            want = evaluation.intervals[evaluation.intervals["video"] == video.video_id]
            got = got[key].astype({"onset": int, "offset": int, "apex": int})
            want = want[key].astype({"onset": int, "offset": int, "apex": int, "score": float})
            merged = got.merge(want, how="outer", on=key, indicator=True)
            compared["videos"] += 1
            compared["intervals"] += len(want)
            compared["mismatches"] += int((merged["_merge"] != "both").sum())
    shutil.rmtree(scratch, ignore_errors=True)
    return compared


def measure(cache: Path, set_name: str, seed: int, held_out: int | None,
            timings: Timings, log: Path) -> dict:
    """Per-subject counts of every variant on one set (see the module docstring)."""
    from flowcore.store import load_features
    from spotting.evaluate import evaluate_run
    from spotting.run_record import read_record
    from spotting.trained import load_trained
    from spotting.truths import ground_truth
    from spotting.data import prepare

    store, annotations = prepare_set(cache, set_name, "plain", timings, log)
    base = cache / "new_subject" / set_name / f"seed{seed}"
    full = base / "all-subjects"
    _timed(timings, f"new_subject/{set_name}/train-all", train(store, annotations, full, seed, log))
    started = time.perf_counter()
    evaluation = evaluate_run(full, "last")
    timings.add(f"new_subject/{set_name}/evaluate-all", time.perf_counter() - started)
    features = load_features(store)
    prep = prepare(store, annotations, read_record(full).windows)
    truths = ground_truth(prep, read_record(full).windows)
    check = check_predict_is_evaluate(full, evaluation, features)
    per_subject = pd.read_csv(evaluation.out / "metrics_per_subject.csv", dtype={"subject": str})
    subjects = features.subjects[:held_out] if held_out else features.subjects
    counts = {v: {} for v in VARIANTS}
    for h in subjects:
        rows = per_subject[per_subject["subject"] == h].set_index("type")
        counts["evaluate"][h] = {k: [int(rows.loc[k, c]) for c in ("TP", "proposals", "truths")]
                                 for k in ("me", "mae")}
        run = base / f"without-{h}"
        seconds = train(without(store, h, base / f"without-{h}.zarr"), annotations, run, seed, log)
        _timed(timings, f"new_subject/{set_name}/train-without-{h}", seconds)
        mine = truths[truths["subject"] == h]
        for variant, calibrate in (("ensemble", None), ("ensemble-fixed", False)):
            trained = load_trained(run, calibrate=calibrate)
            found = pd.concat([spotted_rows(trained, v) for v in features.videos_of([h])],
                              ignore_index=True)
            counts[variant][h] = counts_of(found, mine, features)
        print(f"{set_name}: held out {h}: " + "; ".join(
            f"{v} {counts[v][h]}" for v in VARIANTS), flush=True)
    rows = int(sum(v.n_rows for v in features.videos.values()))
    return {"set": set_name, "seed": seed, "subjects": subjects,
            "n_subjects": len(features.subjects), "videos": len(features.videos),
            "feature_rows": rows, "predict_equals_evaluate": check, "counts": counts,
            "rules_of_the_ensembles": {h: load_trained(base / f"without-{h}").rules_json()
                                       for h in subjects}}


PAIRS = (("ensemble", "evaluate"), ("ensemble-fixed", "evaluate"),
         ("ensemble", "ensemble-fixed"))  # paired differences reported


def statistics(result: dict, n_boot: int) -> dict:
    """F1 per variant and type with a 95% interval from resampling the held-out subjects, and
    the paired differences of PAIRS (the same resamples for both sides)."""
    subjects = result["subjects"]
    arrays = {}
    for variant in VARIANTS:
        a = np.zeros((len(subjects), 3, 3))
        for j, h in enumerate(subjects):
            for k, kind in enumerate(("me", "mae")):
                a[j, k] = result["counts"][variant][h][kind]
        a[:, 2] = a[:, 0] + a[:, 1]
        arrays[variant] = a
    weights = subject_weights(len(subjects), n_boot)
    boot, point = {}, {}
    for variant, a in arrays.items():
        pooled = np.einsum("bs,stc->btc", weights, a)
        boot[variant] = f1_from(pooled[..., 0], pooled[..., 1], pooled[..., 2])
        point[variant] = f1_from(*np.moveaxis(a.sum(axis=0), -1, 0))
    out = {}
    for variant, a in arrays.items():
        entry = {}
        for k, kind in enumerate(TYPES):
            lo, hi = np.percentile(boot[variant][:, k], [2.5, 97.5])
            entry[kind] = {"f1": float(point[variant][k]), "ci95": [float(lo), float(hi)],
                           "TP_N_M": a[:, k].sum(axis=0).astype(int).tolist()}
            for one, other in PAIRS:
                if one == variant:
                    diff = boot[one][:, k] - boot[other][:, k]
                    dlo, dhi = np.percentile(diff, [2.5, 97.5])
                    entry[kind][f"minus_{other}"] = {
                        "f1": float(point[one][k] - point[other][k]),
                        "ci95": [float(dlo), float(dhi)]}
        out[variant] = entry
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cache", type=Path, default=default_cache())
    parser.add_argument("--sets", nargs="+", choices=list(SETS), default=["casme2"])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--held-out", type=int, default=None,
                        help="hold out only the first N subjects (default: every one)")
    parser.add_argument("--bootstrap", type=int, default=2000)
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args(argv)
    args.cache.mkdir(parents=True, exist_ok=True)
    log = args.cache / "new_subject.log"
    timings = Timings(args.cache / "timings.json")
    for set_name in args.sets:
        started = time.perf_counter()
        result = measure(args.cache, set_name, args.seed, args.held_out, timings, log)
        result["statistics"] = statistics(result, args.bootstrap)
        result["seconds"] = {k: v for k, v in timings.values.items()
                             if k.startswith(f"new_subject/{set_name}/")}
        result["seconds_total_this_call"] = round(time.perf_counter() - started, 1)
        path = args.out / f"new_subject_{set_name}.json"
        path.write_text(json.dumps({"benchmark": "new_subject", "environment": environment(),
                                    "train_flags": list(TRAIN), **result}, indent=1))
        for variant, entry in result["statistics"].items():
            print(f"{set_name} {variant:15s} " + "  ".join(
                f"{k} F1 {entry[k]['f1']:.3f} [{entry[k]['ci95'][0]:.3f}, "
                f"{entry[k]['ci95'][1]:.3f}]" for k in TYPES))
        print("->", path)


if __name__ == "__main__":
    main()
