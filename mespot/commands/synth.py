"""`mespot synth`: generate a synthetic long-video dataset and print its summary."""

from __future__ import annotations

import os
import shutil
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import numpy as np
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from flowcore.config_file import merged, read_mapping
from flowcore.errors import UserError
from mespot.commands.flags import flag_given
from mespot.synth.config import (
    DEFAULT,
    EVERYDAY,
    LAYOUTS,
    NEUTRAL,
    SAMM_FPS,
    SMALL,
    SMIC_FPS,
    SynthConfig,
)

if TYPE_CHECKING:
    from mespot.synth.generate import SynthResult


def synth_command(
    ctx: typer.Context,
    out: Path = typer.Option(
        ..., "--out", "-o", help="Folder to create (refused if not empty, see --overwrite)."
    ),
    small: bool = typer.Option(
        False, "--small", help="Small preset for tests and demos: 3 subjects x 2 videos x 8 s."
    ),
    layout: str = typer.Option(
        "casme2", help=f"Folder layout and workbook: {' or '.join(LAYOUTS)}."
    ),
    subjects: Optional[int] = typer.Option(None, help="Number of subjects [default: 6; small: 3]."),
    videos_per_subject: Optional[int] = typer.Option(
        None, help="Videos per subject, 1..9 [default: 3; small: 2]."
    ),
    seconds: Optional[float] = typer.Option(
        None, help="Length of each video in seconds [default: 60; small: 8]."
    ),
    fps: Optional[float] = typer.Option(
        None, help="Frame rate [default: 30; 200 with --layout samm; 100 with --layout smic]."
    ),
    face_size: Optional[int] = typer.Option(
        None, help="Face width in px (>= 128); frames are twice that [default: 128]."
    ),
    seed: int = typer.Option(0, help="Random seed: the same seed and flags give the same dataset."),
    workers: int = typer.Option(
        min(2, os.cpu_count() or 1), help="Processes rendering videos in parallel."
    ),
    overwrite: bool = typer.Option(
        False, "--overwrite", help="Replace the output folder if it exists."
    ),
    preview: Optional[Path] = typer.Option(
        None, help="Also copy the dataset's preview.png to this path."
    ),
    config_file: Optional[Path] = typer.Option(
        None, "--config", "-c",
        help="YAML or JSON mapping of generator parameters (keys as in synth.json's config, e.g. "
             "expressions_per_minute, micro_fraction); applied over the preset, flags typed win."),
    nuisances: bool = typer.Option(False, "--nuisances", help="Add talking (40% of the time), "
        "nods, head turns and lighting changes (rates: --config talking_fraction, ...)."),
    neutral: bool = typer.Option(False, "--neutral", help="No expression at all."),
) -> None:
    """Render synthetic long face videos with ground-truth expressions, blinks and head motion.

    Writes the CAS(ME)^2 layout (rawpic/ + CAS(ME)^2code_final.xlsx) or, with --layout samm, the
    SAMM-LV layout (SAMM_longvideos/ + SAMM_LongVideos_V1_Release.xlsx) or, with --layout smic,
    the SMIC-E-long HS layout (micro-expressions only, as SMIC annotates no other); each with
    ground_truth.csv, videos.csv, events.csv (blinks, head movements), synth.json and preview.png.
    """
    given = {"subjects": subjects, "videos_per_subject": videos_per_subject, "seconds": seconds,
             "fps": fps, "face_size": face_size}
    preset = (SMALL if small else DEFAULT).replace(**(EVERYDAY if nuisances else {}),
                                                   **(NEUTRAL if neutral else {}))
    config = _config(ctx, preset, config_file, layout, seed, given)
    result = _render(config, out, overwrite, workers)
    if preview is not None and (result.root / "preview.png").is_file():
        preview.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(result.root / "preview.png", preview)
    print_summary(result)


def _render(config: SynthConfig, out: Path, overwrite: bool, workers: int) -> "SynthResult":
    """generate_dataset with a progress bar of videos and frames/s on stderr."""
    from mespot.synth.generate import generate_dataset  # not for other commands' start-up

    console = Console(stderr=True)
    n_videos = config.subjects * config.videos_per_subject
    columns = (
        TextColumn("[bold]synth"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("videos"),
        TextColumn("{task.fields[fps]}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task("render", total=n_videos, fps="")
        frames_done = [0]

        def advance(video) -> None:
            frames_done[0] += video.n_frames
            elapsed = bar.tasks[0].elapsed or 1e-9
            bar.update(task, advance=1, fps=f"{frames_done[0] / elapsed:,.0f} frames/s")

        return generate_dataset(
            config, out, overwrite=overwrite, workers=workers, progress=advance
        )


def _config(ctx, preset: SynthConfig, path: Path | None, layout: str, seed: int,
            given: dict) -> SynthConfig:
    """The preset, then the --config file, then the flags: `layout` and `seed` where typed or
    where the file is silent, those of `given` (field -> value) where not None; the SAMM-LV (SMIC
    HS) frame rate for the samm (smic) layout unless the file or --fps sets one, and for smic
    micro-expressions only unless the file sets micro_fraction. Validated."""
    config, from_file = config_from_file(preset, path) if path is not None else (preset, set())
    if "layout" not in from_file or flag_given(ctx, "layout"):
        config = config.replace(layout=layout)
    if "seed" not in from_file or flag_given(ctx, "seed"):
        config = config.replace(seed=seed)
    if given["fps"] is None and config.layout in ("samm", "smic") and "fps" not in from_file:
        given = {**given, "fps": SAMM_FPS if config.layout == "samm" else SMIC_FPS}
    if config.layout == "smic" and "micro_fraction" not in from_file:  # SMIC: micro only
        config = config.replace(micro_fraction=1.0, both_types_per_video=False)
    config = config.replace(**{k: v for k, v in given.items() if v is not None})
    config.validate()
    return config


def config_from_file(base: SynthConfig, path: Path) -> tuple[SynthConfig, set]:
    """(`base` with the parameters of a YAML/JSON file applied, the keys the file set); a
    synth.json's `config` section given back reproduces that set. UserError naming the file for
    unknown keys or bad values."""
    given = read_mapping(path, "synthetic generator parameters")
    values = merged(base.to_dict(), given, str(path))
    for key, value in values.items():
        if isinstance(getattr(base, key), tuple):
            if not isinstance(value, (list, tuple)) or len(value) != len(getattr(base, key)):
                raise UserError(f"{path}: {key!r} must be a list of "
                                f"{len(getattr(base, key))} numbers")
            values[key] = tuple(float(v) for v in value)
    try:
        return SynthConfig(**values), set(given)
    except TypeError as err:
        raise UserError(f"{path}: {err}") from err


def print_summary(result: SynthResult) -> None:
    """Plain-text summary: sizes, expression counts and lengths, AU tokens, nuisances."""
    config, console = result.config, Console()
    rows = [row for v in result.videos for row in v.expressions]
    frames = sum(v.n_frames for v in result.videos)
    events = Counter(e["kind"] for v in result.videos for e in v.events)
    table = Table(title=f"synthetic dataset at {result.root}", show_header=True)
    table.add_column("what")
    table.add_column("value", justify="right")
    table.add_row("layout", config.layout)
    table.add_row("subjects / videos", f"{config.subjects} / {len(result.videos)}")
    table.add_row(
        "frames",
        f"{frames:,} ({frames / config.fps / 60:.1f} min at {config.fps:g} fps, "
        f"{config.frame_size}x{config.frame_size} px)",
    )
    for kind, name in (("mae", "macro-expressions"), ("me", "micro-expressions")):
        lengths = [r["offset"] - r["onset"] + 1 for r in rows if r["type"] == kind]
        amplitudes = [r["amplitude_px"] for r in rows if r["type"] == kind]
        detail = (
            (
                f"{len(lengths)}: length {min(lengths)}-{max(lengths)} frames "
                f"(median {np.median(lengths):g}), "
                f"peak {min(amplitudes):.2f}-{max(amplitudes):.2f} px"
            )
            if lengths
            else "0"
        )
        table.add_row(name, detail)
    tokens = Counter(t.lstrip("LR") for r in rows for t in r["au"].split("+"))
    table.add_row("AU tokens", ", ".join(f"AU{k} {n}" for k, n in tokens.most_common()))
    table.add_row("blinks / quick head moves", f"{events['blink']} / {events['head_move']}")
    if any(events[k] for k in ("talk", "nod", "turn", "light")):  # --nuisances
        table.add_row("talking / nods / turns / light changes",
                      " / ".join(str(events[k]) for k in ("talk", "nod", "turn", "light")))
    table.add_row(
        "time", f"{result.seconds:.1f} s ({frames / max(result.seconds, 1e-9):,.0f} frames/s)"
    )
    console.print(table)
