"""Where a synthetic dataset's files go: the CAS(ME)^2, SAMM-LV or SMIC-E-long (HS) layout of
DATASETS.md (SMIC: mespot/synth/layouts_smic.py).

CAS(ME)^2: `rawpic/sNN/NN_<code><name>/imgNNN.jpg` (1-based, >= 3 digits) and the three-sheet
workbook `CAS(ME)^2code_final.xlsx` without header rows. SAMM-LV:
`SAMM_longvideos/SSS_V/SSS_V_NNNN.jpg` (1-based, >= 4 digits) and
`SAMM_LongVideos_V1_Release.xlsx` (sheet `FACS_Movement_Only`, 9 preamble rows, header on row 10).
Both layouts also get a plain `ground_truth.csv`. Every frame number written is 1-based.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from openpyxl import Workbook

from mespot.synth.layouts_smic import smic_names

CASME2_SUBJECTS = (
    15,
    16,
    19,
    20,
    21,
    22,
    23,
    24,
    25,
    26,
    27,
    29,
    30,
    31,
    32,
    33,
    34,
    35,
    36,
    37,
    38,
    40,
)
# (code, file name, name in the workbook's "naming rule2" sheet, the emotion it was chosen to
# elicit)
CASME2_VIDEOS = (
    ("0101", "disgustingteeth", "disgust1", "disgust"),
    ("0102", "eatingworms", "disgust2", "disgust"),
    ("0401", "girlcrashing", "anger1", "anger"),
    ("0402", "beatingpregnantwoman", "anger2", "anger"),
    ("0502", "funnyerrors", "happy1", "happiness"),
    ("0503", "unnyfarting", "happy2", "happiness"),
    ("0505", "funnyinnovations", "happy3", "happiness"),
    ("0507", "climbingthewall", "happy4", "happiness"),
    ("0508", "funnydunkey", "happy5", "happiness"),
)
CASME2_WORKBOOK = "CAS(ME)^2code_final.xlsx"
SAMM_WORKBOOK = "SAMM_LongVideos_V1_Release.xlsx"
SAMM_SHEET = "FACS_Movement_Only"
SAMM_HEADER = (
    "Subject",
    "Filename",
    "Inducement Code",
    "Onset",
    "Apex",
    "Offset",
    "Duration",
    "Type",
    "Action Units",
    "Notes",
)
SAMM_PREAMBLE_ROWS = 9
GROUND_TRUTH_COLUMNS = (
    "subject",
    "video",
    "onset",
    "apex",
    "offset",
    "type",
    "au",
    "emotion",
    "amplitude_px",
    "fps",
)


@dataclass(frozen=True)
class VideoSlot:
    """Names and paths of one video in the chosen layout."""

    subject_index: int  # 0-based
    video_index: int  # 0-based within the subject
    subject: str  # "s15" / "006"
    video: str  # folder name: "15_0101disgustingteeth" / "006_1"
    folder: str  # relative to the dataset root
    frame_pattern: str  # format string with one integer field, the 1-based frame number
    label: str  # CAS(ME)^2 workbook name of the video ("disgust1"); SAMM: the video number
    elicited: str  # emotion the video was chosen to elicit (CAS(ME)^2), or ""


def casme2_subject_number(subject_index: int) -> int:
    """CAS(ME)^2 subject ids in order; past the real 22, continue from 41."""
    if subject_index < len(CASME2_SUBJECTS):
        return CASME2_SUBJECTS[subject_index]
    return 41 + subject_index - len(CASME2_SUBJECTS)


def video_slot(layout: str, subject_index: int, video_index: int) -> VideoSlot:
    if layout == "casme2":
        number = casme2_subject_number(subject_index)
        code, name, label, elicited = CASME2_VIDEOS[video_index]
        video = f"{number:02d}_{code}{name}"
        return VideoSlot(
            subject_index,
            video_index,
            f"s{number:02d}",
            video,
            f"rawpic/s{number:02d}/{video}",
            "img{:03d}.jpg",
            label,
            elicited,
        )
    if layout == "smic":
        subject, video, folder = smic_names(subject_index, video_index)
        return VideoSlot(subject_index, video_index, subject, video, folder, "image{:06d}.jpg",
                         str(video_index + 1), "")
    subject = f"{6 + subject_index:03d}"
    video = f"{subject}_{video_index + 1}"
    return VideoSlot(
        subject_index,
        video_index,
        subject,
        video,
        f"SAMM_longvideos/{video}",
        video + "_{:04d}.jpg",
        str(video_index + 1),
        "",
    )


def ground_truth_rows(slot: VideoSlot, expressions, fps: float) -> list[dict]:
    """One row per expression, 1-based frame numbers, sorted by onset."""
    return [
        {
            "subject": slot.subject,
            "video": slot.video,
            "onset": e.onset + 1,
            "apex": e.apex + 1,
            "offset": e.offset + 1,
            "type": e.kind,
            "au": e.aus,
            "emotion": e.emotion,
            "amplitude_px": round(e.amplitude_px, 4),
            "fps": fps,
        }
        for e in sorted(expressions, key=lambda e: e.onset)
    ]


def write_ground_truth_csv(root: Path, rows: list[dict]) -> Path:
    path = root / "ground_truth.csv"
    pd.DataFrame(rows, columns=list(GROUND_TRUTH_COLUMNS)).to_csv(path, index=False)
    return path


def _cas_au_cell(aus: str):
    """CAS(ME)^2 stores a single plain AU as a number (4) and combinations as text ('4+10')."""
    return int(aus) if aus.isdigit() else aus


def write_casme2_workbook(root: Path, rows: list[dict], n_subjects: int) -> Path:
    """The three sheets of DATASETS.md, no header rows; sheet 3 as in the public MEGC copy
    (code first, as a number: `101 | disgust1`)."""
    workbook = Workbook()
    sheet = workbook.active
    sheet.title = "CASFEcode_final"
    participant = {f"s{casme2_subject_number(i):02d}": i + 1 for i in range(n_subjects)}
    label_of = {}
    for subject_index in range(n_subjects):
        for video_index in range(len(CASME2_VIDEOS)):
            slot = video_slot("casme2", subject_index, video_index)
            label_of[slot.video] = (slot.label, slot.elicited)
    counter: dict[str, int] = {}
    for row in rows:
        label, elicited = label_of[row["video"]]
        counter[row["video"]] = counter.get(row["video"], 0) + 1
        sheet.append(
            [
                participant[row["subject"]],
                f"{label}_{counter[row['video']]}",
                row["onset"],
                row["apex"],
                row["offset"],
                _cas_au_cell(row["au"]),
                row["emotion"],
                "micro-expression" if row["type"] == "me" else "macro-expression",
                elicited,
            ]
        )
    rule1 = workbook.create_sheet("naming rule1")
    for i in range(n_subjects):
        number = casme2_subject_number(i)
        rule1.append([number, f"s{number:02d}", i + 1])
    rule2 = workbook.create_sheet("naming rule2")
    for code, _name, label, _elicited in CASME2_VIDEOS:
        # the public MEGC copy's order: the number 101, then the name
        rule2.append([int(code), label])
    path = root / CASME2_WORKBOOK
    workbook.save(path)
    return path


def _samm_au_cell(aus: str, amplitude_px: float, kind: str) -> str:
    """SAMM-LV writes intensities as letters after the AU number ('12B'); derive one from size."""
    low, high = (0.3, 1.5) if kind == "me" else (2.0, 8.0)
    level = min(max((amplitude_px - low) / (high - low), 0.0), 0.999)
    letter = "ABCDE"[int(level * 5)]
    return "+".join(token + letter for token in aus.split("+"))


def write_samm_workbook(root: Path, rows: list[dict]) -> Path:
    """Sheet FACS_Movement_Only: 9 preamble rows, header on row 10, data from row 11."""
    workbook = Workbook()
    sheet = workbook.active
    sheet.title = SAMM_SHEET
    preamble = [
        "SAMM Long Videos - synthetic copy made by `mespot synth`",
        "Frames are 1-based image numbers at the recording frame rate.",
        "",
        "",
        "Type: Macro or Micro - 1/2",
        "",
        "",
        "",
        "",
    ]
    for line in preamble[:SAMM_PREAMBLE_ROWS]:
        sheet.append([line] if line else [None])
    sheet.append(list(SAMM_HEADER))
    counter: dict[str, int] = {}
    for row in rows:
        counter[row["video"]] = counter.get(row["video"], 0) + 1
        sheet.append(
            [
                row["subject"],
                f"{row['video']}_{counter[row['video']]}",
                int(row["video"].split("_")[1]),
                row["onset"],
                row["apex"],
                row["offset"],
                row["offset"] - row["onset"] + 1,
                "Micro - 1/2" if row["type"] == "me" else "Macro",
                _samm_au_cell(row["au"], row["amplitude_px"], row["type"]),
                None,
            ]
        )
    path = root / SAMM_WORKBOOK
    workbook.save(path)
    return path
