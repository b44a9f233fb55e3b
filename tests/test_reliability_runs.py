"""The fault corpus, part 2: runs that are incomplete, moved, replaced under them, trained into
twice, or on a full disk: refused in one line, or said, never silently wrong."""

import json
import os
import shutil

import pandas as pd
import pytest

from conftest import command_fails, error_line
from mespot.cli import main
from spotting.run_folder import folder_lock


def _copy_run(tiny_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_run["run"], run)
    return run


# --- evaluate --------------------------------------------------------------------------------


@pytest.mark.parametrize("damage", ["folder", "fold.json", "unfinished"])
def test_evaluate_refuses_a_run_with_a_fold_missing(tiny_run, tmp_path, capsys, damage):
    run = _copy_run(tiny_run, tmp_path)
    fold = run / "folds" / "s16"
    if damage == "folder":
        shutil.rmtree(fold)
    elif damage == "fold.json":
        (fold / "fold.json").unlink()
    else:
        meta = json.loads((fold / "fold.json").read_text())
        (fold / "fold.json").write_text(json.dumps({**meta, "status": "running"}))
    line = command_fails(capsys, ["evaluate", run, "--no-report"])
    assert line == (
        f"error: {run}: 1 of 2 LOSO folds missing or unfinished (s16); finish them with the "
        f"same `mespot train` command, or pass --allow-missing-folds to count their truths "
        f"as missed"
    )
    assert not (run / "evaluation").exists()


def test_allow_missing_folds_counts_their_truths_as_missed_and_says_so(tiny_run, tmp_path, capsys):
    full = _copy_run(tiny_run, tmp_path / "full")
    assert main(["evaluate", str(full), "--no-report"]) == 0
    capsys.readouterr()
    run = _copy_run(tiny_run, tmp_path / "partial")
    shutil.rmtree(run / "folds" / "s16")
    assert main(["evaluate", str(run), "--no-report", "--allow-missing-folds"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "pooled over 1 of 2 LOSO folds; the truths of s16 counted as missed" in out
    assert "last+flip: folds evaluated: s15 (epoch 2)" in out  # the default test-time flip
    assert "folds missing, their truths counted as missed: s16" in out
    summary = json.loads((run / "evaluation" / "last+flip" / "metrics.json").read_text())
    assert summary["missing_folds"] == ["s16"] and summary["epochs"] == {"s15": 2}
    partial = pd.read_csv(run / "evaluation" / "last+flip" / "metrics.csv").set_index("type")
    whole = pd.read_csv(full / "evaluation" / "last+flip" / "metrics.csv").set_index("type")
    truths = 4  # every truth of the store is counted, those of s16 as missed
    assert partial.loc["overall", "TP"] + partial.loc["overall", "FN"] == truths
    assert whole.loc["overall", "TP"] + whole.loc["overall", "FN"] == truths
    matches = pd.read_csv(run / "evaluation" / "last+flip" / "matches.csv")
    s16 = matches[matches["video"] == "16_0101b"]
    assert len(s16) == 2 and set(s16["outcome"]) == {"FN"}


def test_evaluate_never_falls_back_from_a_deleted_last_weights_file(tiny_run, tmp_path, capsys):
    run = _copy_run(tiny_run, tmp_path)
    last = run / "folds" / "s15" / "weights_epoch_002.safetensors"
    last.unlink()
    line = command_fails(capsys, ["evaluate", run, "--no-report"])
    assert line.startswith(f"error: {last}: missing (the fold's last epoch)")
    assert (
        main(["evaluate", str(run), "--no-report", "--select", "fixed:1"]) == 0
    )  # asked for: fine
    summary = run / "evaluation" / "fixed-1+flip" / "metrics.json"
    assert json.loads(summary.read_text())["epochs"] == {
        "s15": 1,
        "s16": 1,
    }


# --- the run's store -------------------------------------------------------------------------


def test_a_store_replaced_after_training_is_refused(tiny_run, tmp_path, capsys):
    from flowcore import ExtractParams, extract_source
    from flowcore.faces import FaceParams

    store = tmp_path / "store.zarr"
    shutil.copytree(tiny_run["store"], store)
    run = tmp_path / "run"
    assert (
        main(
            [
                "train",
                str(store),
                "-a",
                str(tiny_run["truth"]),
                "--out",
                str(run),
                "--epochs",
                "1",
                "--batch-size",
                "2",
                "--no-tensorboard",
                "-q",
            ]
        )
        == 0
    )
    shutil.rmtree(store)  # the same name, other extraction settings
    extract_source(tiny_run["data"], store, ExtractParams(faces=FaceParams(resize=40)), workers=1)
    capsys.readouterr()
    folder = tiny_run["data"] / "rawpic" / "s15" / "15_0101a"
    # predict reads the run folder alone (issue 25): the store does not matter to it
    assert main([str(a) for a in ("predict", folder, "--model", run, "--out", tmp_path / "p",
                                  "-q")]) == 0
    # a run from before runs recorded their store's parameters reads the store: refused
    config = json.loads((run / "config.json").read_text())
    del config["features"]
    (run / "config.json").write_text(json.dumps(config))
    line = command_fails(capsys, ["predict", folder, "--model", run, "--out", tmp_path / "q", "-q"])
    assert line.startswith(f"error: {store}: not the store run {run} was trained on")
    assert not (tmp_path / "q").exists()
    line = command_fails(capsys, ["evaluate", run, "--no-report"])
    assert line.startswith(f"error: {store}: not the store run {run} was trained on")


@pytest.mark.slow
def test_a_run_is_usable_from_another_folder(tiny_run, tmp_path, monkeypatch, capsys):
    base = tmp_path / "project"
    shutil.copytree(tiny_run["store"], base / "store.zarr")
    shutil.copy(tiny_run["truth"], base / "truth.csv")
    monkeypatch.chdir(base)  # relative paths, as a user types them
    assert (
        main(
            [
                "train",
                "store.zarr",
                "-a",
                "truth.csv",
                "--out",
                "run",
                "--epochs",
                "1",
                "--batch-size",
                "2",
                "--no-tensorboard",
                "-q",
            ]
        )
        == 0
    )
    monkeypatch.chdir(tmp_path)
    folder = tiny_run["data"] / "rawpic" / "s15" / "15_0101a"
    assert main(["predict", str(folder), "--model", "project/run", "--out", "p", "-q"]) == 0
    assert (tmp_path / "p" / "intervals.csv").is_file()
    assert main(["evaluate", "project/run", "--no-report"]) == 0


# --- predict ---------------------------------------------------------------------------------


@pytest.mark.slow
def test_predict_with_a_fold_missing_refuses_or_says_so(tiny_run, tmp_path, capsys):
    run = _copy_run(tiny_run, tmp_path)
    shutil.rmtree(run / "folds" / "s16")
    folder = tiny_run["data"] / "rawpic" / "s15" / "15_0101a"
    line = command_fails(capsys, ["predict", folder, "--model", run, "--out", tmp_path / "p", "-q"])
    assert line.startswith(f"error: {run}: 1 of 2 LOSO folds missing or unfinished (s16)")
    assert (
        main(
            [
                "predict",
                str(folder),
                "--model",
                str(run),
                "--out",
                str(tmp_path / "p"),
                "-q",
                "--allow-missing-folds",
            ]
        )
        == 0
    )
    captured = capsys.readouterr()
    assert "warning: folds s16 of the run are missing; averaged the others" in captured.err
    meta = json.loads((tmp_path / "p" / "prediction.json").read_text())
    assert meta["models"] == ["s15"] and meta["missing_folds"] == ["s16"]


def test_the_api_refuses_a_run_with_a_fold_missing_unless_asked(tiny_run, tmp_path):
    import mespot
    from flowcore.errors import UserError

    run = _copy_run(tiny_run, tmp_path)
    shutil.rmtree(run / "folds" / "s16")
    with pytest.raises(UserError, match=r"1 of 2 LOSO folds missing or unfinished \(s16\)"):
        mespot.Spotter.load(run)
    with pytest.raises(UserError, match=r"1 of 2 LOSO folds missing or unfinished \(s16\)"):
        mespot.evaluate(run)
    assert [m.name for m in mespot.Spotter.load(run, allow_missing_folds=True).models] == ["s15"]
    evaluation = mespot.evaluate(run, allow_missing_folds=True)
    assert evaluation.missing_folds == ("s16",) and evaluation.epochs == {"s15": 2}


# --- two trainings into one run folder, a full disk ------------------------------------------


def test_a_second_train_into_the_same_run_folder_is_refused(tiny_run, tmp_path, capsys):
    run = tmp_path / "run"
    argv = [
        "train",
        tiny_run["store"],
        "-a",
        tiny_run["truth"],
        "--out",
        run,
        "--epochs",
        "1",
        "-q",
    ]
    with folder_lock(run, "run") as holder:  # as another `mespot train` holds it
        assert holder is None
        line = command_fails(capsys, argv)
    assert line == (
        f"error: {run}: another `mespot train` (process {os.getpid()}) is training into this "
        f"run folder; wait for it to end, or choose another --out"
    )
    assert not (run / "folds").exists()


def test_a_fold_held_by_a_stray_worker_is_not_trained_twice(tiny_run, tmp_path, capsys):
    run = tmp_path / "run"
    with folder_lock(run / "folds" / "s15", "fold"):
        line = command_fails(
            capsys,
            [
                "train",
                tiny_run["store"],
                "-a",
                tiny_run["truth"],
                "--out",
                run,
                "--epochs",
                "1",
                "--batch-size",
                "2",
                "--no-tensorboard",
                "-q",
            ],
        )
    assert (
        line
        == f"error: fold s15: being trained by another process ({os.getpid()}); wait for it to end"
    )
    assert not (run / "folds" / "s15" / "fold.json").exists()


@pytest.mark.slow
def test_disk_full_during_training(tiny_run, tmp_path, sandboxed_cli):
    run = tmp_path / "run"
    run.mkdir()
    done = sandboxed_cli(
        [
            "train",
            tiny_run["store"],
            "-a",
            tiny_run["truth"],
            "--out",
            run,
            "--epochs",
            "2",
            "--batch-size",
            "2",
            "--no-tensorboard",
            "-q",
        ],
        tmpfs=(run, "48k"),
        after=f"echo FILES; cd {run} && find . -type f | sort; cat folds/*/fold.json",
    )
    line = error_line(done.stderr)
    assert done.returncode == 1, done.stderr[-2000:]
    assert (
        line.startswith(f"error: {run}/folds/s15/")
        and "No space left on device (disk full;" in line
    ), line
    files = done.stdout.split("FILES", 1)[1].split()
    assert "./config.json" in files
    assert not [f for f in files if f.endswith(".tmp") or f.endswith("fold.json")], (
        files
    )  # nothing half-written
