"""The AUW-GCN repository's pooled annotation file (`info_csv/cross.csv`, spec/DATASETS.md) read
as is into the normalised table, its ids in our namespaced form (spotting/datasets.py):

    columns  subject, video_name, start_frame, apex_frame, end_frame, type_idx, au
    ids      casme_015 / casme_015_0401  ->  casme_s15 / casme_15_0401girlcrashing
             samm_006 / samm_006_1       ->  unchanged
             smic_s01 / smic_s01_01      ->  unchanged
    type_idx 1 macro ('mae'), 2 micro ('me')

Frames become our 1-based numbers in each video's original numbering: CAS(ME)^2 rows keep the
workbook's numbers; SAMM-LV rows are at 25 fps (1 frame in 8 kept, numbers divided by 8), so
frame f is original frame 8 f + 1 (the kept frame it names, exact to the kept frame); SMIC rows
are 0-based positions in the video (FirstF subtracted), so f becomes f + 1. These conversions
follow the spec's description of the file; they were not checked against the reference's code.
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from flowcore.errors import UserError
from flowcore.locations import local_file
from spotting.annotation_table import CASME2_VIDEO_NAMES, AnnotationTable, RowBuilder, _frame_cell

REFERENCE_COLUMNS = ("subject", "video_name", "start_frame", "apex_frame", "end_frame",
                     "type_idx", "au")
SAMM_STEP = 8  # the reference's samm_25 configuration keeps 1 frame in 8
_CASME_VIDEO = re.compile(r"^casme_(\d+)_(\d{4})$")
_TYPES = {"1": "mae", "2": "me"}


def is_reference_csv(columns) -> bool:
    return {"video_name", "type_idx"} <= {str(c).strip().lower() for c in columns}


def _our_ids(subject: str, video: str, casme_names: dict[str, str]) -> tuple[str, str] | None:
    """(subject, video) in our namespaced form, None when the video id is not understood."""
    if subject.startswith("casme_"):
        match = _CASME_VIDEO.match(video)
        if match is None or match.group(2) not in casme_names:
            return None
        number = int(match.group(1))
        return f"casme_s{number:02d}", f"casme_{number:02d}_{match.group(2)}" + casme_names[
            match.group(2)]
    if subject.startswith(("samm_", "smic_")) and video.startswith(subject + "_"):
        return subject, video
    return None


def _our_frame(cell, dataset: str):
    """One frame cell in our numbering (see the module docstring); the cell itself when it is
    not a number (the builder reports it)."""
    value = _frame_cell(cell)
    if value is None or value < 0:
        return cell
    if dataset == "samm":
        return SAMM_STEP * value + 1
    return value + 1 if dataset == "smic" else value


def read_reference_csv(path: str | Path) -> AnnotationTable:
    """Read the reference's cross.csv (see the module docstring); dataset 'cross'."""
    path = local_file(path)
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    frame.columns = [c.strip().lower() for c in frame.columns]
    missing = [c for c in REFERENCE_COLUMNS if c not in frame.columns]
    if missing:
        raise UserError(f"{path}: missing column(s) {missing} of the reference's cross.csv; "
                        f"expected {list(REFERENCE_COLUMNS)}")
    build = RowBuilder("cross", str(path))
    counts: dict[str, int] = {}
    for i, r in enumerate(frame.itertuples(index=False)):
        r = r._asdict()
        subject, video = r["subject"].strip(), r["video_name"].strip()
        ids = _our_ids(subject, video, CASME2_VIDEO_NAMES)
        if ids is None:
            build.skip(i + 2, subject, video, "", "unknown dataset or video id", f"{video!r}")
            continue
        counts[video] = counts.get(video, 0) + 1
        dataset = subject.split("_")[0]
        row = dict(source_row=i + 2, subject=ids[0], video_id=ids[1],
                   expression=f"{video}_{counts[video]}")
        frames = [_our_frame(r[c], dataset) for c in ("start_frame", "apex_frame", "end_frame")]
        build.add(row, *frames, _TYPES.get(r["type_idx"].strip(), r["type_idx"]), r["au"])
    return build.table()
