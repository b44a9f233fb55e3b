"""The web page: server-rendered HTML with a little JavaScript (static/app.js), no build step.

    /            submit a job; the queue with live progress bars (polls /api/jobs)
    /jobs/ID     one job: parameters, progress, result, files (report.html, curves,
                 intervals.csv), log (polls /api/jobs/ID)
    /login       asks for the token once and keeps it in a cookie (HttpOnly, SameSite=Strict);
                 /?token=TOKEN does the same from the link `mespot serve` prints
Each page has a JSON twin under /api. Everything shown is escaped.
"""

from __future__ import annotations

import html
import json
import time
from pathlib import Path
from urllib.parse import parse_qs

from fastapi import Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse

from flowcore.flow.backends import BACKENDS, DEFAULT_BACKEND
from mespot import __version__
from mespot.service import auth, pipelines

STATIC = Path(__file__).parent / "static"
COOKIE_DAYS = 30
e = html.escape


def html_page(title: str, body: str, script: str = "") -> str:
    tail = f'<script src="/static/app.js"></script>{script}' if script else ""
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f'<title>{e(title)}</title><link rel="icon" href="/favicon.svg" type="image/svg+xml">'
            f'<link rel="stylesheet" href="/static/style.css"></head>'
            f'<body>{body}<footer>mespot {e(__version__)} · <a href="/docs">API</a> · '
            f'<a href="/api/jobs">JSON</a></footer>{tail}</body></html>')


def login_page(message: str = "") -> str:
    note = f'<p class="error" role="alert">{e(message)}</p>' if message else ""
    return html_page("mespot: sign in", f"""<main class="login"><h1>mespot</h1>{note}
<form method="post" action="/login"><label>Token <input type="password" name="token"
 autocomplete="current-password" required autofocus></label>
<button type="submit">Sign in</button></form>
<p>Your token: one your lab's admin made for you (<code>mespot users add NAME</code>), or
the server's own, in the server's folder (file <code>token</code>), which <code>mespot serve</code>
printed at its first start.</p></main>""")


def _options(values, chosen) -> str:
    return "".join(f'<option{" selected" if v == chosen else ""}>{e(v)}</option>' for v in values)


def forms(config) -> str:
    """The four submit forms; field names are the API's (api_models.py)."""
    return f"""<section class="submit"><h2>Submit a job</h2>
<nav class="tabs" role="tablist">
 <button type="button" data-tab="pipeline" class="active">Pipeline</button>
 <button type="button" data-tab="extract">Extract</button>
 <button type="button" data-tab="train">Train</button>
 <button type="button" data-tab="evaluate">Evaluate</button>
 <button type="button" data-tab="predict">Spot a video</button></nav>
<form data-kind="pipeline" class="job-form active" id="form-pipeline">
 <label>Dataset or video folder (data root) <input name="source" list="data-paths" required
  placeholder="e.g. synth/small"></label>
 <label>Store to make (store root) <input name="store" list="store-paths" required
  placeholder="e.g. small.zarr"></label>
 <label>Annotations (data root) <input name="annotations" list="data-paths" required
  placeholder="e.g. synth/small/ground_truth.csv"></label>
 <label>Run folder to make (store root) <input name="run" list="store-paths" required
  placeholder="e.g. runs/small"></label>
 <label>Resize faces to (px) <input name="extract.resize" type="number" min="32" max="1024"
  placeholder="native"></label>
 <label>Epochs <input name="train.epochs" type="number" min="1" placeholder="default"></label>
 <fieldset><legend>Evaluate with</legend>
  <label><input type="checkbox" name="evaluate.select" value="last" checked> last</label>
  <label><input type="checkbox" name="evaluate.select" value="inner-val"> inner-val</label>
  <label><input type="checkbox" name="evaluate.select" value="oracle"> oracle</label>
 </fieldset>
 <label>Then spot these videos (data root, comma-separated)
  <input name="predict" placeholder="optional"></label>
 <button type="submit">Run pipeline</button></form>
<form data-kind="extract" class="job-form" id="form-extract">
 <label>Dataset or video folder (data root) <input name="source" list="data-paths" required
  placeholder="e.g. synth/small"></label>
 <label>Store (store root) <input name="store" list="store-paths" required
  placeholder="e.g. small.zarr"></label>
 <label>Flow backend
  <select name="backend">{_options(tuple(BACKENDS), DEFAULT_BACKEND)}</select></label>
 <label>Resize faces to (px) <input name="resize" type="number" min="32" max="1024"
  placeholder="native"></label>
 <button type="submit">Extract</button></form>
<form data-kind="train" class="job-form" id="form-train">
 <label>Store (store root; several pooled: comma-separated, each [NAME=]PATH)
  <input name="store" list="store-paths" required></label>
 <label>Annotations (data root; one per store, comma-separated, or one for all)
  <input name="annotations" list="data-paths" required
  placeholder="e.g. synth/small/ground_truth.csv"></label>
 <label>Protocol <select name="protocol"><option value="">default (loso)</option>
  <option>loso</option><option>cross-dataset</option><option>split</option></select></label>
 <label>Test on (cross-dataset: datasets, comma-separated) <input name="test_on"></label>
 <label>Run folder (store root) <input name="run" list="store-paths" required
  placeholder="e.g. runs/small"></label>
 <label>Epochs <input name="epochs" type="number" min="1" placeholder="default"></label>
 <label>Inner validation subjects <input name="inner_val" type="number" min="0"
  placeholder="default"></label>
 <button type="submit">Train</button></form>
<form data-kind="evaluate" class="job-form" id="form-evaluate">
 <label>Run folder (store root) <input name="run" list="store-paths" required></label>
 <fieldset><legend>Epoch selection</legend>
  <label><input type="checkbox" name="select" value="last" checked> last</label>
  <label><input type="checkbox" name="select" value="inner-val"> inner-val</label>
  <label><input type="checkbox" name="select" value="oracle"> oracle (test-set selection)</label>
 </fieldset>
 <button type="submit">Evaluate</button></form>
<form data-kind="predict" class="job-form" id="form-predict">
 <label>Model: run folder (store root) <input name="model" list="store-paths" required></label>
 <label>Video file to upload (at most {config.max_upload_bytes / 2**20:g} MiB)
  <input name="file" type="file" accept="video/*"
   data-max-bytes="{config.max_upload_bytes}"></label>
 <label>or a path under the data root <input name="video" list="data-paths"></label>
 <button type="submit">Spot</button></form>
<p id="submit-status" role="status"></p>
<datalist id="data-paths"></datalist><datalist id="store-paths"></datalist></section>"""


def index_page(jobs: list[dict], config, roots) -> str:
    slots = ", ".join(f"{s.name} ({s.device}, {s.cores} cores)" for s in config.slots)
    rows = "".join(job_row(j) for j in jobs)
    ray = " · engine: Ray" if config.engine == "ray" else ""
    body = f"""<header><h1>mespot</h1><p>data root <code>{e(str(roots.data))}</code> ·
store root <code>{e(str(roots.store))}</code> · slots: {e(slots)}{ray}
</p><nav><a href="/runs">runs</a> · <a href="/docs">API</a></nav>
<form method="post" action="/logout" class="logout"><button>Sign out</button></form></header>
<main>{forms(config)}
<section><h2>Queue</h2><table id="jobs"><thead><tr><th>job</th><th>kind</th><th>what</th>
<th>state</th><th>progress</th><th>submitted</th><th></th></tr></thead>
<tbody>{rows}</tbody></table></section></main>"""
    return html_page("mespot", body, "<script>mespot.index();</script>")


def describe(job: dict) -> str:
    """One line saying what a job works on (paths as the client gave them)."""
    p = job["params"]
    stores = p.get("store")  # a train job's may be a list (pooled)
    stores = " + ".join(stores) if isinstance(stores, list) else stores
    return {"extract": lambda: f"{p.get('source')} → {stores}",
            "train": lambda: f"{stores} → {p.get('run')}",
            "evaluate": lambda: f"{p.get('run')} ({', '.join(p.get('select') or ['last'])})",
            "predict": lambda: f"{p.get('video') or 'uploaded video'} with {p.get('model')}",
            }.get(job["kind"], lambda: "")()


def progress_text(job: dict) -> str:
    pr = job["progress"]
    parts = [f"{pr['fraction'] * 100:.0f} %"]
    if pr["total"]:
        parts.append(f"{pr['done']:.0f}/{pr['total']:.0f} {pr['unit']}")
    if pr["rate"]:
        parts.append(f"{pr['rate']:.1f} {pr['unit']}/s")
    if pr["eta_seconds"] is not None and job["state"] == "running":
        parts.append(f"{pr['eta_seconds']:.0f} s left")
    return " · ".join(parts)


def job_row(job: dict) -> str:
    """A queue row; static/app.js renders the same markup from /api/jobs."""
    jid, state = job["id"], job["state"]
    links = []
    if "report.html" in job["files"]:
        links.append(f'<a href="/api/jobs/{jid}/files/report.html" target="_blank">report</a>')
    for name in job["files"]:
        if name.endswith("intervals.csv"):
            links.append(f'<a href="/api/jobs/{jid}/files/{e(name)}?download=1">intervals</a>')
            break
    if state in ("queued", "running") and not job["cancel_requested"]:
        links.append(f'<button class="cancel" data-job="{jid}">cancel</button>')
    if state == "done" and job["kind"] in ("predict", "evaluate"):
        links.append(f'<a href="/jobs/{jid}/review">review</a>')
    if state in ("done", "failed", "cancelled"):
        links.append(f'<button class="archive" data-job="{jid}">archive</button> '
                     f'<button class="delete" data-job="{jid}">delete</button>')
    when = time.strftime("%H:%M:%S", time.localtime(job["submitted"]))
    message = job["error"] or job["progress"]["message"]
    who = f' <span class="submitter">{e(job["submitter"])}</span>' if job["submitter"] else ""
    return (f'<tr data-job="{jid}" data-state="{state}"><td><a href="/jobs/{jid}">#{jid}</a></td>'
            f'<td>{e(job["kind"])}{step_html(job)}</td><td>{e(describe(job))}</td>'
            f'<td><span class="state {state}">{state}</span></td>'
            f'<td><progress max="1" value="{job["progress"]["fraction"]}"></progress> '
            f'<span class="progress-text">{e(progress_text(job))}</span>'
            f'<div class="message">{e(message)}</div></td>'
            f'<td>{when}{who}<div class="times">{e(times_text(job))}</div></td>'
            f'<td class="actions">{" ".join(links)}</td></tr>')


def step_html(job: dict) -> str:
    """Under the kind: the pipeline and step, or the job it waits for."""
    if not job.get("pipeline"):
        return f'<div class="times">after #{job["after"]}</div>' if job.get("after") else ""
    return (f'<div class="times"><a href="/pipelines/{job["pipeline"]}">pipeline '
            f'#{job["pipeline"]}</a> · {e(job["step"])}</div>')


def duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    s = int(round(seconds))
    m, h = s // 60, s // 3600
    return f"{h} h {m % 60} min" if h else f"{m} min {s % 60} s" if m else f"{s} s"


def times_text(job: dict) -> str:
    """How long it waited in the queue and ran (the page's JavaScript draws the same)."""
    parts = []
    if job.get("waited_seconds") is not None:
        parts.append(f"waited {duration(job['waited_seconds'])}")
    if job.get("ran_seconds") is not None:
        parts.append(f"ran {duration(job['ran_seconds'])}")
    return " · ".join(parts)


def job_page(job: dict, log_text: str) -> str:
    jid = job["id"]
    hidden = "" if job["state"] in ("queued", "running") else " hidden"
    params = "".join(f"<tr><th>{e(k)}</th><td>{e(v if isinstance(v, str) else json.dumps(v))}"
                     "</td></tr>" for k, v in job["params"].items())
    body = f"""<header><h1><a href="/">mespot</a> · job #{jid} ({e(job['kind'])})</h1></header>
<main id="job" data-job="{jid}"><section><table class="params">{params}</table>
<p><span class="state {job['state']}" id="state">{job['state']}</span>
<progress max="1" value="{job['progress']['fraction']}"></progress>
<span class="progress-text">{e(progress_text(job))}</span></p>
<p class="message" id="message">{e(job['error'] or job['progress']['message'])}</p>
<p><button class="cancel" data-job="{jid}"{hidden}>cancel</button></p>
{clone_form(f"/api/jobs/{jid}/clone", "Submit again", '{{"epochs": 80}}')}
</section><section><h2>Results</h2><div id="result">{result_html(job)}</div></section>
<section><h2>Log</h2><pre id="log">{e(log_text)}</pre></section></main>"""
    return html_page(f"mespot job {jid}", body, "<script>mespot.job();</script>")


def clone_form(url: str, label: str, example: str) -> str:
    """A box of changed parameters (JSON) and a button submitting a copy with them."""
    return (f'<form class="clone" data-url="{e(url)}"><label>{e(label)} with these parameters '
            f'changed (JSON, <code>{{}}</code>: as it was; e.g. <code>{e(example)}</code>)'
            f'<textarea name="changes" rows="2">{{}}</textarea></label>'
            f'<button type="submit">{e(label)}</button> <span class="clone-status" '
            f'role="status"></span></form>')


def pipeline_page(pipeline: dict) -> str:
    pid = pipeline["id"]
    rows = "".join(job_row(j) for j in pipeline["jobs"])
    origin = (f' · a copy of <a href="/pipelines/{pipeline["cloned_from"]}">pipeline '
              f'#{pipeline["cloned_from"]}</a>' if pipeline["cloned_from"] else "")
    who = f" by {e(pipeline['submitter'])}" if pipeline["submitter"] else ""
    body = f"""<header><h1><a href="/">mespot</a> · pipeline #{pid}</h1>
<p>submitted {time.strftime('%Y-%m-%d %H:%M', time.localtime(pipeline['submitted']))}{who}
{origin}</p></header>
<main id="pipeline" data-pipeline="{pid}"><section>
<p><span class="state {pipeline['state']}">{pipeline['state']}</span>
<span class="message">{e(pipeline['message'])}</span></p>
<table id="jobs"><thead><tr><th>job</th><th>kind</th><th>what</th><th>state</th>
<th>progress</th><th>submitted</th><th></th></tr></thead><tbody>{rows}</tbody></table>
</section><section><h2>Parameters</h2><pre class="params">{e(json.dumps(pipeline['params'],
                                                                       indent=1))}</pre>
{clone_form(f"/api/pipelines/{pid}/clone", "Run again",
            '{"train": {"epochs": 80}, "run": "runs/e80"}')}</section></main>"""
    return html_page(f"mespot pipeline {pid}", body, "<script>mespot.pipeline();</script>")


def result_html(job: dict) -> str:
    """Files as links (curves shown inline) and, for evaluations, the metrics tables."""
    jid, out = job["id"], []
    for name, ev in job["result"].get("evaluations", {}).items():
        rows = "".join(f"<tr><td>{e(str(m['type']))}</td><td>{m['precision']:.4f}</td>"
                       f"<td>{m['recall']:.4f}</td><td>{m['f1']:.4f}</td><td>{m['TP']}</td>"
                       f"<td>{m['FP']}</td><td>{m['FN']}</td></tr>" for m in ev["metrics"])
        out.append(f"<h3>{e(ev['label'])}</h3><table class='metrics'><tr><th>type</th>"
                   f"<th>precision</th><th>recall</th><th>F1</th><th>TP</th><th>FP</th>"
                   f"<th>FN</th></tr>{rows}</table>")
    links = []
    if job["state"] == "done" and job["kind"] in ("predict", "evaluate"):
        out.append(f'<p><a href="/jobs/{jid}/review">Review the spotted intervals</a> (accept, '
                   f'reject, correct; export as training data)</p>')
    for name in job["files"]:
        url = f"/api/jobs/{jid}/files/{e(name)}"
        links.append(f'<li><a href="{url}" target="_blank">{e(name)}</a> '
                     f'(<a href="{url}?download=1">download</a>)</li>')
    out.append(f"<ul class='files'>{''.join(links)}</ul>" if links else "<p>no files yet</p>")
    curves = [n for n in job["files"] if n.endswith(".png") and "curves" in n]
    out.extend(f'<figure><img src="/api/jobs/{jid}/files/{e(n)}" alt="{e(n)}" loading="lazy">'
               f'<figcaption>{e(n)}</figcaption></figure>' for n in curves[:12])
    return "".join(out)


def not_found(title: str) -> HTMLResponse:
    return HTMLResponse(html_page("mespot", f"<main><h1>{e(title)}</h1><p><a href='/'>back</a></p>"
                                        f"</main>"), status_code=404)


def add_routes(app, store, config, roots, authorised) -> None:
    def signed_out(request: Request):
        return RedirectResponse(f"/login?next={request.url.path}", status_code=303)

    @app.get("/", include_in_schema=False)
    def index(request: Request, token: str | None = None):
        if token is not None:  # the link `mespot serve` prints: keep it in a cookie, drop the URL
            return _with_cookie(RedirectResponse("/", status_code=303), token, request, app)
        if not authorised(request):
            return signed_out(request)
        return HTMLResponse(index_page([j.to_json() for j in store.list(limit=100)], config, roots))

    @app.get("/jobs/{job_id}", include_in_schema=False)
    def job(request: Request, job_id: int):
        if not authorised(request):
            return signed_out(request)
        found = store.get(job_id)
        if found is None:
            return not_found(f"No job {job_id}")
        log_file = config.job_folder(job_id) / "log.txt"
        text = log_file.read_text(errors="replace")[-20000:] if log_file.is_file() else ""
        return HTMLResponse(job_page(found.to_json(), text))

    @app.get("/pipelines/{pipeline_id}", include_in_schema=False)
    def pipeline(request: Request, pipeline_id: int):
        if not authorised(request):
            return signed_out(request)
        found = store.pipeline(pipeline_id)
        if found is None:
            return not_found(f"No pipeline {pipeline_id}")
        return HTMLResponse(pipeline_page(pipelines.to_json(found)))

    @app.get("/login", include_in_schema=False)
    def login_form():
        return HTMLResponse(login_page(), status_code=401)

    @app.post("/login", include_in_schema=False)
    async def login(request: Request):
        token = parse_qs((await request.body()).decode(errors="replace")).get("token", [""])[0]
        return _with_cookie(RedirectResponse("/", status_code=303), token, request, app)

    @app.post("/logout", include_in_schema=False)
    def logout():
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(auth.COOKIE)
        return response

    @app.get("/static/{name}", include_in_schema=False)
    def static(request: Request, name: str):
        if name not in ("app.js", "style.css", "favicon.svg"):
            return HTMLResponse("not found", status_code=404)
        return FileResponse(STATIC / name, headers={"Cache-Control": "no-cache"})

    @app.get("/favicon.svg", include_in_schema=False)
    @app.get("/favicon.ico", include_in_schema=False)
    def favicon():
        return FileResponse(STATIC / "favicon.svg", media_type="image/svg+xml",
                            headers={"Cache-Control": "max-age=86400"})



def _with_cookie(response, token: str, request: Request, app):
    """The token in the cookie if it is right; the login page with a message if not."""
    if not app.state.token_check(token):
        return HTMLResponse(login_page("That token is not this server's."), status_code=401)
    response.set_cookie(auth.COOKIE, token, max_age=COOKIE_DAYS * 86400, httponly=True,
                        samesite="strict", secure=request.url.scheme == "https")
    return response
