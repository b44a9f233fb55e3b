"""The Python API, for notebooks and scripts: the same calls the `mespot` commands make.

    import mespot

    mespot.extract("data/synth", "features.zarr", backend="torch", resize=128)
    features = mespot.open_store("features.zarr")          # every video's MDMO in memory
    video = mespot.open_video("features.zarr", "15_0101disgustingteeth")   # an xarray.Dataset
    mespot.train("features.zarr", "data/synth/ground_truth.csv", "runs/synth", epochs=20)
    result = mespot.evaluate("runs/synth", "last")           # .metrics, .intervals: DataFrames
    spotted = mespot.Spotter.load("runs/synth").spot("new_video.mp4")
    spotted.intervals                                        # type, onset, offset, apex, score
    spotted.curves                                           # per frame: the 8 probabilities

Errors a user can fix raise flowcore.errors.UserError (a one-line message naming the file or
the value); frame numbers are 1-based in each video's original numbering everywhere.
"""

from __future__ import annotations

import dataclasses
import tempfile
from dataclasses import dataclass
from pathlib import Path

from flowcore.errors import UserError


def extract(source: str | Path, out: str | Path, params=None, *, backend: str | None = None,
            resize: int | None = None, align: bool | None = None, face: str | None = None,
            device: str = "cpu",
            workers: int | None = None,
            batch_size: int | None = None, videos: list[str] | None = None,
            subjects_csv: str | Path | None = None, engine=None, progress=None,
            overwrite: bool = False):
    """Extract landmarks, TV-L1 flow and 12-ROI MDMO features of every video of `source` (a
    CAS(ME)^2 or SAMM-LV copy, a folder of video files, one video, a folder of frames, or
    `mespot synth` output) into the Zarr store `out` (created, or resumed); `mespot extract`.

    params: a flowcore.extract.ExtractParams (default: the defaults), with `backend` (flow
    backend), `resize` (face crops to N x N px) and `align` (True: register every crop to the
    first frame before the flow, flowcore.align; False: off) and `face` (which of several faces:
    largest, center or N counted from the left) applied when given. videos: only
    these video ids. engine: a flowcore.ray_engine.RayEngine to extract on a Ray cluster.
    progress: a flowcore.progress.ExtractionProgress (None: silent). overwrite: extract again the
    videos complete in `out` whose source frames differ from those recorded (a UserError naming
    the first otherwise; those that match are still skipped).
    Returns the flowcore.batch.ExtractReport (`.failed` lists the videos that failed and why).
    """
    from flowcore.batch import run_extraction
    from flowcore.extract import RunOptions, extract_params
    from flowcore.faces import face_backend
    from flowcore.sources import SourceError, open_source
    from flowcore.store import StoreMismatchError

    try:
        params = extract_params(params, {"flow_backend": backend, "faces.resize": resize,
                                         "faces.choose": face, "align": align})
    except ValueError as err:
        raise UserError(f"extraction parameters: {err}") from None
    if batch_size is not None and batch_size < 1:
        raise UserError(f"--batch-size must be >= 1, got {batch_size}")
    try:
        src = open_source(source, subsample=params.subsample, subjects_csv=subjects_csv)
        face_backend(params.faces.backend)
    except (SourceError, ValueError, ImportError) as err:
        raise UserError(str(err)) from None
    if videos:
        missing = sorted(set(videos) - {v.video_id for v in src.videos})
        if missing:
            raise UserError(f"{source}: no video {', '.join(missing)}")
        src = dataclasses.replace(src, videos=tuple(v for v in src.videos if v.video_id in videos))
    options = RunOptions(device=device, batch_size=batch_size)
    try:
        return run_extraction(src, out, params, options, workers, progress, engine, overwrite)
    except (StoreMismatchError, ValueError, ConnectionError) as err:  # Ray: cluster checks
        raise UserError(str(err)) from None


def open_store(path: str | Path):
    """Every complete video of a feature store, in memory: a flowcore.store.FeatureSet
    (`.videos[video_id].mdmo` (T-1, 12, 2) float32 px, `.frame_numbers` (T,) 1-based; `.skipped`
    lists the incomplete videos and why; `.params` every extraction parameter)."""
    from flowcore.store import load_features

    return load_features(path)


def open_video(path: str | Path, video_id: str):
    """One video of a feature store as an `xarray.Dataset` (mdmo, landmarks, face_box,
    frame_numbers, and flow when saved; the video's attributes). See flowcore.store."""
    from flowcore.store import open_video as open_video_group

    return open_video_group(path, video_id)


def train(store, annotations, out: str | Path, *,
          sections: dict | None = None, device: str = "cpu", subjects: list[str] | None = None,
          workers: int | None = None, threads: int = 0, engine=None, overwrite: bool = False,
          tensorboard: bool = True, progress=None, protocol: str = "loso",
          test_datasets=(), on_epoch_end=None, **train_params):
    """Train AUW-GCN with leave-one-subject-out folds on a feature store into run folder `out`
    (resumes by default); `mespot train`.

    annotations: a CAS(ME)^2 or SAMM-LV workbook or a CSV (subject, video, onset, apex, offset,
    type, au). sections: configuration sections {train, windows, prior, losses} as in a run's
    config.json (or a YAML file given to `mespot train --config`); `train_params`: fields of
    spotting.config.TrainParams (epochs, batch_size, lr, seed, inner_val, init, augment, ...),
    over `sections` (init: scratch, pretrained or a weights file, spotting.initial_weights;
    augment: none or mirror).
    store, annotations: one store and its annotations, or lists of several (pooled: subjects and
    videos named `<name>_<id>`; a store given as 'NAME=PATH' names its dataset; one annotation
    file per store, or one namespaced file for all such as the reference's cross.csv;
    spotting/datasets.py). protocol: loso, cross-dataset (`test_datasets`: the datasets tested)
    or split (sections['split']: test_fraction, seed); spotting/protocols.py.
    subjects: train only these folds. workers, threads, engine: as spotting.loso.train_loso.
    progress: a flowcore.progress.TrainingProgress (its `start(n_folds, epochs)` says how many
    folds the run's protocol trains). on_epoch_end(fold, epoch): called after every epoch of
    every fold trained in this process (not with `workers` or `engine`); an exception it raises
    stops the training there, the run resuming from its last saved epoch.
    With every fold trained (no `subjects`), the run's default evaluation follows, which fits
    the score -> expected precision maps that `predict` applies (RUN/precision/).
    Returns one spotting.fold.FoldResult per fold.
    """
    from spotting.config import config_from_dict
    from spotting.datasets import dataset_refs, parse_store
    from spotting.loso import train_loso

    sections = {name: dict(values or {}) for name, values in (sections or {}).items()}
    sections.setdefault("train", {}).update(train_params)
    stores = [str(s) for s in store] if isinstance(store, (list, tuple)) else [str(store)]
    notes = [str(a) for a in annotations] if isinstance(annotations, (list, tuple)) else [
        str(annotations)]
    refs = ()
    if len(stores) > 1 or parse_store(stores[0])[0] is not None:
        refs = tuple(dataset_refs(stores, notes))
    elif len(notes) != 1:
        raise UserError(f"one store and {len(notes)} annotation files: give one -a per store")
    config = config_from_dict(sections, store=stores[0], annotations=notes[0], protocol=protocol,
                              datasets=refs, test_datasets=tuple(test_datasets))
    results = train_loso(config, out, device=device, subjects=subjects, overwrite=overwrite,
                         progress=progress, tensorboard=tensorboard, workers=workers,
                         threads=threads, engine=engine, on_epoch_end=on_epoch_end)
    if subjects is None:  # every fold trained: their held-out test intervals exist
        _fit_precision(out, device if engine is None else "auto", progress)
    return results


def _fit_precision(run: str | Path, device: str, progress) -> None:
    """train's last step: the run's default evaluation (`evaluate`'s default selection and
    options), which fits each expression type's score -> expected precision map on the LOSO
    folds' held-out test intervals and records it in RUN/precision/, where `predict` and
    `Spotter` read it (spotting/precision.py). device 'auto': a GPU where this machine has one
    (the folds trained on a cluster)."""
    from spotting.data import resolve_device
    from spotting.evaluate import evaluate_run

    try:
        e = evaluate_run(run, "last", device=str(resolve_device(device)))
    except UserError as err:  # the folds are trained and kept; predict says it has no map
        said = f"no score -> expected precision map fitted ({err}); run `mespot evaluate {run}`"
    else:
        said = (f"expected precision per interval: score -> precision maps fitted on the "
                f"{len(e.intervals)} held-out test intervals of the folds, in "
                f"{str(run).rstrip('/')}/precision (the evaluation: {e.out})")
    if progress is not None:
        progress.line(said)


def evaluate(run: str | Path, select: str = "last", *, rule: str = "megc",
             preset: str | None = None, device: str = "cpu", proposals: str | None = None,
             allow_missing_folds: bool = False, calibrate: bool | None = None,
             flip: bool | None = None, store: str | Path | None = None):
    """Spot every test video of a LOSO run with the epoch `select` chooses per fold (last, fixed:N,
    inner-val, or oracle: test-set selection, labelled so), match with the truth, and write
    RUN/evaluation/<selection>/; `mespot evaluate`. rule: megc, reference (the AUW-GCN code's
    counting today) or reference-2023 (the one behind its published numbers; see spotting.metrics);
    proposals: the proposal arithmetic, mespot or reference (None: reference for a --compat store,
    else mespot). A run with LOSO folds missing or unfinished is refused unless
    `allow_missing_folds` (then their truths count as missed). calibrate: each fold's proposal
    rules chosen on its inner-validation subjects (None: when the run was trained with inner_val);
    flip: the logits of the face and its mirror averaged (None: yes); both off by default for a
    --compat store. store: the run's feature store at another path than config.json records
    (refused unless it has the recorded parameters hash). The folder is named for what was
    used, e.g. <selection>+calibrated+flip.
    Returns a spotting.evaluate.Evaluation (`.metrics`, `.per_subject`, `.per_video`, `.matches`,
    `.intervals`: DataFrames; `.epochs` the epoch of each fold, `.missing_folds`,
    `.calibration` the rules chosen per fold)."""
    from spotting.data import resolve_device
    from spotting.evaluate import SpotOptions, evaluate_run

    resolve_device(device)
    return evaluate_run(run, select, rule=rule, preset=preset, device=device, proposals=proposals,
                        allow_missing_folds=allow_missing_folds,
                        options=SpotOptions(calibrate=calibrate, flip=flip), store=store)


def predict(video: str | Path, run: str | Path, out: str | Path, *, fold: str | None = None,
            select: str = "last", device: str = "cpu", progress=None,
            min_precision: float | None = None):
    """Spot every video of `video` (a video file, a folder of frames, a folder of video files or
    a dataset copy) with the networks of run folder `run` into `out` (intervals.csv,
    prediction.json, the curves), each video extracted with the run's own parameters; a video
    whose extraction fails is listed, not raised; `mespot predict`. fold, select,
    min_precision: as `Spotter.load` and `Spotter.spot`. progress: a
    flowcore.progress.ExtractionProgress. Returns a spotting.predict.Batch (`.predictions` one
    per video spotted, `.failed`, `.intervals` every interval, `.trained` the loaded run)."""
    from spotting.predict import predict_videos

    return predict_videos(video, run, out, fold=fold, select=select, device=device,
                          progress=progress, min_precision=min_precision)


def pretrain(stores: list[str | Path], annotations: list[str | Path], out: str | Path, *,
             sections: dict | None = None, device: str = "cpu", progress=None,
             **train_params) -> Path:
    """Pretrain AUW-GCN on every subject of the feature `stores` (each with its `annotations`,
    in the same order) and write the final weights to `out` (.safetensors), the start of
    `train(..., init=out)`; `mespot pretrain`. A synthetic set made with a seed reserved for
    benchmark or development sets (mespot.synth.seeds) is refused. sections, train_params: as
    for `train` (macro_ratio 0.5 unless given). progress: a flowcore.progress.TrainingProgress.
    A killed call resumes from OUT.work/. Returns `out`."""
    from mespot.synth.seeds import check_synthetic_seed
    from spotting.config import config_from_dict
    from spotting.pretrain import pretrain as pretrain_network

    if len(stores) != len(annotations):
        raise UserError(f"{len(stores)} store(s) but {len(annotations)} annotation files; give "
                        f"one per store")
    seeds = [check_synthetic_seed(a) for a in annotations]
    sections = {name: dict(values or {}) for name, values in (sections or {}).items()}
    sections.setdefault("train", {}).update(train_params)
    sections["train"].setdefault("macro_ratio", 0.5)
    config = config_from_dict(sections, store="+".join(map(str, stores)),
                              annotations="+".join(map(str, annotations)))
    config = dataclasses.replace(config, losses=dataclasses.replace(
        config.losses, macro_ratio=config.train.macro_ratio))
    pairs = [(str(s), str(a)) for s, a in zip(stores, annotations)]
    return pretrain_network(pairs, out, config, device, progress=progress, seeds=seeds)


def report(run: str | Path, select: str | None = None, faces: list[str] | bool = False) -> Path:
    """Write RUN/report.html (self-contained) from the run's evaluations; `mespot report`."""
    from flowcore.pictures import face_crops
    from spotting.report import build_report

    return build_report(run, select, faces=faces, face_crops=face_crops)


@dataclass(frozen=True)
class Spotted:
    """What `Spotter.spot` found in one video: `intervals` (video, type, onset, offset, apex,
    score, precision: the expected precision, precision_n: the held-out intervals it rests
    on; 1-based original frame numbers) of at least `min_precision`, `left_out` the number
    below it, `curves` (one row per feature row, indexed by its
    1-based frame number; columns me_start ... mae_action: probabilities, NaN where the face
    was missing), the folder with the features, the picture of the curves and prediction.json,
    `applied`: what was applied, in `mespot evaluate`'s words (by default its default), and
    `no_face`: the frames without the face, (first, last) stretches."""

    video_id: str
    intervals: object  # pandas.DataFrame
    curves: object  # pandas.DataFrame
    out: Path
    applied: str = ""
    no_face: tuple = ()  # (first, last) frame numbers of each stretch without the face
    min_precision: float = 0.0  # the minimum expected precision applied (0: every interval)
    left_out: int = 0  # intervals spotted below min_precision, not in `intervals`
    precision_note: str = ""  # where the expected precisions come from, or why there are none


class Spotter:
    """A trained run's networks (every fold's, averaged, or one fold's) with their proposal
    rules and extraction parameters, loaded once from the run folder alone, ready to spot
    videos (spotting.trained)."""

    def __init__(self, trained):
        self.trained = trained

    @property
    def models(self) -> list:
        return list(self.trained.models)

    @classmethod
    def load(
        cls, run: str | Path, *, fold: str | None = None, select: str = "last",
        device: str = "cpu", allow_missing_folds: bool = False, calibrate: bool | None = None,
        flip: bool | None = None,
    ) -> "Spotter":
        """The networks of run folder `run` (or of a reference checkpoint_epoch_EEE.pth.tar) at
        the `select`ed epoch (last or fixed:N); `fold`: only this fold's network. By default
        they apply what `mespot evaluate` applies by default: each fold's proposal rules
        calibrated on its inner subjects (`calibrate`; the folds' rules combined per type by
        the median when several spot together) and the test-time flip (`flip`). Only the run
        folder is read (not its training store), every file of it checked (a damaged one is a
        UserError naming it), without torch: the networks are built once, by the first `spot`
        when its video's features are extracted (or by `models`). A run with LOSO folds missing
        or unfinished is refused unless `allow_missing_folds` (then the others are averaged)."""
        from spotting.data import usable_device
        from spotting.trained import load_trained

        usable_device(str(device))
        return cls(load_trained(run, fold=fold, select=select, device=device,
                                allow_missing_folds=allow_missing_folds, calibrate=calibrate,
                                flip=flip))

    def spot(
        self,
        video: str | Path,
        out: str | Path | None = None,
        *,
        fps: float | None = None,
        progress=None,
        min_precision: float | None = None,
    ) -> Spotted:
        """Spot expressions in one video (a video file or a folder of frames): its features are
        extracted with the model's own extraction parameters into `out` (default: a new
        temporary folder), then the networks' mean logits give the intervals and the curves.
        `min_precision`: as `mespot predict --min-precision` (None: its default, 0: every
        interval)."""
        import pandas as pd

        from spotting.inference import CURVES
        from spotting.predict import predict_videos

        out = Path(out) if out is not None else Path(tempfile.mkdtemp(prefix="mespot-spot-"))
        batch = predict_videos(video, self.trained.path, out, one=True, fps=fps,
                               device=self.trained.device, progress=progress,
                               trained=self.trained, min_precision=min_precision)
        if batch.failed:
            failure = batch.failed[0]
            raise UserError(f"{video}: feature extraction failed at {failure.stage}: "
                            f"{failure.error}")
        found = batch.predictions[0]
        curves = pd.DataFrame(
            found.curves, columns=list(CURVES), index=pd.Index(found.frames, name="frame")
        )
        return Spotted(found.video_id, found.intervals, curves, out, self.trained.applied,
                       found.no_face, batch.min_precision, found.left_out,
                       self.trained.precision_note)
