"""The service's only door into the library: plan a job (check its paths) and run it.

Each kind has a `plan_*` (at submission: paths checked under their roots, the paths the job
will read or write, so no two jobs touch one at once) and a `run_*` (in the runner process:
the Python API's calls (mespot.api), as the commands make them, with the progress protocol of
flowcore.progress drawn as the job's progress, and a cancel check between videos or epochs).
Never spotting directly (an import contract in pyproject.toml): a rename in the library below
touches mespot.api only.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

from flowcore.errors import UserError
from mespot.service.roots import PathRefused, Roots, require
from mespot.service.train_progress import LOSSES, FoldPoller, LossRecorder, complete_folds


class JobCancelled(Exception):
    """A running job was asked to stop; raised between videos (extraction) or epochs."""


@dataclass(frozen=True)
class Planned:
    params: dict  # as stored: paths relative to their roots
    locks: list[str]  # absolute paths the job reads or writes
    makes: str | None = None  # the absolute path it creates (a store, a run folder)
    after: int | None = None  # the queued or running job making a path it needs: it waits
    also_after: tuple[int, ...] = ()  # others it waits for (a train on several stores made)


def _no_job(_path: Path) -> int | None:
    return None


@dataclass
class Outcome:
    """How a job ended: `state` done or failed, a one-line `message`, its downloads."""

    state: str
    message: str
    error: str = ""
    files: dict[str, str] = field(default_factory=dict)  # name -> absolute path
    result: dict = field(default_factory=dict)


# ---- planning (in the server, at submission) -----------------------------------------------------

def plan(kind: str, params: dict, roots: Roots, uploads: Path, waits_for=_no_job) -> Planned:
    """Check a job's paths; PathRefused (403/422) with the reason when one is not acceptable.
    `waits_for(path)`: the id of a queued or running job that will make `path` (a store, a
    run folder) or None; a job needing such a path is accepted and waits for that job."""
    planner = {"extract": plan_extract, "train": plan_train, "evaluate": plan_evaluate,
               "predict": plan_predict}[kind]
    return planner(dict(params), roots, uploads, waits_for)


def plan_extract(p: dict, roots: Roots, uploads: Path, waits_for=_no_job) -> Planned:
    source = require(roots.data_path(p["source"]), "the dataset or video folder to extract",
                     p["source"])
    store = roots.store_path(p["store"])
    if store == roots.store:
        raise PathRefused(422, f"{p['store']}: name a store inside the store root, not the root")
    p.update(source=roots.shown(source), store=roots.shown(store))
    return Planned(p, [str(store)], makes=str(store))


def _made_or_there(path: Path, waits_for, what: str, given: str, kind: str = "") -> int | None:
    """The job making `path` (None when it is there already); PathRefused when neither."""
    after = waits_for(path)
    if after is None:
        require(path, what, given, kind or "any")
    return after


def plan_train(p: dict, roots: Roots, uploads: Path, waits_for=_no_job) -> Planned:
    """One store or several (`store` a list, each `[NAME=]PATH` as `mespot train`'s stores),
    each with its annotation file (or one namespaced file for all); the job waits for every
    store a queued extraction makes."""
    stores, notes = _listed(p["store"]), _listed(p["annotations"])
    if len(notes) not in (1, len(stores)):
        raise PathRefused(422, f"{len(stores)} stores and {len(notes)} annotation files: give "
                          f"one per store, in the same order (or one namespaced file for all)")
    named, makers = [], []
    for typed in stores:
        name, given = _named(typed)
        store = roots.store_path(given)
        makers.append(_made_or_there(store, waits_for, "a feature store", given, "dir"))
        named.append((name, store))
    annotations = [require(roots.data_path(a), "the annotation file", a, "file") for a in notes]
    run = roots.store_path(p["run"])
    if run == roots.store or any(run == s or s in run.parents for _, s in named):
        raise PathRefused(422, f"{p['run']}: name a run folder of its own under the store root")
    shown = [roots.shown(s) if n is None else f"{n}={roots.shown(s)}" for n, s in named]
    p.update(store=shown if isinstance(p["store"], list) else shown[0], run=roots.shown(run),
             annotations=([roots.shown(a) for a in annotations]
                          if isinstance(p["annotations"], list) else roots.shown(annotations[0])))
    waits = sorted({m for m in makers if m is not None})
    return Planned(p, [str(s) for _, s in named] + [str(run)], makes=str(run),
                   after=waits[0] if waits else None, also_after=tuple(waits[1:]))


def _listed(value) -> list[str]:
    """A job field holding one path or a list of them, as a list."""
    return list(value) if isinstance(value, list) else [value]


def _named(typed: str) -> tuple[str | None, str]:
    """A store as `mespot train` takes it: 'NAME=PATH' (NAME lower-case letters and digits)
    -> (NAME, PATH); a plain path -> (None, path)."""
    name, sep, rest = typed.partition("=")
    if sep and rest and re.fullmatch(r"[a-z][a-z0-9]*", name):
        return name, rest
    return None, typed


def plan_evaluate(p: dict, roots: Roots, uploads: Path, waits_for=_no_job) -> Planned:
    run = roots.store_path(p["run"])
    after = _made_or_there(run, waits_for, "a run folder", p["run"], "dir")
    if after is None:
        require(run / "config.json", "a run folder written by a train job", p["run"], "file")
    p.update(run=roots.shown(run))
    return Planned(p, [str(run)], after=after)


def plan_predict(p: dict, roots: Roots, uploads: Path, waits_for=_no_job) -> Planned:
    model = roots.store_path(p["model"])
    after = _made_or_there(model, waits_for, "a run folder", p["model"], "dir")
    if p.get("upload"):
        video = upload_path(uploads, p["upload"])
    elif p.get("video"):
        video = require(roots.data_path(p["video"]), "a video file or folder", p["video"])
        p["video"] = roots.shown(video)
    else:
        raise PathRefused(422, "predict needs 'video' (a path under the data root) or 'upload'")
    p["model"] = roots.shown(model)
    return Planned(p, [str(model), str(video)], after=after)


def upload_path(uploads: Path, upload_id: str) -> Path:
    """The file of upload `upload_id` (a 32-digit hex id); 422 when there is none."""
    if not (isinstance(upload_id, str) and len(upload_id) == 32
            and all(c in "0123456789abcdef" for c in upload_id)):
        raise PathRefused(422, f"{upload_id!r}: not an upload id")
    files = [f for f in (uploads / upload_id).glob("*") if f.is_file()]
    if len(files) != 1:
        raise PathRefused(422, f"upload {upload_id}: no such upload")
    return files[0]


# ---- running (in the runner process) -------------------------------------------------------------

class Context:
    """What a task may use: its slot, its folder, progress, log and the cancel flag.

    The runner (mespot.service.runner) makes one; tests may make their own."""

    device: str = "cpu"
    cores: int = 1
    engine = None  # a flowcore.ray_engine.RayEngine, or None for this machine
    folder: Path
    roots: Roots
    uploads: Path

    def progress(self, done: float, total: float, unit: str, message: str = "",
                 force: bool = False) -> None:
        """Report progress (`force`: write now, not at the next throttled moment)."""

    def log(self, line: str) -> None:
        """One line of the job's log."""

    def frames_extracted(self, frames: int) -> None:
        """Count frames of a video now complete in a store (for /metrics)."""

    def cancelled(self) -> bool:
        return False

    def check_cancel(self, where: str) -> None:
        if self.cancelled():
            raise JobCancelled(f"cancelled {where}")


def ray_engine(address: str | None, device: str):
    """The engine of `--engine ray` with its defaults, as `mespot extract/train` make it
    (UserError when Ray is missing or cannot serve `device`)."""
    from flowcore.ray_engine import RayEngine, import_ray

    try:
        import_ray()
        engine = RayEngine(address=address)
        engine.gpus_for(device)
    except (ImportError, ValueError) as err:  # (mespot.commands imports the service: its
        raise UserError(str(err)) from None  # engine_from_flags here would close a circle)
    return engine


def run(kind: str, params: dict, ctx: Context) -> Outcome:
    runner = {"extract": run_extract, "train": run_train, "evaluate": run_evaluate,
              "predict": run_predict}[kind]
    return runner(params, ctx)


class ExtractProgress:
    """flowcore's progress protocol (start, update, finish, note, close) drawn as the job's
    progress in frames, over every video of the job (`videos`: the source's; those already
    complete count as done, so a resumed job reads 360/1080, not 0/720); `finish` (after each
    video) is where a cancelled job stops at the latest."""

    def __init__(self, ctx: Context, videos=()):
        self.ctx = ctx
        self.videos = tuple(videos)
        self.frames: dict[str, int] = {}  # video -> frames (known at start)
        self.partial: dict[str, float] = {}  # video -> frames done of a running video
        self.finished: float = 0.0
        self.started = time.monotonic()
        self.videos_left = 0

    def start(self, todo) -> None:
        names = {spec.video_id for spec in todo}
        earlier = [spec for spec in self.videos if spec.video_id not in names]
        for spec in [*todo, *earlier]:
            self.frames[spec.video_id] = _frame_count(spec)
        self.finished = float(sum(self.frames[spec.video_id] for spec in earlier))
        self.videos_left = len(todo)
        todo_frames = sum(self.frames[v] for v in names)
        kept = f"; {len(earlier)} already complete" if earlier else ""
        self.ctx.log(f"{len(todo)} video(s) to extract, {todo_frames} frames{kept}")
        self._show(f"{self.videos_left} video(s) to go")

    def update(self, video_id: str, phase: str, done: int, total: int) -> None:
        # each frame counts half after the landmark pass and whole after the flow pass
        size = self.frames.get(video_id) or total
        share = done / max(total, 1) * size / 2
        self.partial[video_id] = share + (size / 2 if phase == "flow" else 0.0)
        self._show(f"{video_id}: {phase}")

    def finish(self, result) -> None:
        self.partial.pop(result.video_id, None)
        self.finished += self.frames.get(result.video_id, 0)
        self.videos_left -= 1
        if result.status == "complete":
            self.ctx.frames_extracted(result.n_frames)
        detail = f" [{result.stage}] {result.error}" if result.error else ""
        self.ctx.log(f"video {result.video_id}: {result.status}, {result.n_frames} frames, "
                     f"{result.seconds:.1f} s{detail}")
        self._show(f"{self.videos_left} video(s) to go", force=True)
        self.ctx.check_cancel("between videos; the store keeps the videos done and resumes")

    def note(self, text: str) -> None:
        self.ctx.log(text)

    def close(self) -> None:
        pass

    def _show(self, message: str, force: bool = False) -> None:
        done = self.finished + sum(self.partial.values())
        self.ctx.progress(done, float(sum(self.frames.values())), "frames", message, force)


def _frame_count(spec) -> int:
    from flowcore.video import FrameStream

    try:
        return len(FrameStream(spec))
    except Exception:  # noqa: BLE001 - an unreadable video fails later, with its reason
        return 0


def _source_videos(source_dir, subsample, videos) -> tuple:
    """The videos an extraction of `source_dir` covers, complete ones included (so progress
    counts those done before a restart); () when the source cannot be opened: the extraction
    itself then says why."""
    from flowcore.sources import SourceError, open_source

    try:
        found = open_source(source_dir, subsample=subsample).videos
    except SourceError:
        return ()
    return tuple(v for v in found if not videos or v.video_id in videos)


# ExtractJob field -> key in ExtractParams.to_dict(); a field left out keeps the dataclass's
EXTRACT_FIELDS = {"backend": "flow_backend", "resize": "faces.resize", "subsample": "subsample"}
# TrainJob field -> field of spotting.config.TrainParams, likewise
TRAIN_FIELDS = ("epochs", "seed", "inner_val", "batch_size", "lr")
# TrainJob field -> field of the split protocol's spotting.protocols.SplitParams, likewise
SPLIT_FIELDS = {"split_seed": "seed", "split_test": "test_fraction"}


def run_extract(p: dict, ctx: Context) -> Outcome:
    """A dataset or video folder under the data root -> a feature store under the store root
    (mespot.api.extract, with the job's parameters over the defaults)."""
    from flowcore.extract import extract_params
    from flowcore.flow import backend_named
    from mespot.api import extract

    source_dir, store = ctx.roots.data_path(p["source"]), ctx.roots.store_path(p["store"])
    try:
        params = extract_params(None, {key: p.get(f) for f, key in EXTRACT_FIELDS.items()})
    except ValueError as err:
        raise UserError(f"extraction parameters: {err}") from None
    device = backend_named(params.flow_backend).where(ctx.device)
    store.parent.mkdir(parents=True, exist_ok=True)
    workers = ctx.cores if device == "cpu" else None
    progress = ExtractProgress(ctx, _source_videos(source_dir, params.subsample, p.get("videos")))
    report = extract(source_dir, store, params, device=device, workers=workers,
                     videos=p.get("videos"), engine=ctx.engine, progress=progress)
    summary = ctx.folder / "extraction.json"
    summary.write_text(json.dumps({"store": p["store"], "seconds": report.seconds,
                                   "frames_per_second": report.frames_per_second,
                                   "warnings": report.warnings,
                                   "videos": [r.to_dict() for r in report.results]}, indent=1))
    counts = {s: report.count(s) for s in ("complete", "skipped", "failed", "busy")}
    ok = counts["failed"] == 0 and counts["busy"] == 0
    message = (f"{counts['complete']} extracted, {counts['skipped']} already complete, "
               f"{counts['failed']} failed, {counts['busy']} left to another process; "
               f"{report.frames_per_second:.1f} frames/s")
    return Outcome("done" if ok else "failed", message,
                   "" if ok else "not every video is complete; see extraction.json and the log",
                   {"extraction.json": str(summary)}, {"store": p["store"], **counts})


def run_train(p: dict, ctx: Context) -> Outcome:
    """One store or several (pooled) and their annotations -> a run folder under the store
    root (resumes), with the protocol asked for (mespot.api.train, as `mespot train`)."""
    from mespot.api import train as train_run

    stores = [_store_given(typed, ctx.roots) for typed in _listed(p["store"])]
    notes = [str(ctx.roots.data_path(a)) for a in _listed(p["annotations"])]
    run = ctx.roots.store_path(p["run"])
    sections = {"train": {k: p[k] for k in TRAIN_FIELDS if p.get(k) is not None},
                "split": {f: p[k] for k, f in SPLIT_FIELDS.items() if p.get(k) is not None}}
    recorder = LossRecorder(ctx.folder / LOSSES)
    latest = {subject: None for subject in complete_folds(run)}  # fold -> epochs done

    def on_epoch_end(subject: str, epoch: int) -> None:
        latest[subject] = epoch
        epochs, n_folds = recorder.epochs, recorder.n_folds
        done = sum(epochs if e is None else e for e in latest.values())
        ctx.progress(done, float(epochs * n_folds), "epochs",
                     f"fold {subject}: epoch {epoch}/{epochs}")
        ctx.check_cancel("between epochs; the run resumes from its last epoch")

    poll = None if ctx.engine is None else FoldPoller(run, recorder, ctx)
    try:
        results = train_run(stores if len(stores) > 1 else stores[0],
                            notes if len(notes) > 1 else notes[0], run, sections=sections,
                            device=ctx.device, subjects=p.get("subjects") or None,
                            threads=ctx.cores if ctx.device == "cpu" else 0, engine=ctx.engine,
                            progress=recorder, protocol=p.get("protocol") or "loso",
                            test_datasets=p.get("test_on") or (),
                            on_epoch_end=on_epoch_end if ctx.engine is None else None)
    finally:
        if poll is not None:
            poll.stop()
    files = {name: str(run / name) for name in ("config.json", "train.log", "annotation_issues.csv")
             if (run / name).is_file()}
    folds = [{"subject": r.subject, "final_loss": r.final_loss, "seconds": round(r.seconds, 2)}
             for r in results]
    return Outcome("done", f"{len(results)} fold(s) trained into {p['run']}", files=files,
                   result={"run": p["run"], "folds": folds})


def _store_given(typed: str, roots: Roots) -> str:
    """A store of a train job as mespot.api.train takes it: its absolute path, named as typed."""
    name, given = _named(typed)
    path = str(roots.store_path(given))
    return path if name is None else f"{name}={path}"


def run_evaluate(p: dict, ctx: Context) -> Outcome:
    """A run folder -> metrics, intervals and report.html for each epoch selection
    (mespot.api.evaluate and report)."""
    from mespot.api import evaluate, report as write_report

    run = ctx.roots.store_path(p["run"])
    selections = p.get("select") or ["last"]
    steps = len(selections) + int(p.get("report", True))  # one per selection, one for the report
    files, metrics = {}, {}
    for k, selection in enumerate(selections):
        ctx.progress(k, steps, "steps", f"evaluating with {selection}", force=True)
        e = evaluate(run, selection, device=ctx.device)
        name = e.selection.name
        for table in ("metrics.json", "metrics.csv", "intervals.csv", "matches.csv",
                      "metrics_per_subject.csv", "metrics_per_video.csv"):
            files[f"{name}/{table}"] = str(e.out / table)
        metrics[name] = {"label": e.selection.label + e.options.label,
                         "metrics": e.metrics.round(4).to_dict(orient="records")}
        ctx.log(f"{selection}: " + "; ".join(f"{r['type']} F1 {r['f1']:.4f}"
                                             for r in metrics[name]["metrics"]))
        ctx.check_cancel("between selections")
    if p.get("report", True):
        ctx.progress(len(selections), steps, "steps", "writing report.html", force=True)
        report = write_report(run, None)
        files["report.html"] = str(report)
        for png in sorted((run / "report").glob("*.png")):
            files[f"report/{png.name}"] = str(png)
    return Outcome("done", f"evaluated {p['run']} with {', '.join(selections)}", files=files,
                   result={"run": p["run"], "evaluations": metrics})


def run_predict(p: dict, ctx: Context) -> Outcome:
    """An uploaded video or a path under the data root + a run -> intervals.csv and curves
    (mespot.api.predict)."""
    from mespot.api import predict

    model = ctx.roots.store_path(p["model"])
    if p.get("upload"):
        video = upload_path(ctx.uploads, p["upload"])
    else:
        video = ctx.roots.data_path(p["video"])
    out = ctx.folder / "prediction"
    batch = predict(video, model, out, fold=p.get("fold"), select=p.get("select") or "last",
                    device=ctx.device, progress=ExtractProgress(ctx),
                    min_precision=p.get("min_precision"))
    files = {"intervals.csv": str(out / "intervals.csv"),
             "prediction.json": str(out / "prediction.json")}
    for png in sorted(out.glob("curves*.png")) + sorted(out.glob("curves/*.png")):
        files[png.relative_to(out).as_posix()] = str(png)
    spotted = {r.video_id: {t: int((r.intervals["type"] == t).sum()) for t in ("me", "mae")}
               for r in batch.predictions}
    failed = [{"video": f.video_id, "stage": f.stage, "error": f.error} for f in batch.failed]
    ok = not failed
    message = f"{len(batch.predictions)} video(s) spotted" + (
        f", {len(failed)} failed" if failed else "")
    return Outcome("done" if ok else "failed", message,
                   "" if ok else "; ".join(f"{f['video']}: {f['error']}" for f in failed),
                   files, {"spotted": spotted, "failed": failed, **_precision_result(batch)})


def _precision_result(batch) -> dict:
    """Each interval with its score and expected precision, the minimum applied, how many were
    left out below it and where the precisions come from (the job's result)."""
    rows = batch.intervals.astype(object).where(batch.intervals.notna(), None)
    return {"intervals": rows.to_dict(orient="records"), "min_precision": batch.min_precision,
            "left_out": {r.video_id: r.left_out for r in batch.predictions},
            "precision": batch.trained.precision_note}
