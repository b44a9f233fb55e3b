"""`mespot bench`: it times every usable flow backend and a training step, and says which is
fastest."""

import json

import pytest
import torch

from flowcore.flow import available_backends
from mespot.bench import LOSO_STEPS
from mespot.cli import main


def test_bench_times_flow_backends_and_a_training_step(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert (
        main(["bench", "--size", "48", "--repeats", "1", "--threads", "2", "--out", str(out)]) == 0
    )
    record = json.loads(out.read_text())
    assert {row["backend"] for row in record["flow"]} == set(available_backends())
    assert all(row["pairs_per_s"] > 0 and row["size"] == 48 for row in record["flow"])
    train = record["training"]
    assert train["seconds_per_step"] > 0
    assert train["loso_casme2_estimate_s"] == pytest.approx(train["seconds_per_step"] * LOSO_STEPS)
    assert (
        record["suggested_backend"]
        == max(record["flow"], key=lambda r: r["pairs_per_s"])["backend"]
    )
    assert record["versions"]["mespot"] and record["threads"] == 2
    printed = capsys.readouterr().err
    assert f"extract: --backend {record['suggested_backend']}" in printed
    assert "CAS(ME)^2-sized LOSO run" in printed and "estimate" in printed


def test_bench_refuses_bad_flags(capsys):
    assert main(["bench", "--size", "8"]) == 2
    assert "--size must be >= 16" in capsys.readouterr().err
    if not torch.cuda.is_available():
        assert main(["bench", "--device", "cuda"]) == 2
        assert "CUDA is not available" in capsys.readouterr().err
