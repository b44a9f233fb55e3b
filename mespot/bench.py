"""`mespot bench`: what this machine does fast, measured in a minute, before a long run.

Times the two costly stages on the chosen device:
- optical flow: face pairs of the size extraction will crop (`--resize`), per flow backend and
  batch size, in pairs per second (the median of `--repeats` calls after a warm-up call);
- training: one AUW-GCN training step (forward, backward, AdamW) on a batch of CAS(ME)^2-shaped
  windows, and from it an estimate of a CAS(ME)^2-sized LOSO run (22 folds x 100 epochs of about
  325 windows), labelled as an estimate: benchmarks/train_speed.py measures whole runs (on this
  project's 2-core CPU machine the estimate said 17-19 min where the whole run measured 15).
Prints a table and which flags to use, and writes the numbers with the machine and versions
as JSON with `--out`.
"""

from __future__ import annotations

import json
import os
import statistics
import time
from pathlib import Path
from typing import Optional

import typer

from mespot.errors import UserError

# CAS(ME)^2: 22 folds x 100 epochs x about 325 training windows per fold, in batches of 128
LOSO_STEPS = round(22 * 100 * 325 / 128)


def time_median(call, repeats: int, sync=None) -> float:
    """Median wall seconds of `repeats` calls of `call` after one warm-up call."""
    call()
    times = []
    for _ in range(repeats):
        if sync:
            sync()
        start = time.perf_counter()
        call()
        if sync:
            sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def flow_rates(size: int, device: str, repeats: int) -> list[dict]:
    """Pairs per second of every flow backend usable on `device` at size x size faces."""
    from flowcore.flow import TVL1Params, available_backends, compute_flow
    from flowcore.flow.synthetic import face_pairs

    sync = _sync(device)
    rows = []
    runs_on = {"opencv": device == "cpu", "cuda": device != "cpu"}  # CPU only, GPU only
    for backend in available_backends():
        if not runs_on.get(backend, True):
            continue
        batches = [2] if backend == "opencv" else ([1, 16, 128] if device != "cpu" else [1, 4, 16])
        for batch in batches:
            first, second = face_pairs((size, size), batch)
            seconds = time_median(lambda: compute_flow(first, second, params=TVL1Params(), backend=backend,
                                                       device="cpu" if backend == "opencv" else device),
                                  repeats, sync)
            rows.append({"backend": backend, "device": "cpu" if backend == "opencv" else device,
                         "batch": batch, "size": size, "pairs_per_s": batch / seconds})
    return rows


def training_step(device: str, repeats: int, batch: int = 128) -> dict:
    """Seconds of one training step on `batch` windows of 256 + 2 x 7 rows, and the estimate of a
    CAS(ME)^2-sized LOSO run from it."""
    import numpy as np
    import torch

    from spotting.losses import LossParams, spotting_loss
    from spotting.model import AUWGCN

    generator = torch.Generator().manual_seed(0)
    model = AUWGCN(np.eye(12, dtype=np.float32)).to(device)
    optimiser = torch.optim.AdamW(model.parameters(), lr=0.01)
    x = torch.randn(batch, 270, 12, 2, generator=generator).to(device)
    start_end = torch.randint(0, 3, (batch, 2, 256), generator=generator).to(device)
    apex = torch.rand(batch, 2, 256, generator=generator).to(device)
    action = (torch.rand(batch, 2, 256, generator=generator) > 0.9).float().to(device)

    def step():
        loss, _ = spotting_loss(model(x)[:, :, 7:263], start_end, apex, action, LossParams())
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()

    seconds = time_median(step, repeats, _sync(device))
    return {"device": device, "batch_windows": batch, "seconds_per_step": seconds,
            "loso_casme2_estimate_s": seconds * LOSO_STEPS, "loso_steps": LOSO_STEPS}


def _sync(device: str):
    if device.startswith("cuda"):
        import torch

        return torch.cuda.synchronize
    return None


def bench_command(
    device: str = typer.Option("cpu", "--device", help="cpu, cuda, cuda:N or auto."),
    size: int = typer.Option(128, "--size", help="Face size in pixels (as `mespot extract --resize`)."),
    threads: int = typer.Option(0, "--threads", help="CPU threads (0: torch's default)."),
    repeats: int = typer.Option(3, "--repeats", help="Timed calls per measurement (the median counts)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Also write the numbers as JSON here."),
) -> None:
    """Time optical flow and training on this machine and say which flags are fastest."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from rich.console import Console
    from rich.table import Table

    from mespot.environment import describe, set_threads
    from spotting.train import resolve_device

    if size < 16 or repeats < 1:
        raise UserError(f"--size must be >= 16 and --repeats >= 1, got {size} and {repeats}")
    device = str(resolve_device(device))
    if threads > 0:
        set_threads(threads)
    console = Console(stderr=True)
    with console.status(f"timing optical flow at {size}x{size} px on {device} ..."):
        flow = flow_rates(size, device, repeats)
    with console.status(f"timing a training step on {device} ..."):
        train = training_step(device, repeats)

    table = Table(title=f"mespot bench on {device}")
    for column in ("stage", "backend", "device", "batch", "speed"):
        table.add_column(column)
    for row in flow:
        table.add_row(f"flow {size}x{size}", row["backend"], row["device"], str(row["batch"]),
                      f"{row['pairs_per_s']:.2f} pairs/s")
    table.add_row("training step", "AUW-GCN", device, str(train["batch_windows"]),
                  f"{train['seconds_per_step'] * 1000:.1f} ms")
    console.print(table)
    best = max(flow, key=lambda r: r["pairs_per_s"])
    opencv = next((r for r in flow if r["backend"] == "opencv"), None)
    versus = f", {best['pairs_per_s'] / opencv['pairs_per_s']:.1f}x opencv" if opencv and best is not opencv else ""
    flags = f"--backend {best['backend']}" + ("" if best["device"] == "cpu" else f" --device {best['device']}")
    if best["backend"] != "opencv":
        flags += f" --batch-size {best['batch']}"
    console.print(f"extract: {flags} ({best['pairs_per_s']:.2f} pairs/s at {size} px in one process{versus})")
    console.print(f"train: a CAS(ME)^2-sized LOSO run (22 folds x 100 epochs) would take about "
                  f"{train['loso_casme2_estimate_s'] / 60:.0f} min on {device} (estimate: {LOSO_STEPS:,} steps "
                  f"x the step time; benchmarks/train_speed.py measures whole runs)")
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        record = {"benchmark": "mespot bench", **describe(threads or None), "flow": flow, "training": train,
                  "suggested_backend": best["backend"]}
        out.write_text(json.dumps(record, indent=1) + "\n")
        console.print(f"wrote {out}")
