"""HTTP side of the review (mespot.service.review): its JSON, the frame strips, the exports and
the Label Studio import, and the page /jobs/ID/review."""

from __future__ import annotations

from fastapi import Body, HTTPException, Request
from fastapi.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response

from mespot.service import review as rv
from mespot.service.pages import html_page


def add_routes(app, store, roots, config, guarded, authorised) -> None:
    def done_job(job_id: int):
        job = store.get(job_id)
        if job is None:
            raise HTTPException(404, f"no job {job_id}")
        return job

    def current(job) -> tuple[dict, dict]:
        """(the review as saved or begun, the ground truth)."""
        known = rv.truth(job, roots)
        more = {v: t["subject"] for v, t in known.items()}
        return rv.load(config.job_folder(job.id), job, more), known

    @app.get("/api/jobs/{job_id}/review", dependencies=guarded, tags=["review"])
    def get_review(job_id: int) -> dict:
        """The review: per video its subject and intervals (status pending, accepted or
        rejected), the ground truth of an evaluation, and its curve picture."""
        job = done_job(job_id)
        review, known = current(job)
        return {"job": job_id, "kind": job.kind, **review,
                "truth": {v: known.get(v, {}).get("intervals", []) for v in review["videos"]},
                "curves": {v: rv.curve_file(job, v) for v in review["videos"]}}

    @app.put("/api/jobs/{job_id}/review", dependencies=guarded, tags=["review"])
    def put_review(job_id: int, body: rv.Review) -> dict:
        """Save the review (the whole of it, as GET gave it, with statuses and corrections)."""
        job = done_job(job_id)
        known = current(job)[0]["videos"]
        unknown = sorted(set(body.videos) - set(known))
        if unknown:
            raise HTTPException(422, f"videos not in job {job_id}: {', '.join(unknown)}")
        review = body.model_dump()
        rv.save(config.job_folder(job_id), review)
        return review

    @app.get("/api/jobs/{job_id}/review/strip.jpg", dependencies=guarded, tags=["review"])
    def strip(job_id: int, video: str, onset: int, apex: int, offset: int) -> Response:
        """Frames of `video` around an interval, side by side (JPEG)."""
        if not 0 <= onset <= apex <= offset or offset - onset > 100000:
            raise HTTPException(422, "onset <= apex <= offset must hold")
        spec = rv.video_spec(done_job(job_id), video, roots, config.uploads)
        return Response(rv.frame_strip(spec, rv.strip_frames(onset, apex, offset)),
                        media_type="image/jpeg", headers={"Cache-Control": "max-age=3600"})

    @app.get("/api/jobs/{job_id}/review/annotations.csv", dependencies=guarded,
             tags=["review"], response_class=PlainTextResponse)
    def export_csv(job_id: int, pending: bool = False) -> Response:
        """The accepted intervals (with `pending`, the not yet reviewed too) as mespot's
        annotation CSV: `mespot train -a` reads it."""
        review = current(done_job(job_id))[0]
        return Response(rv.annotations_csv(review, pending), media_type="text/csv",
                        headers={"Content-Disposition":
                                 f'attachment; filename="job{job_id}-reviewed.csv"'})

    @app.get("/api/jobs/{job_id}/review/labelstudio.json", dependencies=guarded,
             tags=["review"])
    def export_label_studio(job_id: int) -> list:
        """Label Studio tasks with a video timeline annotation (labels me, mae, apex)."""
        return rv.label_studio(current(done_job(job_id))[0], {})

    @app.post("/api/jobs/{job_id}/review/labelstudio", dependencies=guarded, tags=["review"])
    def import_label_studio(job_id: int, tasks: list = Body(...)) -> dict:
        """Replace the intervals of the videos a Label Studio export names by its ranges."""
        job = done_job(job_id)
        review = rv.from_label_studio(tasks, current(job)[0])
        rv.save(config.job_folder(job_id), review)
        return review

    _page_route(app, done_job, authorised)


def _page_route(app, done_job, authorised) -> None:
    @app.get("/jobs/{job_id}/review", include_in_schema=False)
    def review_page(request: Request, job_id: int):
        if not authorised(request):
            return RedirectResponse(f"/login?next={request.url.path}", status_code=303)
        job = done_job(job_id)
        body = f"""<header><h1><a href="/">mespot</a> · <a href="/jobs/{job_id}">job
#{job_id}</a> · review</h1><p>Accept or reject each spotted interval, or drag its onset, apex and
offset; then export. Each strip runs from a few frames before the onset to a few after the
offset, and holds the onset, apex and offset frames.</p></header>
<main id="review" data-job="{job_id}" data-kind="{job.kind}"><p>
<button type="button" id="save">Save</button>
<a href="/api/jobs/{job_id}/review/annotations.csv" id="export-csv">Export annotations CSV</a> ·
<a href="/api/jobs/{job_id}/review/labelstudio.json" id="export-ls" download>Export Label Studio
JSON</a> · <label>Import Label Studio JSON <input type="file" id="import-ls"
accept="application/json"></label> <span id="review-status" role="status"></span></p>
<div id="videos">loading…</div></main>"""
        return HTMLResponse(html_page(f"mespot review {job_id}", body,
                                  "<script>mespot.review();</script>"))
