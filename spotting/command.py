"""`mespot train`: flags -> `spotting.train.train_loso` (torch is imported only when it runs)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from typer import Argument as typer_argument
from typer import Option as typer_option

from mespot.errors import UserError


def train_command(
    store: Path = typer_argument(..., help="Feature store (Zarr) written by `mespot extract`."),
    annotations: Path = typer_option(..., "--annotations", "-a",
                                     help="CAS(ME)^2 or SAMM-LV workbook (.xlsx) or a CSV with columns "
                                          "subject, video, onset, apex, offset, type, au."),
    out: Path = typer_option(..., "--out", "-o", help="Run folder, e.g. runs/NAME (resumes if it exists)."),
    protocol: str = typer_option("loso", "--protocol", help="Evaluation protocol: loso (one fold per subject)."),
    epochs: int = typer_option(100, "--epochs", help="Training epochs per fold."),
    batch_size: int = typer_option(128, "--batch-size", help="Windows per batch."),
    lr: float = typer_option(0.01, "--lr", help="AdamW learning rate (x0.96 per epoch)."),
    seed: int = typer_option(1, "--seed", help="Random seed (model init and shuffling)."),
    normalisation: str = typer_option("fold", "--normalisation",
                                      help="Feature normalisation: fold (from the training subjects) or "
                                           "compat (the reference's constants, for 8-bit compat features)."),
    prior: str = typer_option("train", "--prior",
                              help="AU prior from the training subjects (train) or from every annotation (all)."),
    macro_ratio: Optional[float] = typer_option(None, "--macro-ratio",
                                                help="Weight r of the macro losses (default 0.5, SAMM-LV 0.7)."),
    save_every: int = typer_option(10, "--save-every", help="Keep weights every N epochs (and the last)."),
    subjects: Optional[str] = typer_option(None, "--subjects",
                                           help="Comma-separated test subjects: train only these folds."),
    device: str = typer_option("cpu", "--device", help="cpu, cuda, cuda:N or auto."),
    threads: int = typer_option(0, "--threads", help="CPU threads for torch (0: torch's default)."),
    overwrite: bool = typer_option(False, "--overwrite", help="Delete a run folder with another configuration."),
    no_tensorboard: bool = typer_option(False, "--no-tensorboard", help="Do not write TensorBoard scalars."),
    quiet: bool = typer_option(False, "--quiet", "-q", help="No progress output (the log file is still written)."),
) -> None:
    """Train AUW-GCN with leave-one-subject-out folds on a feature store."""
    import torch

    from spotting.prior import PriorParams
    from spotting.train import RunConfig, TrainParams, train_loso

    if threads > 0:
        torch.set_num_threads(threads)
    if prior not in ("train", "all"):
        raise UserError(f"--prior must be 'train' or 'all', got {prior!r}")
    config = RunConfig(
        store=str(store), annotations=str(annotations), protocol=protocol,
        train=TrainParams(epochs=epochs, batch_size=batch_size, lr=lr, seed=seed,
                          normalisation=normalisation, macro_ratio=macro_ratio, save_every=save_every),
        prior=PriorParams(source=prior),
    )
    folds = [s.strip() for s in subjects.split(",") if s.strip()] if subjects else None
    train_loso(config, out, device=device, subjects=folds, overwrite=overwrite,
               show_progress=not quiet, tensorboard=not no_tensorboard)
