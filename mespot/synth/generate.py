"""The synthetic dataset driver: validate, plan, render every video, write the layout.

Everything is written into a hidden sibling folder first and moved into place only when the
whole dataset is complete; on any error (or Ctrl-C) that folder is removed, so a failed run leaves
nothing half-written behind.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from mespot import __version__
from mespot.errors import UserError
from mespot.synth.config import SynthConfig
from mespot.synth.faces import Subject, make_subject
from mespot.synth.layouts import (VideoSlot, ground_truth_rows, video_slot, write_casme2_workbook,
                                  write_ground_truth_csv, write_samm_workbook)
from mespot.synth.render import render_frames
from mespot.synth.timeline import VideoPlan, plan_video


@dataclass(frozen=True)
class VideoResult:
    slot: VideoSlot
    n_frames: int
    expressions: list[dict]  # ground-truth rows
    events: list[dict]  # blinks and quick head movements, 1-based frames
    seconds: float  # rendering + writing time


@dataclass(frozen=True)
class SynthResult:
    root: Path
    config: SynthConfig
    videos: list[VideoResult]
    seconds: float


def video_seeds(config: SynthConfig, subject_index: int, video_index: int):
    """(plan seed, noise seed) of one video: independent streams, fixed by the dataset seed."""
    base = [config.seed, subject_index, video_index]
    return np.random.SeedSequence(base + [1]), np.random.SeedSequence(base + [2])


@functools.lru_cache(maxsize=4)
def cached_subject(index: int, face_size: int, seed: int) -> Subject:
    return make_subject(index, face_size, seed)


def plan_for(config: SynthConfig, subject_index: int, video_index: int) -> VideoPlan:
    return plan_video(config, video_seeds(config, subject_index, video_index)[0])


def _events(plan: VideoPlan, slot: VideoSlot) -> list[dict]:
    rows = [{"video": slot.video, "kind": "blink", "start": b.start + 1, "peak": b.closed + 1,
             "end": b.end + 1, "detail": ""} for b in plan.blinks]
    rows += [{"video": slot.video, "kind": "head_move", "start": m.start + 1, "peak": m.peak + 1,
              "end": m.end + 1,
              "detail": f"dx={m.dx:.2f} dy={m.dy:.2f} deg={m.degrees:.2f} returns={m.returns}"}
             for m in plan.head_moves]
    return sorted(rows, key=lambda r: r["start"])


def render_video(config: SynthConfig, subject_index: int, video_index: int, root: Path) -> VideoResult:
    """Render one video into `root` in the configured layout; return its ground truth."""
    started = time.perf_counter()
    slot = video_slot(config.layout, subject_index, video_index)
    subject = cached_subject(subject_index, config.face_size, config.seed)
    plan = plan_for(config, subject_index, video_index)
    folder = root / slot.folder
    folder.mkdir(parents=True)
    quality = [cv2.IMWRITE_JPEG_QUALITY, config.jpeg_quality]
    noise_seed = video_seeds(config, subject_index, video_index)[1]
    for t, frame in enumerate(render_frames(subject, plan, config.noise_sigma, noise_seed)):
        path = folder / slot.frame_pattern.format(t + 1)
        if not cv2.imwrite(str(path), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR), quality):
            raise OSError(f"could not write {path}")
    return VideoResult(slot, plan.n_frames, ground_truth_rows(slot, plan.expressions, config.fps),
                       _events(plan, slot), time.perf_counter() - started)


def _make_partial_folder(out: Path) -> tuple[Path, list[Path]]:
    """Create the hidden work folder beside `out` (and missing parents); UserError if we can't."""
    created, parent = [], out.parent
    missing = []
    while not parent.exists():
        missing.append(parent)
        parent = parent.parent
    try:
        for folder in reversed(missing):
            folder.mkdir()
            created.append(folder)
        work = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    except OSError as err:
        for folder in reversed(created):
            folder.rmdir()
        raise UserError(f"cannot write the output folder {out}: {err.strerror or err}") from None
    return work, created


def check_output(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise UserError(f"the output path {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise UserError(f"the output folder {out} exists and is not empty; pass --overwrite to replace it")


def _render_all(config: SynthConfig, work: Path, workers: int, progress) -> list[VideoResult]:
    jobs = [(s, v) for s in range(config.subjects) for v in range(config.videos_per_subject)]
    results: dict[tuple[int, int], VideoResult] = {}
    if workers <= 1:
        for s, v in jobs:
            results[(s, v)] = render_video(config, s, v, work)
            progress(results[(s, v)])
    else:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            futures = {pool.submit(render_video, config, s, v, work): (s, v) for s, v in jobs}
            try:
                for future in as_completed(futures):
                    results[futures[future]] = future.result()
                    progress(results[futures[future]])
            except BaseException:
                pool.shutdown(wait=True, cancel_futures=True)
                raise
    return [results[job] for job in jobs]


def generate_dataset(config: SynthConfig, out: Path, *, overwrite: bool = False, workers: int = 1,
                     progress=lambda result: None, preview: bool = True) -> SynthResult:
    """Generate the dataset of `config` at `out` atomically; return what was made."""
    config.validate()
    if workers < 1:
        raise UserError(f"workers must be >= 1, got {workers}")
    out = Path(out).absolute()
    check_output(out, overwrite)
    started = time.perf_counter()
    work, created_parents = _make_partial_folder(out)
    try:
        videos = _render_all(config, work, max(1, workers), progress)
        rows = [row for video in videos for row in video.expressions]
        write_ground_truth_csv(work, rows)
        if config.layout == "casme2":
            write_casme2_workbook(work, rows, config.subjects)
        else:
            write_samm_workbook(work, rows)
        _write_tables(work, config, videos)
        if preview:
            from mespot.synth.preview import write_preview

            write_preview(work, config)
        if out.exists():
            shutil.rmtree(out)
        os.replace(work, out)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        for folder in reversed(created_parents):
            shutil.rmtree(folder, ignore_errors=True)
        raise
    return SynthResult(out, config, videos, time.perf_counter() - started)


def _write_tables(root: Path, config: SynthConfig, videos: list[VideoResult]) -> None:
    import pandas as pd

    pd.DataFrame([{"subject": v.slot.subject, "video": v.slot.video, "folder": v.slot.folder,
                   "n_frames": v.n_frames, "fps": config.fps, "width": config.frame_size,
                   "height": config.frame_size} for v in videos]).to_csv(root / "videos.csv", index=False)
    events = [e for v in videos for e in v.events]
    pd.DataFrame(events, columns=["video", "kind", "start", "peak", "end", "detail"]).to_csv(
        root / "events.csv", index=False)
    meta = {"generator": "mespot synth", "mespot_version": __version__, "config": config.to_dict(),
            "frame_numbers": "1-based in every file", "subjects": config.subjects,
            "videos": len(videos), "frames": sum(v.n_frames for v in videos)}
    (root / "synth.json").write_text(json.dumps(meta, indent=2))
