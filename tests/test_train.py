"""LOSO training: outputs, determinism, resume, command line (the losses: test_losses.py)."""

import json
import os

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from mespot.cli import main
from flowcore.errors import UserError
from mespot.testing import write_tiny_store
from spotting.config import RunConfig, TrainParams
from spotting.data import prepare
from spotting.loso import train_loso
from spotting.run_folder import load_weights

# --- a tiny store -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """3 subjects x 1 video x 300 rows (2 windows each), two expressions per video."""
    return write_tiny_store(tmp_path_factory.mktemp("tiny"))


def config(tiny, **train):
    params = dict(epochs=3, batch_size=2, save_every=2, inner_val=0)  # default: see the end
    params.update(train)
    return RunConfig(
        store=str(tiny / "store.zarr"),
        annotations=str(tiny / "gt.csv"),
        train=TrainParams(**params),
    )


def weights(run, subject, epoch):
    return load_file(str(run / "folds" / subject / f"weights_epoch_{epoch:03d}.safetensors"))


@pytest.mark.slow  # ~7 s: the first fold pays torch's optimiser and TensorBoard imports
def test_loso_run_writes_checkpoints_logs_and_config(tiny, tmp_path):
    run = tmp_path / "run"
    results = train_loso(config(tiny), run)
    assert [r.subject for r in results] == ["s1", "s2", "s3"]
    assert all(r.n_train_windows == 2 and r.n_test_windows == 2 for r in results)
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["train"]["epochs"] == 3 and cfg["train"]["macro_ratio"] == 0.5
    assert cfg["prior"]["source"] == "train" and "environment" in cfg
    fold = run / "folds" / "s2"
    assert sorted(p.name for p in fold.glob("weights_*")) == [
        "weights_epoch_002.safetensors",
        "weights_epoch_003.safetensors",
    ]
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(fold / "tb"))
    events.Reload()
    assert {"train/loss", "train/me_apex", "train/lr", "test/loss"} <= set(events.Tags()["scalars"])
    assert [e.step for e in events.Scalars("train/loss")] == [1, 2, 3]
    meta = json.loads((fold / "fold.json").read_text())
    assert meta["status"] == "complete" and meta["train_subjects"] == ["s1", "s3"]
    assert len(meta["normalisation"]["mean"]) == 2
    # the prior of fold s2 comes from s1 and s3 only (AU12+AU25 and AU1+AU2 pairs)
    model, wmeta = load_weights(fold / "weights_epoch_003.safetensors")
    assert wmeta["epoch"] == 3 and wmeta["test_subject"] == "s2"
    np.testing.assert_allclose(model.adj.numpy(), np.array(meta["prior"], np.float32))
    outputs = load_file(str(fold / "test_outputs.safetensors"))
    assert list(outputs) == ["s2_v"] and outputs["s2_v"].shape == (300, 10)
    log = (run / "train.log").read_text()
    assert "fold 3/3 s3" in log and "broken" in log  # the failed video is reported


@pytest.mark.slow  # ~7 s: three small LOSO runs
def test_same_seed_same_weights_and_resume_after_interruption(tiny, tmp_path):
    first, second, resumed = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    train_loso(config(tiny), first, tensorboard=False, subjects=["s1", "s2"])
    train_loso(config(tiny), second, tensorboard=False, subjects=["s1", "s2"])

    def kill(subject, epoch):
        if subject == "s2" and epoch == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_loso(
            config(tiny), resumed, tensorboard=False, subjects=["s1", "s2"], on_epoch_end=kill
        )
    assert not (resumed / "folds" / "s2" / "fold.json").exists()
    results = train_loso(config(tiny), resumed, tensorboard=False, subjects=["s1", "s2"])
    assert [r.resumed_from for r in results] == [3, 2]  # s1 done before, s2 from epoch 2
    for subject in ("s1", "s2"):
        losses = {
            json.loads((r / "folds" / subject / "fold.json").read_text())["final_loss"]
            for r in (first, second, resumed)
        }
        assert len(losses) == 1, losses
        a, b, c = (weights(r, subject, 3) for r in (first, second, resumed))
        for key in a:
            assert torch.equal(a[key], b[key]), key
            assert torch.equal(a[key], c[key]), key


@pytest.fixture(scope="module")
def one_thread_run(tiny, tmp_path_factory):
    """The tiny LOSO trained fold by fold in this process with 1 torch thread (the thread count
    of the workers and Ray tasks below: results depend on it)."""
    run = tmp_path_factory.mktemp("one_thread") / "run"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train_loso(config(tiny), run, tensorboard=False)
    finally:
        torch.set_num_threads(threads)
    return run


def assert_same_folds(run, reference, subjects=("s1", "s2", "s3"), epoch=3):
    for subject in subjects:
        a, b = weights(reference, subject, epoch), weights(run, subject, epoch)
        for key in a:
            assert torch.equal(a[key], b[key]), (subject, key)
        outputs = [
            load_file(str(r / "folds" / subject / "test_outputs.safetensors"))
            for r in (reference, run)
        ]
        assert torch.equal(outputs[0][f"{subject}_v"], outputs[1][f"{subject}_v"])


@pytest.mark.slow  # ~15 s: two spawned workers import torch and load the store
def test_folds_in_worker_processes_match_one_by_one_training(tiny, one_thread_run, tmp_path):
    pooled = tmp_path / "pool"
    results = train_loso(config(tiny), pooled, tensorboard=False, workers=2, threads=1)
    assert [r.subject for r in results] == ["s1", "s2", "s3"]
    assert_same_folds(pooled, one_thread_run)
    log = (pooled / "train.log").read_text()
    assert "3 fold(s) in 2 worker processes on cpu, 1 torch thread(s) each" in log
    assert all(f"fold {k}/3 s{k}: 2 train / 2 test windows" in log for k in (1, 2, 3))


@pytest.mark.slow  # ~20 s: Ray starts, and its workers import torch
def test_folds_as_ray_tasks_match_one_by_one_training(tiny, one_thread_run, local_ray, tmp_path):
    from flowcore.ray_engine import RayEngine

    run = tmp_path / "ray"
    results = train_loso(config(tiny), run, tensorboard=False, engine=RayEngine())
    assert [r.subject for r in results] == ["s1", "s2", "s3"]
    assert_same_folds(run, one_thread_run)  # one CPU per task: one torch thread
    log = (run / "train.log").read_text()
    assert (
        "ray: 1 node(s) with 2 CPU(s) and 0 GPU(s); 3 fold task(s) of 1 CPU and 0 GPU each" in log
    )
    assert all(f"fold {k}/3 s{k}: 2 train / 2 test windows" in log for k in (1, 2, 3))


def _args(tiny, out, *flags) -> list[str]:
    """`mespot train` on the tiny store and its truths into run folder `out`, then `flags`."""
    return ["train", str(tiny / "store.zarr"), "-a", str(tiny / "gt.csv"), "-o", str(out), *flags]


def _train(tiny, out, *flags) -> int:
    return main(_args(tiny, out, *flags))


@pytest.mark.slow  # ~15 s
def test_ctrl_c_stops_the_workers_and_the_same_command_resumes(tiny, tmp_path, gates):
    import signal
    import subprocess
    import sys

    from waiting import DEADLINE

    run = tmp_path / "run"
    args = _args(tiny, run, "--epochs", "3", "--workers", "2", "--threads", "1",
                 "--no-tensorboard", "-q")
    code = f"import sys; from mespot.cli import main; sys.exit(main({args!r}))"
    gates.hold("train-*-epoch-1")  # every fold waits after its first epoch (saved to resume)
    process = subprocess.Popen(
        [sys.executable, "-c", code],
        start_new_session=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        env=gates.environ(),
        stderr=subprocess.PIPE,
        text=True,
    )
    gates.arrival("train-s1-epoch-1", process, what="fold s1 has trained its first epoch")
    os.killpg(process.pid, signal.SIGINT)  # Ctrl-C reaches the driver and its workers
    assert process.wait(timeout=DEADLINE) == 130
    # the workers stopped: none went on with the next fold or finished the interrupted ones
    assert not (run / "folds" / "s3").exists()
    assert not list(run.glob("folds/*/fold.json"))
    assert main(args + ["--subjects", "s1"]) == 0  # the same command again, for one fold
    assert json.loads((run / "folds" / "s1" / "fold.json").read_text())["resumed_from"] == 1


def test_engine_flags_that_cannot_work_are_refused(tiny, tmp_path, capsys):
    args = _args(tiny, tmp_path / "run", "-q")
    assert main(args + ["--address", "auto"]) == 2
    assert "--address and --gpus-per-task go with --engine ray" in capsys.readouterr().err
    assert main(args + ["--engine", "ray", "--gpus-per-task", "0.5"]) == 2
    assert "GPUs they never use; add --device cuda" in capsys.readouterr().err
    assert main(args + ["--engine", "slurm"]) == 2
    assert not (tmp_path / "run").exists()


@pytest.mark.slow  # ~15 s
def test_a_failing_fold_in_a_worker_does_not_stop_the_others(tiny, tmp_path):
    run = tmp_path / "run"
    (run / "folds").mkdir(parents=True)
    (run / "folds" / "s2").write_text("a file where fold s2's folder belongs")
    with pytest.raises(UserError, match=r"1 fold\(s\) failed: s2 .* 2 finished"):
        train_loso(config(tiny, epochs=1), run, tensorboard=False, workers=2, threads=1)
    assert all((run / "folds" / s / "fold.json").exists() for s in ("s1", "s3"))
    assert "fold s2: failed (FileExistsError" in (run / "train.log").read_text()
    (run / "folds" / "s2").unlink()  # repaired: the same call trains only the missing fold
    results = train_loso(config(tiny, epochs=1), run, tensorboard=False, workers=2, threads=1)
    assert [r.resumed_from for r in results] == [1, 0, 1]


def test_other_configuration_in_the_run_folder_is_refused(tiny, tmp_path):
    run = tmp_path / "run"
    prep = prepare(tiny / "store.zarr", tiny / "gt.csv")
    train_loso(config(tiny, epochs=1), run, tensorboard=False, subjects=["s1"], prepared=prep)
    with pytest.raises(UserError, match="another configuration"):
        train_loso(config(tiny, epochs=2), run, tensorboard=False, subjects=["s1"], prepared=prep)
    with pytest.raises(UserError, match="unknown subject"):
        train_loso(config(tiny, epochs=1), run, subjects=["s9"], prepared=prep)


def test_command_line(tiny, tmp_path, capsys):
    run = tmp_path / "runs" / "cli"
    code = main(
        [
            "train",
            str(tiny / "store.zarr"),
            "--annotations",
            str(tiny / "gt.csv"),
            "--protocol",
            "loso",
            "--out",
            str(run),
            "--epochs",
            "1",
            "--subjects",
            "s3",
            "--no-tensorboard",
            "--quiet",
        ]
    )
    assert code == 0
    assert (run / "folds" / "s3" / "weights_epoch_001.safetensors").exists()
    assert (
        main(
            [
                "train",
                str(tmp_path / "missing.zarr"),
                "--annotations",
                str(tiny / "gt.csv"),
                "--out",
                str(tmp_path / "x"),
                "--quiet",
            ]
        )
        == 2
    )
    assert "feature store not found" in capsys.readouterr().err
    assert _train(tiny, tmp_path / "y", "--device",
                  "cuda:7" if not torch.cuda.is_available() else "nonsense", "--quiet") == 2


def test_yaml_config_and_flags(tiny, tmp_path):
    cfg = tmp_path / "train.yaml"
    cfg.write_text("train:\n  epochs: 1\n  batch_size: 4\nprior:\n  source: all\n")
    run = tmp_path / "run"
    assert _train(tiny, run, "--config", str(cfg), "--seed", "5", "--subjects", "s1",
                  "--no-tensorboard", "-q") == 0
    resolved = json.loads((run / "config.json").read_text())
    assert resolved["train"]["epochs"] == 1 and resolved["train"]["batch_size"] == 4
    assert resolved["train"]["seed"] == 5 and resolved["prior"]["source"] == "all"
    cfg.write_text("train:\n  epochz: 1\n")
    assert _train(tiny, run, "--config", str(cfg), "-q") == 2


def test_video_logits_reassembles_windows_in_row_order(tiny):
    from spotting.inference import video_logits

    prep = prepare(tiny / "store.zarr", tiny / "gt.csv")
    ws = prep.windows
    mask = ws.of_subjects(["s1", "s3"])
    order = np.flatnonzero(mask)
    # fake logits: channel c of window w's central row j holds first_row + j (+ 1000 c)
    j = np.arange(ws.start_end.shape[-1])
    logits = (
        ws.first_row[order][:, None, None] + j[None, None, :] + 1000 * np.arange(10)[None, :, None]
    ).astype(np.float32)
    got = video_logits(logits, ws, mask)
    assert sorted(got) == ["s1_v", "s3_v"]
    assert got["s1_v"].shape == (300, 10)
    np.testing.assert_array_equal(got["s1_v"][:, 0], np.arange(300))
    np.testing.assert_array_equal(got["s3_v"][:, 2], np.arange(300) + 2000)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_training_is_deterministic_and_agrees_with_cpu(tiny, tmp_path):
    runs = {name: tmp_path / name for name in ("gpu1", "gpu2", "cpu")}
    for name, run in runs.items():
        train_loso(
            config(tiny, epochs=2),
            run,
            device="cpu" if name == "cpu" else "cuda",
            subjects=["s1"],
            tensorboard=False,
        )
    a, b = (weights(runs[n], "s1", 2) for n in ("gpu1", "gpu2"))
    for key in a:
        assert torch.equal(a[key], b[key]), key
    loss = {
        n: json.loads((r / "folds" / "s1" / "fold.json").read_text())["final_loss"]
        for n, r in runs.items()
    }
    assert loss["gpu1"] == pytest.approx(loss["cpu"], rel=1e-2)


def test_annotations_of_other_videos_are_a_user_error(tiny, tmp_path):
    other = tmp_path / "other.csv"
    other.write_text("subject,video,onset,apex,offset,type,au\ns1,elsewhere,1,2,3,me,12\n")
    with pytest.raises(UserError, match="no annotated video is in the store"):
        prepare(tiny / "store.zarr", other)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_folds_in_workers_match_one_by_one(tiny, tmp_path):
    one, pooled = tmp_path / "one", tmp_path / "pool"
    train_loso(config(tiny, epochs=2), one, device="cuda", tensorboard=False)
    train_loso(config(tiny, epochs=2), pooled, device="cuda", tensorboard=False, workers=3)
    for subject in ("s1", "s2", "s3"):
        a, b = weights(one, subject, 2), weights(pooled, subject, 2)
        for key in a:
            assert torch.equal(a[key], b[key]), (subject, key)


@pytest.mark.slow  # ~10 s: three small LOSO runs
def test_mirror_augmentation_changes_training_and_resumes_exactly(tiny, tmp_path):
    plain, first, resumed = tmp_path / "p", tmp_path / "a", tmp_path / "c"
    train_loso(config(tiny), plain, tensorboard=False, subjects=["s1"])
    train_loso(config(tiny, augment="mirror"), first, tensorboard=False, subjects=["s1"])

    def kill(subject, epoch):
        if epoch == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_loso(config(tiny, augment="mirror"), resumed, tensorboard=False,
                   subjects=["s1"], on_epoch_end=kill)
    train_loso(config(tiny, augment="mirror"), resumed, tensorboard=False, subjects=["s1"])
    a, b, c = (weights(r, "s1", 3) for r in (plain, first, resumed))
    assert all(torch.equal(b[k], c[k]) for k in b)  # the mirror draws resume with the shuffle state
    assert not torch.equal(a["_sequential.3.weight"], b["_sequential.3.weight"])
    assert json.loads((first / "config.json").read_text())["train"]["augment"] == "mirror"
    with pytest.raises(UserError, match="augment must be"):
        TrainParams(augment="rotate")


def test_run_folder_from_before_new_fields_still_resumes(tiny, tmp_path):
    """A config.json written before a training field existed (here: `augment`, `init`) is the
    same configuration as today's with what its absence meant then: no augmentation, random
    initial weights (not today's default, the shipped pretraining)."""
    run = tmp_path / "run"
    scratch = config(tiny, epochs=1, init="scratch")
    train_loso(scratch, run, tensorboard=False, subjects=["s1"])
    cfg = json.loads((run / "config.json").read_text())
    for name in ("augment", "init"):
        del cfg["train"][name]
    (run / "config.json").write_text(json.dumps(cfg))
    results = train_loso(scratch, run, tensorboard=False, subjects=["s1"])
    assert results[0].resumed_from == 1  # found complete, not refused
    # resumed with today's defaults, the old run is another configuration: refused, not mixed
    with pytest.raises(UserError, match="another configuration"):
        train_loso(config(tiny, epochs=1), run, tensorboard=False, subjects=["s1"])


def test_weights_carry_the_model_dims_and_load_into_the_same_network(tiny, tmp_path):
    from spotting.model import ModelDims
    from spotting.data import window_tensors
    from spotting.inference import predict_logits, video_logits

    dims = ModelDims(graph_channels=8, hidden=24)
    run = tmp_path / "run"
    cfg = RunConfig(store=str(tiny / "store.zarr"), annotations=str(tiny / "gt.csv"),
                    train=TrainParams(epochs=1, batch_size=2, init="scratch"), model=dims)
    prep = prepare(tiny / "store.zarr", tiny / "gt.csv")
    train_loso(cfg, run, tensorboard=False, subjects=["s2"], prepared=prep)
    assert json.loads((run / "config.json").read_text())["model"]["hidden"] == 24
    model, meta = load_weights(run / "folds" / "s2" / "weights_epoch_001.safetensors")
    assert model.dims == dims and meta["dims_source"] == "stored"
    assert meta["dims"]["graph_channels"] == 8
    # the loaded network gives the trained network's outputs (saved at the end of training)
    mask = prep.windows.of_subjects(["s2"])
    norm = meta["normalisation"]
    logits = predict_logits(
        model, window_tensors(prep.windows, mask, norm["mean"], norm["std"], "cpu")["x"], 7
    )
    saved = load_file(str(run / "folds" / "s2" / "test_outputs.safetensors"))["s2_v"]
    assert torch.equal(
        torch.from_numpy(video_logits(logits.numpy(), prep.windows, mask)["s2_v"]), saved
    )


def test_yaml_model_section_sets_the_network(tiny, tmp_path):
    cfg = tmp_path / "train.yaml"
    cfg.write_text("train:\n  epochs: 1\n  init: scratch\nmodel:\n  hidden: 16\n")
    run = tmp_path / "run"
    assert _train(tiny, run, "--config", str(cfg), "--subjects", "s1", "--no-tensorboard",
                  "-q") == 0
    model, _ = load_weights(run / "folds" / "s1" / "weights_epoch_001.safetensors")
    assert model.dims.hidden == 16
    cfg.write_text("model:\n  nodes: 11\n")
    assert _train(tiny, tmp_path / "x", "--config", str(cfg), "-q") == 2


def test_annotations_without_a_usable_row_stop_training_at_once(
    tiny, tmp_path, capsys, monkeypatch
):
    import openpyxl

    import spotting.data

    def no_windows(*args, **kwargs):
        raise AssertionError("windows were built from annotations without a usable row")

    monkeypatch.setattr(spotting.data, "build_windows", no_windows)
    book = openpyxl.Workbook()
    for row in [
        (1, "anger1_1", 41, 55, 71, 12, "anger", "macro-expression", "anger"),
        (1, "anger1_2", 151, 157, 163, 1, "anger", "micro-expression", "anger"),
    ]:
        book.active.append(row)
    book.create_sheet("naming rule1").append((1, "s1", 1))
    book.create_sheet("naming rule2").append((101, "disgust1"))  # no sheet-1 row uses disgust1
    path = tmp_path / "CAS(ME)^2code_final.xlsx"
    book.save(path)
    run = tmp_path / "run"
    assert main(["train", str(tiny / "store.zarr"), "-a", str(path), "-o", str(run), "-q"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"error: {path}: 0 of 2 rows usable: 2 unknown video name (sheet 3 maps disgust1 0101; "
        "sheet 1 names e.g. 'anger1')"
    ]
    assert not run.exists()


def test_a_run_from_before_model_sizes_were_configurable_resumes(tiny, tmp_path):
    run = tmp_path / "run"
    prep = prepare(tiny / "store.zarr", tiny / "gt.csv")
    train_loso(config(tiny, epochs=1), run, tensorboard=False, subjects=["s1"], prepared=prep)
    old = json.loads((run / "config.json").read_text())
    del old["model"]  # config.json as written before the `model` section existed
    (run / "config.json").write_text(json.dumps(old))
    results = train_loso(
        config(tiny, epochs=1), run, tensorboard=False, subjects=["s1"], prepared=prep
    )
    assert [r.resumed_from for r in results] == [1]  # the finished fold is kept, not refused


@pytest.mark.slow
def test_default_training_resolves_inner_validation_for_the_store(tiny, tmp_path):
    run = tmp_path / "run"
    command = ["train", str(tiny / "store.zarr"), "-a", str(tiny / "gt.csv"), "--out", str(run),
               "--epochs", "1", "--batch-size", "2", "-q", "--no-tensorboard"]
    assert main(command) == 0
    saved = json.loads((run / "config.json").read_text())["train"]
    assert saved["inner_val"] == 0 and saved["init"] == "pretrained"  # 3 subjects: too few
    assert not list(run.glob("folds/*/inner"))
    assert main(command) == 0  # the same command again resumes: the resolved number matches
    assert main([*command, "--inner-val", "1"]) == 2  # another configuration: refused
    asked = tmp_path / "asked"
    assert main([*command[:5], str(asked), *command[6:], "--inner-val", "1"]) == 0
    for subject in ("s1", "s2", "s3"):
        inner = json.loads((asked / "folds" / subject / "inner" / "inner.json").read_text())
        assert len(inner["val_subjects"]) == 1 and subject not in inner["val_subjects"]
