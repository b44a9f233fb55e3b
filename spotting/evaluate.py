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

Units: matching happens in feature rows (the network's frames), exactly as the reference
compares its "row + 1" proposals with 1-based annotation frames; every file a person reads
gives 1-based frame numbers of the video's original numbering (`rows_to_frames`).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from flowcore.errors import UserError
from spotting.metrics import RULES, MatchRule, match_all, summarise
from spotting.proposals import PRESETS, ProposalParams, spot_video
from spotting.data import Prepared, prepare, window_tensors
from spotting.inference import CURVES, predict_logits, probability_curves, video_logits
from spotting.run_folder import FoldFolder, RunFolder, load_weights
from spotting.windows import TYPES, WindowParams, annotation_targets, rows_to_frames

ORACLE_FIRST_EPOCH = {"casme2": 16, "samm": 11}  # the reference's epochs 15-99 / 10-99, 0-based
ORACLE_LABEL = "oracle (TEST-SET SELECTION: optimistic, for comparison with published numbers only)"


@dataclass(frozen=True)
class Selection:
    mode: str  # "last", "fixed", "inner-val", "oracle"
    epoch: int | None = None  # for "fixed"

    @property
    def name(self) -> str:
        return f"fixed-{self.epoch}" if self.mode == "fixed" else self.mode

    @property
    def short_label(self) -> str:
        return "oracle (TEST-SET selection)" if self.mode == "oracle" else self.label

    @property
    def label(self) -> str:
        return ORACLE_LABEL if self.mode == "oracle" else {
            "last": "last epoch", "fixed": f"fixed epoch {self.epoch}",
            "inner-val": "epoch chosen on held-out training subjects"}[self.mode]


def parse_selection(text: str) -> Selection:
    match = re.fullmatch(r"(last|oracle|inner-val|fixed:(\d+))", text.strip())
    if not match:
        raise UserError(f"--select must be last, fixed:N, inner-val or oracle (got {text!r})")
    if match.group(2):
        return Selection("fixed", int(match.group(2)))
    return Selection(match.group(1))


@dataclass(frozen=True)
class Evaluation:
    selection: Selection
    rule: str
    metrics: pd.DataFrame  # rows me, mae, overall: precision, recall, f1, TP, FP, FN, ...
    per_subject: pd.DataFrame
    per_video: pd.DataFrame
    matches: pd.DataFrame  # one row per TP / FP / FN, frames 1-based original
    intervals: pd.DataFrame  # spotted intervals: video, subject, type, onset, offset, apex, score
    epochs: dict[str, int]  # fold (test subject) -> epoch used
    out: Path


def truth_rows(prep: Prepared, windows: WindowParams) -> pd.DataFrame:
    """Ground truth in rows (after section 6's repairs): video, subject, type, onset, apex,
    offset."""
    targets, _ = annotation_targets(prep.features, prep.table, windows)
    rows = []
    for video_id, target in targets.items():
        subject = prep.features.videos[video_id].subject
        for t, s, a, e in target.used:
            rows.append((video_id, subject, TYPES[t], s, a, e))
    return pd.DataFrame(rows, columns=["video", "subject", "type", "onset", "apex", "offset"])


def spot_subjects(
    prep: Prepared,
    weights: Path,
    subjects: list[str],
    params: ProposalParams,
    windows: WindowParams,
    device: str = "cpu",
) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """Proposals (rows) of a saved model on every video of `subjects`, and each video's (N, 10)
    logits."""
    model, meta = load_weights(weights, device)
    norm = meta["normalisation"]
    mask = prep.windows.of_subjects(subjects)
    columns = ["video", "subject", "type", "onset", "apex", "offset", "score"]
    if not mask.any():
        return pd.DataFrame(columns=columns), {}
    data = window_tensors(prep.windows, mask, norm["mean"], norm["std"], device)
    logits = predict_logits(model, data["x"], windows.context).cpu().numpy()
    per_video = video_logits(logits, prep.windows, mask)
    parts = [pd.DataFrame(columns=columns)]
    for video_id, rows in per_video.items():
        found = spot_video(rows, params).rename(columns={"start": "onset", "end": "offset"})
        found.insert(0, "subject", prep.features.videos[video_id].subject)
        found.insert(0, "video", video_id)
        parts.append(found)
    return pd.concat(parts, ignore_index=True), per_video


def _f1(proposals: pd.DataFrame, truths: pd.DataFrame, rule: MatchRule) -> float:
    return float(
        summarise(match_all(proposals, truths, rule)).set_index("type").loc["overall", "f1"]
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
) -> int:
    if selection.mode == "last":
        return epochs[-1]
    if selection.mode == "fixed":
        if selection.epoch not in epochs:
            raise UserError(
                f"{fold.path}: no weights for epoch {selection.epoch} "
                f"(saved: {epochs[0]}..{epochs[-1]}"
                f", every {epochs[1] - epochs[0] if len(epochs) > 1 else 1})"
            )
        return selection.epoch
    if selection.mode == "oracle":
        subjects = [fold.read_meta()["test_subject"]]
        folder = fold
        pool = [e for e in epochs if e >= ORACLE_FIRST_EPOCH[preset]] or epochs
    else:  # inner-val
        inner = fold.inner
        if not inner.inner_meta_path.is_file():
            raise UserError(
                f"{fold.path}: no inner validation model; train with `mespot train --inner-val K`"
            )
        subjects = json.loads(inner.inner_meta_path.read_text())["val_subjects"]
        folder, pool = inner, [e for e in inner.epochs() if e in set(epochs)]
        if not pool:
            raise UserError(
                f"{inner.path}: no epoch has weights in both the inner and the main model"
            )
    wanted = truths[truths["subject"].isin(subjects)]
    best, best_f1 = pool[-1], -1.0
    for epoch in pool:  # ties keep the earliest epoch
        found, _ = spot_subjects(
            prep, folder.weights_path(epoch), subjects, params, windows, device
        )
        f1 = _f1(found, wanted, rule)
        if f1 > best_f1:
            best, best_f1 = epoch, f1
    return best


def _to_frames(
    table: pd.DataFrame, prep: Prepared, columns=("onset", "apex", "offset")
) -> pd.DataFrame:
    """Row columns -> 1-based original frame numbers, per video."""
    table = table.copy()
    for column in columns:
        if column not in table:
            continue
        values = table[column].to_numpy()
        out = np.full(len(table), np.nan)
        for video_id, index in table.groupby("video").indices.items():
            ok = ~pd.isna(values[index])
            numbers = prep.features.videos[video_id].frame_numbers
            out[index[ok]] = rows_to_frames(values[index][ok].astype(np.int64), numbers)
        table[column] = pd.array(np.where(np.isnan(out), pd.NA, out), dtype="Int64")
    return table


def evaluate_run(
    run: str | Path,
    select: str = "last",
    rule: str = "megc",
    preset: str | None = None,
    device: str = "cpu",
    prepared: Prepared | None = None,
) -> Evaluation:
    """Evaluate run folder `run`; write run/evaluation/<selection>/ and return the numbers."""
    run = RunFolder(run)
    selection = parse_selection(select)
    if rule not in RULES:
        raise UserError(f"--rule must be one of {', '.join(RULES)} (got {rule!r})")
    config = run.read_config()
    windows = WindowParams(**config["windows"])
    prep = prepared or prepare(config["store"], config["annotations"], windows)
    preset = preset or (
        "samm"
        if prep.table.dataset == "samm-lv" or "samm" in prep.features.dataset.lower()
        else "casme2"
    )
    if preset not in PRESETS:
        raise UserError(f"--preset must be one of {', '.join(PRESETS)} (got {preset!r})")
    params = PRESETS[preset]
    truths = truth_rows(prep, windows)
    folds = run.folds()
    if not folds:
        raise UserError(f"{run.path} holds no finished fold")
    proposals, epochs_used, curves = [], {}, {}
    for fold in folds:
        meta = fold.read_meta()
        if meta.get("status") != "complete":
            raise UserError(
                f"fold {fold.path.name} is not complete; rerun `mespot train` to finish it"
            )
        epochs = fold.epochs()
        epoch = _choose_epoch(
            selection, fold, epochs, prep, truths, params, windows, RULES[rule], preset, device
        )
        epochs_used[meta["test_subject"]] = epoch
        found, logits = spot_subjects(
            prep, fold.weights_path(epoch), [meta["test_subject"]], params, windows, device
        )
        proposals.append(found.assign(epoch=epoch))
        curves.update({video: probability_curves(rows) for video, rows in logits.items()})
    proposals = pd.concat(proposals, ignore_index=True)
    tested = set(epochs_used)
    truths = truths[truths["subject"].isin(tested)]
    matches = match_all(proposals, truths, RULES[rule])
    out = run.evaluation(selection.name)
    out.mkdir(parents=True, exist_ok=True)
    _write_curves(out / "curves.npz", curves, prep)
    return _write(
        Evaluation(
            selection,
            rule,
            metrics=summarise(matches),
            per_subject=summarise(matches, by=["subject"]),
            per_video=summarise(matches, by=["video"]),
            matches=_to_frames(
                matches,
                prep,
                [
                    f"{side}_{c}"
                    for side in ("proposal", "truth")
                    for c in ("onset", "apex", "offset")
                ],
            ),
            intervals=_to_frames(proposals, prep).sort_values(
                ["subject", "video", "type", "onset"]
            ),
            epochs=epochs_used,
            out=out,
        ),
        config,
        preset,
        params,
    )


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
    e.metrics.to_csv(e.out / "metrics.csv", index=False)
    e.per_subject.to_csv(e.out / "metrics_per_subject.csv", index=False)
    e.per_video.to_csv(e.out / "metrics_per_video.csv", index=False)
    e.matches.to_csv(e.out / "matches.csv", index=False)
    e.intervals[["video", "subject", "type", "onset", "offset", "apex", "score", "epoch"]].to_csv(
        e.out / "intervals.csv", index=False
    )
    summary = {
        "selection": e.selection.name,
        "selection_label": e.selection.label,
        "test_set_selection": e.selection.mode == "oracle",
        "rule": e.rule,
        "preset": preset,
        "proposal_params": {
            k: list(v) if isinstance(v, tuple) else v for k, v in vars(params).items()
        },
        "epochs": e.epochs,
        "metrics": e.metrics.set_index("type").to_dict(orient="index"),
        "frame_numbers": "1-based, the video's original numbering",
    }
    (e.out / "metrics.json").write_text(json.dumps(summary, indent=1))
    return e
