"""Each fold's proposal rules, calibrated on its inner-validation subjects, and recorded in the
run folder so that `predict` applies what `evaluate` applied without the training store.

`calibrate_fold` chooses a fold's rules (spotting/calibrate.py): its inner model, at the epoch
the selection uses, spots the inner-validation subjects, and the rules with the best F1 there
under the evaluation's matching rule are kept. `mespot train` records them for `evaluate`'s
default (the fold's last epoch, the MEGC rule, the test-time flip as the store's default, the
store's proposal preset and arithmetic) in folds/<subject>/rules.json:

    {"key": {"epoch", "rule", "flip", "proposals": the base ProposalParams},
     "preset", "rules": {"me": {"apex_threshold", "top_k", "min_score"}, "mae": {...}},
     "inner_epoch", "val_subjects", "val_f1", "val_video_rows"}

(`val_video_rows`: the feature rows of each video the rules were chosen on. K is a number of
proposals per video, so it suits videos of about that length.)

`evaluate` uses the recorded rules when its key is the record's (so its numbers and
`predict`'s come from the same rules), computes them otherwise, and records them for a run
trained before train did.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pandas as pd

from flowcore.errors import UserError
from spotting import run_checks
from spotting.augment import flip_by_default
from spotting.calibrate import Calibrated, calibrate
from spotting.data import Prepared
from spotting.metrics import MEGC, MatchRule
from spotting.proposals import PRESETS, ProposalParams
from spotting.run_folder import FoldFolder, RunFolder
from spotting.spot import spot_subjects
from spotting.truths import count, ground_truth
from spotting.windows import WindowParams


RECORDED = ("inner_epoch", "val_subjects", "val_f1", "val_video_rows")  # beside key and rules


def default_params(preset: str, compat: bool) -> ProposalParams:
    """The fixed proposal rules of `preset`, in the store's default arithmetic (the reference's
    for --compat features)."""
    return dataclasses.replace(PRESETS[preset], variant="reference" if compat else "mespot")


def rules_key(epoch: int, rule: MatchRule, flip: bool, params: ProposalParams) -> dict:
    """What a fold's calibrated rules depend on beyond its weights, as JSON."""
    return {"epoch": int(epoch), "rule": rule.name, "flip": bool(flip),
            "proposals": json.loads(json.dumps(dataclasses.asdict(params)))}


def calibrate_fold(fold: FoldFolder, epoch: int, prep: Prepared, truths: pd.DataFrame,
                   params: ProposalParams, windows: WindowParams, rule: MatchRule, device,
                   flip: bool) -> tuple[Calibrated, dict]:
    """Proposal rules chosen on the fold's inner-validation subjects with its inner model at
    `epoch` (its last epoch if it kept no weights for that one), and what was chosen."""
    inner = fold.inner
    if not inner.inner_meta_path.is_file():
        raise UserError(f"{fold.path}: --calibrate needs the fold's inner validation model; "
                        "train with `mespot train --inner-val K`")
    val = inner.read_inner()["val_subjects"]
    kept = inner.epochs()
    at = epoch if epoch in kept else kept[-1]
    _, logits = spot_subjects(prep, inner.weights_path(at), val, params, windows, device, flip)
    wanted = truths[truths["subject"].isin(val)]

    def true_positives(found: pd.DataFrame, video: str) -> np.ndarray:  # on the rule's scale
        found = found.rename(columns={"start": "onset", "end": "offset"}).assign(
            video=video, subject=prep.features.videos[video].subject)
        matches = count(found, wanted[wanted["video"] == video], rule, prep.features)
        hits = matches.loc[matches["outcome"] == "TP", "proposal"].to_numpy(dtype=int)
        return np.isin(found.index.to_numpy(), hits)

    rules, f1 = calibrate(logits, len(wanted), params, true_positives, rule.prefix_stable)
    rows = sorted(len(v) for v in logits.values())
    return rules, {**rules.to_json(), "inner_epoch": at, "val_subjects": val, "val_f1": f1,
                   "val_video_rows": rows}


def write_rules(fold: FoldFolder, key: dict, preset: str, rules: Calibrated, info: dict) -> None:
    """folds/<subject>/rules.json (see the module docstring), written whole or not at all."""
    record = {"key": key, "preset": preset, "rules": rules.to_json(),
              **{k: info[k] for k in RECORDED}}
    tmp = fold.rules_path.with_name(fold.rules_path.name + ".tmp")
    tmp.write_text(json.dumps(record, indent=1))
    tmp.replace(fold.rules_path)


def read_rules(fold: FoldFolder) -> dict | None:
    """The fold's rules.json, None when it has none; UserError naming it when it is damaged
    (spotting/run_checks.py)."""
    if not fold.rules_path.is_file():
        return None
    return run_checks.read_json(fold.rules_path, run_checks.RULES)


def recorded_rules(fold: FoldFolder, key: dict,
                   params: ProposalParams) -> tuple[Calibrated, dict] | None:
    """The fold's recorded rules (on `params`' ranges) and what was recorded, when they were
    chosen for `key`; else None."""
    record = read_rules(fold)
    if record is None or record["key"] != key:
        return None
    info = {**record["rules"], **{k: record[k] for k in RECORDED if k in record},
            "recorded": True}
    return Calibrated.from_json(params, record["rules"]), info


def fold_rules(fold: FoldFolder, epoch: int, prep: Prepared, truths: pd.DataFrame,
               params: ProposalParams, windows: WindowParams, rule: MatchRule, device,
               flip: bool, default_key: dict | None = None,
               preset: str = "") -> tuple[Calibrated, dict]:
    """The fold's calibrated rules for this epoch, rule, flip and base: recorded ones when they
    fit, else computed (and recorded when their key is `default_key` and the fold has none)."""
    key = rules_key(epoch, rule, flip, params)
    found = recorded_rules(fold, key, params)
    if found is not None:
        return found
    rules, info = calibrate_fold(fold, epoch, prep, truths, params, windows, rule, device, flip)
    if key == default_key and read_rules(fold) is None:
        write_rules(fold, key, preset, rules, info)
    return rules, {**info, "recorded": False}


def record_run_rules(run: RunFolder, prep: Prepared, windows: WindowParams, preset: str,
                     subjects: list[str], device) -> list[str]:
    """Record, for every complete fold of `subjects` that has an inner model and no rules.json,
    the rules `evaluate`'s default calibrates (mespot train calls this at its end); the
    subjects recorded. None for a --compat store, whose default is the reference's rules."""
    compat = bool(prep.features.params.get("compat"))
    if compat:
        return []
    params = default_params(preset, compat)
    flip = flip_by_default(compat)
    todo = [s for s in subjects if run.fold(s).is_complete()
            and run.fold(s).inner.inner_meta_path.is_file() and read_rules(run.fold(s)) is None]
    truths = ground_truth(prep, windows) if todo else None
    done = []
    for subject in todo:
        fold = run.fold(subject)
        key = rules_key(fold.last_epoch(), MEGC, flip, params)
        rules, info = calibrate_fold(fold, key["epoch"], prep, truths, params, windows, MEGC,
                                     device, flip)
        write_rules(fold, key, preset, rules, info)
        done.append(subject)
    return done
