"""Shared by the flow benchmarks: thread settings, machine / version record, JSON output."""

from __future__ import annotations

import json
from pathlib import Path

from mespot.environment import set_threads  # noqa: F401  (the benchmarks import it from here)

RESULTS = Path(__file__).parent / "results"


def default_backends(device: str) -> list[str]:
    """The flow backends a benchmark times by default: every one available, but `cuda` only on a
    CUDA device (`opencv` always runs on the CPU, as the reference in the same run)."""
    from flowcore.flow import available_backends

    return [b for b in available_backends() if b != "cuda" or device.startswith("cuda")]


def environment(threads: int) -> dict:
    """Machine, versions and thread settings, JSON-able (mespot.environment.describe)."""
    from mespot.environment import describe

    return describe(threads)


def write_json(name: str, payload: dict, out: str | None) -> Path:
    """Write payload to `out` or benchmarks/results/<name>; returns the path."""
    path = Path(out) if out else RESULTS / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2) + "\n")
    return path
