"""The synthetic dataset driver: validate, plan, render every video, write the layout.

Everything is written into a hidden sibling folder first and moved into place only when the
whole dataset is complete; on any error (or Ctrl-C) that folder is removed, so a failed run leaves
nothing half-written behind. A run killed outright (SIGKILL) cannot clean up: its folder's lock
file (held with `flock`, which the kernel releases when the process dies) lets the next run into
the same parent folder recognise the leftover and remove it. Render workers die with the run.
"""

from __future__ import annotations

import fcntl
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

from flowcore import testhooks
from flowcore.errors import UserError
from flowcore.lifetime import die_with_parent
from flowcore.version import __version__
from mespot.synth.config import SynthConfig
from mespot.synth.faces import Subject, make_subject
from mespot.synth.layouts import (VideoSlot, ground_truth_rows, video_slot, write_casme2_workbook,
                                  write_ground_truth_csv, write_samm_workbook)
from mespot.synth.layouts_smic import write_smic_workbook
from mespot.synth.render import render_frames
from mespot.synth.timeline import VideoPlan, plan_for, video_seeds


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


@functools.lru_cache(maxsize=4)
def cached_subject(index: int, face_size: int, seed: int) -> Subject:
    return make_subject(index, face_size, seed)


def _events(plan: VideoPlan, slot: VideoSlot) -> list[dict]:
    rows = [{"video": slot.video, "kind": "blink", "start": b.start + 1, "peak": b.closed + 1,
             "end": b.end + 1, "detail": ""} for b in plan.blinks]
    rows += [{"video": slot.video, "kind": "head_move", "start": m.start + 1, "peak": m.peak + 1,
              "end": m.end + 1,
              "detail": f"dx={m.dx:.2f} dy={m.dy:.2f} deg={m.degrees:.2f} returns={m.returns}"}
             for m in plan.head_moves]
    if plan.nuisances is not None:  # talking, nods, turns, light changes (opt-in)
        rows += [{**e, "video": slot.video, "start": e["start"] + 1, "peak": e["peak"] + 1,
                  "end": e["end"] + 1} for e in plan.nuisances.events]
    return sorted(rows, key=lambda r: r["start"])


def render_video(
    config: SynthConfig, subject_index: int, video_index: int, root: Path
) -> VideoResult:
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
        if t == 0:
            testhooks.gate(f"synth-{slot.video}")  # a test may hold the video here
    return VideoResult(
        slot,
        plan.n_frames,
        ground_truth_rows(slot, plan.expressions, config.fps),
        _events(plan, slot),
        time.perf_counter() - started,
    )


PARTIAL = ".{name}.partial-"  # prefix of the hidden work folder beside the output folder


def _make_partial_folder(out: Path) -> tuple[Path, list[Path], object]:
    """Create the hidden work folder beside `out` (and missing parents) with its held lock file
    beside it; remove what killed runs left there. UserError if we can't write there."""
    created, parent = [], out.parent
    missing = []
    while not parent.exists():
        missing.append(parent)
        parent = parent.parent
    try:
        for folder in reversed(missing):
            folder.mkdir()
            created.append(folder)
        remove_leftovers(out)
        lock = tempfile.NamedTemporaryFile(prefix=PARTIAL.format(name=out.name), suffix=".lock",
                                           dir=out.parent, delete=False)
        fcntl.flock(lock, fcntl.LOCK_EX)  # first the lock, then the folder it guards
        work = Path(lock.name).with_suffix("")
        work.mkdir()
    except OSError as err:
        for folder in reversed(created):
            shutil.rmtree(folder, ignore_errors=True)
        raise UserError(f"cannot write the output folder {out}: {err.strerror or err}") from None
    return work, created, lock


def remove_leftovers(out: Path) -> list[Path]:
    """Remove the work folders of runs into `out` that were killed (their lock is free, or gone);
    leave those of runs still going. Returns what was removed."""
    removed = []
    for path in sorted(out.parent.glob(PARTIAL.format(name=out.name) + "*")):
        if path.suffix == ".lock":
            with open(path, "a") as handle:
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue  # a live run
                shutil.rmtree(path.with_suffix(""), ignore_errors=True)
                path.unlink(missing_ok=True)
                removed.append(path.with_suffix(""))
        elif path.is_dir() and not path.with_name(path.name + ".lock").exists():
            shutil.rmtree(path, ignore_errors=True)  # its lock went first: never a live run's
            removed.append(path)
    return removed


def _release(lock) -> None:
    Path(lock.name).unlink(missing_ok=True)
    lock.close()


def check_output(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise UserError(f"the output path {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise UserError(
            f"the output folder {out} exists and is not empty; pass --overwrite to replace it"
        )


def _render_all(config: SynthConfig, work: Path, workers: int, progress) -> list[VideoResult]:
    jobs = [(s, v) for s in range(config.subjects) for v in range(config.videos_per_subject)]
    results: dict[tuple[int, int], VideoResult] = {}
    if workers <= 1:
        for s, v in jobs:
            results[(s, v)] = render_video(config, s, v, work)
            progress(results[(s, v)])
    else:
        with ProcessPoolExecutor(max_workers=workers, initializer=die_with_parent,
                                 initargs=(os.getpid(),)) as pool:
            futures = {pool.submit(render_video, config, s, v, work): (s, v) for s, v in jobs}
            try:
                for future in as_completed(futures):
                    results[futures[future]] = future.result()
                    progress(results[futures[future]])
            except BaseException:
                pool.shutdown(wait=True, cancel_futures=True)
                raise
    return [results[job] for job in jobs]


def generate_dataset(
    config: SynthConfig,
    out: Path,
    *,
    overwrite: bool = False,
    workers: int = 1,
    progress=lambda result: None,
    preview: bool = True,
) -> SynthResult:
    """Generate the dataset of `config` at `out` atomically; return what was made."""
    config.validate()
    if workers < 1:
        raise UserError(f"workers must be >= 1, got {workers}")
    out = Path(out).absolute()
    check_output(out, overwrite)
    started = time.perf_counter()
    work, created_parents, lock = _make_partial_folder(out)
    try:
        videos = _render_all(config, work, max(1, workers), progress)
        rows = [row for video in videos for row in video.expressions]
        write_ground_truth_csv(work, rows)
        if config.layout == "casme2":
            write_casme2_workbook(work, rows, config.subjects)
        elif config.layout == "smic":
            write_smic_workbook(work, rows)
        else:
            write_samm_workbook(work, rows)
        _write_tables(work, config, videos)
        if preview and rows:  # the preview shows an expression: none without one (--neutral)
            from mespot.synth.preview import write_preview

            write_preview(work, config)
        if out.exists():
            shutil.rmtree(out)
        os.replace(work, out)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        _release(lock)
        for folder in reversed(created_parents):
            shutil.rmtree(folder, ignore_errors=True)
        raise
    _release(lock)
    return SynthResult(out, config, videos, time.perf_counter() - started)


def _write_tables(root: Path, config: SynthConfig, videos: list[VideoResult]) -> None:
    import pandas as pd

    pd.DataFrame(
        [
            {
                "subject": v.slot.subject,
                "video": v.slot.video,
                "folder": v.slot.folder,
                "n_frames": v.n_frames,
                "fps": config.fps,
                "width": config.frame_size,
                "height": config.frame_size,
            }
            for v in videos
        ]
    ).to_csv(root / "videos.csv", index=False)
    events = [e for v in videos for e in v.events]
    pd.DataFrame(events, columns=["video", "kind", "start", "peak", "end", "detail"]).to_csv(
        root / "events.csv", index=False
    )
    meta = {
        "generator": "mespot synth",
        "mespot_version": __version__,
        "config": config.to_dict(),
        "frame_numbers": "1-based in every file",
        "subjects": config.subjects,
        "videos": len(videos),
        "frames": sum(v.n_frames for v in videos),
    }
    (root / "synth.json").write_text(json.dumps(meta, indent=2))
