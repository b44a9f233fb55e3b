"""Where a synthetic dataset's files go in the SMIC-E-long layout (spec/DATASETS.md; the layout
flowcore.sources_smic reads): the HS modality,
`SMIC-E_raw image/HS_long/SMIC-HS-E/HS/sNN/sNN_VV/imageNNNNNN.jpg` (1-based within the video)
and `SMIC-E_raw image/HS_long/SMIC-HS-E_annotation.xlsx`: a header row (`Subject, Filename,
OnsetF, OffsetF, FirstF, Emotion`), one row per micro-expression with onset and offset ABSOLUTE
(the video's first frame is frame `FirstF` of the long recording), then free-text rows, as the
release has them. Only micro-expressions are listed (SMIC annotates no macro-expression), so
`mespot synth --layout smic` renders micro-expressions only unless told otherwise.
"""

from __future__ import annotations

from pathlib import Path

from openpyxl import Workbook

SMIC_MODALITY = "HS"
SMIC_FRAMES = f"SMIC-E_raw image/{SMIC_MODALITY}_long/SMIC-{SMIC_MODALITY}-E/{SMIC_MODALITY}"
SMIC_WORKBOOK = f"SMIC-E_raw image/{SMIC_MODALITY}_long/SMIC-{SMIC_MODALITY}-E_annotation.xlsx"
SMIC_HEADER = ("Subject", "Filename", "OnsetF", "OffsetF", "FirstF", "Emotion")
SMIC_NOTES = (
    "Notes: OnsetF and OffsetF are frame numbers of the long recording; FirstF is its number of",
    "the video's first frame. Synthetic copy made by `mespot synth --layout smic`.",
)


def smic_names(subject_index: int, video_index: int) -> tuple[str, str, str]:
    """(subject 's01', video 's01_01', folder relative to the root) of one video."""
    subject = f"s{subject_index + 1:02d}"
    video = f"{subject}_{video_index + 1:02d}"
    return subject, video, f"{SMIC_FRAMES}/{subject}/{video}"


def first_frame(video: str) -> int:
    """The absolute number of a video's first frame (a fixed, distinct offset per video)."""
    subject, code = video[1:].split("_")
    return 1000 * int(code) + 37 * int(subject) + 1


def write_smic_workbook(root: Path, rows: list[dict]) -> Path:
    """The annotation workbook of the micro-expressions of `rows` (ground-truth rows, 1-based
    frames within each video); macro rows are not written (SMIC has none). Two free-text rows
    follow the table after a blank row."""
    workbook = Workbook()
    sheet = workbook.active
    sheet.title = "Sheet1"
    sheet.append(list(SMIC_HEADER))
    counter: dict[str, int] = {}
    for row in rows:
        if row["type"] != "me":
            continue
        counter[row["video"]] = counter.get(row["video"], 0) + 1
        first = first_frame(row["video"])
        name = f"{SMIC_MODALITY}_{row['video']}_{counter[row['video']]}"  # HS_s01_01_1
        sheet.append([int(row["subject"][1:]), name, row["onset"] + first - 1,
                      row["offset"] + first - 1, first, row["emotion"]])
    sheet.append([None])
    for line in SMIC_NOTES:
        sheet.append([line])
    path = root / SMIC_WORKBOOK
    path.parent.mkdir(parents=True, exist_ok=True)
    workbook.save(path)
    return path
