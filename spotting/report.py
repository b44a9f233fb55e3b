"""`report.html`: one self-contained page (images embedded, opens offline) about a run.

Reads what `mespot train` and `mespot evaluate` wrote into the run folder and draws it
(spotting/plots.py). Sections: metrics of every evaluated selection side by side (test-set
selection flagged), the counts at the default minimum expected precision with the
reliability plot and every interval's expected precision, per-subject F1, score curves per
video with truth and spotted intervals, training losses, the AU prior, interval lengths, the
TP/FP/FN list, the resolved configuration and every repaired or skipped annotation row.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path

import numpy as np
import pandas as pd

from flowcore.errors import UserError
from flowcore.locations import is_url, location, working_copy
from flowcore.store import VIDEOS
from flowcore.version import __version__
from spotting import plots
from spotting.datasets import refs_of, store_of_video
from spotting.run_folder import RunFolder

SELECTION_ORDER = ("last", "inner-val", "oracle")  # then fixed-N


def _evaluations(run: RunFolder) -> dict[str, Path]:
    found = run.evaluations()
    order = [n for n in SELECTION_ORDER if n in found] + sorted(
        n for n in found if n not in SELECTION_ORDER
    )
    return {n: found[n] for n in order}


def read_losses(run: str | Path) -> dict[str, pd.DataFrame]:
    """Training loss per epoch of every fold, from its TensorBoard scalars."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    losses = {}
    tensorboards = (f.tensorboard_path for f in RunFolder(run).folds())
    for tb in (tb for tb in tensorboards if tb.is_dir()):
        acc = EventAccumulator(str(tb), size_guidance={"scalars": 0})
        acc.Reload()
        if "train/loss" in acc.Tags().get("scalars", []):
            events = acc.Scalars("train/loss")
            losses[tb.parent.name] = pd.DataFrame(
                {"epoch": [e.step for e in events], "loss": [e.value for e in events]}
            ).drop_duplicates("epoch", keep="last")
    return losses


def _image(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return (
        f'<figure><img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'
        f"<figcaption>{html.escape(alt)}</figcaption></figure>"
    )


def _table(frame: pd.DataFrame, max_rows: int = 400) -> str:
    note = (
        f"<p>first {max_rows} of {len(frame)} rows; all in the CSV</p>"
        if len(frame) > max_rows
        else ""
    )
    return (
        frame.head(max_rows).to_html(
            index=False, float_format=lambda v: f"{v:.4f}", na_rep="", border=0
        )
        + note
    )


STYLE = """body{font-family:sans-serif;max-width:1200px;margin:2em auto;color:#222}
h1{font-size:1.5em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;font-size:.85em}
td,th{padding:.2em .6em;border-bottom:1px solid #eee;text-align:right}
figure{margin:1em 0}img{max-width:100%}figcaption{font-size:.8em;color:#555}
.warn{background:#fff3cd;border:1px solid #e0c060;padding:.5em 1em}
pre{background:#f6f6f6;padding:1em;overflow-x:auto;font-size:.8em}"""


def face_strip_events(matches: pd.DataFrame) -> list[dict]:
    """Every ground truth (found or missed) and every false positive of one video, in time order."""
    events = []
    for row in matches.itertuples():
        if row.outcome in ("TP", "FN"):
            events.append(
                {
                    "kind": f"truth {row.outcome}",
                    "type": row.type,
                    "onset": row.truth_onset,
                    "apex": row.truth_apex,
                    "offset": row.truth_offset,
                }
            )
        if row.outcome == "FP":
            events.append(
                {
                    "kind": "spotted FP",
                    "type": row.type,
                    "onset": row.proposal_onset,
                    "apex": row.proposal_apex,
                    "offset": row.proposal_offset,
                }
            )
    return sorted(events, key=lambda e: e["onset"])


def _face_strips(
    run: RunFolder, matches: pd.DataFrame, videos: list[str], figures: Path, face_crops
) -> list[str]:
    import zarr

    config = run.read_config()
    pooled = bool(refs_of(config))  # a pooled run: each video from its own store
    recorded = run.store_path(config) if pooled else run.checked_store(config)  # as trained
    parts = []
    for video in videos:
        events = face_strip_events(matches[matches["video"] == video])
        store, stored = store_of_video(config, recorded, video)
        group = zarr.open_group(store, mode="r")[f"{VIDEOS}/{stored}"]
        numbers = {int(e[m]) for e in events for m in ("onset", "apex", "offset")}
        try:
            crops = face_crops(store, stored, sorted(numbers))
        except Exception as err:  # frames moved or deleted since extraction: say so, go on
            parts.append(
                f"<p>{html.escape(video)}: face crops unavailable ({html.escape(str(err))})</p>"
            )
            continue
        png = plots.plot_face_strips(
            video,
            events,
            crops,
            group["landmarks"][...],
            group["mdmo"][...],
            group["frame_numbers"][...],
            figures / f"faces_{video}.png",
        )
        parts.append(
            _image(
                png, f"{video}: faces at onset, apex and offset of each truth and false positive"
            )
        )
    return parts


def _how_counted(summary: dict) -> str:
    """One line: the matching rule, the scale it matched on and the proposal arithmetic."""
    parts = [summary.get("rule_label", f"rule {summary['rule']}")]
    parts += [f"matched in {summary['scale']}"] if "scale" in summary else []
    parts += [f"proposals: {summary['proposals_label']}"] if "proposals_label" in summary else []
    return "; ".join(parts)


def build_report(
    run: str | Path, select: str | None = None, faces: list[str] | bool = False,
    face_crops=None,
) -> Path:
    """Write run/report.html and run/report/*.png; return the HTML path.

    faces: True (every video) or a list of video ids: add strips of face crops at the onset, apex
    and offset of each ground truth and false positive, read by `face_crops(store, video_id,
    frame_numbers) -> {number: (h, w) uint8}` (spotting decodes no video: mespot.api.report
    passes flowcore.pictures.face_crops, which re-reads the frames from the dataset)."""
    if faces and face_crops is None:
        raise ValueError("build_report: faces need face_crops (flowcore.pictures.face_crops)")
    with working_copy(run) as local:  # a URL: written in a local copy, then back
        html = _build_report(RunFolder(local), select, faces, face_crops)
    return location(f"{str(run).rstrip('/')}/{html.name}") if is_url(run) else html


def _build_report(run, select, faces, face_crops) -> Path:
    """build_report, on a run folder of this machine."""
    run.read_config()  # refused here when missing or damaged (spotting/run_checks.py)
    evaluations = _evaluations(run)
    if not evaluations:
        raise UserError(f"{run.path} has no evaluation yet; run `mespot evaluate {run.path}` first")
    primary = _primary(run, evaluations, select)
    figures = run.figures_path
    figures.mkdir(exist_ok=True)
    for old in figures.glob("*.png"):
        old.unlink()
    summaries = {
        name: run.read_summary(path) for name, path in evaluations.items()
    }
    ev = evaluations[primary]
    matches = pd.read_csv(ev / "matches.csv")
    title = "/".join(run.path.absolute().parts[-2:])
    body = [
        f"<h1>mespot run report: {html.escape(title)}</h1>",
        f"<p>mespot {__version__}; curves and lists below use the "
        f"<b>{html.escape(summaries[primary]['selection_label'])}</b>"
        f" selection; matching rule <b>{summaries[primary]['rule']}</b>; proposal preset "
        f"<b>{summaries[primary]['preset']}</b>. Frame numbers are 1-based in each video's "
        "original numbering.</p>",
        f"<p>Counts {html.escape(summaries[primary].get('pooled', 'pooled over the LOSO folds'))}"
        ".</p>",
    ]
    body += _metrics_section(summaries, ev, figures)
    body += _precision_section(summaries[primary], ev, figures)
    videos, curves_html = _curves_section(ev, matches, figures)
    body += curves_html
    if faces:
        chosen = videos if faces is True else [v for v in videos if v in set(faces)]
        missing = [] if faces is True else sorted(set(faces) - set(videos))
        if missing:
            raise UserError(
                f"--faces: no evaluated video {', '.join(missing)}; have: {', '.join(videos)}"
            )
        body.append("<h2>Faces at onset, apex and offset</h2>")
        body.extend(_face_strips(run, matches, chosen, figures, face_crops))
    body += _training_section(run, matches, figures)
    page = (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>mespot report {html.escape(run.path.name)}</title>"
        f"<style>{STYLE}</style></head><body>{''.join(body)}</body></html>"
    )
    run.report_path.write_text(page, encoding="utf-8")
    return run.report_path


def _primary(run: RunFolder, evaluations: dict, select: str | None) -> str:
    """The evaluation the curves and lists show: `select` by its folder name (last+flip) or by
    its selection alone (last) when one folder has it; else the first."""
    if select is None:
        return next(iter(evaluations))
    if select in evaluations:
        return select
    named = [name for name in evaluations if name.split("+")[0] == select]
    if len(named) == 1:
        return named[0]
    raise UserError(f"no evaluation '{select}' in {run.path}" + (" (several: name one)" if named
                    else "") + f"; have: {', '.join(evaluations)}")


def _metrics_section(summaries: dict, ev: Path, figures: Path) -> list[str]:
    """Metrics of every evaluated selection (test-set selection flagged), F1 per subject."""
    body = ["<h2>Metrics</h2>"]
    for name, summary in summaries.items():
        metrics = pd.DataFrame.from_dict(summary["metrics"], orient="index").reset_index(
            names="type"
        )
        if summary["test_set_selection"]:
            body.append(
                '<p class="warn"><b>Test-set selection.</b> The epoch of each fold was chosen on '
                "that fold's test subject, as the reference implementation did. These numbers are "
                "optimistic and only for comparison with published results.</p>"
            )
        png = plots.plot_metrics_table(
            metrics, summary["selection_label"], figures / f"metrics_{name}.png"
        )
        body.append(
            f"<h3>{html.escape(summary['selection_label'])}</h3>" + _image(png, f"metrics, {name}")
        )
        body.append("<p>" + html.escape(_how_counted(summary)) + "</p>")
        body.append(
            "<p>epochs used per fold: "
            + html.escape(", ".join(f"{k}: {v}" for k, v in summary["epochs"].items()))
            + "</p>"
        )
    if (ev / "metrics_per_dataset.csv").is_file():  # a pooled run: each dataset alone
        per_dataset = pd.read_csv(ev / "metrics_per_dataset.csv")
        body.append("<h2>Per dataset</h2>" + _table(per_dataset.drop(
            columns=[c for c in ("rule", "scale") if c in per_dataset])))
    per_subject = pd.read_csv(ev / "metrics_per_subject.csv", dtype={"subject": str})
    body.append(
        "<h2>Per subject</h2>"
        + _image(plots.plot_subject_f1(per_subject, figures / "subject_f1.png"), "F1 per subject")
    )
    return body


def _precision_section(summary: dict, ev: Path, figures: Path) -> list[str]:
    """The metrics at the default minimum expected precision, the reliability plot and every
    spotted interval with its score and expected precision (evaluations that have them)."""
    at, table = ev / "metrics_at_precision.csv", ev / "reliability.csv"
    if not at.is_file() or not table.is_file():
        return []
    level = summary.get("min_precision", 0.5)
    body = ["<h2>Expected precision of each interval</h2>",
            "<p>Each spotted interval's expected precision is the share of right intervals (TP) "
            "among the held-out test intervals of about its score, of the same type, of the "
            "other folds' test subjects (never its own): a monotone map from score to "
            f"precision (isotonic regression, recorded in the run's precision/ folder). "
            f"<code>mespot predict</code> lists by default the intervals of expected precision "
            f"&gt;= {level:g}; counted the same way here (the MEGC table above lists every "
            f"proposal).</p>"]
    metrics = pd.read_csv(at)
    title = f"{summary['selection_label']}: intervals of expected precision >= {level:g}"
    png = plots.plot_metrics_table(metrics, title, figures / "metrics_at_precision.png")
    body.append(_image(png, title))
    reliable = pd.read_csv(table)
    if len(reliable):
        body.append(_image(plots.plot_reliability(reliable, figures / "reliability.png"),
                           "predicted against observed precision on the held-out folds"))
    intervals = pd.read_csv(ev / "intervals.csv")
    body.append("<h3>Spotted intervals with score and expected precision</h3>"
                + _table(intervals))
    return body


def _curves_section(ev: Path, matches: pd.DataFrame, figures: Path) -> tuple[list[str], list[str]]:
    """(the evaluated videos, the score curves of each with truth and spotted intervals)."""
    body = ["<h2>Score curves per video</h2>"]
    curves = np.load(ev / "curves.npz")
    columns = [str(c) for c in curves["columns"]]
    videos = sorted(k for k in curves.files if k != "columns" and not k.endswith(".frames"))
    for video in videos:
        png = plots.plot_video_curves(
            video,
            curves[video],
            curves[f"{video}.frames"],
            matches[matches["video"] == video],
            figures / f"curves_{video}.png",
            columns,
        )
        body.append(_image(png, f"{video}: ME and MaE probabilities; truth and spotted intervals"))
    return videos, body


def _training_section(run: RunFolder, matches: pd.DataFrame, figures: Path) -> list[str]:
    """Losses, the AU prior, interval lengths, the TP/FP/FN list, the configuration and the
    repaired or skipped annotations."""
    body = ["<h2>Training</h2>"]
    body.append(
        _image(
            plots.plot_losses(read_losses(run.path), figures / "losses.png"),
            "training loss per fold",
        )
    )
    folds = [meta for meta in (f.read_meta() for f in run.folds()) if "prior" in meta]
    if folds:
        prior = np.mean([np.array(f["prior"]) for f in folds], axis=0)
        source = folds[0].get("prior_source", "?")
        title = f"AU prior (mean over {len(folds)} folds, source: {source} subjects)"
        body.append(_image(plots.plot_prior(prior, title, figures / "prior.png"), title))
    body.append(
        "<h2>Interval lengths</h2>"
        + _image(
            plots.plot_lengths(matches, figures / "lengths.png"),
            "lengths of truth and spotted intervals",
        )
    )
    body.append("<h2>True positives, false positives, misses</h2>")
    shown = matches.drop(columns=[c for c in ("proposal", "truth") if c in matches])
    body.append(_table(shown))
    body.append("<h2>Configuration</h2><pre>" + html.escape(run.config_path.read_text()) + "</pre>")
    issues_path = run.issues_path
    issues = (
        pd.read_csv(issues_path)
        if issues_path.is_file() and issues_path.stat().st_size
        else pd.DataFrame()
    )
    body.append(
        f"<h2>Repaired or skipped annotations ({len(issues)})</h2>"
        + (_table(issues) if len(issues) else "<p>none</p>")
    )
    return body
