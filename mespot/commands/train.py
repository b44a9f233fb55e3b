"""`mespot train`: flags (and an optional YAML file) -> `spotting.loso.train_loso`.

torch is imported only when the command runs, so `mespot --help` stays quick.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import List, Optional

import typer
from typer import Argument as typer_argument
from typer import Option as typer_option

from flowcore.config_file import read_mapping
from flowcore.errors import UserError
from mespot.commands.flags import engine_from_flags, flag_given
from spotting.prior import PriorParams
from spotting.train_params import TrainParams

# flag name -> (section of the config, field); each flag defaults to that field's default
_FLAG_FIELDS = {
    "epochs": ("train", "epochs"), "batch_size": ("train", "batch_size"), "lr": ("train", "lr"),
    "seed": ("train", "seed"), "normalisation": ("train", "normalisation"),
    "macro_ratio": ("train", "macro_ratio"), "save_every": ("train", "save_every"),
    "inner_val": ("train", "inner_val"), "init": ("train", "init"), "augment": ("train", "augment"),
    "prior": ("prior", "source"), "split_seed": ("split", "seed"),
    "split_test": ("split", "test_fraction"),
}
_SECTIONS = {"train": TrainParams(), "prior": PriorParams()}  # light: no torch at start-up


def _flag(flag: str, name: str, help_text: str):
    """The option of a flag of _FLAG_FIELDS, defaulting to its field's default."""
    section, field = _FLAG_FIELDS[flag]
    return typer_option(getattr(_SECTIONS[section], field), name, help=help_text)


def train_command(
    ctx: typer.Context,
    stores: List[str] = typer_argument(
        ..., help="Feature store(s) (Zarr) written by `mespot extract`. Several stores train as "
        "one pooled dataset, subjects and videos named <name>_<id>; name a store NAME=PATH "
        "(default: casme, samm or smic from the store, as the reference's cross.csv)."),
    annotations: List[str] = typer_option(
        ..., "--annotations", "-a", help="CAS(ME)^2, SAMM-LV or SMIC-E-long workbook (.xlsx), a "
        "CSV with columns subject, video, onset, apex, offset, type, au, or the reference's "
        "cross.csv. One per store, in the same order (or one namespaced file for all)."),
    out: str = typer_option(
        ..., "--out", "-o", help="Run folder, e.g. runs/NAME (resumes if it exists), or a URL "
        "(s3://...: docs/cluster.md)."),
    protocol: str = typer_option(
        "loso", "--protocol", help="loso (one fold per subject, over every dataset's subjects), "
        "cross-dataset (train on every dataset but --test-on, test on those: one model) or "
        "split (a seeded random split of the videos, as the reference's cross)."),
    test_on: Optional[List[str]] = typer_option(
        None, "--test-on", help="With --protocol cross-dataset: the dataset(s) tested."),
    split_seed: int = typer_option(42, "--split-seed", help="With --protocol split: its seed."),
    split_test: float = typer_option(
        0.24, "--split-test", help="With --protocol split: the share of videos tested."),
    config: Optional[Path] = typer_option(
        None, "--config", "-c", help="YAML file with sections train, windows, prior, losses, model "
        "(field names as in config.json); flags given win."),
    epochs: int = _flag("epochs", "--epochs", "Training epochs per fold (the paper: 100)."),
    batch_size: int = _flag("batch_size", "--batch-size", "Windows per batch."),
    lr: float = _flag("lr", "--lr", "AdamW learning rate (x0.96 per epoch)."),
    seed: int = _flag("seed", "--seed", "Random seed (model init and shuffling)."),
    normalisation: str = _flag(
        "normalisation", "--normalisation", "Feature normalisation: fold (from the training "
        "subjects) or compat (the reference's constants, for 8-bit compat features)."),
    prior: str = _flag("prior", "--prior", "AU prior from the training subjects (train) or "
                       "from every annotation (all)."),
    macro_ratio: Optional[float] = _flag(
        "macro_ratio", "--macro-ratio", "Weight r of the macro losses (default 0.5, SAMM-LV 0.7)."),
    save_every: int = _flag("save_every", "--save-every", "Keep weights every N epochs (and "
                            "the last); evaluation can only choose among kept epochs."),
    inner_val: Optional[int] = _flag(
        "inner_val", "--inner-val", "Per fold, also a model without K training subjects, on "
        "which `evaluate` chooses the proposal rules (and an epoch with --select inner-val) "
        "[default: 2 for a store of 8 or more subjects, else 0; 0: off, as the paper]."),
    init: str = _flag("init", "--init", "Initial weights of each fold: pretrained (shipped with "
                      "mespot), scratch (random, as the paper) or a file from `mespot pretrain`."),
    augment: str = _flag("augment", "--augment", "none, or mirror (p 1/2 per window)."),
    subjects: Optional[str] = typer_option(
        None, "--subjects", help="Comma-separated test subjects: train only these folds."),
    device: str = typer_option("cpu", "--device", help="cpu, cuda, cuda:N or auto."),
    threads: int = typer_option(
        0, "--threads", help="CPU threads for torch (0: torch's default; with --workers, the "
        "cores shared out), per worker with --workers."),
    workers: Optional[int] = typer_option(
        None, "--workers", "-j", help="Train this many folds at once in worker processes (CPU "
        "cores shared out; with --device cuda, spread over every visible GPU); default 1. With "
        "--engine ray: the most fold tasks at once (default: as the cluster allows)."),
    engine: str = typer_option(
        "local", "--engine", help="'local': this machine; 'ray': one Ray task per fold on a Ray "
        "cluster (store and --out on a filesystem every node sees; see docs/cluster.md)."),
    address: Optional[str] = typer_option(
        None, "--address", help="With --engine ray: 'auto' (the cluster `ray start` made here) "
        "or HOST:PORT of its head; default: a Ray instance on this machine."),
    gpus_per_task: Optional[float] = typer_option(
        None, "--gpus-per-task", help="With --engine ray --device cuda: the share of a GPU each "
        "fold reserves (default 0.125)."),
    overwrite: bool = typer_option(
        False, "--overwrite", help="Delete a run folder with another configuration."),
    no_tensorboard: bool = typer_option(
        False, "--no-tensorboard", help="Do not write TensorBoard scalars."),
    quiet: bool = typer_option(
        False, "--quiet", "-q", help="No progress output (the log file is still written)."),
) -> None:
    """Train AUW-GCN with leave-one-subject-out folds on a feature store (or several pooled).

    Writes config.json, train.log, annotation_issues.csv and, per fold, safetensors weights,
    a resume state and TensorBoard scalars into --out. Run the same command again to resume."""
    _train(ctx)


def _train(ctx) -> None:
    """`mespot train` with the flags of `ctx.params` (parameter name -> value)."""
    # Idle OpenMP threads sleep rather than spin (much faster on shared cores); only effective
    # when torch is not loaded yet, and a value the user set wins.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from mespot.api import train
    from mespot.progress import RichTraining
    from spotting.protocols import PROTOCOLS

    p = ctx.params
    if p["protocol"] not in PROTOCOLS:
        raise UserError(f"--protocol {p['protocol']!r}: one of {', '.join(PROTOCOLS)}")
    if p["test_on"] and p["protocol"] != "cross-dataset":
        raise UserError("--test-on: only with --protocol cross-dataset")
    ray_engine = engine_from_flags(p["engine"], p["address"], p["gpus_per_task"], p["device"])
    subjects = p["subjects"]
    folds = [s.strip() for s in subjects.split(",") if s.strip()] if subjects else None
    train(p["stores"], p["annotations"], p["out"], sections=_sections(ctx, p["config"]),
          device=p["device"], subjects=folds, workers=p["workers"], threads=p["threads"],
          engine=ray_engine, overwrite=p["overwrite"], tensorboard=not p["no_tensorboard"],
          progress=None if p["quiet"] else RichTraining(), protocol=p["protocol"],
          test_datasets=p["test_on"] or ())


def _sections(ctx, config: Path | None) -> dict:
    """The configuration sections: the --config file's, then the flags typed (their values in
    `ctx.params`, by parameter name) over them; flags left at their default fill only what the
    file does not set."""
    values = ctx.params
    expected = "sections (train, windows, prior, losses, model)"
    sections = read_mapping(config, expected) if config else {}
    for flag, (section, name) in _FLAG_FIELDS.items():
        if flag_given(ctx, flag) or name not in sections.get(section, {}):
            sections.setdefault(section, {})[name] = values[flag]
    return sections
