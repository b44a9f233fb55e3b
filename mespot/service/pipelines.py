"""Pipelines: one submission becomes an extract, a train, an evaluate job (and a predict job per
named video), each waiting for the one before (jobs.after_job), so a lab submits a whole
experiment at once. A step that fails or is cancelled stops the steps after it (they end
"cancelled", saying which step stopped them); what the earlier steps made (the store, the run
folder) stays, so submitting the pipeline again resumes from it. A pipeline, or any one job,
can be cloned with some parameters changed (`clone`).
"""

from __future__ import annotations

from fastapi import Body, Depends, HTTPException
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from mespot.service import tasks
from mespot.service.api_models import (EvaluateJob, ExtractJob, PipelineJob, PredictJob,
                                       TrainJob)
from mespot.service.jobs import JobStore

MODELS = {"extract": ExtractJob, "train": TrainJob, "evaluate": EvaluateJob,
          "predict": PredictJob}
IN_THIS_PIPELINE = -1  # waits_for's answer for a path an earlier step of the pipeline makes


def steps(p: dict) -> list[tuple[str, str, dict]]:
    """(step name, job kind, the job's body) of a pipeline's params, in order."""
    out = [("extract", "extract", {"source": p["source"], "store": p["store"], **p["extract"]}),
           ("train", "train", {"store": p["store"], "annotations": p["annotations"],
                               "run": p["run"], **p["train"]})]
    if p.get("evaluate") is not None:
        out.append(("evaluate", "evaluate", {"run": p["run"], **p["evaluate"]}))
    videos = p.get("predict") or []
    for k, video in enumerate(videos):
        name = "predict" if len(videos) == 1 else f"predict {k + 1}"
        out.append((name, "predict", {"model": p["run"], "video": video}))
    return [(name, kind, validated(kind, body)) for name, kind, body in out]


def validated(kind: str, body: dict) -> dict:
    """`body` checked by the kind's model, defaults filled in; 422 naming the field if not."""
    model = PipelineJob if kind == "pipeline" else MODELS[kind]
    try:
        return model(**body).model_dump()
    except ValidationError as err:
        raise RequestValidationError(err.errors()) from None


def merged(params: dict, changes: dict) -> dict:
    """`params` with `changes` laid over it (nested objects merged key by key)."""
    out = dict(params)
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merged(out[key], value)
        else:
            out[key] = value
    return out


def submit(store: JobStore, roots, uploads, params: dict, submitter: str = "",
           cloned_from: int | None = None) -> dict:
    """Plan every step (all or nothing: a refused path refuses the pipeline), then queue them,
    each after the one before; the pipeline's JSON."""
    made: set[str] = set()

    def waits_for(path) -> int | None:
        return IN_THIS_PIPELINE if str(path) in made else store.maker_of(path)

    planned = []
    for name, kind, body in steps(params):
        plan = tasks.plan(kind, body, roots, uploads, waits_for)
        planned.append((name, kind, plan))
        if plan.makes:
            made.add(plan.makes)
    pipeline_id = store.add_pipeline(params, submitter, cloned_from)
    after = None
    for name, kind, plan in planned:
        waits = after if after is not None else plan.after
        job = store.submit(kind, plan.params, plan.locks, waits, plan.makes, submitter,
                           pipeline_id, name)
        after = job.id
    return to_json(store.pipeline(pipeline_id))


def state(jobs: list) -> tuple[str, str]:
    """(state, one line) of a pipeline from its jobs' states."""
    for job in jobs:
        if job.state == "failed":
            return "failed", f"step {job.step} (job #{job.id}) failed: {job.error or job.message}"
    shown = [job.shown_state for job in jobs]
    if "running" in shown or "cancelling" in shown:
        current = next(j for j in jobs if j.state == "running")
        return "running", f"step {current.step} (job #{current.id}) running"
    if shown and all(s == "done" for s in shown):
        return "done", f"{len(jobs)} steps done"
    stopped = next((j for j in jobs if j.state == "cancelled"), None)
    if stopped is not None:
        return "cancelled", f"step {stopped.step} (job #{stopped.id}) cancelled"
    return "queued", "waiting for a slot"


def to_json(found: dict) -> dict:
    jobs = found["jobs"]
    now, line = state(jobs)
    return {"id": found["id"], "params": found["params"], "submitted": found["submitted"],
            "submitter": found["submitter"], "cloned_from": found["cloned_from"], "state": now,
            "message": line, "jobs": [j.to_json() for j in jobs]}


def add_routes(app, store: JobStore, roots, config, guarded, who) -> None:
    """POST /api/pipelines, GET /api/pipelines[/ID], POST /api/pipelines/ID/clone and
    POST /api/jobs/ID/clone. `who(request)`: the submitter's name."""
    def one(pipeline_id: int) -> dict:
        found = store.pipeline(pipeline_id)
        if found is None:
            raise HTTPException(404, f"no pipeline {pipeline_id}")
        return found

    @app.post("/api/pipelines", dependencies=guarded, status_code=201, tags=["pipelines"])
    def submit_pipeline(body: PipelineJob, submitter: str = Depends(who)) -> JSONResponse:
        """Extract -> train -> evaluate (-> predict): one job per step, each after the last."""
        return JSONResponse(submit(store, roots, config.uploads, body.model_dump(), submitter),
                            status_code=201)

    @app.get("/api/pipelines", dependencies=guarded, tags=["pipelines"])
    def list_pipelines(limit: int = 100) -> dict:
        """Pipelines, newest first, with their steps' jobs."""
        ids = store.pipeline_ids(max(1, min(limit, 1000)))
        return {"pipelines": [to_json(store.pipeline(i)) for i in ids]}

    @app.get("/api/pipelines/{pipeline_id}", dependencies=guarded, tags=["pipelines"])
    def show_pipeline(pipeline_id: int) -> dict:
        return to_json(one(pipeline_id))

    @app.post("/api/pipelines/{pipeline_id}/clone", dependencies=guarded, status_code=201,
              tags=["pipelines"])
    def clone_pipeline(pipeline_id: int, changes: dict = Body(default={}),
                       submitter: str = Depends(who)) -> JSONResponse:
        """The pipeline again, with `changes` laid over its parameters (e.g.
        `{"train": {"epochs": 80}, "run": "runs/e80"}`; `{}`: re-run it as it was, resuming
        from what its steps made)."""
        params = validated("pipeline", merged(one(pipeline_id)["params"], changes))
        return JSONResponse(submit(store, roots, config.uploads, params, submitter, pipeline_id),
                            status_code=201)

    @app.post("/api/jobs/{job_id}/clone", dependencies=guarded, status_code=201, tags=["jobs"])
    def clone_job(job_id: int, changes: dict = Body(default={}),
                  submitter: str = Depends(who)) -> JSONResponse:
        """The job again (a new job), with `changes` laid over its parameters."""
        job = store.get(job_id)
        if job is None:
            raise HTTPException(404, f"no job {job_id}")
        params = validated(job.kind, merged(job.params, changes))
        plan = tasks.plan(job.kind, params, roots, config.uploads, store.maker_of)
        new = store.submit(job.kind, plan.params, plan.locks, plan.after, plan.makes, submitter,
                           also_after=plan.also_after)
        return JSONResponse(new.to_json(), status_code=201)
