"""The fault corpus, part 1: bad input and flags give one line `error: <file>: <what>` (exit code
1 or 2), never a traceback, and leave nothing wrongly marked complete. docs/reliability.md lists
every case with its test."""

import json
import shutil

import pytest

from conftest import command_fails, error_line
from mespot.cli import main


def _predict(tiny_run, out, *flags) -> list:
    """`mespot predict` of the tiny run's first video with its model into OUT, and FLAGS."""
    frames = tiny_run["data"] / "rawpic" / "s15" / "15_0101a"
    return ["predict", frames, "--model", tiny_run["run"], "--out", out, *flags]


# --- output paths ----------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["extract", "train", "predict"])
def test_out_that_is_an_existing_file(tiny_run, tmp_path, capsys, command):
    out = tmp_path / "taken"
    out.write_text("mine")
    argv = {
        "extract": ["extract", tiny_run["data"], "--out", out, "-q"],
        "train": ["train", tiny_run["store"], "-a", tiny_run["truth"], "--out", out, "-q"],
        "predict": _predict(tiny_run, out, "-q"),
    }[command]
    line = command_fails(capsys, argv)
    assert line == f"error: {out}: exists and is not a folder; choose another --out"
    assert out.read_text() == "mine"  # untouched


@pytest.mark.slow
@pytest.mark.parametrize("command", ["extract", "train", "predict", "evaluate", "report"])
def test_read_only_output_folder(tiny_run, tmp_path, sandboxed_cli, command):
    folder = tmp_path / "locked"
    folder.mkdir()
    run = tiny_run["run"]
    if command in ("evaluate", "report"):  # they write into the run folder itself
        run = folder / "run"
        shutil.copytree(tiny_run["run"], run)
        if command == "report":
            assert main(["evaluate", str(run), "--no-report"]) == 0
    argv = {
        "extract": ["extract", tiny_run["data"], "--out", folder / "f.zarr", "-q"],
        "train": [
            "train",
            tiny_run["store"],
            "-a",
            tiny_run["truth"],
            "--out",
            folder / "run",
            "--epochs",
            "1",
            "-q",
        ],
        "predict": _predict(tiny_run, folder / "p", "-q"),
        "evaluate": ["evaluate", run],
        "report": ["report", run],
    }[command]
    before = sorted(p.relative_to(folder) for p in folder.rglob("*"))
    done = sandboxed_cli(argv, read_only=[folder])
    line = error_line(done.stderr)
    assert done.returncode == 1, done.stderr[-2000:]
    assert line.startswith(f"error: {folder}") and line.endswith("Read-only file system"), line
    assert sorted(p.relative_to(folder) for p in folder.rglob("*")) == before


# --- training inputs -------------------------------------------------------------------------


def test_text_file_named_xlsx(tiny_run, tmp_path, capsys):
    book = tmp_path / "notes.xlsx"
    book.write_text("subject,video\n")
    line = command_fails(
        capsys, ["train", tiny_run["store"], "-a", book, "--out", tmp_path / "run", "-q"]
    )
    assert line.startswith(f"error: {book}: not a readable Excel workbook")
    assert not (tmp_path / "run" / "folds").exists()


@pytest.mark.parametrize("value", ["-1", "nan", "0"])
def test_learning_rate_that_cannot_train(tiny_run, tmp_path, capsys, value):
    line = command_fails(
        capsys,
        [
            "train",
            tiny_run["store"],
            "-a",
            tiny_run["truth"],
            "--out",
            tmp_path / "run",
            "--lr",
            value,
            "-q",
        ],
    )
    assert line.startswith("error: lr (learning rate) must be a number > 0, got")
    assert not (tmp_path / "run").exists()


def test_zero_workers_refused_not_replaced(tiny_run, tmp_path, capsys):
    line = command_fails(
        capsys, ["extract", tiny_run["data"], "--out", tmp_path / "f.zarr", "--workers", "0", "-q"]
    )
    assert line == "error: workers must be >= 1, got 0"
    assert not (tmp_path / "f.zarr").exists()
    line = command_fails(
        capsys,
        [
            "train",
            tiny_run["store"],
            "-a",
            tiny_run["truth"],
            "--out",
            tmp_path / "run",
            "--workers",
            "0",
            "-q",
        ],
    )
    assert line.startswith("error: workers must be >= 1")
    line = command_fails(
        capsys, ["synth", "--small", "--workers", "0", "--out", tmp_path / "synth"]
    )
    assert line == "error: workers must be >= 1, got 0"
    assert not (tmp_path / "synth").exists()


def test_cuda_without_a_gpu_is_refused_up_front_by_extract_and_predict(tiny_run, tmp_path, capsys):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    line = command_fails(
        capsys,
        [
            "extract",
            tiny_run["data"],
            "--out",
            tmp_path / "f.zarr",
            "--device",
            "cuda",
            "--backend",
            "torch",
            "-q",
        ],
    )
    assert line == "error: --device cuda: CUDA is not available on this machine"
    assert not (tmp_path / "f.zarr").exists()  # refused before any video was tried
    line = command_fails(
        capsys,
        _predict(tiny_run, tmp_path / "p", "--device", "cuda", "-q"),
    )
    assert line == "error: --device cuda: CUDA is not available on this machine"
    assert not (tmp_path / "p").exists()


# --- predict's inputs ------------------------------------------------------------------------


def test_predict_fps_zero_is_refused(tiny_run, tmp_path, capsys):
    line = command_fails(
        capsys,
        _predict(tiny_run, tmp_path / "p", "--fps", "0", "-q"),
    )
    assert line == "error: --fps must be a frame rate > 0, got 0.0"
    assert not (tmp_path / "p").exists()


def test_predict_an_empty_frame_folder(tiny_run, tmp_path, capsys):
    empty = tmp_path / "frames"
    empty.mkdir()
    line = command_fails(
        capsys, ["predict", empty, "--model", tiny_run["run"], "--out", tmp_path / "p", "-q"]
    )
    assert line == f"error: {empty}: empty folder (no frame images, video files or dataset in it)"


def _broken_run(tiny_run, tmp_path, damage):
    run = tmp_path / "run"
    shutil.copytree(tiny_run["run"], run)
    damage(run)
    return run


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda run: (run / "config.json").unlink(), "{run}: not a run folder (no config.json)"),
        (
            lambda run: [p.unlink() for p in (run / "folds" / "s16").glob("weights_*")],
            "{run}/folds/s16/weights_epoch_002.safetensors: missing (the fold's last epoch)",
        ),
        (
            lambda run: (run / "folds" / "s16" / "weights_epoch_002.safetensors").write_bytes(
                b"\x10" * 40
            ),
            "{run}/folds/s16/weights_epoch_002.safetensors: not a readable weights file",
        ),
    ],
    ids=["no-config", "no-weights", "truncated-weights"],
)
def test_predict_with_a_damaged_model_folder(tiny_run, tmp_path, capsys, damage, message):
    run = _broken_run(tiny_run, tmp_path, damage)
    line = command_fails(
        capsys,
        [
            "predict",
            tiny_run["data"] / "rawpic" / "s15" / "15_0101a",
            "--model",
            run,
            "--out",
            tmp_path / "p",
            "-q",
        ],
    )
    assert line.startswith("error: " + message.format(run=run)), line
    assert not (tmp_path / "p" / "intervals.csv").exists()


def test_garbage_pth_tar_is_not_a_checkpoint_and_no_unsafe_advice(tiny_run, tmp_path, capsys):
    garbage = tmp_path / "checkpoint_epoch_010.pth.tar"
    garbage.write_bytes(b"<html>not a checkpoint</html>\n")
    line = command_fails(
        capsys,
        [
            "predict",
            tiny_run["data"] / "rawpic" / "s15" / "15_0101a",
            "--model",
            garbage,
            "--out",
            tmp_path / "p",
            "-q",
        ],
    )
    assert line.startswith(f"error: {garbage}: not a checkpoint")
    assert "weights_only=False" not in line and "weights_only" not in line


# --- help ------------------------------------------------------------------------------------


def test_help_keeps_defaults_and_extras_in_square_brackets(capsys):
    assert main(["synth", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "Number of subjects [default: 6; small: 3]." in text
    assert main(["extract", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert 'pip install "mespot[ray]"' in text


def test_run_records_an_absolute_store_path_and_its_hash(tiny_run):
    config = json.loads((tiny_run["run"] / "config.json").read_text())
    assert config["store"] == str(tiny_run["store"].absolute())
    import zarr

    assert (
        config["store_params_hash"]
        == zarr.open_group(str(tiny_run["store"]), mode="r").attrs["params_hash"]
    )
