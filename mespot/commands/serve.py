"""`mespot serve`: flags -> the extraction and spotting service (mespot.service), run here.

It imports the server's packages (the `serve` extra) when it runs; the client commands
(`mespot jobs`, `mespot submit`) are in mespot.commands.jobs.
"""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path
from typing import Optional

import typer

from flowcore.errors import UserError
from flowcore.locations import is_url, location
from mespot.service.config import (CANCEL_GRACE_S, DEFAULT_HOME, DEFAULT_HOST, DEFAULT_PORT,
                                   LEASE_S, MAX_UPLOAD_MB)


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


def _root(text: str, flag: str):
    """The root as an absolute, resolved folder, or a URL's folder (object storage)."""
    path = location(text) if is_url(text) else Path(text).expanduser().resolve()
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
    data_root: str = typer.Option(..., "--data-root", help="Folder (or URL: s3://...) of "
                                  "datasets, videos and annotation files; jobs read under it."),
    store_root: str = typer.Option(..., "--store-root", help="Folder (or URL) for feature stores "
                                   "and run folders; jobs write only under it."),
    home: Path = typer.Option(DEFAULT_HOME, "--home", help="The server's own folder: the job "
                              "database (jobs.sqlite), the token, job logs and results, uploads."),
    host: str = typer.Option(DEFAULT_HOST, "--host", help="Address to listen on (0.0.0.0: every "
                             "interface; put HTTPS in front, see docs/service.md)."),
    port: int = typer.Option(DEFAULT_PORT, "--port", help="TCP port."),
    token_file: Optional[Path] = typer.Option(None, "--token-file", help="Read the token from "
                                              "this file [default: HOME/token, made at first "
                                              "start]."),
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
        store_root=_root(store_root, "--store-root"), slots=_slots(device, slots, cores_per_slot,
                                                                   engine),
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
        raise UserError(f"the service needs its extra: pip install \"mespot[serve]\" "
                        f"({err})") from None
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


