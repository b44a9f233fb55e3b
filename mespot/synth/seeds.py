"""Which dataset seeds are for what: benchmark sets and training/pretraining sets never share one.

A synthetic dataset is fixed by its config and seed: subject i of a dataset with seed S is drawn
from `SeedSequence([S, 7919, i])` (identity: geometry, skin tone, lighting, texture, mirroring)
and its video v from `SeedSequence([S, i, v, 1])` / `[S, i, v, 2]` (plan and noise). Sets with
different seeds therefore share no identity and no video stream. The ranges below make that a
rule: benchmark sets (benchmarks/spotting_quality.py) use seeds in `BENCHMARK_SEEDS`; the
development set on which design choices are made uses `DEV_SEEDS`; the sets for synthetic
pretraining (the weights `--init pretrained` is to ship) use `PRETRAIN_SEEDS`; `mespot pretrain`
refuses benchmark and development seeds (`check_synthetic_seed`). (All identities are still made
from the one face photo of the generator: the sets are disjoint in identity draws and events,
not in the underlying photo.)
"""

from __future__ import annotations

import json
from pathlib import Path

from flowcore.errors import UserError
from flowcore.locations import location

BENCHMARK_SEEDS = range(9000, 10000)  # reserved: quality benchmarks only
DEV_SEEDS = range(8000, 9000)  # development sets: choices are made on them, never pretrained on
PRETRAIN_SEEDS = range(1000, 8000)  # synthetic pretraining sets


def check_not_benchmark(seed: int, what: str = "a training set") -> int:
    """`seed`, or UserError when it lies in a range reserved for benchmark or development sets."""
    for name, seeds in (("benchmark", BENCHMARK_SEEDS), ("development", DEV_SEEDS)):
        if seed in seeds:
            raise UserError(f"seed {seed} is reserved for {name} sets "
                            f"({seeds.start}..{seeds.stop - 1}); {what} must use another")
    return seed


def check_synthetic_seed(annotations: str | Path) -> int | None:
    """The seed of the synthetic set whose annotations these are (from the synth.json beside
    them; None for other data); UserError when it is reserved for benchmark or development
    sets."""
    meta = location(annotations).parent / "synth.json"  # a URL's too (flowcore/locations.py)
    if not meta.is_file():
        return None
    try:
        seed = int(json.loads(meta.read_text())["config"]["seed"])
    except (ValueError, KeyError, TypeError) as err:
        raise UserError(f"{meta}: not a synth.json with config.seed ({err})") from None
    return check_not_benchmark(seed, f"the pretraining set {meta.parent}")
