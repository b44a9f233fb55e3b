"""The ASGI app: JSON API under /api, the web page at /, /metrics, /healthz, OpenAPI at /docs.

`create_app(config, token)` builds it (tests build it too); `mespot serve` runs it on uvicorn
with a Scheduler. Every route but /healthz and the login page needs the token. Errors are JSON
`{"ok": false, "status": N, "error": "..."}`, never a stack trace.
"""

from __future__ import annotations

import logging
import time
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.security import HTTPBearer
from fastapi_offline import FastAPIOffline
from fastapi.responses import (FileResponse, JSONResponse, PlainTextResponse,
                               Response)
from starlette.exceptions import HTTPException as StarletteHTTPException

from mespot import __version__
from mespot.service import (auth, pages, people, pipelines, review_routes, run_pages, runs,
                            tasks)
from mespot.service.api_models import EvaluateJob, ExtractJob, PredictJob, TrainJob
from mespot.service.config import JOB_KINDS, SHOWN_STATES, ServiceConfig
from mespot.service.jobs import JobConflict, JobStore
from mespot.service.metrics import Metrics
from mespot.service.roots import PathRefused, Roots
from mespot.service.uploads import Upload, UploadRefused, check_name
from mespot.service.users import ADMIN, Users

log = logging.getLogger("mespot.service")

FILE_TYPES = {".html": "text/html; charset=utf-8", ".png": "image/png", ".csv": "text/csv",
              ".json": "application/json", ".txt": "text/plain; charset=utf-8"}
# job files (report.html) are shown sandboxed: no script, nothing fetched but inline images
FILE_POLICY = "sandbox; default-src 'none'; img-src data: 'self'; style-src 'unsafe-inline'"
PAGE_HEADER = "x-mespot-page"  # the page's own requests send it with the cookie (no CSRF)
LOG_TAIL_LINES = 400
BODY_ERRORS = {"json_invalid": "the body is not valid JSON",
               "model_attributes_type": "the body must be a JSON object "
                                        "(send Content-Type: application/json)",
               }


DESCRIPTION = ("Feature extraction, training, evaluation and spotting jobs, and pipelines of "
               "them. Sign in with **Authorize** (your token, or the server's own).")
SWAGGER = {"persistAuthorization": True, "tryItOutEnabled": True}
# the OpenAPI page's sign-in box; the check itself is need_token's
BEARER = HTTPBearer(auto_error=False, description="Your token (`mespot users add NAME` makes "
                    "one), or the server's own (file `token` in the server's folder).")


def error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"ok": False, "status": status, "error": message}, status_code=status)


def create_app(config: ServiceConfig, token: str, scheduler=None) -> FastAPI:
    store = JobStore(config.database)
    roots = Roots(config.data_root, config.store_root)
    metrics = Metrics(store, config)

    @asynccontextmanager
    async def lifespan(_app):
        if scheduler is not None:
            scheduler.start()
        yield
        if scheduler is not None:
            scheduler.stop()

    app = FastAPIOffline(title="mespot", version=__version__, docs_url="/docs", redoc_url=None,
                         lifespan=lifespan, static_url="/static-offline-docs",
                         favicon_url="/favicon.svg", swagger_ui_parameters=SWAGGER,
                         description=DESCRIPTION)
    app.state.store, app.state.config, app.state.roots = store, config, roots
    app.state.users = users = Users(config.database)
    app.state.token_check = lambda given: auth.same_token(given, token) or bool(
        users.name_of(given))

    def token_user(given: str | None) -> str | None:
        if auth.same_token(given, token):
            return ADMIN
        return users.name_of(given)

    def user_of(request: Request) -> str | None:
        """Who sent the request (None: nobody signed in)."""
        header = request.headers.get("authorization", "")
        if header.lower().startswith("bearer "):
            return token_user(header[7:].strip())
        name = token_user(request.cookies.get(auth.COOKIE))
        # a cookie alone may read; a change needs the page's header too (no cross-site forms)
        ok = request.method in ("GET", "HEAD") or request.headers.get(PAGE_HEADER) == "1"
        return name if ok else None

    def need_token(request: Request, _bearer=Depends(BEARER)) -> str:
        name = user_of(request)
        if name is None:
            raise HTTPException(401, "missing or wrong token: send 'Authorization: Bearer "
                                     "TOKEN' (yours, or the server's in its folder, file "
                                     "'token')", headers={"WWW-Authenticate": "Bearer"})
        return name

    def authorised(request: Request) -> bool:
        return user_of(request) is not None

    _errors(app)
    _middleware(app, metrics)
    guarded = [Depends(need_token)]
    _public_routes(app)
    _job_routes(app, store, roots, config, guarded, need_token)
    _file_routes(app, store, config, guarded)
    _operator_routes(app, store, config, roots, metrics, guarded)
    pipelines.add_routes(app, store, roots, config, guarded, need_token)
    people.add_routes(app, store, users, config, guarded, need_token)
    runs.add_routes(app, store, roots, config, guarded)
    run_pages.add_routes(app, store, roots, authorised)
    review_routes.add_routes(app, store, roots, config, guarded, authorised)
    pages.add_routes(app, store, config, roots, authorised)
    return app


def _errors(app: FastAPI) -> None:
    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request, exc: StarletteHTTPException):
        response = error(exc.status_code, str(exc.detail))
        for key, value in (exc.headers or {}).items():
            response.headers[key] = value
        return response

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        parts = []
        for e in exc.errors():
            if e.get("type") in BODY_ERRORS and tuple(e.get("loc", ()))[:1] == ("body",):
                parts.append(BODY_ERRORS[e["type"]])
                continue
            if e.get("type") == "missing" and tuple(e.get("loc", ())) == ("body",):
                parts.append(_no_body(request))
                continue
            where = ".".join(str(p) for p in e.get("loc", ()) if p not in ("body", "query", "path"))
            parts.append(f"{where}: {e.get('msg')}" if where else str(e.get("msg")))
        return error(422, "; ".join(parts))

    @app.exception_handler(PathRefused)
    async def refused(_request, exc: PathRefused):
        return error(exc.status, str(exc))

    @app.exception_handler(UploadRefused)
    async def upload_refused(_request, exc: UploadRefused):
        return error(exc.status, str(exc))

    @app.exception_handler(Exception)
    async def crashed(request: Request, exc: Exception):
        log.exception("error answering %s %s", request.method, request.url.path)
        return error(500, "internal error; the server's log has the details")


def _no_body(request: Request) -> str:
    """A request without a body: the fields its route needs."""
    field = getattr(request.scope.get("route"), "body_field", None)
    model = getattr(getattr(field, "field_info", None), "annotation", None)
    needed = [name for name, f in getattr(model, "model_fields", {}).items() if f.is_required()]
    return ("no body: send a JSON object" +
            (f" with at least {', '.join(needed)}" if needed else "") +
            " (Content-Type: application/json)")


def _middleware(app: FastAPI, metrics: Metrics) -> None:
    @app.middleware("http")
    async def measure(request: Request, call_next):
        started = time.perf_counter()
        response = await call_next(request)
        route = getattr(request.scope.get("route"), "path", "unmatched")
        metrics.latency.labels(route).observe(time.perf_counter() - started)
        metrics.requests.labels(request.method, route, str(response.status_code)).inc()
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        return response


def _public_routes(app: FastAPI) -> None:
    @app.get("/healthz", tags=["operators"], summary="Liveness (no token needed)")
    def healthz() -> dict:
        return {"ok": True, "version": __version__}


def _job_json(store: JobStore, job_id: int) -> dict:
    job = store.get(job_id)
    if job is None:
        raise HTTPException(404, f"no job {job_id}")
    return job.to_json()


_SUBMITS = (  # job kind, its request body, what it does (the OpenAPI page shows it)
    ("extract", ExtractJob, "Extract a dataset or video folder (data root) into a store"
     " (store root)."),
    ("train", TrainJob, "Train LOSO folds on a store with annotations into a run folder."),
    ("evaluate", EvaluateJob, "Evaluate a run: metrics, intervals, report.html."),
    ("predict", PredictJob, "Spot an uploaded video (or a path under the data root) with a run."),
)


def _submit_endpoint(kind: str, model, submit, need_token):
    """The endpoint submitting a `kind` job: FastAPI reads the body's type from the annotation."""
    def endpoint(body, submitter=Depends(need_token)):
        return submit(kind, body, submitter)

    endpoint.__annotations__ = {"body": model, "submitter": str}
    endpoint.__name__ = f"submit_{kind}"
    return endpoint


def _job_routes(app: FastAPI, store: JobStore, roots: Roots, config: ServiceConfig,
                guarded, need_token) -> None:
    def submit(kind: str, body, submitter: str) -> JSONResponse:
        planned = tasks.plan(kind, body.model_dump(), roots, config.uploads, store.maker_of)
        job = store.submit(kind, planned.params, planned.locks, planned.after, planned.makes,
                           submitter, also_after=planned.also_after)
        return JSONResponse(job.to_json(), status_code=201)

    for kind, model, what in _SUBMITS:
        app.post(f"/api/jobs/{kind}", dependencies=guarded, status_code=201, tags=["jobs"],
                 description=what)(_submit_endpoint(kind, model, submit, need_token))

    @app.post("/api/jobs/{kind}", dependencies=guarded, include_in_schema=False)
    def unknown_kind(kind: str) -> None:
        raise HTTPException(422, f"unknown job kind {kind!r}: one of {', '.join(JOB_KINDS)} "
                                 f"(or POST /api/pipelines)")

    @app.get("/api/jobs", dependencies=guarded, tags=["jobs"])
    def list_jobs(state: str | None = None, limit: int = 200, archived: bool = False) -> dict:
        """Jobs, newest first (the JSON twin of the page at /); archived ones with `archived`."""
        if state is not None and state not in SHOWN_STATES:
            raise HTTPException(422, f"state must be one of {', '.join(SHOWN_STATES)}")
        limit = max(1, min(limit, 1000))
        return {"jobs": [j.to_json() for j in store.list(state, limit, archived)],
                "counts": store.counts()}

    @app.get("/api/jobs/{job_id}", dependencies=guarded, tags=["jobs"])
    def show_job(job_id: int) -> dict:
        """One job (the JSON twin of /jobs/ID)."""
        return _job_json(store, job_id)

    @app.post("/api/jobs/{job_id}/cancel", dependencies=guarded, tags=["jobs"])
    def cancel_job(job_id: int) -> dict:
        """Cancel a queued job, or ask a running one to stop between videos or epochs."""
        try:
            return store.request_cancel(job_id).to_json()
        except KeyError:
            raise HTTPException(404, f"no job {job_id}") from None
        except JobConflict as err:
            raise HTTPException(409, str(err)) from None

    @app.post("/api/uploads", dependencies=guarded, status_code=201, tags=["jobs"])
    async def upload(request: Request, filename: str) -> dict:
        """The request body is a video file (at most the server's --max-upload-mb); the answer's
        `upload` id goes into a predict job."""
        name = check_name(filename)
        length = request.headers.get("content-length")
        if length and length.isdigit() and int(length) > config.max_upload_bytes:
            raise UploadRefused(413, f"{name}: larger than the limit of "
                                     f"{config.max_upload_bytes / 2**20:g} MiB")
        incoming = Upload(config.uploads, name, config.max_upload_bytes)
        try:
            async for chunk in request.stream():
                incoming.add(chunk)
            return incoming.close()
        except BaseException:
            incoming.discard()
            raise


def _job_file(store: JobStore, job_id: int, name: str) -> Path:
    job = store.get(job_id)
    if job is None:
        raise HTTPException(404, f"no job {job_id}")
    if name not in job.files:
        raise HTTPException(404, f"job {job_id} has no file {name!r}; it has: "
                                 f"{', '.join(sorted(job.files)) or 'none yet'}")
    path = Path(job.files[name])
    if not path.is_file():
        raise HTTPException(410, f"job {job_id}: {name} is no longer on the server")
    return path


def _file_routes(app: FastAPI, store: JobStore, config: ServiceConfig, guarded) -> None:
    @app.get("/api/jobs/{job_id}/files", dependencies=guarded, tags=["files"])
    def list_files(job_id: int) -> dict:
        """The job's downloads (reachable only through the job's id)."""
        return {"files": _job_json(store, job_id)["files"]}

    @app.get("/api/jobs/{job_id}/files/{name:path}", dependencies=guarded, tags=["files"])
    def get_file(job_id: int, name: str, download: bool = False):
        """One of the job's files: report.html, intervals.csv, curves, metrics, log.txt."""
        path = _job_file(store, job_id, name)
        kind = FILE_TYPES.get(path.suffix.lower(), "application/octet-stream")
        headers = {"Content-Security-Policy": FILE_POLICY}
        if download:
            headers["Content-Disposition"] = f'attachment; filename="job{job_id}-{path.name}"'
        return FileResponse(path, media_type=kind, headers=headers)

    @app.get("/api/jobs/{job_id}/log", dependencies=guarded, tags=["files"],
             response_class=PlainTextResponse)
    def get_log(job_id: int, tail: int = LOG_TAIL_LINES) -> str:
        """The last `tail` lines of the job's log (plain text)."""
        _job_json(store, job_id)
        path = config.job_folder(job_id) / "log.txt"
        lines = path.read_text(errors="replace").splitlines() if path.is_file() else []
        return "\n".join(lines[-max(1, min(tail, 100000)):]) + ("\n" if lines else "")


def _operator_routes(app, store, config, roots, metrics: Metrics, guarded) -> None:
    @app.get("/api/info", dependencies=guarded, tags=["operators"])
    def info() -> dict:
        """Roots, slots and limits of this server."""
        return {"version": __version__, "data_root": str(roots.data),
                "store_root": str(roots.store),
                "slots": [vars(s) for s in config.slots], "engine": config.engine,
                "max_upload_mb": config.max_upload_bytes / 2**20,
                "kinds": list(JOB_KINDS), "states": list(SHOWN_STATES)}

    @app.get("/api/browse", dependencies=guarded, tags=["operators"])
    def browse(root: str = "data", path: str = ".") -> dict:
        """Entries of a folder under the data or store root (for choosing paths)."""
        if root not in ("data", "store"):
            raise HTTPException(422, "root must be 'data' or 'store'")
        base = roots.data if root == "data" else roots.store
        folder = roots.data_path(path) if root == "data" else roots.store_path(path)
        if not folder.is_dir():
            raise HTTPException(404, f"{path}: no such folder under the {root} root")
        entries = sorted(folder.iterdir())[:1000]
        return {"root": root, "path": roots.shown(folder) if folder != base else ".",
                "entries": [{"name": e.name, "folder": e.is_dir()} for e in entries]}

    @app.get("/metrics", dependencies=guarded, tags=["operators"],
             response_class=PlainTextResponse)
    def prometheus() -> Response:
        """Prometheus text format: jobs by state, frames extracted, busy seconds, requests."""
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)
