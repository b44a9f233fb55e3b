"""What pooling datasets is worth: each synthetic set alone, pooled, and cross-dataset both ways.

    python benchmarks/pooling.py                       # casme + samm, the sizes below
    python benchmarks/pooling.py --sets casme samm smic --seeds 1 2 --epochs 20

Tiny synthetic sets in each layout (CAS(ME)^2 at 30 fps; SAMM-LV at 200 fps extracted 1 frame in
8; SMIC-E-long HS at 100 fps extracted 1 in 4: all near 25-30 fps), rendered with benchmark seeds
(mespot.synth.seeds.BENCHMARK_SEEDS) and extracted as the quality benchmark does. For each
training seed, with the same training settings everywhere:

- `alone`: LOSO on one set (`mespot train STORE -a WORKBOOK`);
- `pooled`: LOSO over the union of the sets' subjects (`mespot train casme=A samm=B ...`), each
  set's subjects scored by the folds that left them out (evaluate's per-dataset table);
- `cross`: one model trained on every other set, tested on this one (`--protocol cross-dataset
  --test-on NAME`).

Counts are MEGC, per test set, with `mespot evaluate --no-calibrate` (last epoch, AUW-GCN's
fixed proposal rules, flip) for every variant: training keeps its defaults, under which the
pooled and cross-dataset runs (enough subjects) also train inner models and the small single
sets do not, so calibrated rules would differ between the variants for that reason alone. F1 per
seed and the mean. The sets are small (few subjects, one video each, short training): this
measures the direction of an effect on this machine's budget, not its size on real data. Results:
benchmarks/results/pooling.json (machine, versions, sizes, timings, every count).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import pandas as pd

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from spotting_quality import environment  # noqa: E402

# set name -> generator settings (seeds in BENCHMARK_SEEDS, disjoint from the quality sets')
SETS = {
    "casme": dict(layout="casme2", fps=30.0, seed=9011),
    "samm": dict(layout="samm", fps=200.0, seed=9012),
    "smic": dict(layout="smic", fps=100.0, seed=9013, micro_fraction=1.0),
}
COMMON = dict(videos_per_subject=1, expressions_per_minute=7.0, micro_fraction=0.3)
EXTRACT = dict(flow_backend="torch", resize=128)  # as the quality benchmark


def render_and_extract(cache: Path, name: str, subjects: int, seconds: float,
                       timings: dict) -> tuple[Path, Path]:
    """(store, workbook) of one set, made once in `cache`."""
    from flowcore import ExtractParams, extract_source
    from flowcore.faces import FaceParams
    from flowcore.sources import open_source
    from mespot.synth import DEFAULT, generate_dataset

    data, store = cache / name / "data", cache / name / "store.zarr"
    settings = {**COMMON, **SETS[name], "subjects": subjects, "seconds": seconds}
    if not (data / "synth.json").is_file():
        started = time.perf_counter()
        generate_dataset(DEFAULT.replace(**settings), data, overwrite=True, workers=2,
                         preview=False)
        timings[f"{name}/render"] = time.perf_counter() - started
    if not (store / ".complete").is_file():
        started = time.perf_counter()
        params = ExtractParams(flow_backend=EXTRACT["flow_backend"],
                               faces=FaceParams(resize=EXTRACT["resize"]))
        report = extract_source(data, store, params, workers=2)
        if report.failed:
            raise SystemExit(f"{name}: extraction failed: {report.summary()}")
        (store / ".complete").write_text("")
        timings[f"{name}/extract"] = time.perf_counter() - started
    return store, open_source(data).workbook


def counts(evaluation, dataset: str | None = None) -> dict:
    """{type: [TP, proposals, truths, F1]} of an evaluation (of one dataset of a pooled run)."""
    table = evaluation.metrics if dataset is None else evaluation.per_dataset[
        evaluation.per_dataset["dataset"] == dataset]
    return {r.type: [int(r.TP), int(r.proposals), int(r.truths), round(float(r.f1), 4)]
            for r in table.itertuples()}


def training_seconds(run_folder: Path) -> float | None:
    """The wall seconds of the run's first training (train.log's first `done:` line; a rerun
    resumes a finished run in seconds)."""
    import re

    for line in (run_folder / "train.log").read_text().splitlines():
        found = re.search(r"done: .* ([\d.]+) s wall", line)
        if found:
            return float(found.group(1))
    return None


def run(cache: Path, sets: dict, seed: int, epochs: int, timings: dict) -> dict:
    """Every variant of one training seed: {variant: {test set: counts}}."""
    from mespot import api

    options = dict(epochs=epochs, seed=seed, init="scratch", tensorboard=False, workers=1)
    runs = cache / "runs" / f"seed{seed}-e{epochs}"
    out: dict = {"alone": {}, "pooled": {}, "cross": {}}

    def trained(name: str, stores, notes, **extra):
        started = time.perf_counter()
        api.train(stores, notes, runs / name, **options, **extra)
        # the fixed proposal rules (+ flip) for every variant: the pooled and cross runs have
        # enough subjects for inner models, the single small sets not, so calibrated rules
        # would differ between the variants for that reason alone
        evaluation = api.evaluate(runs / name, calibrate=False)
        timings[f"seed{seed}/{name}"] = time.perf_counter() - started
        timings[f"seed{seed}/{name}/first training"] = training_seconds(runs / name)
        return evaluation

    for name, (store, notes) in sets.items():
        out["alone"][name] = counts(trained(f"alone-{name}", str(store), str(notes)))
    named = [f"{name}={store}" for name, (store, _) in sets.items()]
    notes = [str(n) for _, n in sets.values()]
    pooled = trained("pooled", named, notes)
    for name in sets:
        out["pooled"][name] = counts(pooled, name)
        cross = trained(f"cross-{name}", named, notes, protocol="cross-dataset",
                        test_datasets=[name])
        out["cross"][name] = counts(cross, name)
    return out


def table(results: dict, sets: list[str]) -> str:
    """Markdown: per test set, overall F1 (mean over seeds) of alone / pooled / cross, and the
    ME and MaE F1 beside."""
    lines = ["| test set | alone (LOSO) | pooled (LOSO over all) | cross-dataset (trained on "
             "the others) |", "|---|---|---|---|"]
    for name in sets:
        cells = []
        for variant in ("alone", "pooled", "cross"):
            f1 = {t: sum(r[variant][name][t][3] for r in results.values()) / len(results)
                  for t in ("overall", "me", "mae")}
            cells.append(f"{f1['overall']:.3f} (ME {f1['me']:.2f}, MaE {f1['mae']:.2f})")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sets", nargs="+", default=["casme", "samm"], choices=list(SETS))
    parser.add_argument("--subjects", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1])
    parser.add_argument("--cache", type=Path, default=Path("/tmp/mespot-pooling"))
    parser.add_argument("--out", type=Path, default=HERE / "results" / "pooling.json")
    args = parser.parse_args(argv)
    timings: dict = {}
    sets = {name: render_and_extract(args.cache, name, args.subjects, args.seconds, timings)
            for name in args.sets}
    results = {seed: run(args.cache, sets, seed, args.epochs, timings) for seed in args.seeds}
    markdown = table(results, args.sets)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "benchmark": "pooling", "environment": environment(),
        "sets": {n: {**COMMON, **SETS[n], "subjects": args.subjects, "seconds": args.seconds}
                 for n in args.sets},
        "extract": EXTRACT, "train": {"epochs": args.epochs, "init": "scratch",
                                      "seeds": args.seeds,
                                      "evaluate": "last epoch, fixed rules, flip"},
        "counts": "per type [TP, proposals, truths, F1], MEGC", "results": results,
        "timings_s": {k: round(v, 1) for k, v in timings.items()},
        "timings_note": "seconds of this call (training resumed from the cache is quick) and "
                        "each run's first training (its train.log), on 2 shared cores",
        "table": markdown,
    }, indent=1))
    print(markdown)
    print(pd.Series(timings).round(1).to_string())


if __name__ == "__main__":
    main()
