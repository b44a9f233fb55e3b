"""`mespot extract`: a source (dataset copy, video folder, synthetic set) -> a feature store."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Optional

import typer

from mespot.errors import UserError


class ExtractionFailed(Exception):
    """Some videos failed (the others are in the store): one line on stderr, exit code 1.

    Shaped like a click usage error (`show()`, `exit_code`), which `mespot.cli.main` turns into
    its return code; a plain `typer.Exit(1)` would be returned by typer and dropped there.
    """

    exit_code = 1

    def show(self) -> None:
        typer.echo(f"error: {self}", err=True)


class RichProgress:
    """A bar per running video (frames/s shown) and one overall bar, on stderr."""

    def __init__(self, enabled: bool = True):
        from rich.console import Console
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                                   TimeElapsedColumn)

        self.console = Console(stderr=True)
        self.enabled = enabled
        self.progress = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), console=self.console,
            disable=not enabled, transient=False)
        self.tasks: dict[str, int] = {}
        self.frames = 0
        self.started = time.perf_counter()
        self._last_done: dict[str, int] = {}
        self.started_at: dict[str, float] = {}
        self.finished: set[str] = set()

    def start(self, todo) -> None:
        self.progress.start()
        self.overall = self.progress.add_task("all videos", total=len(todo), rate="")
        self.todo, self.done = len(todo), 0
        self.phases: dict[str, str] = {}  # video -> "phase done/total" of the videos in progress
        self.heartbeat = None
        if self.enabled and not self.console.is_terminal:  # a log: plain lines instead of bars
            from flowcore.heartbeat import Heartbeat

            self.heartbeat = Heartbeat(self.status_line).start()

    def status_line(self) -> str:
        """Where the extraction is, in one line (for logs)."""
        running = "; ".join(f"{video} {phase}" for video, phase in list(self.phases.items())[:4])
        rate = self.frames / max(time.perf_counter() - self.started, 1e-9)
        return (f"extract: {self.done}/{self.todo} videos done, flow {rate:.1f} frames/s"
                + (f"; running: {running}" if running else ""))

    def update(self, video_id: str, phase: str, done: int, total: int) -> None:
        key = f"{video_id}:{phase}"
        if phase == "done" or video_id in self.finished:
            return  # late messages of a finished video
        now = time.perf_counter()
        self.phases[video_id] = f"{phase} {done}/{total}"
        if key not in self.tasks:
            self.tasks[key] = self.progress.add_task(f"{video_id} {phase}", total=total, rate="")
            self.started_at[key] = now
        if phase == "flow":
            self.frames += done - self._last_done.get(key, 0)
            self._last_done[key] = done
        rate = done / max(now - self.started_at[key], 1e-9)
        self.progress.update(self.tasks[key], completed=done, rate=f"{rate:.1f} frames/s")
        overall_rate = self.frames / max(now - self.started, 1e-9)
        self.progress.update(self.overall, rate=f"flow {overall_rate:.1f} frames/s")

    def finish(self, result) -> None:
        self.finished.add(result.video_id)
        self.phases.pop(result.video_id, None)
        self.done += 1
        for key in [k for k in self.tasks if k.startswith(result.video_id + ":")]:
            self.progress.remove_task(self.tasks.pop(key))
        self.progress.advance(self.overall)

    def note(self, text: str) -> None:
        """One line above the bars (e.g. the Ray cluster's size)."""
        self.progress.console.print(text)

    def close(self) -> None:
        if getattr(self, "heartbeat", None) is not None:
            self.heartbeat.stop()
        self.progress.stop()


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
        for warning in r.warnings:
            console.print(f"warning: {r.video_id}: {warning}", markup=False, highlight=False)
    for warning in report.warnings:
        console.print(f"warning: {warning}")
    console.print(report.summary())


def engine_from_flags(name: str, address: str | None, gpus_per_task: float | None, device: str,
                      hint: str = ""):
    """None for `--engine local`, else a flowcore.ray_engine.RayEngine checked against `device`
    (`hint`: flags the GPU message suggests); UserError for flags that cannot work together
    or a missing Ray. Shared by `mespot extract` and `mespot train`."""
    if name == "local":
        if address is not None or gpus_per_task is not None:
            raise UserError("--address and --gpus-per-task go with --engine ray")
        return None
    if name != "ray":
        raise UserError(f"--engine must be 'local' or 'ray', got {name!r}")
    from flowcore.ray_engine import RayEngine, import_ray

    try:
        import_ray()
        engine = RayEngine(address=address, gpus_per_task=gpus_per_task)
        engine.gpus_for(device, hint)
    except (ImportError, ValueError) as err:
        raise UserError(str(err)) from None
    return engine


# flag -> key in ExtractParams.to_dict() ("faces.resize": key resize of section faces)
_FLAG_KEYS = {"backend": "flow_backend", "subsample": "subsample", "compat": "compat",
              "save_flow": "save_flow", "resize": "faces.resize", "margin": "faces.margin",
              "face_backend": "faces.backend"}


def extract_params(ctx, config: Path | None, flags: dict):
    """ExtractParams from the defaults, then the --config file, then the flags typed on the
    command line (`flags`: their values, shaped as ExtractParams.to_dict()); UserError naming
    the file for unknown keys or values out of range."""
    from flowcore.extract import ExtractParams
    from mespot.config_file import flag_given, merged, read_mapping

    values = ExtractParams().to_dict()
    where = "flags"
    if config is not None:
        where = str(config)
        values = merged(values, read_mapping(config, "extraction parameters"), where)
    for flag, key in _FLAG_KEYS.items():
        if flag_given(ctx, flag) or config is None:
            section, _, name = key.rpartition(".")
            (values[section] if section else values)[name] = (flags[section][name] if section else flags[name])
    try:
        return ExtractParams.from_dict(values)
    except (TypeError, ValueError) as err:
        raise UserError(f"{where}: {err}") from None


def extract_command(
    ctx: typer.Context,
    source: Path = typer.Argument(..., help="A CAS(ME)^2 or SAMM-LV copy, a folder of video "
                                  "files, or the output of `mespot synth`."),
    out: Path = typer.Option(..., "--out", "-o", help="The Zarr feature store to create or "
                             "resume (complete videos are skipped)."),
    backend: str = typer.Option("opencv", "--backend", help="Flow backend (see "
                                "flowcore.flow.available_backends())."),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda, cuda:1, ..."),
    workers: Optional[int] = typer.Option(None, "--workers", help="Processes (default: one "
                                          "per CPU core on the CPU, 8 sharing a GPU); with "
                                          "--engine ray, the most tasks at once (default: as "
                                          "many as the cluster fits)."),
    engine: str = typer.Option("local", "--engine", help="'local': processes on this machine; "
                               "'ray': one Ray task per video on a Ray cluster (pip install "
                               "\"mespot[ray]\"; see docs/cluster.md)."),
    address: Optional[str] = typer.Option(None, "--address", help="With --engine ray: 'auto' "
                                          "(the cluster `ray start` made on this machine) or "
                                          "HOST:PORT of its head; default: RAY_ADDRESS or "
                                          "a cluster running here, else Ray started here."),
    gpus_per_task: Optional[float] = typer.Option(None, "--gpus-per-task", help="With --engine "
                                                  "ray: GPUs per video task (a fraction shares "
                                                  "one GPU; default 0.125 with --device cuda)."),
    subsample: Optional[int] = typer.Option(None, "--subsample", help="Keep every n-th frame "
                                            "(default 8 for SAMM-LV, 1 otherwise)."),
    resize: Optional[int] = typer.Option(None, "--resize", help="Resize face crops to N x N px."),
    margin: float = typer.Option(0.1, "--margin", help="Grow the square face box by this "
                                 "fraction of its side on every side."),
    face_backend: str = typer.Option("dlib", "--face-backend", help="'dlib', or "
                                     "'package.module:object' naming a flowcore.faces."
                                     "FaceBackend (your own detector and landmarks)."),
    compat: bool = typer.Option(False, "--compat", help="Reproduce the reference's 8-bit "
                                "flow and cartToPolar angles (features in '20 px' units)."),
    save_flow: bool = typer.Option(False, "--save-flow", help="Also store the dense flow "
                                   "(float16; large)."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Frame pairs per flow "
                                             "call (default: 16 on the CPU, 128 on a GPU)."),
    video: Optional[list[str]] = typer.Option(None, "--video", help="Only these video ids "
                                              "(repeatable)."),
    subjects_csv: Optional[Path] = typer.Option(None, "--subjects-csv", help="For a folder "
                                                "of videos: CSV with columns video,subject."),
    pictures: Optional[Path] = typer.Option(None, "--pictures", help="Write one picture per "
                                            "video of the store into this folder (box, "
                                            "landmarks, ROIs, flow)."),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="YAML (or JSON) file "
                                          "of extraction parameters, keys as in a store's "
                                          "`params` attribute: flow_backend, tvl1 (tau, "
                                          "lambda_, theta, n_scales, n_warps, ...), faces, rois, "
                                          "subsample, compat, save_flow. Flags given win."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
) -> None:
    """Extract landmarks, TV-L1 flow and 12-ROI MDMO features into a Zarr store.

    Resumes by default: videos already complete in --out are skipped, the others are redone; a
    store made with other parameters is refused. A video that fails (no face, unreadable
    frames, ...) is recorded in the store with its stage and error while the others go on.
    Exit code 0 when every video is complete, 1 when some failed, 2 for a usage error.
    """
    import dataclasses

    from flowcore.batch import run_extraction
    from flowcore.extract import RunOptions
    from flowcore.faces import face_backend as resolve_face_backend
    from flowcore.sources import SourceError, open_source
    from flowcore.store import StoreMismatchError

    options = RunOptions(device=device, batch_size=batch_size)
    runner = engine_from_flags(engine, address, gpus_per_task, options.device, " --backend torch")  # flags first
    flags = {"flow_backend": backend, "subsample": subsample, "compat": compat, "save_flow": save_flow,
             "faces": {"resize": resize, "margin": margin, "backend": face_backend}}
    params = extract_params(ctx, config, flags)
    backend = params.flow_backend
    try:
        src = open_source(source, subsample=params.subsample, subjects_csv=subjects_csv)
        resolve_face_backend(params.faces.backend)
    except (SourceError, ValueError, ImportError) as err:
        raise UserError(str(err)) from None
    if video:
        missing = sorted(set(video) - {v.video_id for v in src.videos})
        if missing:
            raise UserError(f"{source}: no video {', '.join(missing)}")
        src = dataclasses.replace(src, videos=tuple(v for v in src.videos if v.video_id in video))
    from flowcore.flow import available_backends

    if backend not in available_backends():
        raise UserError(f"--backend {backend!r} is not available here; available: "
                        f"{', '.join(available_backends())}")
    if backend == "opencv" and device != "cpu":
        raise UserError(f"the opencv flow backend runs on the CPU only; for --device {device} "
                        f"choose --backend torch")
    if backend == "cuda" and not device.startswith("cuda"):
        raise UserError("the cuda flow backend runs on a GPU: add --device cuda")
    if batch_size is not None and batch_size < 1:
        raise UserError(f"--batch-size must be >= 1, got {batch_size}")
    progress = RichProgress(enabled=not quiet)
    try:
        report = run_extraction(src, out, params, options, workers, progress, runner)
    except (StoreMismatchError, ValueError, ConnectionError) as err:  # Ray: cluster checks
        raise UserError(str(err)) from None
    except KeyboardInterrupt:
        from flowcore.batch import saved_summary

        typer.echo(f"interrupted: {saved_summary(out, [v.video_id for v in src.videos])}", err=True)
        raise typer.Exit(130) from None
    if pictures is not None:
        from flowcore.pictures import write_pictures

        write_pictures(report.store, pictures, src,
                       [r.video_id for r in report.results if r.status != "failed"])
    _summary_table(report)
    if report.failed:
        raise ExtractionFailed(f"{len(report.failed)} of {len(report.results)} video(s) failed; "
                               f"see the table above (rerun to retry them)")
