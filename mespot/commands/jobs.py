"""`mespot jobs ...` and `mespot submit ...`: flags -> the client of a `mespot serve`.

They need only the standard library (mespot.service.client), not the server's `serve` extra.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from flowcore.errors import UserError
from mespot.service.client import Client, find_token, server_url


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




jobs_app = typer.Typer(help="List, show, cancel and wait for jobs of a `mespot serve`.",
                       add_completion=False)


def _line(job: dict) -> str:
    from mespot.service.pages import describe, progress_text

    text = (f"{job['id']:>5}  {job['kind']:<8}  {job['state']:<9}  {progress_text(job):<40}  "
            f"{describe(job)}")
    if job.get("pipeline"):
        text += f"  (pipeline {job['pipeline']}: {job['step']})"
    if job.get("submitter"):
        text += f"  by {job['submitter']}"
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
    stopping = " (stopping)" if job["state"] == "running" else ""
    typer.echo(f"job {job_id}: {job['state']}{stopping}")


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


@jobs_app.command("delete")
def jobs_delete(job_id: int = typer.Argument(..., help="Job id."),
                outputs: bool = typer.Option(False, "--outputs", help="Also delete the store "
                                             "or run folder the job made."),
                yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask."),
                server: Optional[str] = _server_option(), token: Optional[str] = _token_option(),
                token_file: Optional[Path] = _token_file_option()) -> None:
    """Delete an ended job with its log and files (asks first)."""
    what = " and the store or run folder it made" if outputs else ""
    if not yes and not typer.confirm(f"Delete job {job_id}, its log and files{what}?"):
        raise typer.Exit(1)
    answer = _client(server, token, token_file).request(
        "DELETE", f"/api/jobs/{job_id}", query={"outputs": "true"} if outputs else None)
    typer.echo(f"job {job_id} deleted; removed: {', '.join(answer['removed']) or 'nothing'}")


@jobs_app.command("archive")
def jobs_archive(job_id: int = typer.Argument(..., help="Job id."),
                 undo: bool = typer.Option(False, "--undo", help="Show it in the queue again."),
                 server: Optional[str] = _server_option(), token: Optional[str] = _token_option(),
                 token_file: Optional[Path] = _token_file_option()) -> None:
    """Hide an ended job from the queue (its files stay)."""
    _client(server, token, token_file).request("POST", f"/api/jobs/{job_id}/archive",
                                               query={"undo": "true"} if undo else None)
    typer.echo(f"job {job_id} {'back in the queue' if undo else 'archived'}")


@jobs_app.command("clone")
def jobs_clone(job_id: int = typer.Argument(..., help="Job id."),
               changes: str = typer.Argument("{}", help='Changed parameters as JSON, e.g. '
                                             '\'{"epochs": 80, "run": "runs/e80"}\'.'),
               server: Optional[str] = _server_option(), token: Optional[str] = _token_option(),
               token_file: Optional[Path] = _token_file_option()) -> None:
    """Submit a job again, with some parameters changed."""
    try:
        changed = json.loads(changes)
    except ValueError as err:
        raise UserError(f"changes: not JSON ({err})") from None
    job = _client(server, token, token_file).clone(job_id, changed)
    typer.echo(f"job {job['id']} queued: a copy of job {job_id}")


users_app = typer.Typer(help="Lab members' tokens on a `mespot serve` (needs the server's own "
                        "token).", no_args_is_help=True, add_completion=False)


@users_app.command("add")
def users_add(name: str = typer.Argument(..., help="Lower-case name, e.g. ana."),
              server: Optional[str] = _server_option(), token: Optional[str] = _token_option(),
              token_file: Optional[Path] = _token_file_option()) -> None:
    """Make a user and print their token (shown this once: give it to them)."""
    answer = _client(server, token, token_file).request("POST", "/api/users",
                                                        body={"name": name})
    typer.echo(f"user {answer['name']}: token {answer['token']}")


@users_app.command("list")
def users_list(server: Optional[str] = _server_option(), token: Optional[str] = _token_option(),
               token_file: Optional[Path] = _token_file_option()) -> None:
    """The users, when their token was made and last used, and which are revoked."""
    import time

    stamp = lambda t: time.strftime("%Y-%m-%d %H:%M", time.localtime(t)) if t else "-"  # noqa: E731
    for user in _client(server, token, token_file).request("GET", "/api/users")["users"]:
        state = f"revoked {stamp(user['revoked'])}" if user["revoked"] else "active"
        typer.echo(f"{user['name']:<20} made {stamp(user['created'])}  last used "
                   f"{stamp(user['last_used'])}  {state}")


@users_app.command("revoke")
def users_revoke(name: str = typer.Argument(...),
                 server: Optional[str] = _server_option(), token: Optional[str] = _token_option(),
                 token_file: Optional[Path] = _token_file_option()) -> None:
    """The user's token stops working at once."""
    _client(server, token, token_file).request("POST", f"/api/users/{name}/revoke")
    typer.echo(f"user {name}: token revoked")


@jobs_app.command("download")
def jobs_download(job_id: int = typer.Argument(..., help="Job id."),
                  name: str = typer.Argument(...,
                                             help="A file of the job (see `mespot jobs show`)."),
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
    backend: Optional[str] = typer.Option(None, "--backend", help="Flow backend: torch, opencv, "
                                          "cuda [default: the server's]."),
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
    stores: list[str] = typer.Argument(..., help="Feature store(s) under the store root; "
                                       "several train as one pooled dataset (NAME=PATH names "
                                       "one, as `mespot train`)."),
    annotations: list[str] = typer.Option(..., "--annotations", "-a", help="Annotation file "
                                          "under the data root; one per store, in the same "
                                          "order (or one namespaced file for all)."),
    run: str = typer.Option(..., "--run", help="Run folder under the store root."),
    protocol: Optional[str] = typer.Option(
        None, "--protocol", help="loso, cross-dataset or split [default: mespot train's]"),
    test_on: Optional[list[str]] = typer.Option(
        None, "--test-on", help="With --protocol cross-dataset: the dataset(s) tested."),
    split_seed: Optional[int] = typer.Option(
        None, "--split-seed", help="With --protocol split [default: mespot train's]"),
    split_test: Optional[float] = typer.Option(
        None, "--split-test", help="With --protocol split [default: mespot train's]"),
    epochs: Optional[int] = typer.Option(None, "--epochs", help="[default: mespot train's]"),
    seed: Optional[int] = typer.Option(None, "--seed", help="[default: mespot train's]"),
    inner_val: Optional[int] = typer.Option(None, "--inner-val",
                                            help="[default: mespot train's]"),
    subjects: Optional[str] = typer.Option(None, "--subjects", help="Comma-separated folds."),
    wait: bool = typer.Option(False, "--wait", help="Wait for the job and print its progress."),
    server: Optional[str] = _server_option(), token: Optional[str] = _token_option(),
    token_file: Optional[Path] = _token_file_option(),
) -> None:
    """Train (as `mespot train`) on the server: LOSO folds, or another protocol."""
    folds = [s.strip() for s in subjects.split(",") if s.strip()] if subjects else None
    one = len(stores) == 1 and len(annotations) == 1  # as a server of one store reads it
    _submit("train", {"store": stores[0] if one else stores,
                      "annotations": annotations[0] if one else annotations, "run": run,
                      "protocol": protocol, "test_on": test_on or None, "split_seed": split_seed,
                      "split_test": split_test, "epochs": epochs, "seed": seed,
                      "inner_val": inner_val, "subjects": folds},
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
    min_precision: Optional[float] = typer.Option(
        None, "--min-precision", help="As `mespot predict --min-precision` [default: 0.5]."),
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
                        "fold": fold, "min_precision": min_precision}, wait, server, token,
            token_file, upload)




@submit_app.command("pipeline")
def submit_pipeline(
    source: str = typer.Argument(..., help="Dataset copy or video folder under the data root."),
    store: str = typer.Option(..., "--store", help="Feature store under the store root."),
    annotations: str = typer.Option(..., "--annotations", "-a", help="Annotation file under "
                                    "the data root."),
    run: str = typer.Option(..., "--run", help="Run folder under the store root."),
    resize: Optional[int] = typer.Option(None, "--resize", help="Resize face crops to N x N px."),
    epochs: Optional[int] = typer.Option(None, "--epochs", help="[default: mespot train's]"),
    select: list[str] = typer.Option(["last"], "--select", "-s", help="Evaluation's epoch "
                                     "selections; repeatable."),
    predict: Optional[list[str]] = typer.Option(None, "--predict", help="A video under the "
                                                "data root to spot with the run; repeatable."),
    wait: bool = typer.Option(False, "--wait", help="Wait for every step."),
    server: Optional[str] = _server_option(), token: Optional[str] = _token_option(),
    token_file: Optional[Path] = _token_file_option(),
) -> None:
    """Extract, train and evaluate (and spot --predict videos) as one pipeline: one job per
    step, each waiting for the one before."""
    client = _client(server, token, token_file)
    extract = {"resize": resize} if resize is not None else {}
    train = {"epochs": epochs} if epochs is not None else {}
    pipeline = client.submit_pipeline({
        "source": source, "store": store, "annotations": annotations, "run": run,
        "extract": extract, "train": train, "evaluate": {"select": select},
        "predict": predict or []})
    steps = ", ".join(f"{j['step']} #{j['id']}" for j in pipeline["jobs"])
    typer.echo(f"pipeline {pipeline['id']} queued: {steps}")
    if wait:
        for job in pipeline["jobs"]:
            typer.echo(f"step {job['step']}:")
            _wait(client, job["id"], None)
