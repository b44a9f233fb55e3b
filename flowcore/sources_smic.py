"""SMIC-E-long as distributed (spec/DATASETS.md): where a copy keeps the frames of one modality
(HS, VIS or NIR) and its annotation workbook. flowcore.sources.open_source calls this.

Layout, known from a public loader and checked against the spec only (no real copy here):

    <root>/SMIC-E_raw image/HS_long/SMIC-HS-E/HS/<subject>/<video>/<frames>
    <root>/SMIC-E_raw image/HS_long/SMIC-HS-E_annotation.xlsx     (or beside HS/, or at <root>)

likewise `VIS_long/SMIC-VIS-E/VIS` and `NIR_long/SMIC-NIR-E/NIR`. `<root>` may be any folder on
that path down to the modality folder itself (`.../SMIC-HS-E/HS`). Subject folders are `sNN`
(`s1`, `s01`: normalised to `s01`); a video folder's id is `sNN_<code>` from its name's first two
underscore-separated parts (`s01_01` stays `s01_01`; a folder `01` under `s01` becomes
`s01_01`). Video folders directly under the modality folder, named `sNN_<code>...`, are accepted
too. Frames are numbered by the trailing digits of their file names, as every frame folder.

Frame rates: HS 100 fps, VIS and NIR 25 fps. HS is subsampled by 4 by default (to 25 fps, as
SAMM-LV by 8), so the three modalities and SAMM-LV train at one rate.
"""

from __future__ import annotations

import re
from pathlib import Path

from flowcore.video import VideoSpec

SMIC_MODALITIES = ("HS", "VIS", "NIR")
SMIC_FPS = {"HS": 100.0, "VIS": 25.0, "NIR": 25.0}
SMIC_SUBSAMPLE = {"HS": 4, "VIS": 1, "NIR": 1}  # to 25 fps
SMIC_TOP = "SMIC-E_raw image"
_SUBJECT = re.compile(r"^s(\d+)$", re.IGNORECASE)
_VIDEO = re.compile(r"^s(\d+)_([A-Za-z0-9]+)", re.IGNORECASE)


def smic_workbook_name(modality: str) -> str:
    return f"SMIC-{modality}-E_annotation.xlsx"


def smic_frames_folder(modality: str) -> str:
    """The modality's frame folder relative to a copy's root."""
    return f"{SMIC_TOP}/{modality}_long/SMIC-{modality}-E/{modality}"


def find_smic(root: Path) -> dict[str, Path]:
    """{modality: its frame folder} of the SMIC-E-long copy at `root` (empty when none)."""
    if not root.is_dir():
        return {}
    name = root.name.upper()
    if name in SMIC_MODALITIES and root.parent.name.upper() == f"SMIC-{name}-E":
        return {name: root}
    found = {}
    for m in SMIC_MODALITIES:
        for candidate in (root / smic_frames_folder(m), root / f"{m}_long/SMIC-{m}-E/{m}",
                          root / f"SMIC-{m}-E/{m}", root / m):
            if candidate.is_dir() and candidate.parent.name.upper() == f"SMIC-{m}-E":
                found[m] = candidate
                break
    return found


def smic_workbook(root: Path, frames: Path, modality: str) -> Path | None:
    """The modality's workbook: beside its frame folder, one or two folders up, or at `root`."""
    for folder in (frames.parent, frames.parent.parent, root):
        path = folder / smic_workbook_name(modality)
        if path.is_file():
            return path
    return None


def subject_id(text: str) -> str | None:
    """'s1', 'S01', '1', 1 -> 's01'; None when not a subject."""
    text = str(text).strip()
    if re.fullmatch(r"\d+(\.0+)?", text):
        return f"s{int(float(text)):02d}"
    match = _SUBJECT.match(text)
    return f"s{int(match.group(1)):02d}" if match else None


def video_id(name: str, subject: str | None = None) -> str | None:
    """A video folder's (or workbook file name's) id `sNN_<code>`: from the first part naming a
    subject and the part after it; a bare `<code>` under subject folder `subject`."""
    parts = name.split("_")
    for i, part in enumerate(parts[:-1]):
        found = subject_id(part) if _SUBJECT.match(part) else None
        if found:
            return f"{found}_{parts[i + 1]}"
    if subject and re.fullmatch(r"[A-Za-z0-9]+", name):
        return f"{subject}_{name}"
    return None


def smic_videos(frames: Path, modality: str, subsample: int,
                fps: float) -> tuple[list[VideoSpec], list[str]]:
    """(videos, warnings) of one modality's frame folder."""
    videos, warnings = [], []
    for entry in sorted(p for p in frames.iterdir() if p.is_dir()):
        subject = subject_id(entry.name) if _SUBJECT.match(entry.name) else None
        if subject is None:  # a video folder directly under the modality folder
            vid = video_id(entry.name)
            if vid is None:
                warnings.append(f"{entry}: neither a subject folder sNN nor a video sNN_<code>; "
                                f"skipped")
                continue
            videos.append(VideoSpec(vid, vid.split("_")[0], entry, fps, subsample))
            continue
        for folder in sorted(p for p in entry.iterdir() if p.is_dir()):
            vid = video_id(folder.name, subject)
            if vid is None:
                warnings.append(f"{folder}: not named sNN_<code> or <code>; skipped")
                continue
            if not vid.startswith(subject + "_"):
                warnings.append(f"{folder}: filed under {entry.name} but named for "
                                f"{vid.split('_')[0]}; using {vid.split('_')[0]}")
            videos.append(VideoSpec(vid, vid.split("_")[0], folder, fps, subsample))
    return videos, warnings
