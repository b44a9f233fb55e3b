"""Several datasets in one run: each a feature store with its annotations, under a short name.

Subjects and videos are namespaced `<name>_<id>` as the AUW-GCN reference's pooled file does
(`samm_006`, `samm_006_1`, `smic_s01_01`; CAS(ME)^2: `casme_s15`, `casme_15_0401girlcrashing`),
so every later stage (folds, windows, prior, normalisation, metrics) sees one dataset. Default
names are the reference's prefixes: `casme` (CAS(ME)^2), `samm` (SAMM-LV), `smic` (SMIC-E-long),
else the store's file name; names are lower-case letters and digits (no `_`), so an id's dataset
is the part before its first `_`.

Frame rates: every store keeps the frames its extraction kept (`mespot extract --subsample`; by
default SAMM-LV 1 in 8 and SMIC-E-long HS 1 in 4, so both are at 25 fps, CAS(ME)^2 at 30 fps as
the reference pools them). Training never resamples features; `rates` states each dataset's
rate in config.json and the run's log warns when they differ by more than RATE_TOLERANCE.

One annotation file may serve several stores when its ids are namespaced (the reference's
cross.csv): each store then takes the rows of its own name.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from flowcore.errors import UserError
from flowcore.locations import absolute
from flowcore.store import FeatureSet, load_features
from spotting.annotation_table import AnnotationTable
from spotting.annotations import read_annotations
from spotting.data import Prepared, check_overlap, prepare, prepare_loaded
from spotting.windows import WindowParams

NAME = re.compile(r"^[a-z][a-z0-9]*$")
RATE_TOLERANCE = 0.25  # relative difference of frame rates (after subsampling) worth a warning
# the reference's prefixes, by what the store or the annotations say the dataset is
_PREFIXES = (("casme", "casme"), ("samm", "samm"), ("smic", "smic"))
# extraction parameters allowed to differ between pooled stores
_MAY_DIFFER = ("subsample", "save_flow")


@dataclass(frozen=True)
class DatasetRef:
    """One dataset of a run: its name, feature store and annotations (absolute paths)."""

    name: str
    store: str
    annotations: str


def parse_store(text: str) -> tuple[str | None, str]:
    """`--store` as typed: 'NAME=PATH' -> (NAME, PATH); a plain path -> (None, path)."""
    name, sep, rest = str(text).partition("=")
    if sep and NAME.match(name) and rest and not Path(text).exists():
        return name, rest
    return None, str(text)


def default_name(features: FeatureSet, table: AnnotationTable | None = None) -> str:
    """The reference's prefix for the store's dataset (casme, samm, smic), else the store's
    file name reduced to lower-case letters and digits."""
    said = f"{features.dataset} {table.dataset if table is not None else ''}".lower()
    for key, prefix in _PREFIXES:
        if key in said:
            return prefix
    name = re.sub(r"[^a-z0-9]", "", Path(features.path).stem.lower()).lstrip("0123456789")
    return name or "data"


def dataset_refs(stores: list, annotations: list) -> list[DatasetRef]:
    """The datasets of `--store [NAME=]PATH` and `-a` given in pairs (or one `-a` for every
    store: a namespaced file such as the reference's cross.csv); names default to
    `default_name`. UserError for unpaired flags, bad or repeated names."""
    if len(annotations) not in (1, len(stores)):
        raise UserError(f"{len(stores)} stores and {len(annotations)} annotation files: give one "
                        f"-a per store, in the same order (or one namespaced file for all)")
    annotations = list(annotations) * (len(stores) if len(annotations) == 1 else 1)
    refs = []
    for typed, notes in zip(stores, annotations):
        name, path = parse_store(typed)
        if name is None:
            name = default_name(load_features(path), None)
        refs.append(DatasetRef(name, str(absolute(path)), str(absolute(notes))))
    names = [r.name for r in refs]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise UserError(f"dataset name(s) {repeated} given to several stores; name each store: "
                        f"--store NAME=PATH (lower-case letters and digits)")
    bad = [n for n in names if not NAME.match(n)]
    if bad:
        raise UserError(f"dataset name(s) {bad}: use lower-case letters and digits only")
    return refs


def dataset_of(identifier: str) -> str:
    """The dataset name of a namespaced subject or video id ('samm_006_1' -> 'samm')."""
    return identifier.split("_", 1)[0]


def unprefixed(identifier: str) -> str:
    """A namespaced id without its dataset name ('samm_006_1' -> '006_1')."""
    return identifier.split("_", 1)[1]


# ---- pooling -----------------------------------------------------------------------------------


def prepare_datasets(refs: list[DatasetRef], params: WindowParams = WindowParams()) -> Prepared:
    """Every dataset's store and annotations read, checked, namespaced and pooled into one
    Prepared (targets and windows built once, as for one store)."""
    if not refs:
        raise UserError("no dataset given")
    tables = {r.annotations: read_annotations(r.annotations) for r in refs}  # files first
    loaded = []
    for ref in refs:
        table = _own_rows(tables[ref.annotations], ref, shared=len(refs) > 1 and sum(
            r.annotations == ref.annotations for r in refs) > 1)
        features = load_features(ref.store)
        check_overlap(features, table)
        loaded.append((ref, features, table))
    _check_compatible(loaded)
    features = _pooled_features([(r.name, f) for r, f, _ in loaded])
    table = _pooled_table([(r.name, t) for r, _, t in loaded])
    return prepare_loaded(features, table, params)


def _own_rows(table: AnnotationTable, ref: DatasetRef, shared: bool) -> AnnotationTable:
    """The rows of `ref`'s dataset in its own ids: all rows of a file of its own, those named
    `<name>_...` (prefix removed) of a namespaced file (one file for several stores, or the
    reference's cross.csv)."""
    if not shared and table.dataset != "cross":
        return table
    frame = table.frame
    mine = frame["video_id"].str.startswith(ref.name + "_")
    if not mine.any():
        raise UserError(f"{ref.annotations}: no row of dataset {ref.name!r} (ids named "
                        f"{ref.name}_...); its ids start with "
                        f"{sorted({dataset_of(v) for v in frame['video_id']})}")
    frame = frame[mine].copy()
    for column in ("subject", "video_id"):
        frame[column] = frame[column].map(unprefixed)
    issues = tuple(i for i in table.issues if i.video_id.startswith(ref.name + "_") or
                   not i.video_id)
    return AnnotationTable(frame.reset_index(drop=True), issues, table.dataset, table.source)


def _check_compatible(loaded) -> None:
    """UserError when two stores were extracted with other parameters than subsampling."""
    first_ref, first, _ = loaded[0]
    base = {k: v for k, v in first.params.items() if k not in _MAY_DIFFER}
    for ref, features, _ in loaded[1:]:
        other = {k: v for k, v in features.params.items() if k not in _MAY_DIFFER}
        differ = sorted(k for k in set(base) | set(other) if base.get(k) != other.get(k))
        if differ:
            raise UserError(f"{ref.store}: extracted with other parameters than {first_ref.store} "
                            f"({', '.join(differ)}); pooled stores must share every extraction "
                            f"parameter but the subsampling: extract them again alike")


def _pooled_features(named: list[tuple[str, FeatureSet]]) -> FeatureSet:
    videos, skipped = {}, {}
    for name, features in named:
        for vid, v in features.videos.items():
            key = f"{name}_{vid}"
            videos[key] = dataclasses.replace(v, video_id=key, subject=f"{name}_{v.subject}")
        skipped.update({f"{name}_{k}": why for k, why in features.skipped.items()})
    hashes = "+".join(f"{name}:{f.params_hash}" for name, f in named)
    params = dict(named[0][1].params, subsample=None)  # each store's own: `rates`
    return FeatureSet(path=" + ".join(f.path for _, f in named), dataset="pooled",
                      params_hash=hashlib.sha256(hashes.encode()).hexdigest()[:16],
                      params=params, videos=dict(sorted(videos.items())), skipped=skipped)


def _pooled_table(named: list[tuple[str, AnnotationTable]]) -> AnnotationTable:
    frames, issues = [], []
    for name, table in named:
        frame = table.frame.copy()
        for column in ("subject", "video_id"):
            frame[column] = f"{name}_" + frame[column].astype(str)
        frames.append(frame)
        issues += [dataclasses.replace(i, subject=f"{name}_{i.subject}" if i.subject else "",
                                       video_id=f"{name}_{i.video_id}" if i.video_id else "")
                   for i in table.issues]
    return AnnotationTable(pd.concat(frames, ignore_index=True), tuple(issues), "pooled",
                           " + ".join(t.source for _, t in named))


# ---- what a run records ------------------------------------------------------------------------


def rates(prep: Prepared) -> dict[str, dict]:
    """Per dataset of a pooled Prepared: its frame rate after subsampling (median over its
    videos) and the subsampling (frames kept 1 in n, from the kept frame numbers)."""
    out: dict[str, dict] = {}
    for name in sorted({dataset_of(v) for v in prep.features.videos}):
        videos = [v for k, v in prep.features.videos.items() if dataset_of(k) == name]
        steps = [int(np.median(np.diff(v.frame_numbers))) for v in videos if v.n_rows > 0]
        out[name] = {"fps": float(np.median([v.fps for v in videos])),
                     "subsample": int(np.median(steps)) if steps else 1,
                     "videos": len(videos), "subjects": len({v.subject for v in videos})}
    return out


def rate_warning(prep: Prepared) -> str | None:
    """A line for the log when the datasets' rates differ by more than RATE_TOLERANCE."""
    found = rates(prep)
    fps = [r["fps"] for r in found.values()]
    if len(fps) < 2 or max(fps) <= (1 + RATE_TOLERANCE) * min(fps):
        return None
    listed = ", ".join(f"{n} {r['fps']:g} fps" for n, r in found.items())
    return (f"warning: the datasets' frame rates differ ({listed}); extract them with a "
            f"--subsample that brings them near one rate (windows and targets count rows)")


def refs_of(config: dict) -> list[DatasetRef]:
    """The datasets a run's config.json records ([] for a run of one store)."""
    return [DatasetRef(**d) for d in config.get("datasets") or []]


def prepare_recorded(config: dict, store: str | Path | None, recorded_store: str) -> Prepared:
    """The data of a run from its config.json: its datasets pooled, or its one store (`store`:
    a copy of it elsewhere; `recorded_store` where config.json says it is)."""
    windows = WindowParams(**config["windows"])
    refs = refs_of(config)
    if not refs:
        return prepare(store or recorded_store, config["annotations"], windows)
    if store is not None:
        raise UserError(f"--store {store}: this run pools {len(refs)} datasets "
                        f"({', '.join(r.name for r in refs)}); their stores are read from the "
                        f"paths its config.json records")
    return prepare_datasets(refs, windows)


def store_of_video(config: dict, recorded_store: str, video: str) -> tuple[str, str]:
    """(store path, the video's id in it) of a run's video (a namespaced id in a pooled run)."""
    refs = {r.name: r for r in refs_of(config)}
    if not refs:
        return recorded_store, video
    return refs[dataset_of(video)].store, unprefixed(video)

