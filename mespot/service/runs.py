"""Runs side by side: every run folder under the store root with its parameters (config.json,
flattened to `train.epochs`, `windows.length`, ...) and its metrics (each finished evaluation's
metrics.json), the loss curves of its folds (read from their TensorBoard files, which the
training writes as it goes: curves of a run in training grow while one watches), and the
difference of two runs' parameters. The JSON twins of the page /runs.
"""

from __future__ import annotations

import json
from pathlib import Path

from flowcore.locations import location

from fastapi import HTTPException

from mespot.service.roots import PathRefused, Roots
from mespot.service.train_progress import LOSSES

MAX_DEPTH = 4  # run folders are looked for this deep under the store root
MAX_RUNS = 500
SKIP_SUFFIXES = (".zarr",)  # feature stores hold no runs
CURVES = ("train/loss", "test/loss")
METRIC_KEYS = ("precision", "recall", "f1", "TP", "FP", "FN")


def find(root: Path) -> list[Path]:
    """Run folders (config.json beside folds/) under `root`, newest first."""
    found, frontier = [], [root]
    for _ in range(MAX_DEPTH):
        below = []
        for folder in frontier:
            try:
                children = [c for c in folder.iterdir() if c.is_dir() and not c.is_symlink()]
            except OSError:
                continue
            for child in children:
                if (child / "config.json").is_file() and (child / "folds").is_dir():
                    found.append(child)
                elif not child.name.endswith(SKIP_SUFFIXES) and child.name != "folds":
                    below.append(child)
        frontier = below
    found.sort(key=lambda p: (p / "config.json").stat().st_mtime, reverse=True)
    return found[:MAX_RUNS]


def flatten(values: dict, prefix: str = "") -> dict:
    """{"train": {"epochs": 2}} -> {"train.epochs": 2} (lists stay values)."""
    out = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


def params(run: Path, roots: Roots) -> dict:
    """The run's flattened config.json, paths under a root shown relative to it."""
    config = flatten(json.loads((run / "config.json").read_text()))
    for key in ("store", "annotations"):
        if isinstance(config.get(key), str):
            config[key] = _shown(roots, location(config[key]))
    return config


def metrics(run: Path) -> dict:
    """selection -> type (me, mae, overall) -> precision, recall, F1, TP, FP, FN."""
    out = {}
    for path in sorted((run / "evaluation").glob("*/metrics.json")):
        try:
            values = json.loads(path.read_text()).get("metrics", {})
        except (OSError, ValueError):
            continue
        out[path.parent.name] = {t: {k: m.get(k) for k in METRIC_KEYS}
                                 for t, m in values.items() if isinstance(m, dict)}
    return out


def summary(run: Path, roots: Roots, training: bool = False) -> dict:
    folds = [p for p in sorted((run / "folds").glob("*/fold.json"))]
    complete = sum(1 for p in folds if _status(p) == "complete")
    return {"run": roots.shown(run), "params": params(run, roots), "metrics": metrics(run),
            "folds": len(folds), "folds_complete": complete, "training": training,
            "modified": (run / "config.json").stat().st_mtime}


def losses(run: Path) -> dict:
    """fold -> curve name -> [[epoch, value], ...] from the folds' TensorBoard files."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = {}
    for tb in sorted((run / "folds").glob("*/tb")):
        events = EventAccumulator(str(tb), size_guidance={"scalars": 0})
        events.Reload()
        tags = set(events.Tags().get("scalars", []))
        out[tb.parent.name] = {name: [[e.step, e.value] for e in events.Scalars(name)]
                               for name in CURVES if name in tags}
    return out


def live_losses(path: Path) -> dict:
    """fold -> {"train/loss": [[epoch, loss], ...]} from a train job's losses.jsonl (written as
    each epoch ends; a fold's inner validation model is a curve of its own)."""
    out: dict = {}
    if not path.is_file():
        return out
    for line in path.read_text().splitlines():
        try:
            point = json.loads(line)
        except ValueError:
            continue  # a line being written
        curve = out.setdefault(point["fold"], {}).setdefault("train/loss", [])
        curve[:] = [p for p in curve if p[0] < point["epoch"]] + [[point["epoch"], point["loss"]]]
    return out


def curves(run: Path, live: Path | None) -> dict:
    """The run's loss curves: a train job's live record when there is one (test/loss added from
    TensorBoard), else the TensorBoard files alone."""
    written = losses(run)
    if live is None or not live.is_file():
        return written
    out = live_losses(live)
    for fold, named in written.items():
        if "test/loss" in named and fold in out:
            out[fold]["test/loss"] = named["test/loss"]
    return out


def diff(a: dict, b: dict) -> list[dict]:
    """The parameters whose values differ (or that one run lacks), sorted by name."""
    return [{"name": k, "a": a.get(k), "b": b.get(k)} for k in sorted(set(a) | set(b))
            if a.get(k) != b.get(k)]


def _status(meta: Path) -> str:
    try:
        return json.loads(meta.read_text()).get("status", "")
    except (OSError, ValueError):
        return ""


def _shown(roots: Roots, path: Path) -> str:
    for root in (roots.store, roots.data):
        try:
            return path.relative_to(root).as_posix()
        except ValueError:
            continue
    return str(path)


def run_path(roots: Roots, text: str) -> Path:
    """A run folder under the store root; 404 when it is none."""
    path = roots.store_path(text)
    if not (path / "config.json").is_file():
        raise PathRefused(404, f"{text}: no run folder (no config.json) under the store root")
    return path


def add_routes(app, store, roots: Roots, config, guarded) -> None:
    def training_now() -> set[str]:
        return {j.makes for j in store.running() if j.kind == "train" and j.makes}

    def live_file(run: Path) -> Path | None:
        job = store.maker_of(run) or store.last_maker(run)
        return None if job is None else config.job_folder(job) / LOSSES

    @app.get("/api/runs", dependencies=guarded, tags=["runs"])
    def list_runs() -> dict:
        """Every run folder under the store root: parameters, metrics, folds, newest first."""
        busy = training_now()
        return {"runs": [summary(r, roots, str(r) in busy) for r in find(roots.store)]}

    @app.get("/api/runs/losses", dependencies=guarded, tags=["runs"])
    def run_losses(run: str) -> dict:
        """Loss curves per fold (train/loss, test/loss against the epoch), growing while the
        run trains."""
        path = run_path(roots, run)
        return {"run": roots.shown(path), "training": str(path) in training_now(),
                "folds": curves(path, live_file(path))}

    @app.get("/api/runs/diff", dependencies=guarded, tags=["runs"])
    def run_diff(a: str, b: str) -> dict:
        """The parameters in which runs `a` and `b` differ."""
        if a == b:
            raise HTTPException(422, "name two different runs")
        pa, pb = params(run_path(roots, a), roots), params(run_path(roots, b), roots)
        return {"a": a, "b": b, "differences": diff(pa, pb), "same": len(set(pa) & set(pb)) -
                sum(1 for k in set(pa) & set(pb) if pa[k] != pb[k])}
