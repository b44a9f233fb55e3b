"""Evaluate a LOSO run: pick an epoch per fold, spot, match, count (AUWGCN.md sections 8-9).

Epoch selection (`--select`), per fold:
- `last`       the final epoch (default): nothing is chosen by looking at any result;
- `fixed:N`    epoch N for every fold;
- `inner-val`  the epoch with the best overall F1 on held-out *training* subjects (the fold's
               inner validation model, trained by `mespot train --inner-val`), then the main
               model's weights of that epoch;
- `oracle`     the epoch with the best F1 on the fold's own TEST subject, as the reference did.
               Test-set selection: its numbers are optimistic, labelled so wherever they appear,
               and exist only to compare with published results.

Matching (`--rule`, spotting/metrics.py) and its scales: spotting/truths.py. Spotting: one
path with `predict` (spotting/spot.py); calibrated proposal rules: spotting/fold_rules.py.

Expected precision (spotting/precision.py): every interval gets the precision of the map
fitted on the other folds' test intervals; the counts over those of at least
DEFAULT_MIN_PRECISION are reported beside the MEGC ones (`at_threshold`), and the maps are
recorded in RUN/precision/ for `predict` (MEGC rule, selections other than the oracle).

Proposals (`--proposals`, spotting/proposals.py): `reference` arithmetic (float32, start ties
to the row nearest the apex) is the default for a store extracted with `--compat`, `mespot`
otherwise.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from flowcore.errors import UserError
from flowcore.locations import is_url, location, working_copy
from spotting.augment import flip_by_default
from spotting.data import Prepared
from spotting.datasets import dataset_of, prepare_recorded, refs_of
from spotting.fold_rules import default_params, fold_rules, rules_key
from spotting.inference import CURVES, probability_curves
from spotting.metrics import MEGC, RULES, MatchRule, summarise
from spotting.precision import DEFAULT_MIN_PRECISION, held_out, kept, reliability, write_precision
from spotting.proposals import PRESETS, PROPOSAL_VARIANTS, ProposalParams
from spotting.protocols import run_plan, tested_truths
from spotting.run_folder import FoldFolder, RunFolder
from spotting.run_record import preset_of
from spotting.selection import Selection, parse_selection
from spotting.spot import spot_subjects
from spotting.truths import count, ground_truth, scale_label, to_frames, uncounted
from spotting.windows import WindowParams

ORACLE_FIRST_EPOCH = {"casme2": 16, "samm": 11}  # the reference's epochs 15-99 / 10-99, 0-based
@dataclass(frozen=True)
class SpotOptions:
    """How a selected model spots (evaluation options beside the epoch selection):
    `calibrate` chooses the proposal rules per fold on its inner-validation subjects
    (spotting/calibrate.py); `flip` averages the logits of the face and of its mirror
    (spotting/augment.py). None: the default, `resolved` for the run (docs/quality.md measured
    both): flip on, and calibration on when every fold has an inner-validation model; both off
    for a `--compat` store, whose runs reproduce the reference's numbers."""

    calibrate: bool | None = None
    flip: bool | None = None

    def resolved(self, compat: bool, folds: list[FoldFolder]) -> "SpotOptions":
        """Concrete options for a run with these `folds` on a store made with (or without)
        `--compat`."""
        calibrate = self.calibrate
        if calibrate is None:
            calibrate = not compat and bool(folds) and all(
                fold.inner.inner_meta_path.is_file() for fold in folds)
        return SpotOptions(calibrate, flip_by_default(compat) if self.flip is None else self.flip)

    @property
    def suffix(self) -> str:
        """Appended to the evaluation folder's name, so variants do not overwrite each other."""
        return "".join(f"+{name}" for name, on in (("calibrated", self.calibrate),
                                                   ("flip", self.flip)) if on)

    @property
    def label(self) -> str:
        """The options in words, " (...)" to append to a selection's label; "" when none."""
        parts = [text for on, text in (
            (self.calibrate, "proposal rules calibrated on inner-validation subjects"),
            (self.flip, "test-time flip")) if on]
        return f" ({'; '.join(parts)})" if parts else ""


@dataclass(frozen=True)
class Evaluation:
    selection: Selection
    rule: str
    scale: str  # what the rule matched on, e.g. "frames: original 200 fps numbering"
    proposals: str  # proposal arithmetic, a key of PROPOSAL_VARIANTS
    metrics: pd.DataFrame  # rows me, mae, overall: precision, recall, f1, TP, FP, FN, ...
    per_subject: pd.DataFrame
    per_video: pd.DataFrame
    matches: pd.DataFrame  # one row per TP / FP / FN, frames 1-based original
    intervals: pd.DataFrame  # spotted intervals: video, subject, type, onset, offset, apex, score
    epochs: dict[str, int]  # fold (test subject) -> epoch used
    out: Path
    missing_folds: tuple[str, ...] = ()  # LOSO folds not evaluated: their truths count as missed
    n_folds: int = 0  # LOSO folds of the run's store (one per subject)
    options: SpotOptions = SpotOptions()
    calibration: dict | None = None  # fold -> chosen proposal rules (with --calibrate)
    # annotated videos not counted (not complete in the store): video, subject, truths, why
    uncounted: tuple[dict, ...] = ()
    # the intervals whose held-out expected precision reaches min_precision (predict's
    # default), counted as `metrics`; None for a run without the maps (a single fold)
    at_threshold: pd.DataFrame | None = None
    min_precision: float = DEFAULT_MIN_PRECISION
    reliability: pd.DataFrame | None = None  # predicted vs observed precision (precision.py)
    per_dataset: pd.DataFrame | None = None  # a pooled run: the metrics of each dataset
    protocol: str = "loso"  # spotting/protocols.py

    @property
    def pooled(self) -> str:
        """Over what the counts are pooled, in words: the LOSO folds (of the subjects annotated
        or in the store), the missing folds' truths counted as missed, and the truths of the
        videos the store could not give (not counted)."""
        if self.protocol != "loso":
            tested = ("the test dataset's subjects" if self.protocol == "cross-dataset"
                      else "the split's test videos")
            return (f"{self.protocol}: one model, counted over {tested}"
                    + ("; its fold is missing: every truth counted as missed"
                       if self.missing_folds else ""))
        subjects = self.n_folds + len({v["subject"] for v in self.uncounted} - set(self.epochs)
                                      - set(self.missing_folds))
        evaluated = self.n_folds - len(self.missing_folds)
        parts = [f"pooled over all {subjects} LOSO folds" if evaluated == subjects
                 else f"pooled over {evaluated} of {subjects} LOSO folds"]
        if self.missing_folds:
            parts.append(f"the truths of {', '.join(self.missing_folds)} counted as missed")
        if self.uncounted:
            videos = [f"the {v['truths']} truths of video {v['video']}" if i == 0
                      else f"the {v['truths']} of {v['video']}"
                      for i, v in enumerate(self.uncounted)]
            whys = sorted({v["why"] for v in self.uncounted})
            parts.append(f"{', '.join(videos)} are not counted ({'; '.join(whys)})")
        return "; ".join(parts)


def _f1(proposals: pd.DataFrame, truths: pd.DataFrame, rule: MatchRule, features) -> float:
    return float(
        summarise(count(proposals, truths, rule, features)).set_index("type").loc["overall", "f1"]
    )


def _choose_epoch(
    selection: Selection,
    fold: FoldFolder,
    epochs: list[int],
    prep,
    truths,
    params,
    windows,
    rule,
    preset,
    device,
    flip: bool = False,
) -> int:
    if selection.mode == "last":
        return fold.last_epoch()
    if selection.mode == "fixed":
        if selection.epoch not in epochs:
            raise UserError(
                f"{fold.path}: no weights for epoch {selection.epoch} "
                f"(saved: {epochs[0]}..{epochs[-1]}"
                f", every {epochs[1] - epochs[0] if len(epochs) > 1 else 1})"
            )
        return selection.epoch
    if selection.mode == "oracle":
        meta = fold.read_meta()
        subjects = meta.get("test_units", [meta["test_subject"]])
        folder = fold
        pool = [e for e in epochs if e >= ORACLE_FIRST_EPOCH[preset]] or epochs
    else:  # inner-val
        inner = fold.inner
        if not inner.inner_meta_path.is_file():
            raise UserError(
                f"{fold.path}: no inner validation model; train with `mespot train --inner-val K`"
            )
        subjects = inner.read_inner()["val_subjects"]
        folder, pool = inner, [e for e in inner.epochs() if e in set(epochs)]
        if not pool:
            raise UserError(
                f"{inner.path}: no epoch has weights in both the inner and the main model"
            )
    wanted = truths[truths["subject"].isin(subjects) | truths["video"].isin(subjects)]
    best, best_f1 = pool[-1], -1.0
    for epoch in pool:  # ties keep the earliest epoch
        found, _ = spot_subjects(
            prep, folder.weights_path(epoch), subjects, params, windows, device, flip
        )
        f1 = _f1(found, wanted, rule, prep.features)
        if f1 > best_f1:
            best, best_f1 = epoch, f1
    return best


def evaluation_name(selection: str, options: SpotOptions, rule: str, variant: str,
                    features) -> str:
    """The evaluation folder's name: the selection, then what departs from MEGC matching with the
    store's own proposal arithmetic, so no evaluation overwrites another: `last+calibrated+flip`,
    `last+flip+rule-reference`, `last+proposals-reference`."""
    name = selection + options.suffix
    if rule != "megc":
        name += f"+rule-{rule}"
    if variant != proposal_variant(features, None):
        name += f"+proposals-{variant}"
    return name


def proposal_variant(features, requested: str | None) -> str:
    """`requested`, or the default for the store: `reference` for `--compat` features."""
    variant = requested or ("reference" if features.params.get("compat") else "mespot")
    if variant not in PROPOSAL_VARIANTS:
        raise UserError(
            f"--proposals must be one of {', '.join(PROPOSAL_VARIANTS)} (got {variant!r})"
        )
    return variant


def evaluate_run(
    run: str | Path,
    select: str = "last",
    rule: str = "megc",
    preset: str | None = None,
    device: str = "cpu",
    prepared: Prepared | None = None,
    proposals: str | None = None,
    allow_missing_folds: bool = False,
    options: SpotOptions = SpotOptions(),
    store: str | Path | None = None,
) -> Evaluation:
    """Evaluate run folder `run`; write run/evaluation/<evaluation_name>/ and return the
    numbers. `proposals`: proposal arithmetic (PROPOSAL_VARIANTS), None for the store's
    default; `options`: calibrated proposal rules, test-time flip (SpotOptions: by default
    both, where the run allows). `store`: the run's feature store at another path than the one
    recorded (a copy, on another machine).

    Every subject of the run's store is a LOSO fold: a run with folds missing or unfinished is
    refused unless `allow_missing_folds`, and then the missing folds' truths count as missed. A
    store that is not the one the run was trained on (another parameters hash) is refused. A run
    folder given as a URL is evaluated in a local copy, its evaluation written back."""
    with working_copy(run) as local:
        found = _evaluate_run(local, select, rule, preset, device, prepared, proposals,
                              allow_missing_folds, options, store)
    return _written_back(found, run)


def _written_back(found: Evaluation, run) -> Evaluation:
    """`found`, its `out` the evaluation folder where it was written back for a URL run."""
    if not is_url(run):
        return found
    return replace(found, out=location(f"{str(run).rstrip('/')}/evaluation/{found.out.name}"))


def _evaluate_run(run, select, rule, preset, device, prepared, proposals, allow_missing_folds,
                  options, store) -> Evaluation:
    """evaluate_run, on a run folder of this machine."""
    run = RunFolder(run)
    config = run.read_config()
    selection = parse_selection(select)
    if rule not in RULES:
        raise UserError(f"--rule must be one of {', '.join(RULES)} (got {rule!r})")
    windows = WindowParams(**config["windows"])
    prep = prepared or prepare_run(run, store)
    run.check_store(config, prep.features)
    preset = preset or preset_of(prep.features.dataset, prep.table.dataset)
    if preset not in PRESETS:
        raise UserError(f"--preset must be one of {', '.join(PRESETS)} (got {preset!r})")
    variant = proposal_variant(prep.features, proposals)
    params = replace(PRESETS[preset], variant=variant)
    truths = ground_truth(prep, windows)
    plan = run_plan(config, prep)
    folds, missing = run.complete_folds([f.name for f in plan], allow_missing_folds)
    compat = bool(prep.features.params.get("compat"))
    options = options.resolved(compat, folds)
    spotted = _spot_folds(folds, selection, options, prep, truths, params, windows, RULES[rule],
                          preset, device)
    matches, found, maps, at_threshold, per_dataset = _counted(
        spotted, tested_truths(truths, plan), RULES[rule], prep.features)
    shown = found.drop(columns="hit")
    out = run.evaluation(evaluation_name(selection.name, options, rule, variant, prep.features))
    out.mkdir(parents=True, exist_ok=True)
    _write_curves(out / "curves.npz", spotted.curves, prep)
    table = reliability(found)
    if out.name == selection.name + options.suffix and selection.mode != "oracle":
        # MEGC with the store's own arithmetic, not the oracle: what predict applies
        write_precision(run.precision_path(out.name),
                        _precision_key(selection, options, variant, preset, spotted.epochs),
                        maps, table)
    return _write(
        Evaluation(
            selection, rule, scale_label(RULES[rule], prep.features), variant,
            metrics=summarise(matches),
            per_subject=summarise(matches, by=["subject"]),
            per_video=summarise(matches, by=["video"]),
            matches=matches,
            intervals=to_frames(shown, prep.features).sort_values(
                ["subject", "video", "type", "onset"]
            ),
            epochs=spotted.epochs,
            out=out,
            missing_folds=tuple(missing),
            n_folds=len(plan),
            options=options,
            calibration=spotted.calibration or None,
            uncounted=tuple(uncounted(prep).to_dict(orient="records")),
            at_threshold=summarise(at_threshold),
            reliability=table,
            per_dataset=per_dataset,
            protocol=config.get("protocol", "loso"),
        ),
        config,
        preset,
        params,
    )


def _counted(spotted: "_Spotted", tested: pd.DataFrame, rule: MatchRule, features) -> tuple:
    """(matches, the spotted intervals with their held-out precision, the precision maps, the
    counts at the default minimum precision, per-dataset metrics of a pooled run or None). The
    truths of missing folds count as missed."""
    matches = count(spotted.found, tested, rule, features)
    found, maps = held_out(spotted.found, matches, sorted(spotted.epochs))
    shown = found.drop(columns="hit")
    at_threshold = count(shown[kept(shown, DEFAULT_MIN_PRECISION)], tested, rule, features)
    per_dataset = None
    if features.dataset == "pooled":  # several datasets: each alone, beside the pooled
        matches.insert(0, "dataset", matches["video"].map(dataset_of))
        per_dataset = summarise(matches, by=["dataset"])
    return matches, found, maps, at_threshold, per_dataset


def _precision_key(selection: Selection, options: SpotOptions, variant: str, preset: str,
                   epochs: dict[str, int]) -> dict:
    """What a run's precision maps depend on (spotting/precision.py), as JSON: predict applies
    them only where its own options give the same key."""
    return {"selection": selection.name + options.suffix, "rule": MEGC.name,
            "proposals": variant, "preset": preset,
            "epochs": {subject: int(e) for subject, e in sorted(epochs.items())}}


def prepare_run(run: RunFolder, store: str | Path | None = None) -> Prepared:
    """The run's store (or `store`, a copy of it elsewhere) and annotations, prepared with its
    windows."""
    config = run.read_config()
    pooled = bool(refs_of(config))  # each pooled store is checked as it is read
    recorded = run.store_path(config) if pooled else run.checked_store(config, store)
    return prepare_recorded(config, store, recorded)


def evaluate_selections(run: str | Path, selects: list[str], **options) -> list[Evaluation]:
    """`evaluate_run(run, s, **options)` for each selection of `selects`, the run's store and
    annotations loaded once for all of them (a run folder given as a URL: one local copy)."""
    with working_copy(run) as local:
        if len(selects) > 1 and options.get("prepared") is None:
            options["prepared"] = prepare_run(RunFolder(local), options.get("store"))
        found = [evaluate_run(local, s, **options) for s in selects]
    return [_written_back(e, run) for e in found]


@dataclass(frozen=True)
class _Spotted:
    """What the folds of a run spotted on their test subjects."""

    found: pd.DataFrame  # proposals (rows) of every fold, with the epoch used
    epochs: dict[str, int]  # test subject -> epoch
    curves: dict[str, np.ndarray]  # video -> (N, 8) probabilities
    calibration: dict[str, dict]  # test subject -> chosen proposal rules (with calibrate)


def _spot_folds(folds: list[FoldFolder], selection: Selection, options: SpotOptions, prep,
                truths, params, windows, rule, preset, device) -> _Spotted:
    """Each fold's model at its selected epoch on its test subject (proposal rules calibrated
    on its inner-validation subjects with `options.calibrate`, recorded ones where the run
    has them for these options; logits flipped with `.flip`)."""
    found_all, epochs_used, curves, calibration = [], {}, {}, {}
    compat = bool(prep.features.params.get("compat"))
    for fold in folds:
        meta = fold.read_meta()
        subject, units = meta["test_subject"], meta.get("test_units", [meta["test_subject"]])
        epoch = _choose_epoch(selection, fold, fold.epochs(), prep, truths, params, windows,
                              rule, preset, device, options.flip)
        epochs_used[subject] = epoch
        rules = params
        if options.calibrate:
            default = _default_key(fold, preset, compat)
            rules, calibration[subject] = fold_rules(fold, epoch, prep, truths, params, windows,
                                                     rule, device, options.flip, default, preset)
        found, logits = spot_subjects(prep, fold.weights_path(epoch), units, rules, windows,
                                      device, options.flip)
        found_all.append(found.assign(epoch=epoch))
        curves.update({video: probability_curves(rows) for video, rows in logits.items()})
    return _Spotted(pd.concat(found_all, ignore_index=True), epochs_used, curves, calibration)


def _default_key(fold: FoldFolder, preset: str, compat: bool) -> dict | None:
    """The key of the rules `mespot train` records for a fold (evaluate's default: its last
    epoch, MEGC, the store's flip default, the preset's fixed rules); None when the fold's last
    weights are gone."""
    try:
        last = fold.last_epoch()
    except UserError:
        return None
    return rules_key(last, MEGC, flip_by_default(compat), default_params(preset, compat))


def _write_curves(path: Path, curves: dict[str, np.ndarray], prep: Prepared) -> None:
    """Per video: `<video>` (N, 8) probabilities (columns CURVES) and `<video>.frames` (N,) the
    1-based original frame number of each row, for plots."""
    arrays = {}
    for video, values in curves.items():
        arrays[video] = values.astype(np.float32)
        arrays[f"{video}.frames"] = (
            prep.features.videos[video].frame_numbers[: len(values)].astype(np.int32)
        )
    np.savez_compressed(path, columns=np.array(CURVES), **arrays)


def _write(e: Evaluation, config: dict, preset: str, params: ProposalParams) -> Evaluation:
    for table, name in (
        (e.metrics, "metrics"),
        (e.per_subject, "metrics_per_subject"),
        (e.per_video, "metrics_per_video"),
    ):
        table.assign(rule=e.rule, scale=e.scale).to_csv(e.out / f"{name}.csv", index=False)
    if e.per_dataset is not None:
        e.per_dataset.assign(rule=e.rule, scale=e.scale).to_csv(
            e.out / "metrics_per_dataset.csv", index=False)
    e.matches.to_csv(e.out / "matches.csv", index=False)
    e.intervals[["video", "subject", "type", "onset", "offset", "apex", "score", "precision",
                 "precision_n", "epoch"]].to_csv(e.out / "intervals.csv", index=False)
    e.at_threshold.assign(rule=e.rule, scale=e.scale, min_precision=e.min_precision).to_csv(
        e.out / "metrics_at_precision.csv", index=False)
    e.reliability.to_csv(e.out / "reliability.csv", index=False)
    summary = {
        "selection": e.selection.name + e.options.suffix,
        "selection_label": e.selection.label + e.options.label,
        "options": {"calibrate": e.options.calibrate, "flip": e.options.flip},
        "calibration": e.calibration,
        "test_set_selection": e.selection.mode == "oracle",
        "rule": e.rule,
        "rule_label": RULES[e.rule].label,
        "scale": e.scale,
        "proposals": e.proposals,
        "proposals_label": PROPOSAL_VARIANTS[e.proposals],
        "preset": preset,
        "proposal_params": {
            k: list(v) if isinstance(v, tuple) else v for k, v in vars(params).items()
        },
        "epochs": e.epochs,
        "folds": e.n_folds,
        "missing_folds": list(e.missing_folds),
        "missing_folds_counted_as": "missed (FN)",
        "pooled": e.pooled,
        "not_counted": list(e.uncounted),
        "metrics": e.metrics.set_index("type").to_dict(orient="index"),
        "min_precision": e.min_precision,
        "metrics_at_precision": e.at_threshold.set_index("type").to_dict(orient="index"),
        "precision_note": "each interval's expected precision comes from the intervals of the "
                          "other folds' test subjects (never its own); metrics_at_precision "
                          "counts only those reaching min_precision",
        "protocol": config.get("protocol", "loso"),
        "per_dataset": None if e.per_dataset is None else {
            name: part.set_index("type").drop(columns="dataset").to_dict(orient="index")
            for name, part in e.per_dataset.groupby("dataset")},
        "frame_numbers": "1-based, the video's original numbering",
    }
    (e.out / "metrics.json").write_text(json.dumps(summary, indent=1))
    return e
