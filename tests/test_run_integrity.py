"""A run folder whose files were damaged after training (issue 26, item 3): weights turned to NaN
or inf at the same size, a truncated or hand-edited config.json, fold.json, inner.json,
rules.json or metrics.json, a store that is no longer the one the run was trained on. Every
reader (`mespot evaluate`, `predict`, `report`, `mespot.Spotter`, the service's jobs) refuses it
in one line naming the file (spotting/run_checks.py), never a traceback or a wrong result."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import command_fails, error_line
from flowcore.errors import UserError


@pytest.fixture(scope="module")
def evaluated(tiny_run, tmp_path_factory) -> dict:
    """tiny_run's run folder, evaluated (so that `report` has something to read), pointing at a
    copy of its store (so that a test may replace it). Read-only: `_damaged` copies it."""
    from mespot.cli import main

    base = tmp_path_factory.mktemp("integrity")
    store = base / "store.zarr"
    shutil.copytree(tiny_run["store"], store)
    run = base / "run"
    shutil.copytree(tiny_run["run"], run)
    config = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**config, "store": str(store)}, indent=1))
    assert main(["evaluate", str(run), "--no-report"]) == 0
    return {"run": run, "store": store, "video": tiny_run["data"] / "rawpic" / "s15" / "15_0101a"}


def _truncate(path: Path) -> None:
    text = path.read_text()
    path.write_text(text[: len(text) // 2])


def _edit(path: Path, change) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data, indent=1))


def _poison_weights(path: Path, value: float) -> None:
    """One tensor of the weights file set to `value` (NaN or inf); the file keeps its size."""
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    size = path.stat().st_size
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    state = load_file(str(path))
    name = next(k for k, t in state.items() if t.is_floating_point() and t.numel() > 4)
    state[name][:2] = value
    save_file(state, str(path), metadata=meta)
    assert path.stat().st_size == size


def _replace_store(store: Path) -> None:
    """The store now holds another extraction's features (its parameters hash differs)."""
    import zarr

    zarr.open_group(str(store), mode="r+").attrs["params_hash"] = "0123456789abcdef"


def _with_inner(run: Path) -> None:
    """Each fold as if trained with --inner-val (its inner.json), so that predict reads the
    folds' rules.json and evaluate calibrates on the inner subjects (reading inner.json)."""
    for subject, other in (("s15", "s16"), ("s16", "s15")):
        inner = run / "folds" / subject / "inner"
        inner.mkdir(exist_ok=True)
        (inner / "inner.json").write_text(json.dumps({"val_subjects": [other],
                                                      "test_subject": subject}))


WEIGHTS = "folds/s16/weights_epoch_002.safetensors"
# damage -> (file named in the error, what the line says, how to damage a copy of the run)
DAMAGES = {
    "nan-weights": (WEIGHTS, "tensors hold NaN or infinite values",
                    lambda run, store: _poison_weights(run / WEIGHTS, float("nan"))),
    "inf-weights": (WEIGHTS, "tensors hold NaN or infinite values",
                    lambda run, store: _poison_weights(run / WEIGHTS, float("inf"))),
    "truncated-config": ("config.json", "not readable JSON",
                         lambda run, store: _truncate(run / "config.json")),
    "config-wrong-type": ("config.json", "'windows.length' must be an integer",
                          lambda run, store: _edit(run / "config.json",
                                                   lambda c: c["windows"].update(length="ten"))),
    "config-params-edited": ("config.json", "no longer have their recorded hash",
                             lambda run, store: _edit(
                                 run / "config.json",
                                 lambda c: c["features"]["params"]["faces"].update(resize=96))),
    "truncated-fold": ("folds/s16/fold.json", "not readable JSON",
                       lambda run, store: _truncate(run / "folds/s16/fold.json")),
    "fold-key-missing": ("folds/s16/fold.json", "'test_subject' is missing",
                         lambda run, store: _edit(run / "folds/s16/fold.json",
                                                  lambda m: m.pop("test_subject"))),
    "truncated-rules": ("folds/s16/rules.json", "not readable JSON",
                        lambda run, store: (_with_inner(run),
                                            (run / "folds/s16/rules.json").write_text('{"ke'))),
    "truncated-inner": ("folds/s15/inner/inner.json", "not readable JSON",
                        lambda run, store: (_with_inner(run),
                                            _truncate(run / "folds/s15/inner/inner.json"))),
    "truncated-metrics": ("evaluation/last+flip/metrics.json", "not readable JSON",
                          lambda run, store: _truncate(run / "evaluation/last+flip/metrics.json")),
    "store-replaced": ("<store>", "not the store run",
                       lambda run, store: _replace_store(store)),
}
# what each entry point reads (predict and Spotter read the run folder alone, not the store;
# report reads no weights, and inner.json only where it calibrates)
READS = {
    "evaluate": ["nan-weights", "inf-weights", "truncated-config", "config-wrong-type",
                 "config-params-edited", "truncated-fold", "fold-key-missing", "truncated-inner",
                 "store-replaced"],
    "predict": ["nan-weights", "inf-weights", "truncated-config", "config-wrong-type",
                "config-params-edited", "truncated-fold", "fold-key-missing", "truncated-rules"],
    "report": ["truncated-config", "config-wrong-type", "truncated-fold", "truncated-metrics",
               "store-replaced"],
}


def _damaged(evaluated, tmp_path, damage: str) -> tuple[Path, Path, Path]:
    """(run, store, the file the error must name): a copy of the evaluated run and its store,
    damaged."""
    run, store = tmp_path / "run", tmp_path / "store.zarr"
    shutil.copytree(evaluated["run"], run)
    shutil.copytree(evaluated["store"], store)
    _edit(run / "config.json", lambda c: c.update(store=str(store)))
    named, _, damage_it = DAMAGES[damage]
    damage_it(run, store)
    return run, store, store if named == "<store>" else run / named


def _assert_names(line: str, named: Path, damage: str) -> None:
    assert line.startswith(f"error: {named}: "), line
    assert DAMAGES[damage][1] in line, line


def _cases(entry: str):
    return [pytest.param(d, id=d) for d in READS[entry]]


@pytest.mark.parametrize("damage", _cases("evaluate"))
def test_evaluate_refuses_a_damaged_run_in_one_line(evaluated, tmp_path, capsys, damage):
    run, _, named = _damaged(evaluated, tmp_path, damage)
    line = command_fails(capsys, ["evaluate", run, "--select", "last", "--no-report"])
    _assert_names(line, named, damage)


@pytest.mark.parametrize("damage", _cases("predict"))
def test_predict_refuses_a_damaged_run_in_one_line(evaluated, tmp_path, capsys, damage):
    run, _, named = _damaged(evaluated, tmp_path, damage)
    out = tmp_path / "p"
    line = command_fails(capsys, ["predict", evaluated["video"], "--model", run, "--out", out,
                                  "-q"])
    _assert_names(line, named, damage)
    assert not (out / "intervals.csv").exists()


@pytest.mark.parametrize("damage", _cases("report"))
def test_report_refuses_a_damaged_run_in_one_line(evaluated, tmp_path, capsys, damage):
    run, _, named = _damaged(evaluated, tmp_path, damage)
    line = command_fails(capsys, ["report", run, "--faces", "all"])
    _assert_names(line, named, damage)
    assert not (run / "report.html").exists()


@pytest.mark.parametrize("damage", _cases("predict"))
def test_the_spotter_refuses_a_damaged_run_in_one_line(evaluated, tmp_path, damage):
    import mespot

    run, _, named = _damaged(evaluated, tmp_path, damage)
    with pytest.raises(UserError) as refused:
        mespot.Spotter.load(run)
    message = str(refused.value)
    assert "\n" not in message
    _assert_names(f"error: {message}", named, damage)


def _job_context(stores: Path, data: Path, folder: Path):
    """A service task's context (mespot.service.tasks.Context) for runs under `stores`."""
    from mespot.service import tasks
    from mespot.service.roots import Roots

    ctx = tasks.Context()
    ctx.roots, ctx.folder, ctx.uploads = Roots(data, stores), folder, folder / "uploads"
    folder.mkdir(parents=True, exist_ok=True)
    return ctx


@pytest.mark.parametrize("kind, damage", [
    ("evaluate", "nan-weights"), ("evaluate", "truncated-config"), ("evaluate", "store-replaced"),
    ("predict", "inf-weights"), ("predict", "config-params-edited"),
    ("predict", "truncated-rules"),
])
def test_a_service_job_fails_with_the_one_line(evaluated, tmp_path, kind, damage):
    """The job's task raises the UserError whose text the runner stores as the job's error."""
    from mespot.service import tasks

    run, _, named = _damaged(evaluated, tmp_path, damage)
    ctx = _job_context(tmp_path, evaluated["video"].parent, tmp_path / "job")
    params = ({"run": "run", "select": ["last"]} if kind == "evaluate"
              else {"model": "run", "video": evaluated["video"].name})
    with pytest.raises(UserError) as refused:
        tasks.run(kind, params, ctx)
    message = str(refused.value)
    assert "\n" not in message
    _assert_names(f"error: {message}", named, damage)


def test_the_command_line_prints_the_one_line_and_exits_2(evaluated, tmp_path):
    """The real `mespot` process: no traceback, exit status 2."""
    run, _, named = _damaged(evaluated, tmp_path, "nan-weights")
    done = subprocess.run([sys.executable, "-m", "mespot", "evaluate", str(run), "--no-report"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr[-2000:]
    _assert_names(error_line(done.stderr), named, "nan-weights")


def test_an_undamaged_copy_is_read_as_before(evaluated, tmp_path, capsys):
    """The checks refuse only what is damaged: a plain copy evaluates and reports."""
    from mespot.cli import main

    run = tmp_path / "run"
    shutil.copytree(evaluated["run"], run)
    assert main(["evaluate", str(run), "--no-report"]) == 0
    assert main(["report", str(run), "--faces", "all"]) == 0
    assert (run / "report.html").is_file()


def test_train_refuses_to_resume_into_a_damaged_config(tiny_run, evaluated, tmp_path, capsys):
    run, _, named = _damaged(evaluated, tmp_path, "truncated-config")
    line = command_fails(capsys, ["train", tiny_run["store"], "-a", tiny_run["truth"], "--out",
                                  run, "--epochs", "2", "--batch-size", "2", "-q"])
    _assert_names(line, named, "truncated-config")
