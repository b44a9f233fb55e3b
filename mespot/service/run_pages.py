"""The pages of runs side by side (mespot.service.runs has their data):

    /runs            every run: chosen parameters and metrics in one table (sortable by any
                     column, copyable as tab-separated text), two ticked -> their difference
    /runs/view?run=  one run: its parameters, metrics and loss curves, redrawn while it trains
"""

from __future__ import annotations

import html
import json

from fastapi import Request
from fastapi.responses import HTMLResponse

from mespot.service import runs as run_data
from mespot.service.pages import html_page

e = html.escape
ALWAYS = ("train.epochs",)  # shown even when every run has the same value
MAX_PARAM_COLUMNS = 12
METRIC_COLUMNS = (("overall", "f1", "F1"), ("me", "f1", "ME F1"), ("mae", "f1", "MaE F1"))


def param_columns(found: list[dict]) -> list[str]:
    """The parameters that differ between the runs (and ALWAYS), at most MAX_PARAM_COLUMNS:
    the training section's first (what a user varies from run to run), then the others (the
    stores, datasets and extraction of runs on other data), each group by name."""
    keys = sorted({k for r in found for k in r["params"]}, key=lambda k: (
        not k.startswith("train."), k))
    varying = [k for k in keys if len({json.dumps(r["params"].get(k)) for r in found}) > 1]
    return (list(ALWAYS) + [k for k in varying if k not in ALWAYS])[:MAX_PARAM_COLUMNS]


def _cell(value) -> str:
    text = "" if value is None else value if isinstance(value, str) else json.dumps(value)
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    return f'<td{" data-number" if number else ""}>{e(text)}</td>'


def runs_page(found: list[dict]) -> str:
    columns = param_columns(found)
    selections = sorted({s for r in found for s in r["metrics"]})
    head = ("<th data-sort>run</th><th data-sort>folds</th>"
            + "".join(f"<th data-sort>{e(c)}</th>" for c in columns)
            + "".join(f"<th data-sort>{e(s)} {e(label)}</th>" for s in selections
                      for _t, _k, label in METRIC_COLUMNS))
    rows = []
    for r in found:
        folds = f"{r['folds_complete']}/{r['folds']}" + (" training" if r["training"] else "")
        metrics = "".join(_cell(_round(r["metrics"].get(s, {}).get(t, {}).get(k)))
                          for s in selections for t, k, _label in METRIC_COLUMNS)
        rows.append(f'<tr><td><input type="checkbox" class="pick" value="{e(r["run"])}" '
                    f'aria-label="compare {e(r["run"])}"> <a href="/runs/view?run='
                    f'{e(r["run"])}">{e(r["run"])}</a></td><td>{e(folds)}</td>'
                    + "".join(_cell(r["params"].get(c)) for c in columns) + metrics + "</tr>")
    body = f"""<header><h1><a href="/">mespot</a> · runs</h1><p>{len(found)} run folder(s)
under the store root. Click a column to sort; tick two runs to see how their parameters
differ.</p></header><main id="runs"><p><button type="button" id="copy">Copy table as text
</button> <button type="button" id="compare" disabled>Compare the two ticked</button>
<span id="runs-status" role="status"></span></p>
<table id="runs-table" class="sortable"><thead><tr>{head}</tr></thead>
<tbody>{''.join(rows)}</tbody></table>
<textarea id="tsv" rows="6" readonly hidden aria-label="the table as text"></textarea>
<section id="diff" hidden><h2>Parameters that differ</h2><table id="diff-table"></table>
</section></main>"""
    return html_page("mespot runs", body, "<script>mespot.runs();</script>")


def run_view_page(summary: dict) -> str:
    params = "".join(f"<tr><th>{e(k)}</th>{_cell(v)}</tr>" for k, v in summary["params"].items())
    tables = []
    for selection, by_type in summary["metrics"].items():
        rows = "".join(f"<tr><td>{e(t)}</td>" + "".join(_cell(_round(m.get(k)))
                                                         for k in run_data.METRIC_KEYS)
                       + "</tr>" for t, m in by_type.items())
        tables.append(f"<h3>{e(selection)}</h3><table class='metrics'><tr><th>type</th>"
                      + "".join(f"<th>{k}</th>" for k in run_data.METRIC_KEYS)
                      + f"</tr>{rows}</table>")
    body = f"""<header><h1><a href="/">mespot</a> · <a href="/runs">runs</a> ·
{e(summary['run'])}</h1></header><main id="run" data-run="{e(summary['run'])}">
<section><h2>Loss curves</h2><p id="curves-status" role="status"></p>
<div id="curves"></div></section>
<section><h2>Metrics</h2>{''.join(tables) or '<p>not evaluated yet</p>'}</section>
<section><h2>Parameters</h2><table class="params">{params}</table></section></main>"""
    return html_page(f"mespot run {summary['run']}", body, "<script>mespot.curves();</script>")


def _round(value):
    return round(value, 4) if isinstance(value, float) else value


def add_routes(app, store, roots, authorised) -> None:
    from fastapi.responses import RedirectResponse

    def signed_out(request: Request):
        return RedirectResponse(f"/login?next={request.url.path}", status_code=303)

    @app.get("/runs", include_in_schema=False)
    def runs(request: Request):
        if not authorised(request):
            return signed_out(request)
        busy = {j.makes for j in store.running() if j.kind == "train" and j.makes}
        found = [run_data.summary(r, roots, str(r) in busy) for r in run_data.find(roots.store)]
        return HTMLResponse(runs_page(found))

    @app.get("/runs/view", include_in_schema=False)
    def view(request: Request, run: str):
        if not authorised(request):
            return signed_out(request)
        path = run_data.run_path(roots, run)
        return HTMLResponse(run_view_page(run_data.summary(path, roots)))
