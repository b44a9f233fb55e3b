"""The SMIC-E-long annotation workbook (`SMIC-HS-E_annotation.xlsx`, likewise VIS and NIR) -> the
normalised table of spotting.annotations (checked against spec/DATASETS.md only: no real copy).

Columns found by header name: `Subject`, `Filename`, `OnsetF`, `OffsetF`, `FirstF`, `Emotion`
(others ignored). Onset and offset are absolute frame numbers of the long recording; `FirstF` is
the absolute number of the video's first frame. Our convention (one for every dataset): 1-based
numbers in the video's own numbering, so onset = OnsetF - FirstF + 1 (the video's first frame
is 1). No apex column: apex stays 0 ("not annotated") and is filled when targets are built
(AUWGCN.md section 6). Every row is a micro-expression. The video id comes from `Filename` as
flowcore.sources_smic names the video folders (`s01_01`). Rows of free text after the table are
reported (`text row`, skipped), never read as expressions.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from flowcore.errors import UserError
from flowcore.locations import local_file
from flowcore.sources_smic import subject_id, video_id
from spotting.annotation_table import AnnotationTable, RowBuilder, _frame_cell, _is_blank

SMIC_HEADER = ("Subject", "Filename", "OnsetF", "OffsetF", "FirstF")


def find_smic_header(sheet: pd.DataFrame) -> int | None:
    """The row index of the header holding every column of SMIC_HEADER, else None."""
    for i, cells in enumerate(sheet.head(40).itertuples(index=False)):
        text = {str(c).strip() for c in cells if not _is_blank(c)}
        if set(SMIC_HEADER) <= text:
            return i
    return None


def read_smic_workbook(path: str | Path) -> AnnotationTable:
    """Read one modality's SMIC-E-long workbook (first sheet holding the header). UserError when
    no row is usable, with the count per reason."""
    path = local_file(path)
    book = pd.ExcelFile(path)
    for name in book.sheet_names:
        sheet = pd.read_excel(book, sheet_name=name, header=None)
        header_at = find_smic_header(sheet)
        if header_at is not None:
            break
    else:
        raise UserError(f"{path}: no header row with {', '.join(SMIC_HEADER)} in any sheet")
    header = [str(c).strip() for c in sheet.iloc[header_at]]
    col = {h: header.index(h) for h in SMIC_HEADER}
    build = RowBuilder("smic", str(path))
    for i in range(header_at + 1, len(sheet)):
        cells = list(sheet.iloc[i])
        if all(_is_blank(c) for c in cells):
            continue
        _read_row(build, i + 1, cells, col)
    return build.table(hints={"text row": "free text after the table"})


def _read_row(build: RowBuilder, source_row: int, cells: list, col: dict[str, int]) -> None:
    """One spreadsheet row (1-based `source_row`) into `build`: an expression, or a skip."""
    frames = {h: _frame_cell(cells[col[h]]) for h in ("OnsetF", "OffsetF", "FirstF")}
    filename = "" if _is_blank(cells[col["Filename"]]) else str(cells[col["Filename"]]).strip()
    subject = subject_id(cells[col["Subject"]]) if not _is_blank(cells[col["Subject"]]) else None
    if all(v is None for v in frames.values()):
        text = " ".join(str(c).strip() for c in cells if not _is_blank(c))
        build.skip(source_row, "", "", "", "text row", text[:60])
        return
    vid = video_id(filename, subject)
    if vid is None:
        build.skip(source_row, subject or "", "", filename, "unreadable Filename",
                   f"{filename!r}: expected <...>_sNN_<code>")
        return
    subject = subject or vid.split("_")[0]
    first = frames["FirstF"]
    row = dict(source_row=source_row, subject=subject, video_id=vid, expression=filename)
    if first is None or first < 1:
        build.skip(source_row, subject, vid, filename, "unreadable FirstF",
                   f"{cells[col['FirstF']]!r}")
        return
    onset, offset = (None if frames[h] is None else frames[h] - first + 1
                     for h in ("OnsetF", "OffsetF"))
    build.add(row, "" if onset is None else onset, "", "" if offset is None else offset,
              "micro", "")
