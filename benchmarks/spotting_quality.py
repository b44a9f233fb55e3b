"""Spotting quality on synthetic benchmark sets, end to end through the `mespot` command line.

    python benchmarks/spotting_quality.py                       # every set, variant and seed
    python benchmarks/spotting_quality.py --sets casme2 --variants baseline --seeds 1
    python benchmarks/spotting_quality.py --report-only         # statistics of what is cached

What it measures: the whole pipeline (synth -> extract -> train -> evaluate) on benchmark sets
whose seeds lie in `mespot.synth.seeds.BENCHMARK_SEEDS` (no training or pretraining set uses
them; benchmarks/quality/<set>.yaml): a CAS(ME)^2-layout set at 30 fps and a SAMM-LV-layout set
at 200 fps (extracted 1 frame in 8). Every variant is trained with leave-one-subject-out folds
and `--inner-val 2`, over several training seeds, and evaluated with the honest selections
`last` and `inner-val`; `oracle` (epoch chosen on the test subject) is computed beside them and
flagged as test-set selection. Each variant is one change against the baseline (today's AUW-GCN
reproduction with the defaults of `mespot train` / `mespot evaluate`), so the table is an
ablation: what each change is worth alone, then the combination.

Statistics: F1 of ME, MaE and overall from MEGC counts pooled over all subjects (as
`mespot evaluate`), averaged over the training seeds. The 95% interval resamples subjects
(bootstrap over subjects of the pooled counts: the same resampled subjects for every seed and
variant, so a variant's gain over the baseline is a paired difference with its own interval).

Everything is resumable and cached outside the repository (--cache; default
$MESPOT_QUALITY_CACHE, else ~/.cache/mespot-quality): rendered sets, stores (each extracted
once), run folders (`mespot train` resumes) and each (variant, seed)'s per-subject counts.
Results: benchmarks/results/ spotting_quality.json (machine, versions, parameters, every number)
and spotting_quality.md (the table docs/quality.md shows).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
SETS = {  # set name -> (generator config, workbook the generator writes)
    "casme2": (HERE / "quality" / "casme2.yaml", "CAS(ME)^2code_final.xlsx"),
    "samm": (HERE / "quality" / "samm.yaml", "SAMM_LongVideos_V1_Release.xlsx"),
    # the development set: options and their values are chosen on it, never on the two above
    "dev": (HERE / "quality" / "dev.yaml", "CAS(ME)^2code_final.xlsx"),
}
EXTRACT_FLAGS = ("--backend", "torch", "--resize", "128")  # as `make demo`
STORES = {"plain": (), "aligned": ("--align",)}
# an inner model per fold for `inner-val` (the main model does not change); weights every 5 epochs,
# the epochs `inner-val` and `oracle` choose among (every epoch would cost 5x the evaluation time)
TRAIN_FLAGS = ("--inner-val", "2", "--save-every", "5")
# what a row trains with where it names no such flag: the paper's AUW-GCN (random start, 100
# epochs), as the baseline does; `mespot train`'s defaults moved to the measured recipe
# (pretrained, 50 epochs, inner models: the row pretrained-e50-calibrated-flip) after this benchmark
PAPER_TRAIN = {"--init": "scratch", "--epochs": "100"}
INIT_PRETRAINED = ("--init", "pretrained")  # the shipped synthetic pretraining
# `mespot evaluate`'s options and the suffix each adds to the evaluation folder's name; a variant
# that does not name one turns it off (both are on by default since this benchmark measured them)
EVALUATE_OPTIONS = {"--calibrate": "calibrated", "--flip": "flip"}
# the default recipe built up one step at a time: each row against the row it adds to
STEPS = (
    ("pretrained", "baseline"),
    ("pretrained-flip", "pretrained"),
    ("pretrained-calibrated-flip", "pretrained-flip"),
    ("pretrained-e50", "pretrained"),
    ("pretrained-e50-flip", "pretrained-flip"),
    ("pretrained-e50-calibrated-flip", "pretrained-calibrated-flip"),
    ("pretrained-e50-calibrated-flip", "pretrained-e50-flip"),
)
SELECTIONS = ("last", "inner-val", "oracle")
HONEST = ("last", "inner-val")
TYPES = ("me", "mae", "overall")


@dataclass(frozen=True)
class Variant:
    """One row of the ablation: a store and the flags added to `mespot train` / `evaluate`."""

    name: str
    what: str
    store: str = "plain"
    train: tuple[str, ...] = ()
    evaluate: tuple[str, ...] = ()

    def train_key(self, set_name: str) -> str:
        """Run folders are shared by variants that train the same way (e.g. evaluation-only
        ones)."""
        text = json.dumps([set_name, self.store, list(self.train)])
        return hashlib.sha256(text.encode()).hexdigest()[:10]


VARIANTS = {
    v.name: v
    for v in (
        Variant(
            "baseline", "AUW-GCN reproduction: `mespot train --init scratch --epochs 100` (the "
            "defaults before this benchmark), `mespot evaluate --no-calibrate --no-flip`"
        ),
        Variant(
            "pretrained",
            "folds start from the shipped synthetic pretraining (`--init pretrained`)",
            train=INIT_PRETRAINED,
        ),
        Variant(
            "pretrained-calibrated",
            "`pretrained`, then `calibrated` (the same runs, evaluated with `--calibrate`)",
            train=INIT_PRETRAINED,
            evaluate=("--calibrate",),
        ),
        Variant(
            "pretrained-calibrated-flip",
            "`pretrained-calibrated` with the test-time flip (`evaluate --calibrate --flip`)",
            train=INIT_PRETRAINED,
            evaluate=("--calibrate", "--flip"),
        ),
        Variant(
            "pretrained-flip",
            "`pretrained` with the test-time flip (`evaluate --flip`)",
            train=INIT_PRETRAINED,
            evaluate=("--flip",),
        ),
        Variant(
            "pretrained-e50",
            "as `pretrained`, 50 epochs per fold",
            train=(*INIT_PRETRAINED, "--epochs", "50"),
        ),
        Variant(
            "pretrained-e50-flip",
            "`pretrained-e50` with the test-time flip (`evaluate --flip`)",
            train=(*INIT_PRETRAINED, "--epochs", "50"),
            evaluate=("--flip",),
        ),
        Variant(
            "pretrained-e50-calibrated-flip",
            "`pretrained-e50` evaluated with `--calibrate --flip` (main and inner models 50 "
            "epochs each: the training time of one 100-epoch model): `mespot train` and "
            "`mespot evaluate` with their defaults since this benchmark",
            train=(*INIT_PRETRAINED, "--epochs", "50"),
            evaluate=("--calibrate", "--flip"),
        ),
        Variant(
            "aligned",
            "store extracted with `--align` (crops registered to the first frame)",
            store="aligned",
        ),
        Variant(
            "calibrated",
            "proposal rules per fold from its inner-validation subjects (`evaluate --calibrate`)",
            evaluate=("--calibrate",),
        ),
        Variant("flip", "test-time flip (`evaluate --flip`)", evaluate=("--flip",)),
        Variant(
            "me-weighted",
            "macro losses weighted 0.3 instead of 0.5 (`--macro-ratio 0.3`): the rare ME class "
            "counts more",
            train=("--macro-ratio", "0.3"),
        ),
        Variant(
            "mirror",
            "mirror augmentation in training (`--augment mirror`)",
            train=("--augment", "mirror"),
        ),
    )
}


def default_cache() -> Path:
    """Where rendered sets, stores, runs and results are cached: $MESPOT_QUALITY_CACHE, else
    ~/.cache/mespot-quality."""
    return Path(os.environ.get("MESPOT_QUALITY_CACHE") or Path.home() / ".cache" / "mespot-quality")


def unavailable(names: list[str]) -> str | None:
    """Why some of the variants `names` cannot run here (the shipped pretrained weights they
    start from do not exist yet), before anything is trained; None when all can."""
    from spotting.initial_weights import MAKE_PRETRAINED, PRETRAINED

    need = [n for n in names if "pretrained" in VARIANTS[n].train]
    if not need or PRETRAINED.is_file():
        return None
    others = " ".join(n for n in names if n not in need)
    return (f"variants {', '.join(need)} need the shipped pretrained weights ({PRETRAINED}), "
            f"which do not exist yet: make them with {MAKE_PRETRAINED}, and copy them there; "
            f"or leave those variants out: --variants {others}")


def mespot(*args: str, log: Path) -> float:
    """Run `python -m mespot ARGS` (output appended to `log`); seconds taken; exit on failure."""
    started = time.perf_counter()
    with open(log, "a") as out:
        out.write(f"\n$ mespot {' '.join(args)}\n")
        out.flush()
        code = subprocess.call(
            [sys.executable, "-m", "mespot", *args],
            stdout=out,
            stderr=out,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    if code != 0:
        sys.exit(f"mespot {' '.join(args)} failed with exit code {code}; see {log}")
    return time.perf_counter() - started


@dataclass
class Timings:
    path: Path
    values: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.path.is_file():
            self.values = json.loads(self.path.read_text())

    def add(self, key: str, seconds: float) -> None:
        self.values[key] = round(seconds, 1)
        self.path.write_text(json.dumps(self.values, indent=1))


def prepare_set(
    cache: Path, set_name: str, store: str, timings: Timings, log: Path
) -> tuple[Path, Path]:
    """(store path, annotations path) of a set, rendering and extracting what is missing."""
    config, workbook = SETS[set_name]
    data = cache / "sets" / set_name / "data"
    if not (data / "synth.json").is_file():
        timings.add(
            f"{set_name}/render",
            mespot(
                "synth",
                "--config",
                str(config),
                "--out",
                str(data),
                "--overwrite",
                "--workers",
                "2",
                log=log,
            ),
        )
    out = cache / "sets" / set_name / f"{store}.zarr"
    done = out / ".complete"
    if not done.is_file():
        seconds = mespot(
            "extract", str(data), "--out", str(out), *EXTRACT_FLAGS, *STORES[store], "-q", log=log
        )
        timings.add(f"{set_name}/extract-{store}", seconds)
        done.write_text("")
    return out, data / workbook


def per_subject_counts(folder: Path) -> dict:
    """{subject: {type: [TP, proposals, truths]}} from an evaluation's metrics_per_subject.csv."""
    table = pd.read_csv(folder / "metrics_per_subject.csv", dtype={"subject": str})
    out: dict = {}
    for row in table.itertuples():
        if row.type in ("me", "mae"):
            out.setdefault(row.subject, {})[row.type] = [
                int(row.TP),
                int(row.proposals),
                int(row.truths),
            ]
    return out


def run_variant(
    cache: Path,
    set_name: str,
    variant: Variant,
    seed: int,
    workers: int,
    timings: Timings,
    log: Path,
) -> dict:
    """Per-subject counts of each selection for one (set, variant, seed), trained and evaluated
    as needed (cached in CACHE/results)."""
    result_path = cache / "results" / set_name / variant.name / f"seed{seed}.json"
    if result_path.is_file():
        return json.loads(result_path.read_text())
    store, annotations = prepare_set(cache, set_name, variant.store, timings, log)
    run = cache / "runs" / set_name / variant.train_key(set_name) / f"seed{seed}"
    key = f"{set_name}/train-{variant.train_key(set_name)}-seed{seed}"
    seconds = mespot(
        "train",
        str(store),
        "-a",
        str(annotations),
        "--out",
        str(run),
        "--seed",
        str(seed),
        *TRAIN_FLAGS,
        *(part for flag, value in PAPER_TRAIN.items() if flag not in variant.train
          for part in (flag, value)),
        *variant.train,
        "--workers",
        str(workers),
        "--no-tensorboard",
        "-q",
        log=log,
    )
    if key not in timings.values:
        timings.add(key, seconds)
    started = time.perf_counter()
    selections = [flag for selection in SELECTIONS for flag in ("--select", selection)]
    options = EVALUATE_OPTIONS.items()
    mespot("evaluate", str(run), *selections, "--no-report", *variant.evaluate,
           *(f"--no-{flag[2:]}" for flag, _ in options if flag not in variant.evaluate), log=log)
    suffix = "".join(f"+{name}" for flag, name in options if flag in variant.evaluate)
    counts = {s: per_subject_counts(run / "evaluation" / (s + suffix)) for s in SELECTIONS}
    result = {
        "set": set_name,
        "variant": variant.name,
        "seed": seed,
        "run": str(run),
        "counts": counts,
        "evaluate_seconds": round(time.perf_counter() - started, 1),
    }
    result_path.parent.mkdir(parents=True, exist_ok=True)
    result_path.write_text(json.dumps(result, indent=1))
    return result


# --- statistics -------------------------------------------------------------------------------


def f1_from(tp: np.ndarray, n: np.ndarray, m: np.ndarray) -> np.ndarray:
    """MEGC F1 = 2 TP / (N + M) (the same as 2PR / (P + R)); 0 where nothing was proposed or
    true."""
    total = n + m
    return np.where(total > 0, 2 * tp / np.maximum(total, 1), 0.0)


def count_array(results: list[dict], selection: str, subjects: list[str]) -> np.ndarray:
    """(seeds, subjects, 3 types, 3 counts) float64: TP, N, M per ME, MaE and overall (pooled)."""
    out = np.zeros((len(results), len(subjects), 3, 3))
    for i, result in enumerate(results):
        for j, subject in enumerate(subjects):
            kinds = result["counts"][selection].get(subject, {})
            for k, kind in enumerate(("me", "mae")):
                out[i, j, k] = kinds.get(kind, [0, 0, 0])
    out[:, :, 2] = out[:, :, 0] + out[:, :, 1]
    return out


def seed_mean_f1(counts: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """counts (seeds, subjects, 3, 3), weights (B, subjects) resample counts -> (B, 3) F1 averaged
    over seeds, types ME, MaE, overall."""
    pooled = np.einsum("bs,ystc->bytc", weights, counts)  # (B, seeds, 3 types, 3 counts)
    return f1_from(pooled[..., 0], pooled[..., 1], pooled[..., 2]).mean(axis=1)


def subject_weights(n_subjects: int, n_boot: int, seed: int = 0) -> np.ndarray:
    """(n_boot, subjects) how often each subject is drawn in each bootstrap resample."""
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, n_subjects, size=(n_boot, n_subjects))
    weights = np.zeros((n_boot, n_subjects))
    np.add.at(weights, (np.arange(n_boot)[:, None], draws), 1.0)
    return weights


def paired_gain(results: dict, name: str, against: str, selection: str, subjects: list[str],
                weights: np.ndarray) -> dict:
    """F1 of `name` minus F1 of `against` per type, with a 95% interval from resampling the
    subjects, the same draws for both (paired)."""
    ones = np.ones((1, len(subjects)))
    a, b = (count_array(results[v], selection, subjects) for v in (name, against))
    point = seed_mean_f1(a, ones)[0] - seed_mean_f1(b, ones)[0]
    diff = seed_mean_f1(a, weights) - seed_mean_f1(b, weights)
    out = {}
    for k, kind in enumerate(TYPES):
        lo, hi = np.percentile(diff[:, k], [2.5, 97.5])
        out[kind] = {"f1": float(point[k]), "ci95": [float(lo), float(hi)],
                     "excludes_zero": bool(lo > 0 or hi < 0)}
    return out


def statistics(results: dict, subjects: list[str], n_boot: int, seed: int = 0) -> dict:
    """Point estimates, subject-bootstrap intervals and paired gains over the baseline.

    `results`: variant -> list of per-seed results (same seeds for every variant)."""
    weights = subject_weights(len(subjects), n_boot, seed)
    ones = np.ones((1, len(subjects)))
    out: dict = {}
    for selection in SELECTIONS:
        for name, per_seed in results.items():
            counts = count_array(per_seed, selection, subjects)
            point = seed_mean_f1(counts, ones)[0]
            boot = seed_mean_f1(counts, weights)
            per_seed_f1 = f1_from(*np.moveaxis(counts.sum(axis=1), -1, 0))  # (seeds, 3)
            gains = (paired_gain(results, name, "baseline", selection, subjects, weights)
                     if "baseline" in results and name != "baseline" else {})
            entry = {}
            for k, kind in enumerate(TYPES):
                lo, hi = np.percentile(boot[:, k], [2.5, 97.5])
                summed = counts[:, :, k].sum(axis=1)  # (seeds, 3)
                entry[kind] = {
                    "f1": float(point[k]),
                    "ci95": [float(lo), float(hi)],
                    "f1_per_seed": [float(v) for v in per_seed_f1[:, k]],
                    "TP_N_M_per_seed": summed.astype(int).tolist(),
                }
                if gains:
                    entry[kind]["gain"] = gains[kind]
            out.setdefault(name, {})[selection] = entry
    return out


def step_gains(results: dict, subjects: list[str], n_boot: int, seed: int = 0) -> list[dict]:
    """What each step of STEPS adds to the row before it (paired, selections HONEST), for the
    steps whose two rows are both in `results`."""
    weights = subject_weights(len(subjects), n_boot, seed)
    return [{"variant": name, "over": against, "selection": selection,
             "gain": paired_gain(results, name, against, selection, subjects, weights)}
            for name, against in STEPS if name in results and against in results
            for selection in HONEST]


def gain_text(gain: dict | None) -> str:
    """"+0.041 [-0.025, +0.116]", with " *" when the interval excludes zero; "" for None."""
    if not gain:
        return ""
    return (f"{gain['f1']:+.3f} [{gain['ci95'][0]:+.3f}, {gain['ci95'][1]:+.3f}]"
            + (" *" if gain["excludes_zero"] else ""))


def markdown(stats_by_set: dict, variants: dict[str, Variant],
             steps_by_set: dict | None = None) -> str:
    """The ablation table(s): F1 [95% interval] per honest selection, oracle beside, flagged;
    then, per set, what each step of STEPS adds to the row before it."""
    lines = []
    for set_name, stats in stats_by_set.items():
        lines += [
            f"### {set_name} benchmark set",
            "",
            "| variant | selection | ME F1 | MaE F1 | overall F1 | overall gain vs baseline |",
            "|---|---|---|---|---|---|",
        ]
        for name, by_selection in stats.items():
            for selection in SELECTIONS:
                entry = by_selection[selection]
                cells = [
                    f"{entry[k]['f1']:.3f} [{entry[k]['ci95'][0]:.3f}, {entry[k]['ci95'][1]:.3f}]"
                    for k in TYPES
                ]
                label = "oracle (TEST-SET selection)" if selection == "oracle" else selection
                lines.append(
                    f"| {name if selection == 'last' else ''} | {label} | "
                    + " | ".join(cells)
                    + f" | {gain_text(entry['overall'].get('gain'))} |"
                )
        lines.append("")
        steps = (steps_by_set or {}).get(set_name)
        if steps:
            lines += [f"Each step over the row it adds to ({set_name}; paired: the same subjects "
                      "resampled for both):", "",
                      "| step | over | selection | ME gain | MaE gain | overall gain |",
                      "|---|---|---|---|---|---|"]
            lines += [f"| {step['variant']} | {step['over']} | {step['selection']} | "
                      + " | ".join(gain_text(step["gain"][k]) for k in TYPES) + " |"
                      for step in steps]
            lines.append("")
    lines.append(
        "F1 averaged over the training seeds; [95% interval] from resampling subjects; "
        "* the gain's interval excludes zero. oracle chooses each fold's epoch on its own "
        "test subject: optimistic, shown only beside the honest selections."
    )
    lines += ["", "Variants:"] + [f"- `{v.name}`: {v.what}" for v in variants.values()]
    return "\n".join(lines) + "\n"


def environment() -> dict:
    """Machine and versions, and which code ran (the benchmark runs from a snapshot of a commit)."""
    import mespot
    from mespot.environment import describe

    code = Path(mespot.__file__).resolve().parent.parent
    try:
        commit = subprocess.run(
            ["git", "-C", str(code), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = None
    return {**describe(), "code": {"path": str(code), "git_commit": commit}}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--cache",
        type=Path,
        default=default_cache(),
        help="cache folder (default: $MESPOT_QUALITY_CACHE, else ~/.cache/mespot-quality)",
    )
    parser.add_argument(
        "--sets",
        nargs="+",
        choices=list(SETS),
        default=["casme2", "samm"],
        help="benchmark sets (default), or dev: the development set",
    )
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    parser.add_argument("--workers", type=int, default=2, help="folds trained side by side")
    parser.add_argument("--bootstrap", type=int, default=2000, help="subject resamples")
    parser.add_argument(
        "--report-only", action="store_true", help="statistics of the cached results only"
    )
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args(argv)
    args.cache.mkdir(parents=True, exist_ok=True)
    log = args.cache / "spotting_quality.log"
    timings = Timings(args.cache / "timings.json")
    if args.report_only:
        return report(
            args.cache, args.seeds, args.bootstrap, args.workers, args.out, timings, args.sets
        )
    missing = unavailable(args.variants)
    if missing:
        sys.exit(missing)
    for set_name in args.sets:
        for name in args.variants:
            for seed in args.seeds:
                print(f"{set_name} / {name} / seed {seed} ...", flush=True)
                run_variant(args.cache, set_name, VARIANTS[name], seed, args.workers, timings, log)
    report(args.cache, args.seeds, args.bootstrap, args.workers, args.out, timings, args.sets)


def cached_results(cache: Path, set_name: str, seeds: list[int]) -> dict:
    """variant -> per-seed results, for the variants with a cached result for every seed."""
    results = {}
    for name in VARIANTS:
        paths = [cache / "results" / set_name / name / f"seed{seed}.json" for seed in seeds]
        if all(p.is_file() for p in paths):
            results[name] = [json.loads(p.read_text()) for p in paths]
    return results


def report(
    cache: Path,
    seeds: list[int],
    n_boot: int,
    workers: int,
    out: Path,
    timings: Timings,
    sets: list[str],
) -> None:
    """Statistics of every cached (set, variant) of `sets` with all `seeds`: JSON + markdown in
    `out`."""
    stats_by_set, steps_by_set, runs_by_set = {}, {}, {}
    for set_name in sets:
        results = cached_results(cache, set_name, seeds)
        if not results:
            continue
        subjects = sorted(
            {
                s
                for per_seed in results.values()
                for r in per_seed
                for sel in r["counts"].values()
                for s in sel
            }
        )
        stats_by_set[set_name] = statistics(results, subjects, n_boot)
        steps_by_set[set_name] = step_gains(results, subjects, n_boot)
        runs_by_set[set_name] = {
            "subjects": subjects,
            "variants": list(results),
            "evaluate_seconds": {
                v: [r["evaluate_seconds"] for r in rs] for v, rs in results.items()
            },
        }
    if not stats_by_set:
        sys.exit("nothing to report yet")
    import yaml

    out.mkdir(parents=True, exist_ok=True)
    table = markdown(stats_by_set, VARIANTS, steps_by_set)
    (out / "spotting_quality.md").write_text(table)
    (out / "spotting_quality.json").write_text(
        json.dumps(
            {
                "benchmark": "spotting_quality",
                "environment": environment(),
                "parameters": {
                    "sets": {s: yaml.safe_load(SETS[s][0].read_text()) for s in stats_by_set},
                    "extract_flags": list(EXTRACT_FLAGS),
                    "stores": {k: list(v) for k, v in STORES.items()},
                    "train_flags": list(TRAIN_FLAGS),
                    "train_flags_unless_a_row_names_them": PAPER_TRAIN,
                    "selections": list(SELECTIONS),
                    "honest_selections": list(HONEST),
                    "seeds": seeds,
                    "bootstrap": n_boot,
                    "workers": workers,
                    "variants": {name: asdict(v) for name, v in VARIANTS.items()},
                },
                "sets": runs_by_set,
                "results": stats_by_set,
                "steps": steps_by_set,
                "seconds": timings.values,
            },
            indent=1,
        )
    )
    print(table)
    print("->", out / "spotting_quality.json")


if __name__ == "__main__":
    main()
