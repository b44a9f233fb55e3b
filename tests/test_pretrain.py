"""Synthetic pretraining (`mespot pretrain`, spotting/pretrain.py) and `mespot train --init`
(spotting/initial_weights.py)."""

import json

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

import spotting.initial_weights as initial_weights
from flowcore.errors import UserError
from mespot.cli import main
from spotting.config import RunConfig, TrainParams
from spotting.data import prepare
from spotting.fold import train_fold
from spotting.initial_weights import PRETRAINED, apply_init
from spotting.model import AUWGCN
from spotting.pretrain import merge_prepared
from tests.test_train import tiny  # noqa: F401 - the 3-subject store fixture


def _weights(path):
    return {k: v for k, v in load_file(str(path)).items()}


def test_init_copies_every_weight_but_the_fold_prior(tmp_path):
    torch.manual_seed(0)
    source = AUWGCN(np.eye(12, dtype=np.float32))
    path = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(path))
    prior = np.full((12, 12), 1 / 12, np.float32)
    target = AUWGCN(prior)
    apply_init(target, str(path))
    for name, value in target.state_dict().items():
        if name.endswith(".adj"):
            np.testing.assert_allclose(value.numpy(), prior)  # the fold's own prior stays
        else:
            assert torch.equal(value, source.state_dict()[name]), name


def test_init_refuses_what_does_not_fit(tmp_path):
    bad = tmp_path / "bad.safetensors"
    save_file({"something.else": torch.zeros(3)}, str(bad))
    with pytest.raises(UserError, match="does not fit AUW-GCN"):
        apply_init(AUWGCN(np.eye(12, dtype=np.float32)), str(bad))
    with pytest.raises(UserError, match="no weights file"):
        apply_init(AUWGCN(np.eye(12, dtype=np.float32)), str(tmp_path / "missing.safetensors"))


def test_init_pretrained_without_shipped_weights_says_how_to_make_them(
        tiny, tmp_path, capsys, monkeypatch):  # noqa: F811
    monkeypatch.setattr(initial_weights, "PRETRAINED", tmp_path / "none.safetensors")
    run = tmp_path / "r"
    assert main(["train", str(tiny / "store.zarr"), "-a", str(tiny / "gt.csv"), "--out", str(run),
                 "--epochs", "1", "--init", "pretrained", "-q", "--no-tensorboard"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --init pretrained: ")
    assert "no pretrained weights are shipped" in err[0] and "mespot pretrain" in err[0]
    assert not (run / "folds").exists()  # refused before any fold


def test_shipped_pretrained_weights_fit_the_network():
    model = AUWGCN(np.eye(12, dtype=np.float32))
    apply_init(model, "pretrained")
    with safe_open(str(PRETRAINED), framework="pt") as f:
        meta = json.loads(f.metadata()["pretraining"])
    from mespot.synth.seeds import BENCHMARK_SEEDS

    assert meta["sets"] and all(s["seed"] is not None and s["seed"] not in BENCHMARK_SEEDS
                                for s in meta["sets"])


def test_merged_stores_keep_subjects_apart(tiny):  # noqa: F811
    one = prepare(tiny / "store.zarr", tiny / "gt.csv")
    both = merge_prepared([one, one])
    assert len(both.features.subjects) == 2 * len(one.features.subjects)
    assert len(both.windows) == 2 * len(one.windows)
    n = len(one.windows.subjects)
    assert both.windows.subjects[:n] == tuple(f"0:{s}" for s in one.windows.subjects)
    mask = both.windows.of_subjects(["1:s2"])
    np.testing.assert_array_equal(both.windows.x[mask],
                                  one.windows.x[one.windows.of_subjects(["s2"])])
    assert set(both.table.frame["subject"]) == {f"{k}:{s}" for k in (0, 1)
                                                for s in one.features.subjects}


def test_pretrain_command_then_train_from_its_weights(tiny, tmp_path, capsys):  # noqa: F811
    out = tmp_path / "pre.safetensors"
    store, gt = str(tiny / "store.zarr"), str(tiny / "gt.csv")
    assert main(["pretrain", store, store, "-a", gt, "-a", gt, "--out", str(out), "--epochs", "2",
                 "--seed", "7", "-q"]) == 0
    assert out.is_file() and not out.with_name(out.name + ".work").exists()
    with safe_open(str(out), framework="pt") as f:
        meta = json.loads(f.metadata()["pretraining"])
    assert meta["subjects"] == 6 and len(meta["sets"]) == 2
    assert meta["config"]["train"]["epochs"] == 2
    # a fold started from it
    prep = prepare(tiny / "store.zarr", tiny / "gt.csv")
    config = RunConfig(store=str(tiny / "store.zarr"), annotations=str(tiny / "gt.csv"),
                       train=TrainParams(epochs=1, lr=1e-6, init=str(out)))
    train_fold(prep, config, "s1", tmp_path / "fold", torch.device("cpu"), tensorboard=False)
    scratch = RunConfig(store=str(tiny / "store.zarr"), annotations=str(tiny / "gt.csv"),
                        train=TrainParams(epochs=1, lr=1e-6, init="scratch"))
    train_fold(prep, scratch, "s1", tmp_path / "fold0", torch.device("cpu"), tensorboard=False)
    pre, after, after0 = (_weights(p) for p in (
        out, tmp_path / "fold/weights_epoch_001.safetensors",
        tmp_path / "fold0/weights_epoch_001.safetensors"))
    key = "_sequential.3.weight"
    # (a tiny learning rate: after one epoch each model is where it started)
    assert (after[key] - pre[key]).abs().max() < 1e-4
    assert (after0[key] - pre[key]).abs().max() > 0.1
    fold = json.loads((tmp_path / "fold/fold.json").read_text())
    assert fold["config"]["train"]["init"] == str(out)


def test_pretraining_refuses_a_benchmark_set(tiny, tmp_path, capsys):  # noqa: F811
    import shutil

    data = tmp_path / "bench"
    data.mkdir()
    shutil.copy(tiny / "gt.csv", data / "gt.csv")
    (data / "synth.json").write_text(json.dumps({"config": {"seed": 9001}}))
    assert main(["pretrain", str(tiny / "store.zarr"), "-a", str(data / "gt.csv"),
                 "--out", str(tmp_path / "x.safetensors"), "--epochs", "1", "-q"]) == 2
    assert "reserved for benchmark" in capsys.readouterr().err
    assert not (tmp_path / "x.safetensors.work").exists()  # refused before any training


def test_train_init_flag(tiny, tmp_path, capsys):  # noqa: F811
    assert main(["train", str(tiny / "store.zarr"), "-a", str(tiny / "gt.csv"), "--out",
                 str(tmp_path / "r"), "--epochs", "1", "--init",
                 str(tmp_path / "nothing.safetensors"), "-q", "--no-tensorboard"]) == 2
    assert "no weights file" in capsys.readouterr().err


def test_folds_start_from_the_shipped_weights_by_default(tiny, tmp_path):  # noqa: F811
    """`mespot train` without --init starts each fold from spotting/weights/ (a tiny learning
    rate leaves the first epoch's weights where they started); --init scratch does not."""
    store, gt = str(tiny / "store.zarr"), str(tiny / "gt.csv")
    shipped = _weights(PRETRAINED)
    key = "_sequential.3.weight"
    for init, near in ((None, True), ("scratch", False)):
        run = tmp_path / f"run-{init}"
        flags = ["--init", init] if init else []
        assert main(["train", store, "-a", gt, "--out", str(run), "--epochs", "1", "--lr", "1e-6",
                     "--subjects", "s1", "-q", "--no-tensorboard", *flags]) == 0
        fold = json.loads((run / "folds" / "s1" / "fold.json").read_text())
        assert fold["config"]["train"]["init"] == (init or "pretrained")
        after = _weights(run / "folds" / "s1" / "weights_epoch_001.safetensors")
        assert ((after[key] - shipped[key]).abs().max() < 1e-4) == near


def test_shipped_weights_refuse_another_network_and_say_what_to_do(tmp_path):
    from spotting.model import ModelDims

    with pytest.raises(UserError, match="does not fit this network.*--init scratch"):
        apply_init(AUWGCN(np.eye(12, dtype=np.float32), ModelDims(hidden=24)), "pretrained")
