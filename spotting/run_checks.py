"""The checks every reader of a run folder goes through (evaluate, predict, report, Spotter and
the service's jobs, all by way of spotting/run_folder.py): a damaged file is refused in one line
naming it and saying what is wrong, never a traceback, never a silently wrong result.

- JSON files (config.json, fold.json, inner.json, rules.json, an evaluation's metrics.json):
  `read_json` refuses one that is not readable (truncated, a stray edit) or not of the shape
  mespot writes (a key missing, a value of another type: `Key`). config.json's extraction
  parameters must still have the hash recorded beside them (`check_config`): an edit there
  would make predict extract other features than the network was trained on.
- Weights (`check_weights`): every tensor finite, and the feature normalisation stored with
  them finite, with std > 0; a file of the right size whose values turned to NaN or inf is
  damaged (or its training diverged), and spots nothing true.
- The store (`check_store_hash`): the parameters hash in its root attributes must be the one
  the run recorded.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, fields
from pathlib import Path

from flowcore.errors import UserError
from flowcore.locations import location

# What to do about a damaged file, by its name.
REMEDIES = {
    "config.json": "restore it from a copy of the run folder, or train the run again",
    "fold.json": "restore it, or delete the fold's folder and run the same `mespot train` "
                 "again to train the fold anew",
    "inner.json": "restore it, or delete the fold's folder and run the same `mespot train` "
                  "again to train the fold anew",
    "rules.json": "delete it and run `mespot evaluate` on the run (or `mespot train`) to "
                  "record it again",
    "metrics.json": "run `mespot evaluate` again to write it",
}
WEIGHTS_REMEDY = "restore the file, or delete the fold's folder and train the fold again"


@dataclass(frozen=True)
class Key:
    """One entry a JSON file must hold: `path` dotted (checked only where its parent is
    there), `kind` one of KINDS, `required` or only checked when present."""

    path: str
    kind: str
    required: bool = True


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


KINDS = {  # kind -> (test, what it is called in a message)
    "str": (lambda v: isinstance(v, str), "a string"),
    "int": (lambda v: isinstance(v, int) and not isinstance(v, bool), "an integer"),
    "number": (_number, "a finite number"),
    "bool": (lambda v: isinstance(v, bool), "true or false"),
    "dict": (lambda v: isinstance(v, dict), "an object"),
    "list": (lambda v: isinstance(v, list), "a list"),
    "strings": (lambda v: isinstance(v, list) and all(isinstance(s, str) for s in v),
                "a list of strings"),
    "numbers": (lambda v: isinstance(v, list) and all(_number(x) for x in v),
                "a list of finite numbers"),
}

_WINDOWS = [Key("windows", "dict"), Key("windows.length", "int", False),
            Key("windows.context", "int", False), Key("windows.radius_me", "int", False),
            Key("windows.radius_mae", "int", False), Key("windows.apex_spread", "number", False)]
CONFIG = [Key("store", "str"), Key("annotations", "str"), *_WINDOWS,
          Key("store_params_hash", "str", False), Key("train", "dict", False),
          Key("train.epochs", "int", False), Key("model", "dict", False),
          Key("features", "dict", False), Key("features.params", "dict"),
          Key("features.params_hash", "str"), Key("features.preset", "str"),
          Key("features.fps", "number"), Key("features.subjects", "strings"),
          Key("features.devices", "strings", False)]
FOLD = [Key("status", "str", False), Key("test_subject", "str"), Key("prior", "list", False),
        Key("config", "dict", False), Key("config.train", "dict", False),
        Key("config.train.epochs", "int", False)]
INNER = [Key("val_subjects", "strings"), Key("test_subject", "str", False)]
_RULE = ["apex_threshold", "top_k", "min_score"]
RULES = [Key("key", "dict"), Key("key.epoch", "int"), Key("key.rule", "str"),
         Key("key.flip", "bool"), Key("key.proposals", "dict"), Key("preset", "str", False),
         Key("rules", "dict"), Key("rules.me", "dict"), Key("rules.mae", "dict"),
         *[Key(f"rules.{kind}.{name}", "int" if name == "top_k" else "number")
           for kind in ("me", "mae") for name in _RULE],
         Key("val_video_rows", "numbers", False), Key("val_subjects", "strings", False)]
METRICS = [Key("selection_label", "str"), Key("rule", "str"), Key("preset", "str"),
           Key("metrics", "dict"), Key("epochs", "dict"), Key("test_set_selection", "bool")]


def refuse(path: Path, problem: str) -> UserError:
    """The one-line error for a damaged run file: its path, what is wrong, what to do."""
    remedy = REMEDIES.get(Path(path).name, WEIGHTS_REMEDY)
    return UserError(f"{path}: {problem}; {remedy}")


def read_json(path: str | Path, keys: list[Key]) -> dict:
    """The JSON object in `path`, which must hold `keys`; UserError naming the file when it is
    not readable JSON or not of that shape."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise refuse(path, f"not readable JSON ({err.msg} at line {err.lineno} column "
                           f"{err.colno}: truncated, or edited by hand?)") from None
    except UnicodeDecodeError:
        raise refuse(path, "not a text file (damaged?)") from None
    if not isinstance(data, dict):
        raise refuse(path, f"holds a JSON {type(data).__name__}, not the object mespot writes "
                           f"(edited by hand?)")
    check_keys(path, data, keys)
    return data


def check_keys(path: Path, data: dict, keys: list[Key]) -> None:
    """UserError naming `path` for the first of `keys` missing or of another kind in `data`."""
    for key in keys:
        *parents, name = key.path.split(".")
        holder = data
        for part in parents:
            holder = holder.get(part) if isinstance(holder, dict) else None
        if not isinstance(holder, dict):
            continue  # its parent is absent (optional) or already refused
        if name not in holder:
            if key.required:
                raise refuse(path, f"'{key.path}' is missing (edited by hand?)")
            continue
        test, called = KINDS[key.kind]
        if not test(holder[name]):
            raise refuse(path, f"'{key.path}' must be {called}, not {holder[name]!r:.60} "
                               f"(edited by hand?)")


def check_config(path: Path, config: dict) -> None:
    """What `read_json(CONFIG)` cannot see: window fields mespot does not know, and extraction
    parameters that no longer have their recorded hash (edited after training)."""
    from flowcore.store import params_hash
    from spotting.windows import WindowParams

    known = {f.name for f in fields(WindowParams)}
    unknown = sorted(set(config["windows"]) - known)
    if unknown:
        raise refuse(path, f"'windows' has no field {', '.join(map(repr, unknown))} (edited by "
                           f"hand?)")
    features = config.get("features")
    if features is None or features.get("dataset") == "pooled":
        return  # a pooled run's hash is of its stores' hashes (spotting/datasets.py)
    if params_hash(features["params"]) != features["params_hash"]:
        raise refuse(path, f"'features.params' no longer have their recorded hash "
                           f"{features['params_hash']} (edited by hand?): predict would extract "
                           f"other features than the network was trained on")
    trained = config.get("store_params_hash")
    if trained is not None and trained != features["params_hash"]:
        raise refuse(path, f"'store_params_hash' {trained} differs from "
                           f"'features.params_hash' {features['params_hash']} (edited by hand?)")


def check_weights(path: Path, state: dict, meta: dict) -> None:
    """UserError naming `path` when a tensor of `state` (numpy arrays) holds NaN or inf, or
    the feature normalisation of its metadata (`meta["normalisation"]`, where recorded) is not
    finite with std > 0."""
    import numpy as np

    bad = [name for name, t in state.items()
           if np.issubdtype(t.dtype, np.floating) and not np.isfinite(t).all()]
    if bad:
        raise refuse(path, f"{len(bad)} of {len(state)} tensors hold NaN or infinite values "
                           f"({', '.join(bad[:3])}{' ...' if len(bad) > 3 else ''}): the file is "
                           f"damaged, or its training diverged")
    norm = meta.get("normalisation")
    if norm is None:
        return
    finite = KINDS["numbers"][0]
    mean, std = (norm.get("mean"), norm.get("std")) if isinstance(norm, dict) else (None, None)
    if not (finite(mean) and finite(std) and len(mean) == len(std) and min(std, default=0) > 0):
        raise refuse(path, "the feature normalisation stored with the weights is not finite "
                           "numbers with std > 0: the file is damaged")


def check_store_hash(store: str | Path, recorded: str | None, run: Path) -> None:
    """UserError naming `store` when it is not there, not a feature store, or its parameters
    hash is not `recorded` (the run's; None: a run from before runs recorded it)."""
    import zarr

    if not location(store).exists():
        raise UserError(f"{store}: the feature store run {run} was trained on is gone; restore "
                        f"it (or give a copy of it with --store)")
    try:
        found = zarr.open_group(str(store), mode="r").attrs.get("params_hash")
    except Exception as err:  # zarr raises several types for "not a group"
        raise UserError(f"{store}: not a Zarr feature store ({type(err).__name__}); restore the "
                        f"store run {run} was trained on") from None
    if recorded is not None and found != recorded:
        raise store_mismatch(store, found, recorded, run)


def store_mismatch(store, found: str | None, recorded: str, run: Path) -> UserError:
    return UserError(f"{store}: not the store run {run} was trained on (its extraction "
                     f"parameters hash {found}, the run's {recorded}); restore that store or "
                     f"train again")
