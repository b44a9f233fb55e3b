"""`mespot bench`: time optical flow and a training step here (mespot.bench), print which flags
are fastest, and write the numbers as JSON with `--out`."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Optional

import typer

from flowcore.errors import UserError
from mespot.bench import LOSO_STEPS, flow_rates, training_step


def bench_command(
    device: str = typer.Option("cpu", "--device", help="cpu, cuda, cuda:N or auto."),
    size: int = typer.Option(
        128, "--size", help="Face size in pixels (as `mespot extract --resize`)."),
    threads: int = typer.Option(0, "--threads", help="CPU threads (0: torch's default)."),
    repeats: int = typer.Option(
        3, "--repeats", help="Timed calls per measurement (the median counts)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Also write the numbers as JSON here."),
) -> None:
    """Time optical flow and training on this machine and say which flags are fastest."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from rich.console import Console
    from rich.table import Table

    from mespot.environment import describe, set_threads
    from spotting.data import resolve_device

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
    versus = ""
    if opencv and best is not opencv:
        versus = f", {best['pairs_per_s'] / opencv['pairs_per_s']:.1f}x opencv"
    flags = f"--backend {best['backend']}"
    if best["device"] != "cpu":
        flags += f" --device {best['device']}"
    if best["backend"] != "opencv":
        flags += f" --batch-size {best['batch']}"
    console.print(f"extract: {flags} ({best['pairs_per_s']:.2f} pairs/s at {size} px in one "
                  f"process{versus})")
    console.print(f"train: a CAS(ME)^2-sized LOSO run (22 folds x 100 epochs) would take about "
                  f"{train['loso_casme2_estimate_s'] / 60:.0f} min on {device} "
                  f"(estimate: {LOSO_STEPS:,} steps "
                  f"x the step time; benchmarks/train_speed.py measures whole runs)")
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        record = {"benchmark": "mespot bench", **describe(threads or None), "flow": flow,
                  "training": train,
                  "suggested_backend": best["backend"]}
        out.write_text(json.dumps(record, indent=1) + "\n")
        console.print(f"wrote {out}")
