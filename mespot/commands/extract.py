"""`mespot extract`: a source (dataset copy, video folder, synthetic set) -> a feature store."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from flowcore.errors import UserError
from flowcore.extract import ExtractParams
from mespot.commands.flags import engine_from_flags, flag_given

DEFAULTS = ExtractParams()  # every flag below that sets a parameter defaults to its field here


class ExtractionFailed(Exception):
    """Some videos failed (the others are in the store): one line on stderr, exit code 1.

    Shaped like a click usage error (`show()`, `exit_code`), which `mespot.cli.main` turns into
    its return code; a plain `typer.Exit(1)` would be returned by typer and dropped there.
    """

    exit_code = 1

    def show(self) -> None:
        typer.echo(f"error: {self}", err=True)


def _summary_table(report) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"mespot extract -> {report.store}")
    for column in ("video", "subject", "status", "frames", "seconds", "frames/s",
                   "landmark repairs", "frame repairs", "error"):
        table.add_column(column)
    for r in report.results:
        fixed = sum(len(v) for v in r.frame_repairs.values()) if r.frame_repairs else 0
        rate = f"{r.n_frames / r.seconds:.1f}" if r.seconds and r.n_frames else ""
        error = f"[{r.stage}] {r.error}" if r.error else ""
        table.add_row(r.video_id, r.subject, r.status, str(r.n_frames or ""),
                      f"{r.seconds:.1f}" if r.seconds else "", rate,
                      str(r.landmark_repairs or ""), str(fixed or ""), error)
    console = Console(width=200) if not sys.stdout.isatty() else Console()
    console.print(table)
    for r in report.results:  # every repaired frame, by number (also in the store's attributes)
        repairs = (r.frame_repairs or {}).items()
        listed = "; ".join(f"{kind} {numbers}" for kind, numbers in repairs if numbers)
        if listed:
            console.print(f"{r.video_id}: frames repaired (replaced by a neighbour): {listed}",
                          markup=False, highlight=False)
    for r in report.results:
        for note in r.notes:  # e.g. frames without the face (also in the store's attributes)
            console.print(f"note: {r.video_id}: {note}", markup=False, highlight=False)
        for warning in r.warnings:
            console.print(f"warning: {r.video_id}: {warning}", markup=False, highlight=False)
    for warning in report.warnings:
        console.print(f"warning: {warning}")
    console.print(report.summary())


# flag -> key in ExtractParams.to_dict() ("faces.resize": key resize of section faces)
FLAG_KEYS = {"backend": "flow_backend", "subsample": "subsample", "compat": "compat",
             "save_flow": "save_flow", "resize": "faces.resize", "margin": "faces.margin",
             "face_backend": "faces.backend", "face": "faces.choose", "align": "align",
             "lambda_": "tvl1.lambda_"}


def _params(ctx, config: Path | None):
    """ExtractParams (flowcore.extract.extract_params) from the defaults, then the --config
    file, then the flags typed on the command line; UserError naming the file for unknown keys
    or values out of range."""
    from flowcore.config_file import merged, read_mapping
    from flowcore.extract import extract_params

    values, where = None, "flags"
    if config is not None:
        where = str(config)
        values = merged({**DEFAULTS.to_dict(), "align": None},  # off unless the file says
                        read_mapping(config, "extraction parameters"), where)
    typed = {key: ctx.params[flag] for flag, key in FLAG_KEYS.items() if flag_given(ctx, flag)}
    try:
        return extract_params(values, typed)
    except ValueError as err:
        raise UserError(f"{where}: {err}") from None


def extract_command(
    ctx: typer.Context,
    source: str = typer.Argument(..., help="A CAS(ME)^2 or SAMM-LV copy, a folder of videos, "
                                 "or `mespot synth`'s output: a path or a URL (s3://...)."),
    out: str = typer.Option(..., "--out", "-o", help="The Zarr feature store to create or "
                            "resume (complete videos are skipped): a path or a URL."),
    backend: str = typer.Option(DEFAULTS.flow_backend, "--backend", help="Flow backend (see "
                                "flowcore.flow.available_backends())."),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda, cuda:1, ..."),
    workers: Optional[int] = typer.Option(None, "--workers", help="Processes (default: one "
                                          "per CPU core, 8 sharing a GPU); with --engine ray, "
                                          "the most tasks at once (default: as the cluster fits)."),
    engine: str = typer.Option("local", "--engine", help="'local': processes on this machine; "
                               "'ray': one Ray task per video on a Ray cluster (pip install "
                               "\"mespot[ray]\"; see docs/cluster.md)."),
    address: Optional[str] = typer.Option(None, "--address", help="With --engine ray: 'auto' "
                                          "(the cluster `ray start` made here) or HOST:PORT of "
                                          "its head; default: RAY_ADDRESS, else Ray here."),
    gpus_per_task: Optional[float] = typer.Option(None, "--gpus-per-task", help="With --engine "
                                                  "ray: GPUs per video task (a fraction shares "
                                                  "one GPU; default 0.125 with --device cuda)."),
    subsample: Optional[int] = typer.Option(DEFAULTS.subsample, "--subsample", help="Keep every "
                                            "n-th frame (default 8 for SAMM-LV, 1 otherwise)."),
    resize: Optional[int] = typer.Option(DEFAULTS.faces.resize, "--resize", help="Resize face "
                                         "crops to N x N px."),
    margin: float = typer.Option(DEFAULTS.faces.margin, "--margin", help="Grow the square face "
                                 "box by this fraction of its side on every side."),
    face_backend: str = typer.Option(DEFAULTS.faces.backend, "--face-backend", help="'dlib', or "
                                     "'package.module:object' naming a flowcore.faces."
                                     "FaceBackend (your own detector and landmarks)."),
    face: str = typer.Option(DEFAULTS.faces.choose, "--face", help="Of several faces: largest, "
                             "center or N (0-based, from the left); the choice is stated."),
    lambda_: float = typer.Option(DEFAULTS.tvl1.lambda_, "--lambda", help="TV-L1 data weight "
                                  "lambda: smaller gives smoother flow."),
    compat: bool = typer.Option(DEFAULTS.mdmo.compat, "--compat", help="Reproduce the "
                                "reference's 8-bit flow and cartToPolar angles (features in "
                                "'20 px' units)."),
    save_flow: bool = typer.Option(DEFAULTS.save_flow, "--save-flow", help="Also store the dense "
                                   "flow (float16; large)."),
    align: bool = typer.Option(DEFAULTS.align is not None, "--align", help="Register every face "
                               "crop to its run's first frame (similarity from eye corners and "
                               "nose bridge) first."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Frame pairs per flow "
                                             "call (default: 16 on the CPU, 128 on a GPU)."),
    video: Optional[list[str]] = typer.Option(None, "--video", help="Only these video ids "
                                              "(repeatable)."),
    subjects_csv: Optional[str] = typer.Option(None, "--subjects-csv", help="For a folder "
                                                "of videos: CSV with columns video,subject."),
    pictures: Optional[Path] = typer.Option(None, "--pictures", help="Write one picture per "
                                            "video into this folder (box, landmarks, ROIs, flow)."),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="YAML (or JSON) file of "
                                          "extraction parameters, keys as in a store's `params` "
                                          "(flow_backend, tvl1, faces, ...). Flags given win."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Extract again the complete videos "
                                   "whose source frames changed (refused otherwise)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
) -> None:
    """Extract landmarks, TV-L1 flow and 12-ROI MDMO features into a Zarr store.

    Resumes: videos complete in --out and extracted from the same frames are skipped, the others
    redone; a store of other parameters, or of other frames (see --overwrite), is refused.
    Copies (identical frames; names with _old, copy, (1), .bak) are warned of. The face is
    tracked: frames without it are marked and said, and no feature spans them. A video that
    fails (no face, unreadable frames) is recorded with its stage and error; the others go on.
    Exit code 0 when every video is complete, 1 when some failed, 2 for a usage error.
    """
    from flowcore.batch import ExtractionInterrupted
    from mespot.api import extract
    from mespot.progress import RichProgress

    runner = engine_from_flags(engine, address, gpus_per_task, device, " --backend torch")
    try:  # the flags that set parameters (FLAG_KEYS) are read from ctx by _params
        report = extract(source, out, _params(ctx, config), device=device, workers=workers,
                         batch_size=batch_size, videos=video, subjects_csv=subjects_csv,
                         engine=runner, progress=RichProgress(enabled=not quiet),
                         overwrite=overwrite)
    except ExtractionInterrupted as stop:  # Ctrl-C: say what was saved, exit 130
        typer.echo(f"interrupted: {stop}", err=True)
        raise typer.Exit(130) from None
    _show(report, pictures)


def _show(report, pictures: Path | None) -> None:
    """The pictures (with --pictures), the summary table; ExtractionFailed if a video failed."""
    if pictures is not None:
        from flowcore.pictures import write_pictures

        write_pictures(report.store, pictures, report.source,
                       [r.video_id for r in report.results if r.status != "failed"])
    _summary_table(report)
    if report.failed:
        raise ExtractionFailed(f"{len(report.failed)} of {len(report.results)} video(s) failed; "
                               f"see the table above (rerun to retry them)")
