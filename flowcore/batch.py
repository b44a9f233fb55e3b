"""Extraction of a whole source into one store: planning, resume, running, progress, the report.

Resume is the default: videos whose status in the store is "complete" and whose source
fingerprint (flowcore/fingerprint.py: frame count, size, hashes of a few frames) equals the one
recorded are skipped, every other video is (re)done from scratch. A complete video whose
source's frames differ from those it was extracted from (another dataset with the same video
ids, frames replaced) is refused with one line naming it, before any work, unless `overwrite`
(then it is extracted again). Videos with identical frames and videos named like copies are
listed as warnings. Each video left is one task of the job runner (flowcore.jobs):
in this process, in a pool of `workers` spawned processes (one thread each), or as a Ray task
on a cluster (flowcore.ray_engine.RayEngine). Every task writes its own video's group; two never
write the same video. A task whose process died is recorded in the store as failed at stage
"worker", like a bad video, and the other videos go on. Ctrl-C stops the running videos at once
(flowcore.jobs) and raises ExtractionInterrupted, which says how many videos are complete: the
store stays resumable. An exception from the progress display's `finish` (how the service
cancels a running job) starts no further video and lets those begun finish (on Ray: cancels
them), then propagates.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from flowcore.devices import check_device
from flowcore.extract import (ExtractParams, RunOptions, VideoResult, extract_video,
                              plan_extraction)
from flowcore.locations import location
from flowcore.jobs import (LocalProcesses, Task, WorkerLost, first_line, run_tasks,
                           stop_on_error)
from flowcore.sources import Source
from flowcore.fingerprint import copy_warnings, describe, same_frames, source_fingerprint
from flowcore.store import (COMPLETE, FeatureStore, StoreMismatchError, params_hash,
                            video_statuses)
from flowcore.video import FrameError


@dataclass
class ExtractReport:
    """What a run did: one result per video of the source, in the source's order."""

    store: Path
    results: list[VideoResult]
    seconds: float
    warnings: list[str] = field(default_factory=list)
    source: Source | None = None  # the videos as extracted (subsampling applied)

    def count(self, status: str) -> int:
        return sum(r.status == status for r in self.results)

    @property
    def failed(self) -> list[VideoResult]:
        return [r for r in self.results if r.status == "failed"]

    @property
    def frames_per_second(self) -> float:
        frames = sum(r.n_frames for r in self.results if r.status == "complete")
        return frames / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> str:
        """Plain-text summary: one line per failed video, then the totals."""
        lines = [f"FAILED {r.video_id} [{r.stage}]: {r.error}" for r in self.failed]
        busy = self.count("busy")
        others = f"{busy} left to another process extracting them; " if busy else ""
        lines.append(f"{self.count('complete')} extracted, {self.count('skipped')} already "
                     f"complete (skipped), {len(self.failed)} failed; {others}"
                     f"{self.frames_per_second:.1f} frames/s over {self.seconds:.1f} s; "
                     f"store: {self.store}")
        return "\n".join(lines)


def extract_source(path: str | Path, out: str | Path, params: ExtractParams = ExtractParams(),
                   options: RunOptions = RunOptions(), workers: int | None = None,
                   **source_options) -> ExtractReport:
    """Open the dataset, video folder or single video file at `path` and extract it into the
    store at `out` (the public entry point; `mespot extract` with progress bars and a table)."""
    from flowcore.sources import open_source

    return run_extraction(open_source(path, **source_options), out, params, options, workers)


def resolve_subsample(source: Source, params: ExtractParams) -> tuple[Source, ExtractParams]:
    """The subsampling recorded in the store is the one applied: the params' when set (applied
    to every video), else the source's own default (8 for SAMM-LV, 1 otherwise)."""
    if params.subsample is None:
        rates = {v.subsample for v in source.videos}
        if len(rates) != 1:
            raise ValueError(f"{source.root}: videos with different subsampling {sorted(rates)}")
        return source, replace(params, subsample=rates.pop())
    videos = tuple(replace(v, subsample=params.subsample) for v in source.videos)
    return replace(source, videos=videos), params


GPU_WORKERS = 8  # processes sharing one GPU: each decodes and fits landmarks on its own core


def default_workers(options: RunOptions, n_videos: int) -> int:
    """CPU: one process per core; a GPU: a few processes feeding it (never more than videos)."""
    cores = os.cpu_count() or 1
    wanted = cores if options.device == "cpu" else min(GPU_WORKERS, cores)
    return max(1, min(wanted, n_videos))


def run_extraction(source: Source, out: str | Path, params: ExtractParams,
                   options: RunOptions = RunOptions(), workers: int | None = None,
                   progress=None, engine=None, overwrite: bool = False) -> ExtractReport:
    """Extract every video of `source` into the store at `out` (created, or resumed).

    progress: a flowcore.progress.ExtractionProgress (e.g. mespot.progress.RichProgress), or
    None for silence. workers: processes on this machine (None: one per core on the CPU, a few
    sharing a GPU); with a Ray `engine`, the most tasks at once. engine: None to extract on this
    machine, or a flowcore.ray_engine.RayEngine. overwrite: extract again the complete videos
    whose source frames differ from those recorded (refused otherwise).
    Raises StoreMismatchError when `out` holds a store made with other parameters or a video
    extracted from other frames (without `overwrite`), ValueError
    for `workers` < 1, a device this machine lacks, a flow backend that cannot run on
    `options.device` or Ray settings that cannot work (all before any video is tried), and
    ExtractionInterrupted (a KeyboardInterrupt) on Ctrl-C.
    """
    from flowcore.flow import check_backend

    if workers is not None and workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    if engine is None:  # a Ray cluster has its own GPUs; this machine must have them here
        check_device(options.device)
    started = time.perf_counter()
    source, params = resolve_subsample(source, params)
    check_backend(params.flow_backend, options.device, here=engine is None)
    store = FeatureStore(out, params.to_dict(), source.name)
    fingerprints = _fingerprints(source)
    statuses = store.statuses()
    changed = changed_sources(store, source, fingerprints, statuses)
    if changed and not overwrite:
        raise StoreMismatchError(_changed_line(store, source, changed, fingerprints))
    todo, done = plan_extraction(source.videos, statuses, set(changed))
    results = {v.video_id: VideoResult(v.video_id, v.subject, "skipped") for v in done}
    if progress is not None:
        progress.start(todo)
    if engine is None:
        workers = workers or default_workers(options, len(todo))
        if workers > 1 and len(todo) > 1:
            engine = LocalProcesses(workers, threads=1, devices=(options.device,))
    _worker_stores[_store_key(str(store.path), params, source.name)] = store
    job = ExtractJob(params, str(store.path), source.name, options)
    specs = {spec.video_id: spec for spec in todo}
    runs = run_tasks(job, [Task(s.video_id, s) for s in todo], engine, device=options.device,
                     on_message=(lambda m: progress.update(*m)) if progress else None,
                     on_note=getattr(progress, "note", None), limit=workers, name="extract",
                     noun="video")
    try:
        for done_task in runs:
            result = done_task.result
            if done_task.error is not None:
                result = _record_failure(store, specs[done_task.key], done_task.error)
            results[result.video_id] = result
            if progress is not None:  # raising from finish (a cancelled service job) stops the
                stop_on_error(runs, progress.finish, result)  # run, the videos begun finished
    except KeyboardInterrupt:
        ids = [v.video_id for v in source.videos]
        raise ExtractionInterrupted(saved_summary(store.path, ids)) from None
    finally:
        if progress is not None:
            progress.close()
    ordered = [results[v.video_id] for v in source.videos if v.video_id in results]
    warnings = list(source.warnings) + copy_warnings(source.videos, fingerprints)
    return ExtractReport(store.path, ordered, time.perf_counter() - started, warnings, source)


def _fingerprints(source: Source) -> dict[str, dict | None]:
    """Every video's source fingerprint (None for one that cannot be read: its extraction
    will say why)."""
    out = {}
    for spec in source.videos:
        try:
            out[spec.video_id] = source_fingerprint(spec)
        except (OSError, ValueError, FrameError):
            out[spec.video_id] = None
    return out


def changed_sources(store: FeatureStore, source: Source, fingerprints: dict,
                    statuses: dict) -> list[str]:
    """The videos complete in `store` whose recorded fingerprint differs from their source's
    (or was never recorded)."""
    return [v.video_id for v in source.videos if statuses.get(v.video_id) == COMPLETE
            and not same_frames(store.fingerprint(v.video_id), fingerprints[v.video_id])]


def _changed_line(store: FeatureStore, source: Source, changed: list[str],
                  fingerprints: dict) -> str:
    """One line: the first video extracted from other frames, how many more, what to do."""
    video = changed[0]
    path = next(v.path for v in source.videos if v.video_id == video)
    recorded = store.fingerprint(video)
    was = (f"{describe(recorded)} from {store.source(video)}" if recorded
           else "no fingerprint of its frames (extracted before mespot recorded them)")
    more = ""
    if len(changed) > 1:
        listed = ", ".join(changed[1:4]) + (", ..." if len(changed) > 4 else "")
        more = f" (and {len(changed) - 1} more: {listed})"
    return (f"{store.path} holds video {video} extracted from other frames than those in "
            f"{path} (recorded: {was}; there now: {describe(fingerprints[video])}){more}; "
            f"extract them again with --overwrite, or choose another --out")


class ExtractionInterrupted(KeyboardInterrupt):
    """Ctrl-C during an extraction; its message says what was saved (`saved_summary`)."""


def saved_summary(store: str | Path, video_ids) -> str:
    """What an interrupted run left: how many of `video_ids` are complete in the store."""
    path = location(store)
    statuses = video_statuses(path)
    complete = [v for v in video_ids if statuses.get(v) == COMPLETE]
    return (f"{len(complete)} of {len(video_ids)} videos are complete in {path}; the other "
            f"{len(video_ids) - len(complete)} are extracted by running the same command again")


@dataclass(frozen=True)
class ExtractJob:
    """The job of one video (flowcore.jobs): extract it into the store at `store_path` on the
    worker's device, its progress messages (video_id, phase, done, total) sent to the driver."""

    params: ExtractParams
    store_path: str
    dataset: str
    options: RunOptions

    def __call__(self, spec, worker) -> VideoResult:
        store = worker_store(self.store_path, self.params, self.dataset)
        options = replace(self.options, device=worker.device)
        return extract_video(spec, self.params, store, options,
                             lambda *message: worker.report(message))


def _record_failure(store, spec, error: BaseException) -> VideoResult:
    """A video whose task did not return (its process died, or the task raised): recorded in
    the store as failed at stage "worker", like a bad video."""
    text = str(error) if isinstance(error, WorkerLost) else \
        f"the task raised {type(error).__name__}: {first_line(error)}"
    attrs = {"subject": spec.subject, "source": str(spec.path), "subsample": spec.subsample,
             "fps": spec.fps_kept}
    try:
        with store.video_lock(spec.video_id) as mine:
            if mine:
                store.fail(spec.video_id, "worker", text, attrs)
    except Exception as store_err:  # the store itself is broken: say both
        text += f" (and recording the failure failed: {store_err})"
    return VideoResult(spec.video_id, spec.subject, "failed", stage="worker", error=text)


_worker_stores: dict = {}  # the stores this process has open, by (path, dataset, params hash)


def _store_key(path: str, params: ExtractParams, dataset: str) -> tuple:
    return path, dataset, params_hash(params.to_dict())


def worker_store(path: str, params: ExtractParams, dataset: str) -> FeatureStore:
    """The store at `path`, opened once per process and reused for its next videos."""
    key = _store_key(path, params, dataset)
    if key not in _worker_stores:
        _worker_stores[key] = FeatureStore(path, params.to_dict(), dataset)
    return _worker_stores[key]
