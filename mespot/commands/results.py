"""`mespot evaluate`, `mespot report` and `mespot predict`: flags -> the library (mespot.api,
spotting.predict) -> tables and file names printed."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from flowcore.errors import UserError


def print_metrics(evaluations, console: Console | None = None) -> None:
    """The MEGC table: a block of ME, MaE and overall rows per selection, test-set selection
    flagged; the matching rule and its scale in the title, the proposal arithmetic in the
    caption. Then the same counts over the intervals of at least the default expected precision
    (what `predict` lists by default), for the selections that have it (not the oracle's)."""
    from spotting.metrics import RULES
    from spotting.proposals import PROPOSAL_VARIANTS

    console = console or Console()
    how = "; ".join(sorted({f"rule {e.rule}, matched in {e.scale}" for e in evaluations}))
    caption = "; ".join(sorted({f"{RULES[e.rule].label}. "
                                f"Proposals: {PROPOSAL_VARIANTS[e.proposals]}"
                                for e in evaluations}))
    table = _metrics_table(f"spotting metrics ({how}; counts {evaluations[0].pooled})",
                           caption, [(e, e.metrics) for e in evaluations])
    console.print(table)
    shown = [(e, e.at_threshold) for e in evaluations
             if e.at_threshold is not None and e.selection.mode != "oracle"]
    if shown:
        level = shown[0][0].min_precision
        console.print(_metrics_table(
            f"the intervals of expected precision >= {level:g} (what `mespot predict` lists by "
            f"default; each interval's precision from the other folds' test subjects)",
            "The same matching and counts over the intervals reaching it (--min-precision 0 "
            "gives the table above).", shown))
    if any(e.selection.mode == "oracle" for e in evaluations):
        console.print(
            "[bold yellow]oracle[/]: each fold's epoch was chosen on its own test subject; "
            "those numbers are optimistic and only for comparison with published results."
        )


def _metrics_table(title: str, caption: str, rows) -> Table:
    """A block of ME, MaE and overall rows per (evaluation, its metrics table) of `rows`."""
    table = Table(title=title, caption=caption)
    for column in ("selection", "type", "precision", "recall", "F1", "TP", "FP", "FN"):
        table.add_column(column, justify="left" if column in ("selection", "type") else "right")
    for e, metrics in rows:
        # the selection on the ME row, the options (e.g. +calibrated+flip) on the MaE row
        label = {"me": e.selection.short_label, "mae": e.options.suffix}
        for row in metrics.itertuples():
            name = {"me": "ME", "mae": "MaE", "overall": "overall"}[row.type]
            table.add_row(
                label.get(row.type, ""),
                name,
                f"{row.precision:.4f}",
                f"{row.recall:.4f}",
                f"{row.f1:.4f}",
                str(row.TP),
                str(row.FP),
                str(row.FN),
                end_section=row.type == "overall",
            )
    return table


def evaluate_command(
    run: str = typer.Argument(..., help="Run folder of `mespot train` (a path or a URL)."),
    select: list[str] = typer.Option(
        ["last"],
        "--select",
        "-s",
        help="Epoch per fold: last, fixed:N, inner-val or oracle (test-set "
        "selection, labelled as such). Repeat to compare.",
    ),
    rule: str = typer.Option(
        "megc", "--rule", help="Matching: megc (IoU >= 0.5 on inclusive counts, one match per "
        "truth, in original frame numbers); reference (the AUW-GCN code's counting since its "
        "commit a15701b, 2025-02-25: each truth's best proposal if IoU > 0.5 on e - s, counted "
        "once; on its rows); reference-2023 (its counting before that commit, behind the "
        "published numbers: every proposal whose best IoU with a truth is > 0.5)."),
    proposals: Optional[str] = typer.Option(
        None, "--proposals", help="Proposal arithmetic: mespot or reference (float32, start ties "
        "nearest the apex) [default: reference for a --compat store, else mespot]."),
    preset: Optional[str] = typer.Option(
        None, "--preset", help="Proposal ranges: casme2 or samm (default: from the store)."
    ),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda, cuda:N."),
    report: bool = typer.Option(True, "--report/--no-report", help="Also write report.html."),
    allow_missing_folds: bool = typer.Option(
        False, "--allow-missing-folds", help="Evaluate a run with LOSO folds missing or "
        "unfinished (refused otherwise); their truths count as missed."),
    calibrate: Optional[bool] = typer.Option(
        None, "--calibrate/--no-calibrate", help="Choose each fold's proposal rules (apex "
        "threshold, proposals kept, score floor, per type) on its inner-validation subjects, "
        "never on the test subject [default: on when every fold has an inner-validation model "
        "(`mespot train --inner-val K`), off for a --compat store]."),
    flip: Optional[bool] = typer.Option(
        None, "--flip/--no-flip", help="Average the network's outputs on the face and on its "
        "mirror image (left/right ROIs swapped, horizontal motion negated) [default: on, off "
        "for a --compat store]."),
    store: Optional[str] = typer.Option(
        None, "--store", help="The run's feature store at another path than the one its "
        "config.json records (a copy, on another machine); refused unless it has the recorded "
        "parameters hash."),
) -> None:
    """Spot every test video of a LOSO run, match against the truth, print and save the metrics.

    Writes RUN/evaluation/<selection>/ (named for what was used: last+calibrated+flip/ with
    both options, last/ with neither;
    metrics.csv/json, per-subject and per-video metrics, intervals.csv with 1-based original
    frame numbers and each interval's expected precision (from the other folds' test
    subjects), metrics_at_precision.csv (the intervals of expected precision >= 0.5, what
    predict lists by default), reliability.csv, matches.csv with every TP/FP/FN, curves), the
    score -> precision maps that predict applies (RUN/precision/<selection>.json) and, unless
    --no-report, RUN/report.html. Several --select share one loading of the store.
    """
    from mespot.api import report as write_report
    from spotting.data import resolve_device
    from spotting.evaluate import SpotOptions, evaluate_selections

    resolve_device(device)
    evaluations = evaluate_selections(
        run, select, rule=rule, preset=preset, device=device, proposals=proposals,
        allow_missing_folds=allow_missing_folds, options=SpotOptions(calibrate, flip),
        store=store)
    print_metrics(evaluations)
    for e in evaluations:
        name = e.out.name
        used = ", ".join(f"{subject} (epoch {epoch})"
                         for subject, epoch in sorted(e.epochs.items()))
        typer.echo(f"{name}: folds evaluated: {used}")
        if e.missing_folds:
            typer.echo(f"{name}: folds missing, their truths counted as missed: "
                       f"{', '.join(e.missing_folds)}")
        if e.per_dataset is not None:  # a pooled run: each dataset alone
            f1 = e.per_dataset.set_index(["dataset", "type"])["f1"]
            typer.echo(f"{name}: F1 per dataset: " + "; ".join(
                f"{d} {f1[d, 'overall']:.4f} (ME {f1[d, 'me']:.4f}, MaE {f1[d, 'mae']:.4f})"
                for d in sorted(set(e.per_dataset["dataset"]))))
        for video in e.uncounted:
            typer.echo(f"{name}: video {video['video']} ({video['subject']}): its "
                       f"{video['truths']} truths are not counted: {video['why']}")
        typer.echo(f"{name}: {e.out}")
    if report:
        typer.echo(f"report: {write_report(run, evaluations[0].out.name)}")


def report_command(
    run: str = typer.Argument(..., help="Run folder with at least one evaluation (a path or a "
                              "URL)."),
    select: Optional[str] = typer.Option(
        None, "--select", "-s", help="Which evaluation's curves and lists to show (default: last)."
    ),
    faces: Optional[list[str]] = typer.Option(
        None,
        "--faces",
        help="Add face strips (onset/apex/offset of each truth and "
        "false positive, ROIs, MDMO arrows) for this video; "
        "repeatable; 'all' for every video.",
    ),
) -> None:
    """Write RUN/report.html (self-contained, opens offline) and RUN/report/*.png."""
    from mespot.api import report

    chosen = True if faces and "all" in faces else (faces or False)
    typer.echo(str(report(run, select, faces=chosen)))


def predict_command(
    video: str = typer.Argument(
        ...,
        help="A video file, a folder of numbered frames, or a folder of "
        "video files (every video in it is spotted).",
    ),
    model: str = typer.Option(
        ...,
        "--model",
        "-m",
        help="A run folder (runs/NAME) or a reference checkpoint_epoch_EEE.pth.tar.",
    ),
    out: Optional[str] = typer.Option(
        None, "--out", "-o", help="Output folder or URL [default: predictions/<video name>]."
    ),
    fold: Optional[str] = typer.Option(
        None, "--fold", help="Use only this fold's model (a subject id)."
    ),
    all_folds: bool = typer.Option(
        True, "--all-folds/--one-fold", help="Average the logits of every fold's model (default)."
    ),
    select: str = typer.Option(
        "last", "--select", "-s", help="Epoch of each fold: last or fixed:N."
    ),
    preset: Optional[str] = typer.Option(None, "--preset", help="Proposal ranges: casme2 or samm."),
    proposals: Optional[str] = typer.Option(
        None, "--proposals", help="Proposal arithmetic: mespot or reference [default: reference "
        "for a .pth.tar checkpoint or --compat features]."),
    fps: Optional[float] = typer.Option(
        None, "--fps", help="Frame rate of a frame folder [default: 30]."
    ),
    backend: Optional[str] = typer.Option(
        None, "--backend", help="Flow backend [default: the model's]."
    ),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda, cuda:N."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
    allow_missing_folds: bool = typer.Option(
        False, "--allow-missing-folds", help="Average the folds there are when some of the "
        "run's LOSO folds are missing (refused otherwise)."),
    flip: Optional[bool] = typer.Option(
        None, "--flip/--no-flip", help="Also run the model(s) on the mirrored face and average "
        "(as `mespot evaluate --flip`) [default: on, off for a reference checkpoint or a "
        "--compat run]."),
    calibrate: Optional[bool] = typer.Option(
        None, "--calibrate/--no-calibrate", help="Each fold's proposal rules calibrated on its "
        "inner-validation subjects, as `mespot train` recorded them (several folds: combined "
        "per type by the median) [default: on where every fold has them, as `mespot "
        "evaluate`'s default; off for a --compat run]."),
    annotations: Optional[str] = typer.Option(
        None, "--annotations", "-a", help="Score the spotted intervals against these "
        "annotations (a workbook or CSV, as `mespot train -a`), counted as `mespot evaluate` "
        "counts (MEGC): OUT/metrics.json, OUT/matches.csv."),
    face: Optional[str] = typer.Option(
        None, "--face", help="Of several faces: largest, center or N (0-based, from the left) "
        "[default: as the run's training store was extracted]."),
    min_precision: Optional[float] = typer.Option(None, "--min-precision", help="Only intervals "
        "of expected precision >= P (0: every proposal, as MEGC scores) [default: 0.5]."),
) -> None:
    """Spot expressions in new videos with a trained run or a reference checkpoint.

    By default it applies what `mespot evaluate` applies by default (last epoch, calibrated
    proposal rules, test-time flip), from the run folder alone: the training store is not
    needed. Extracts the features with the model's extraction parameters, runs the
    network(s), and writes OUT/intervals.csv (1-based frame numbers), OUT/curves.png (one
    video) or OUT/curves/<video>.png (several), OUT/prediction.json and OUT/features.zarr. A
    video that cannot be extracted is reported (exit code 1) and the others are still spotted.
    """
    from mespot.progress import RichProgress
    from spotting.predict import predict_videos

    if fold is None and not all_folds:
        raise UserError("--one-fold needs --fold SUBJECT")
    out = out or Path("predictions") / Path(video.rstrip("/")).stem
    batch = predict_videos(video, model, out, fold=fold, select=select, preset=preset, fps=fps,
                           device=device, backend=backend, proposals=proposals, flip=flip,
                           progress=RichProgress(enabled=not quiet), calibrate=calibrate,
                           allow_missing_folds=allow_missing_folds, annotations=annotations,
                           face=face, min_precision=min_precision)
    _show_predictions(batch, out)


def _show_scores(batch) -> None:
    """One line per type: the spotted intervals scored against the annotations given."""
    table = batch.metrics.set_index("type")
    typer.echo(f"scored against {batch.annotations} (MEGC, counts pooled over "
               f"{len(batch.predictions)} video(s)):")
    for kind, name in (("me", "ME"), ("mae", "MaE"), ("overall", "overall")):
        row = table.loc[kind]
        typer.echo(f"  {name:8s} precision {row['precision']:.4f}  recall {row['recall']:.4f}  "
                   f"F1 {row['f1']:.4f}  TP {int(row['TP'])}  FP {int(row['FP'])}  "
                   f"FN {int(row['FN'])}")


def _show_predictions(batch, out) -> None:
    """What predict found, per video, and what it wrote; exit code 1 if a video failed."""
    from spotting.proposals import PROPOSAL_VARIANTS

    typer.echo(f"applied: {batch.trained.applied}")
    if batch.trained.note:
        typer.echo(f"note: {batch.trained.note}", err=True)
    if batch.length_note:
        typer.echo(f"note: {batch.length_note}", err=True)
    if batch.extraction["fallback"]:
        typer.echo(f"note: {batch.extraction['fallback']}", err=True)
    typer.echo(f"proposals: {PROPOSAL_VARIANTS[batch.proposals]}")
    typer.echo(f"precision: {batch.trained.precision_note}")
    at = (f" with expected precision >= {batch.min_precision:g}" if batch.min_precision > 0
          else "")
    for result in batch.predictions:
        counts = result.intervals["type"].value_counts()
        below = (f" ({result.left_out} more below it left out; --min-precision 0 lists them)"
                 if batch.min_precision > 0 else "")
        typer.echo(
            f"{result.video_id}: {counts.get('me', 0)} micro- and {counts.get('mae', 0)} "
            f"macro-expressions spotted{at}{below}"
        )
    for result in batch.predictions:  # nothing can be spotted where the face was missing
        for warning in result.warnings:
            typer.echo(f"warning: {result.video_id}: {warning}")
        if result.no_face:
            stretches = ", ".join(f"{a}-{b}" for a, b in result.no_face)
            typer.echo(f"{result.video_id}: no face in frames {stretches} (nothing spotted there)")
    if len(batch.predictions) == 1:
        table = batch.predictions[0].intervals
        typer.echo(table.to_string(index=False) if len(table) else "(none)")
    if batch.missing_folds:
        typer.echo(f"warning: folds {', '.join(batch.missing_folds)} of the run are missing; "
                   f"averaged the others", err=True)
    for failure in batch.failed:
        typer.echo(
            f"{failure.video_id}: not spotted, feature extraction failed at {failure.stage}: "
            f"{failure.error}",
            err=True,
        )
    if batch.metrics is not None:
        _show_scores(batch)
    where = str(out).rstrip("/")
    pictures = "curves.png" if len(batch.predictions) == 1 else "curves"
    typer.echo(f"written: {where}/intervals.csv, {where}/{pictures}")
    if batch.failed:
        raise typer.Exit(1)
