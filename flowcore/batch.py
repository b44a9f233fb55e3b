"""Extraction of a whole source into one store: planning, resume, worker processes, progress.

Resume is the default: videos whose status in the store is "complete" are skipped, every other
video is (re)done from scratch. With `workers > 1` each video is one task in a pool of spawned
processes (one thread each), each process writing its own videos' groups; two workers never
write the same video. Progress messages travel back through a queue to one progress display.
Another engine (flowcore.ray_engine.RayEngine: one Ray task per video on a cluster) can take the
place of the pool; planning, resume and the report stay here.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue as queue_module
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field, replace
from pathlib import Path

from flowcore.extract import (ExtractParams, RunOptions, VideoResult, check_device, extract_video,
                              plan_extraction)
from flowcore.lifetime import die_with_parent
from flowcore.sources import Source
from flowcore.store import FeatureStore, params_hash


@dataclass
class ExtractReport:
    """What a run did: one result per video of the source, in the source's order."""

    store: Path
    results: list[VideoResult]
    seconds: float
    warnings: list[str] = field(default_factory=list)

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
                   progress=None, engine=None) -> ExtractReport:
    """Extract every video of `source` into the store at `out` (created, or resumed).

    progress: an object with `start(todo)`, `update(video_id, phase, done, total)`,
    `finish(result)` and `close()` (see flowcore.command), or None for silence.
    engine: None to extract here (one process, or a pool of `workers`), or an object whose
    `run(todo, params, store, dataset, options, workers, progress)` yields one VideoResult per
    video of `todo` after calling `progress.finish` on it (flowcore.ray_engine.RayEngine).
    Raises StoreMismatchError when `out` holds a store made with other parameters.
    """
    if workers is not None and workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    if engine is None:  # a Ray cluster has its own GPUs; this machine must have them here
        check_device(options.device)
    started = time.perf_counter()
    source, params = resolve_subsample(source, params)
    store = FeatureStore(out, params.to_dict(), source.name)
    todo, done = plan_extraction(source.videos, store.statuses())
    results = {v.video_id: VideoResult(v.video_id, v.subject, "skipped") for v in done}
    if progress is not None:
        progress.start(todo)
    if engine is None:
        workers = workers or default_workers(options, len(todo))
    try:
        if engine is not None:
            for result in engine.run(todo, params, store, source.name, options, workers,
                                     progress):
                results[result.video_id] = result
        elif workers <= 1 or len(todo) <= 1:
            for spec in todo:
                result = extract_video(spec, params, store, options,
                                       progress.update if progress else None)
                results[spec.video_id] = result
                if progress is not None:
                    progress.finish(result)
        else:
            for result in _run_pool(todo, params, store.path, source.name, options, workers,
                                    progress):
                results[result.video_id] = result
    finally:
        if progress is not None:
            progress.close()
    ordered = [results[v.video_id] for v in source.videos if v.video_id in results]
    return ExtractReport(store.path, ordered, time.perf_counter() - started, list(source.warnings))


# ---- worker processes ----------------------------------------------------------------------------

_worker_queue = None
_worker_stores: dict = {}


def limit_threads(threads: int) -> None:
    """Let OpenCV and torch use `threads` threads in this process (workers share the cores)."""
    import cv2
    import torch

    cv2.setNumThreads(threads)
    torch.set_num_threads(threads)


def worker_store(path: str, params: ExtractParams, dataset: str) -> FeatureStore:
    """The store at `path`, opened once per worker process and reused for its next videos."""
    key = (path, dataset, params_hash(params.to_dict()))
    if key not in _worker_stores:
        _worker_stores[key] = FeatureStore(path, params.to_dict(), dataset)
    return _worker_stores[key]


def _init_worker(messages, parent_pid: int) -> None:
    global _worker_queue
    die_with_parent(parent_pid)
    _worker_queue = messages
    limit_threads(1)


def _report(video_id: str, phase: str, done: int, total: int) -> None:
    _worker_queue.put((video_id, phase, done, total))


def _extract_in_worker(spec, params: ExtractParams, path: str, dataset: str,
                       options: RunOptions) -> VideoResult:
    try:
        return extract_video(spec, params, worker_store(path, params, dataset), options, _report)
    except KeyboardInterrupt:  # Ctrl-C: the pool's worker loop would take the next video;
        os._exit(130)  # end now (the video stays "running" in the store: redone on resume)


def _run_pool(todo, params, path, dataset, options, workers, progress):
    context = mp.get_context("spawn")  # no fork: torch and dlib hold threads and locks
    messages = context.Queue()
    pool = ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker,
                               initargs=(messages, os.getpid()))
    try:
        futures = {pool.submit(_extract_in_worker, spec, params, str(path), dataset, options):
                   spec for spec in todo}
        pending = set(futures)
        try:
            while pending:
                finished, pending = wait(pending, timeout=0.2, return_when=FIRST_COMPLETED)
                _drain(messages, progress)
                for future in finished:
                    spec = futures[future]
                    try:
                        result = future.result()
                    except BrokenProcessPool as err:
                        result = VideoResult(spec.video_id, spec.subject, "failed", stage="worker",
                                             error=f"the worker process died ({err}); rerun to retry")
                    if progress is not None:
                        progress.finish(result)
                    yield result
        except Exception:  # e.g. a cancelled service job's progress: start no new video, and
            pool.shutdown(wait=True, cancel_futures=True)  # finish those begun (Ctrl-C: below)
            raise
        _drain(messages, progress)
    except BaseException:  # Ctrl-C (or an error): stop the videos in progress now, not after
        for process in list((pool._processes or {}).values()):  # every queued one is done
            process.kill()
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=True)


def saved_summary(store: str | Path, video_ids) -> str:
    """What an interrupted run left: how many of `video_ids` are complete in the store."""
    from flowcore.store import COMPLETE

    path = Path(store)
    statuses = {}
    if (path / "videos").is_dir():
        statuses = {p.name: FeatureStore.status_at(path, p.name)
                    for p in (path / "videos").iterdir()}
    complete = [v for v in video_ids if statuses.get(v) == COMPLETE]
    return (f"{len(complete)} of {len(video_ids)} videos are complete in {path}; the other "
            f"{len(video_ids) - len(complete)} are extracted by running the same command again")


def _drain(messages, progress) -> None:
    while True:
        try:
            message = messages.get_nowait()
        except (queue_module.Empty, OSError, ValueError):
            return
        if progress is not None:
            progress.update(*message)
