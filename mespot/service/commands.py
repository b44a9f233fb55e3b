"""`mespot serve`, `mespot jobs ...` and `mespot submit ...`: flags -> the service or its client.

The client commands need only the standard library; `mespot serve` imports the server's
packages (the `serve` extra) when it runs.
"""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path
from typing import Optional

import typer

from mespot.errors import UserError
from mespot.service.client import Client, find_token, server_url
from mespot.service.config import (CANCEL_GRACE_S, DEFAULT_HOME, DEFAULT_HOST, DEFAULT_PORT,
                                   LEASE_S, MAX_UPLOAD_MB)


def _server_option():
    return typer.Option(None, "--server", help="URL of the service [default: MESPOT_SERVER or "
                        "http://127.0.0.1:8750].")


def _token_option():
    return typer.Option(None, "--token", help="The service's token [default: MESPOT_TOKEN, "
                        "then --token-file].")


def _token_file_option():
    return typer.Option(None, "--token-file", help="File holding the token [default: "
                        "~/.mespot/server/token, the local server's].")


def _client(server, token, token_file) -> Client:
    return Client(server_url(server), find_token(token, token_file))


# ---- mespot serve --------------------------------------------------------------------------------

def _slots(device: str, slots: Optional[int], cores: Optional[int], engine: str):
    from mespot.service.config import cpu_slots, gpu_slots, ray_slots

    try:
        if engine == "ray":  # the cluster places the work; a slot is a job driven from here
            return ray_slots(slots or 1, device)
        if device == "cpu":
            return cpu_slots(slots or 1, cores)
        if device != "cuda":
            raise UserError(f"--device must be cpu or cuda, got {device!r}")
        import torch

        gpus = list(range(torch.cuda.device_count()))
        return gpu_slots(gpus[:slots] if slots else gpus)
    except ValueError as err:
        raise UserError(str(err)) from None


def _root(path: Path, flag: str) -> Path:
    path = path.expanduser().resolve()
    if not path.is_dir():
        raise UserError(f"{flag} {path}: no such folder")
    return path


def _lock_home(home: Path):
    """Hold HOME/server.lock for the server's life: one server per folder."""
    handle = open(home / "server.lock", "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise UserError(f"{home}: another `mespot serve` is using this folder") from None
    handle.seek(0)
    handle.truncate()
    handle.write(str(os.getpid()))
    handle.flush()
    return handle


def serve_command(
    data_root: Path = typer.Option(..., "--data-root", help="Folder of datasets, videos and "
                                   "annotation files; jobs read only under it."),
    store_root: Path = typer.Option(..., "--store-root", help="Folder for feature stores and "
                                    "run folders; jobs write only under it."),
    home: Path = typer.Option(DEFAULT_HOME, "--home", help="The server's own folder: the job "
                              "database (jobs.sqlite), the token, job logs and results, uploads."),
    host: str = typer.Option(DEFAULT_HOST, "--host", help="Address to listen on (0.0.0.0: every "
                             "interface; put HTTPS in front, see docs/service.md)."),
    port: int = typer.Option(DEFAULT_PORT, "--port", help="TCP port."),
    token_file: Optional[Path] = typer.Option(None, "--token-file", help="Read the token from "
                                              "this file [default: HOME/token, made at first start]."),
    device: str = typer.Option("cpu", "--device", help="cpu: slots of CPU cores; cuda: one slot "
                               "per visible GPU."),
    slots: Optional[int] = typer.Option(None, "--slots", help="Jobs at once (default: 1 on the "
                                        "CPU, every GPU with --device cuda)."),
    cores_per_slot: Optional[int] = typer.Option(None, "--cores-per-slot", help="CPU cores of a "
                                                 "CPU slot [default: all cores shared out]."),
    engine: str = typer.Option("local", "--engine", help="'local', or 'ray': each job's work "
                               "goes to a Ray cluster as `mespot extract/train --engine ray`."),
    address: Optional[str] = typer.Option(None, "--address", help="With --engine ray: the "
                                          "cluster (as for `mespot extract`)."),
    max_upload_mb: float = typer.Option(MAX_UPLOAD_MB, "--max-upload-mb", help="Largest video "
                                        "upload accepted."),
    lease_seconds: float = typer.Option(LEASE_S, "--lease-seconds", help="A running job is "
                                        "given back to the queue this long after its runner "
                                        "stopped renewing its lease."),
    cancel_grace: float = typer.Option(CANCEL_GRACE_S, "--cancel-grace", help="Seconds a "
                                       "cancelled job may take to stop before it is killed."),
    access_log: bool = typer.Option(False, "--access-log", help="Log every request."),
) -> None:
    """Run the extraction and spotting service: jobs in a queue, a web page, a JSON API.

    Open the printed address in a browser, or use `mespot submit` and `mespot jobs` from
    another shell or machine. Stop with Ctrl-C: running jobs go back to the queue and resume
    at the next start (as they do after a crash).
    """
    from mespot.service.config import ServiceConfig, to_json

    if engine not in ("local", "ray"):
        raise UserError(f"--engine must be 'local' or 'ray', got {engine!r}")
    config = ServiceConfig(
        home=home.expanduser().resolve(), data_root=_root(data_root, "--data-root"),
        store_root=_root(store_root, "--store-root"), slots=_slots(device, slots, cores_per_slot, engine),
        host=host, port=port, engine=engine, ray_address=address,
        max_upload_bytes=int(max_upload_mb * 2**20), lease_s=lease_seconds,
        cancel_grace_s=cancel_grace)
    if engine == "ray":
        from mespot.service.tasks import ray_engine

        ray_engine(address, config.slots[0].device)  # Ray missing or unfit: say so now
    config.home.mkdir(parents=True, exist_ok=True)
    lock = _lock_home(config.home)
    (config.home / "service.json").write_text(json.dumps(to_json(config), indent=1))
    run_server(config, token_file, access_log)
    lock.close()


def run_server(config, token_file: Optional[Path], access_log: bool = False) -> None:
    try:
        import uvicorn

        from mespot.service.app import create_app
    except ImportError as err:
        raise UserError(f"the service needs its extra: pip install \"mespot[serve]\" ({err})") from None
    from mespot.service import auth
    from mespot.service.jobs import JobStore
    from mespot.service.scheduler import Scheduler

    token, created = auth.load_or_create(config.home, token_file)
    scheduler = Scheduler(config, JobStore(config.database))
    app = create_app(config, token, scheduler)
    url = f"http://{config.host}:{config.port}/"
    echo = lambda text: typer.echo(text, err=True)  # noqa: E731
    echo(f"mespot serve: {url} (data root {config.data_root}, store root {config.store_root}, "
         f"{len(config.slots)} slot(s): {', '.join(s.name for s in config.slots)})")
    if created:
        echo(f"token (saved in {config.home / 'token'}; shown only this once): {token}")
        echo(f"open {url}?token={token}")
    else:
        echo(f"token: in {token_file or config.home / 'token'}")
    if config.host not in ("127.0.0.1", "localhost", "::1"):
        echo(f"warning: listening on {config.host}: put HTTPS in front (docs/service.md)")
    uvicorn.run(app, host=config.host, port=config.port, log_level="warning",
                access_log=access_log, timeout_graceful_shutdown=5)


# ---- mespot jobs ---------------------------------------------------------------------------------

jobs_app = typer.Typer(help="List, show, cancel and wait for jobs of a `mespot serve`.",
                       add_completion=False)


def _line(job: dict) -> str:
    from mespot.service.pages import describe, progress_text

    text = f"{job['id']:>5}  {job['kind']:<8}  {job['state']:<9}  {progress_text(job):<40}  {describe(job)}"
    return text + (f"\n       error: {job['error']}" if job["error"] else "")


@jobs_app.callback(invoke_without_command=True)
def jobs_root(ctx: typer.Context, server: Optional[str] = _server_option(),
              token: Optional[str] = _token_option(),
              token_file: Optional[Path] = _token_file_option()) -> None:
    """Without a subcommand: list the jobs."""
    if ctx.invoked_subcommand is None:
        jobs_list(None, False, server, token, token_file)


@jobs_app.command("list")
def jobs_list(state: Optional[str] = typer.Option(None, "--state", help="Only jobs in this state."),
              as_json: bool = typer.Option(False, "--json", help="Print the JSON."),
              server: Optional[str] = _server_option(), token: Optional[str] = _token_option(),
              token_file: Optional[Path] = _token_file_option()) -> None:
    """The jobs, newest first: id, kind, state, progress, what."""
    jobs = _client(server, token, token_file).jobs(state)
    if as_json:
        typer.echo(json.dumps(jobs, indent=1))
        return
    for job in jobs:
        typer.echo(_line(job))
    if not jobs:
        typer.echo("no jobs")


@jobs_app.command("show")
def jobs_show(job_id: int = typer.Argument(..., help="Job id."),
              log: bool = typer.Option(False, "--log", help="Also print the end of its log."),
              as_json: bool = typer.Option(False, "--json", help="Print the JSON."),
              server: Optional[str] = _server_option(), token: Optional[str] = _token_option(),
              token_file: Optional[Path] = _token_file_option()) -> None:
    """One job: state, progress, parameters, files, result."""
    client = _client(server, token, token_file)
    job = client.job(job_id)
    if as_json:
        typer.echo(json.dumps(job, indent=1))
    else:
        typer.echo(_line(job))
        typer.echo(f"       params: {json.dumps(job['params'])}")
        typer.echo(f"       files: {', '.join(job['files']) or 'none yet'}")
        if job["result"]:
            typer.echo(f"       result: {json.dumps(job['result'])}")
    if log:
        typer.echo(client.log(job_id), nl=False)


@jobs_app.command("cancel")
def jobs_cancel(job_id: int = typer.Argument(..., help="Job id."),
                server: Optional[str] = _server_option(), token: Optional[str] = _token_option(),
                token_file: Optional[Path] = _token_file_option()) -> None:
    """Cancel a queued job, or stop a running one between videos (its store stays resumable)."""
    job = _client(server, token, token_file).cancel(job_id)
    typer.echo(f"job {job_id}: {job['state']}" + (" (stopping)" if job["state"] == "running" else ""))


@jobs_app.command("wait")
def jobs_wait(job_id: int = typer.Argument(..., help="Job id."),
              timeout: Optional[float] = typer.Option(None, "--timeout", help="Give up after "
                                                      "this many seconds (exit code 2)."),
              server: Optional[str] = _server_option(), token: Optional[str] = _token_option(),
              token_file: Optional[Path] = _token_file_option()) -> None:
    """Wait for a job to end, printing its progress; exit code 0 if done, 1 otherwise."""
    _wait(_client(server, token, token_file), job_id, timeout)


def _wait(client: Client, job_id: int, timeout: Optional[float]) -> None:
    job = client.wait(job_id, timeout, on_change=lambda j: typer.echo(_line(j), err=True))
    typer.echo(f"job {job_id}: {job['state']}" + (f": {job['error']}" if job["error"] else
                                                  f" ({job['progress']['message']})"))
    if job["state"] != "done":
        raise typer.Exit(1)


@jobs_app.command("download")
def jobs_download(job_id: int = typer.Argument(..., help="Job id."),
                  name: str = typer.Argument(..., help="A file of the job (see `mespot jobs show`)."),
                  out: Optional[Path] = typer.Option(None, "--out", "-o", help="Where to write it "
                                                     "[default: the file's name here]."),
                  server: Optional[str] = _server_option(), token: Optional[str] = _token_option(),
                  token_file: Optional[Path] = _token_file_option()) -> None:
    """Download one of a job's files (intervals.csv, report.html, ...)."""
    path = _client(server, token, token_file).download(job_id, name, out or Path(Path(name).name))
    typer.echo(str(path))


# ---- mespot submit -------------------------------------------------------------------------------

submit_app = typer.Typer(help="Submit a job to a `mespot serve` (paths are relative to the "
                         "server's data root or store root).", no_args_is_help=True,
                         add_completion=False)


def _submit(kind: str, params: dict, wait: bool, server, token, token_file, upload=None) -> None:
    client = _client(server, token, token_file)
    if upload is not None:
        params["upload"] = client.upload(upload)
    job = client.submit(kind, {k: v for k, v in params.items() if v is not None})
    from mespot.service.pages import describe

    typer.echo(f"job {job['id']} queued: {kind} {describe(job)}")
    if wait:
        _wait(client, job["id"], None)


@submit_app.command("extract")
def submit_extract(
    source: str = typer.Argument(..., help="Dataset copy or video folder under the data root."),
    store: str = typer.Option(..., "--store", help="Feature store under the store root."),
    backend: str = typer.Option("torch", "--backend", help="Flow backend: torch, opencv, cuda."),
    resize: Optional[int] = typer.Option(None, "--resize", help="Resize face crops to N x N px."),
    subsample: Optional[int] = typer.Option(None, "--subsample", help="Keep every n-th frame."),
    video: Optional[list[str]] = typer.Option(None, "--video", help="Only these video ids."),
    wait: bool = typer.Option(False, "--wait", help="Wait for the job and print its progress."),
    server: Optional[str] = _server_option(), token: Optional[str] = _token_option(),
    token_file: Optional[Path] = _token_file_option(),
) -> None:
    """Extract a dataset (as `mespot extract`) on the server."""
    _submit("extract", {"source": source, "store": store, "backend": backend, "resize": resize,
                        "subsample": subsample, "videos": video or None},
            wait, server, token, token_file)


@submit_app.command("train")
def submit_train(
    store: str = typer.Argument(..., help="Feature store under the store root."),
    annotations: str = typer.Option(..., "--annotations", "-a", help="Annotation file under "
                                    "the data root."),
    run: str = typer.Option(..., "--run", help="Run folder under the store root."),
    epochs: int = typer.Option(100, "--epochs"),
    seed: int = typer.Option(1, "--seed"),
    inner_val: int = typer.Option(0, "--inner-val"),
    subjects: Optional[str] = typer.Option(None, "--subjects", help="Comma-separated folds."),
    wait: bool = typer.Option(False, "--wait", help="Wait for the job and print its progress."),
    server: Optional[str] = _server_option(), token: Optional[str] = _token_option(),
    token_file: Optional[Path] = _token_file_option(),
) -> None:
    """Train LOSO folds (as `mespot train`) on the server."""
    folds = [s.strip() for s in subjects.split(",") if s.strip()] if subjects else None
    _submit("train", {"store": store, "annotations": annotations, "run": run, "epochs": epochs,
                      "seed": seed, "inner_val": inner_val, "subjects": folds},
            wait, server, token, token_file)


@submit_app.command("evaluate")
def submit_evaluate(
    run: str = typer.Argument(..., help="Run folder under the store root."),
    select: list[str] = typer.Option(["last"], "--select", "-s", help="last, fixed:N, "
                                     "inner-val or oracle; repeatable."),
    report: bool = typer.Option(True, "--report/--no-report", help="Also write report.html."),
    wait: bool = typer.Option(False, "--wait", help="Wait for the job and print its progress."),
    server: Optional[str] = _server_option(), token: Optional[str] = _token_option(),
    token_file: Optional[Path] = _token_file_option(),
) -> None:
    """Evaluate a run (as `mespot evaluate`) on the server."""
    _submit("evaluate", {"run": run, "select": select, "report": report},
            wait, server, token, token_file)


@submit_app.command("predict")
def submit_predict(
    video: str = typer.Argument(..., help="A local video file (uploaded), or with --remote a "
                                "path under the server's data root."),
    model: str = typer.Option(..., "--model", "-m", help="Run folder under the store root."),
    remote: bool = typer.Option(False, "--remote", help="VIDEO is on the server."),
    select: str = typer.Option("last", "--select", "-s", help="last or fixed:N."),
    fold: Optional[str] = typer.Option(None, "--fold", help="Only this fold's model."),
    wait: bool = typer.Option(False, "--wait", help="Wait for the job and print its progress."),
    server: Optional[str] = _server_option(), token: Optional[str] = _token_option(),
    token_file: Optional[Path] = _token_file_option(),
) -> None:
    """Spot a video (as `mespot predict`) on the server; `mespot jobs download ID
    intervals.csv` fetches the result."""
    upload = None
    if not remote:
        upload = Path(video)
        if not upload.is_file():
            raise UserError(f"{video}: no such file here (add --remote for a path on the server)")
    _submit("predict", {"model": model, "video": video if remote else None, "select": select,
                        "fold": fold}, wait, server, token, token_file, upload)


