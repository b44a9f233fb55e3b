"""`mespot pretrain`: synthetic feature stores -> one network's weights (`mespot.api.pretrain`),
the start of `mespot train --init FILE`.

torch is imported only when the command runs, so `mespot --help` stays quick.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import typer
from typer import Argument as typer_argument
from typer import Option as typer_option

from flowcore.config_file import read_mapping
from mespot.commands.flags import flag_given


def pretrain_command(
    ctx: typer.Context,
    stores: list[str] = typer_argument(
        ..., help="Feature store(s) of synthetic sets (`mespot extract` of `mespot synth`)."),
    annotations: list[str] = typer_option(
        ..., "--annotations", "-a", help="The workbook or CSV of each store, in the same order "
        "(repeat the flag)."),
    out: Path = typer_option(..., "--out", "-o", help="Weights file to write (.safetensors)."),
    config: Optional[Path] = typer_option(
        None, "--config", "-c", help="YAML file with sections train, windows, prior, losses, "
        "model, as for `mespot train`; flags given win."),
    epochs: int = typer_option(100, "--epochs", help="Training epochs."),
    seed: int = typer_option(1, "--seed", help="Random seed (model init and shuffling)."),
    device: str = typer_option("cpu", "--device", help="cpu, cuda, cuda:N or auto."),
    threads: int = typer_option(0, "--threads", help="CPU threads for torch (0: torch's default)."),
    quiet: bool = typer_option(False, "--quiet", "-q", help="No progress output."),
) -> None:
    """Pretrain AUW-GCN on every subject of synthetic feature stores (no test subject).

    The weights start the folds of `mespot train --init FILE` (the AU prior and the feature
    normalisation stay each fold's own). Synthetic sets made with a seed reserved for benchmark
    or development sets are refused. A killed run resumes from OUT.work/."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as `mespot train`
    import torch

    from mespot.api import pretrain
    from mespot.progress import RichTraining

    if threads > 0:
        torch.set_num_threads(threads)
    expected = "sections (train, windows, prior, losses, model)"
    sections = read_mapping(config, expected) if config is not None else {}
    for flag, value in (("epochs", epochs), ("seed", seed)):
        if flag_given(ctx, flag) or flag not in sections.get("train", {}):
            sections.setdefault("train", {})[flag] = value
    path = pretrain(stores, annotations, out, sections=sections, device=device,
                    progress=None if quiet else RichTraining())
    typer.echo(f"pretrained weights: {path}")
