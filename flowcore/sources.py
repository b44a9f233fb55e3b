"""Dataset sources: a user's copy of CAS(ME)^2 or SAMM-LV, a folder of video files, or the
synthetic generator's output -> subjects, videos (`VideoSpec`: frames + fps) and the path of
the annotation workbook found (flowcore reads no labels).

Layouts accepted (spec/DATASETS.md):
- CAS(ME)^2 (30 fps): `<root>/rawpic/sNN/NN_<code><name>/imgNNN.jpg`, or `<root>/rawvideo/sNN/
  NN_<code><name>.avi`, or the face-cropped release
  `.../longVideoFaceCropped/sNN/<video>/img_N.jpg`;
  `<root>` may also be the `rawpic`, `rawvideo` or cropped folder itself. When a root holds
  several, `rawpic` is used first, then the cropped release, then `rawvideo` (pass the folder
  itself to choose). The subject of a video comes from its folder's own `NN_` prefix; a video
  filed under another subject's folder is kept and a warning recorded. The workbook is
  `<root>/CAS(ME)^2code_final.xlsx` or the updated copy `CAS(ME)^2code_final(Updated).xlsx`
  (preferred when both are there).
- SAMM-LV (200 fps, subsampled by 8 by default): `<root>/SAMM_longvideos/SSS_V/SSS_V_NNNN.jpg`, or
  `<root>` being that folder; subject = `SSS`.
- A folder of video files (mp4/avi/mov/...): subject from a CSV (`video,subject` columns) or else
  the name of the folder holding the file.
- SMIC-E-long (HS 100 fps subsampled by 4, VIS and NIR 25 fps): `<root>/SMIC-E_raw image/
  HS_long/SMIC-HS-E/HS/sNN/<video>/...` and `SMIC-HS-E_annotation.xlsx` (flowcore/sources_smic.py);
  with several modalities HS is used first, then VIS, then NIR (pass the folder to choose).
- The synthetic generator's output (`synth.json` at the root): its layout and fps come from the
  generator's config.
- One folder of numbered frames (a single video, e.g. for `mespot predict`): subject = the name of
  its parent folder, fps given (default 30).

Frame numbers everywhere are the ORIGINAL 1-based numbers; annotations keep them too.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from flowcore.sources_smic import (SMIC_FPS, SMIC_SUBSAMPLE, find_smic, smic_videos,
                                   smic_workbook)
from flowcore.locations import absolute, local_file
from flowcore.video import FRAME_SUFFIXES, VIDEO_SUFFIXES, VideoSpec, video_fps

CASME2_FPS = 30.0
SAMM_FPS = 200.0
SAMM_SUBSAMPLE = 8  # AUW-GCN uses SAMM-LV at 25 fps
CASME2_WORKBOOK = "CAS(ME)^2code_final.xlsx"
CASME2_WORKBOOK_GLOB = (
    "CAS(ME)^2code_final*.xlsx"  # also the updated copy, "...final(Updated).xlsx"
)
SAMM_WORKBOOK_GLOB = "SAMM_LongVideos_V*.xlsx"
_CASME2_VIDEO = re.compile(r"^(\d+)_(\d{4})(.*)$")  # 15_0101disgustingteeth
_CASME2_SUBJECT = re.compile(r"^s(\d+)$", re.IGNORECASE)
_SAMM_VIDEO = re.compile(r"^(\d{3})_(\d+)$")  # 006_1


class SourceError(ValueError):
    """The path is not a dataset copy we can read; the message says what was expected."""


@dataclass(frozen=True)
class Source:
    """A dataset copy: its videos in (subject, video) order, and the annotation workbook found
    beside them (`workbook`; reading it is spotting's job:
    spotting.annotations.read_source_annotations)."""

    name: str  # "casme2", "samm", "smic", "videos", "synth-casme2", "synth-samm", "synth-smic"
    root: Path
    videos: tuple[VideoSpec, ...]
    workbook: Path | None = None
    layout: str = ""  # "rawpic", "rawvideo", "cropped", "samm", "smic-HS" (-VIS, -NIR), "videos"
    warnings: tuple[str, ...] = field(default=())

    @property
    def subjects(self) -> list[str]:
        return sorted({v.subject for v in self.videos})


def open_source(
    path: str | Path,
    *,
    subsample: int | None = None,
    fps: float | None = None,
    subjects_csv: str | Path | None = None,
) -> Source:
    """Recognise the dataset at `path` and list its videos (no frame is decoded).

    subsample: keep every n-th frame (default 8 for SAMM-LV, 4 for SMIC-E-long HS, 1 otherwise).
    fps: frame rate for frame folders whose rate is not known (default: the dataset's).
    """
    root = absolute(path)  # stores record where frames are: keep it valid from any folder
    if not root.exists():
        raise SourceError(f"{root}: no such file or folder")
    if subsample is not None and subsample < 1:
        raise SourceError(f"subsample must be >= 1, got {subsample}")
    if fps is not None and not fps > 0:  # also refuses nan
        raise SourceError(f"fps must be a frame rate > 0, got {fps}")
    if root.is_dir() and not any(root.iterdir()):
        raise SourceError(f"{root}: empty folder (no frame images, video files or dataset in it)")
    if (root / "synth.json").is_file():
        return _synth(root, subsample)
    if root.is_file() and root.suffix.lower() in VIDEO_SUFFIXES:
        return _video_folder(root.parent, subsample or 1, subjects_csv, only=root)
    if root.is_dir() and any(p.suffix.lower() in FRAME_SUFFIXES for p in root.iterdir()):
        return _frame_folder(root, subsample or 1, fps or CASME2_FPS)
    samm = _samm_frames_root(root)
    if samm is not None:
        return _samm(root, samm, subsample or SAMM_SUBSAMPLE, fps or SAMM_FPS)
    smic = find_smic(root)
    if smic:
        return _smic(root, smic, subsample, fps)
    casme2 = _casme2_root(root)
    if casme2 is not None:
        return _casme2(root, *casme2, subsample or 1, fps or CASME2_FPS)
    if any(p.suffix.lower() in VIDEO_SUFFIXES for p in root.rglob("*")):
        return _video_folder(root, subsample or 1, subjects_csv)
    raise SourceError(
        f"{root}: not a dataset we recognise; expected a CAS(ME)^2 copy (rawpic/, rawvideo/ or "
        f"the face-cropped release with sNN/ folders), a SAMM-LV copy (SAMM_longvideos/), a "
        f"SMIC-E-long copy (SMIC-E_raw image/HS_long/SMIC-HS-E/HS/), the "
        f"output of `mespot synth` (synth.json), or a folder of video files"
    )


# ---- CAS(ME)^2 ---------------------------------------------------------------------------------


def _has_subject_folders(folder: Path) -> bool:
    return folder.is_dir() and any(
        _CASME2_SUBJECT.match(p.name) and p.is_dir() for p in folder.iterdir()
    )


def _casme2_root(root: Path) -> tuple[Path, str] | None:
    """(folder holding the sNN folders, layout) or None."""
    candidates = [
        (root / "rawpic", "rawpic"),
        (root / "longVideoFaceCropped", "cropped"),
        (root / "cropped", "cropped"),
        (root / "rawvideo", "rawvideo"),
    ]
    for folder, layout in candidates:
        if _has_subject_folders(folder):
            return folder, layout
    if _has_subject_folders(root):
        subjects = [p for p in root.iterdir() if _CASME2_SUBJECT.match(p.name) and p.is_dir()]
        has_videos = any(c.suffix.lower() in VIDEO_SUFFIXES for s in subjects for c in s.iterdir())
        if root.name.lower() == "rawvideo" or has_videos:
            return root, "rawvideo"
        return root, "rawpic" if root.name.lower() == "rawpic" else "cropped"
    return None


def _casme2(
    root: Path, frames_root: Path, layout: str, subsample: int, fps: float, name: str = "casme2"
) -> Source:
    videos, warnings = [], []
    for subject_dir in sorted(p for p in frames_root.iterdir() if p.is_dir()):
        if not _CASME2_SUBJECT.match(subject_dir.name):
            continue
        for entry in sorted(subject_dir.iterdir()):
            is_video_file = entry.is_file() and entry.suffix.lower() in VIDEO_SUFFIXES
            if layout == "rawvideo" and not is_video_file:
                continue
            if layout != "rawvideo" and not entry.is_dir():
                continue
            video_id = entry.stem if is_video_file else entry.name
            match = _CASME2_VIDEO.match(video_id)
            if match is None:
                warnings.append(f"{entry}: not named NN_<4-digit code><name>; skipped")
                continue
            subject = f"s{int(match.group(1)):02d}"
            if subject.lower() != subject_dir.name.lower():
                warnings.append(
                    f"{entry}: filed under {subject_dir.name} but named for {subject}; "
                    f"using {subject}"
                )
            rate = video_fps(entry, fps) if is_video_file else fps
            videos.append(VideoSpec(video_id, subject, entry, rate, subsample))
    workbook = _casme2_workbook(root, warnings) if root.is_dir() else None
    return _finish(name, root, videos, workbook, layout, warnings)


def _casme2_workbook(root: Path, warnings: list[str]) -> Path | None:
    """The CAS(ME)^2 workbook at `root`: the updated copy (`...final(Updated).xlsx`) over the
    first release, as SAMM-LV's latest release is chosen; a warning names the one not used."""
    found = sorted(
        root.glob(CASME2_WORKBOOK_GLOB), key=lambda p: ("updated" not in p.name.lower(), p.name)
    )
    if len(found) > 1:
        warnings.append(
            f"{root}: several CAS(ME)^2 workbooks; using {found[0].name}, not "
            f"{', '.join(p.name for p in found[1:])}"
        )
    return found[0] if found else None


# ---- SAMM-LV -------------------------------------------------------------------------------------


def _samm_frames_root(root: Path) -> Path | None:
    if not root.is_dir():
        return None
    for child in [root, *sorted(p for p in root.iterdir() if p.is_dir())]:
        if child.name.lower() == "samm_longvideos":
            return child
    return None


def _samm(root: Path, frames_root: Path, subsample: int, fps: float, name: str = "samm") -> Source:
    videos, warnings = [], []
    for entry in sorted(p for p in frames_root.iterdir() if p.is_dir()):
        match = _SAMM_VIDEO.match(entry.name)
        if match is None:
            warnings.append(f"{entry}: not named SSS_V; skipped")
            continue
        videos.append(VideoSpec(entry.name, match.group(1), entry, fps, subsample))
    workbook = None
    for folder in (root, frames_root.parent):
        found = sorted(folder.glob(SAMM_WORKBOOK_GLOB))
        if found:
            workbook = found[-1]  # the latest release: V3 over V2 over V1
            break
    return _finish(name, root, videos, workbook, "samm", warnings)


# ---- SMIC-E-long ---------------------------------------------------------------------------


def _smic(root: Path, found: dict[str, Path], subsample: int | None, fps: float | None,
          name: str = "smic") -> Source:
    modality = next(m for m in ("HS", "VIS", "NIR") if m in found)
    frames = found[modality]
    warnings = []
    if len(found) > 1:
        others = ", ".join(str(found[m]) for m in found if m != modality)
        warnings.append(f"{root}: several SMIC-E-long modalities; using {modality} ({frames}), not "
                        f"{others} (pass a modality's folder to choose)")
    videos, more = smic_videos(frames, modality, subsample or SMIC_SUBSAMPLE[modality],
                               fps or SMIC_FPS[modality])
    workbook = smic_workbook(root, frames, modality)
    return _finish(name, root, videos, workbook, f"smic-{modality}", warnings + more)


# ---- a folder of video files ----------------------------------------------------------------


def _video_folder(root: Path, subsample: int, subjects_csv, only: Path | None = None) -> Source:
    subjects: dict[str, str] = {}
    if subjects_csv is not None:
        import pandas as pd

        table = pd.read_csv(local_file(subjects_csv), dtype=str)
        if not {"video", "subject"} <= set(table.columns):
            raise SourceError(
                f"{subjects_csv}: needs columns 'video' and 'subject', has {list(table.columns)}"
            )
        subjects = dict(zip(table["video"].map(lambda v: Path(v).stem), table["subject"]))
    files = (
        [only]
        if only
        else sorted(
            p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES
        )
    )
    videos = []
    for path in files:
        subject = subjects.get(path.stem, path.parent.name)
        videos.append(VideoSpec(path.stem, subject, path, video_fps(path), subsample))
    return _finish("videos", root, videos, None, "videos", [])


# ---- one folder of frames ---------------------------------------------------------------------


def _frame_folder(folder: Path, subsample: int, fps: float) -> Source:
    """A single video given as its folder of numbered frames; subject = the parent folder."""
    video = VideoSpec(folder.name, folder.parent.name or "unknown", folder, fps, subsample)
    return _finish("frames", folder.parent, [video], None, "frames", [])


# ---- synthetic ---------------------------------------------------------------------------------


def _synth(root: Path, subsample: int | None) -> Source:
    meta = json.loads((root / "synth.json").read_text())
    config = meta.get("config", {})
    layout, fps = config.get("layout", "casme2"), float(config.get("fps", CASME2_FPS))
    if layout == "samm":
        default = SAMM_SUBSAMPLE if fps == SAMM_FPS else 1
        return _samm(root, root / "SAMM_longvideos", subsample or default, fps, "synth-samm")
    if layout == "smic":  # HS at its rate: subsampled by 4 as a real copy; else as recorded
        default = SMIC_SUBSAMPLE["HS"] if fps == SMIC_FPS["HS"] else 1
        return _smic(root, find_smic(root), subsample or default, fps, "synth-smic")
    return _casme2(root, root / "rawpic", "rawpic", subsample or 1, fps, "synth-casme2")


# ---- shared ------------------------------------------------------------------------------------


def _finish(name, root, videos, workbook, layout, warnings) -> Source:
    videos = sorted(videos, key=lambda v: (v.subject, v.video_id))
    seen: dict[str, Path] = {}
    for v in videos:
        if v.video_id in seen:
            raise SourceError(
                f"{root}: video id {v.video_id!r} appears twice: {seen[v.video_id]} and {v.path}"
            )
        seen[v.video_id] = v.path
    if not videos:
        raise SourceError(f"{root}: recognised as {name} ({layout}) but no video found in it")
    return Source(name, root, tuple(videos), workbook, layout, tuple(warnings))


__all__ = ["Source", "SourceError", "VideoSpec", "open_source", "FRAME_SUFFIXES"]
