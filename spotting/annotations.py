"""Expression annotations (CAS(ME)^2 workbook, SAMM-LV workbook, plain CSV) -> one table.

The normalised table (`AnnotationTable.frame`, a pandas DataFrame) has one row per expression:

    subject      str   e.g. 's15', '006'
    video_id     str   the video folder name, e.g. '15_0101disgustingteeth', '006_1'
    expression   str   the expression's id in its source (e.g. 'anger1_12', '006_1_2')
    onset, apex, offset  int64  1-based frame numbers in the video's ORIGINAL numbering
                         (before any temporal subsampling); 0 means "not annotated"
    type         str   'me' (micro) or 'mae' (macro)
    au           str   the raw AU cell as text
    au_codes     tuple[AUCode, ...]  parsed codes (number, side, intensity)
    au_numbers   str   the parsed AU numbers joined by '+', e.g. '1+2'
    source_row   int   the row in the source (spreadsheet row number, or CSV line number)

Nothing is dropped or changed silently: every repaired or skipped row is listed in
`AnnotationTable.issues` with its reason. Missing frames stay 0 here and are filled (or the
expression skipped) when targets are built (spotting/windows.py, AUWGCN.md section 6), which
also lists what it did. Frame numbers are converted to feature rows in one place only:
`spotting.windows.frames_to_rows`.
"""

from __future__ import annotations

import numbers
import re
from collections import Counter
from pathlib import Path

import pandas as pd

from flowcore.errors import UserError
from flowcore.locations import local_file
from spotting.annotation_table import (CASME2_VIDEO_NAMES, COLUMNS, AnnotationTable, Issue,
                                       RowBuilder, _is_blank, issues_to_frame, normalise_type)
from spotting.reference_csv import is_reference_csv, read_reference_csv
from spotting.smic_annotations import find_smic_header, read_smic_workbook

# the table and its parts live in spotting.annotation_table; readers import them from here too
__all__ = ["CASME2_VIDEO_NAMES", "COLUMNS", "AnnotationTable", "Issue", "issues_to_frame",
           "normalise_type", "read_annotations", "read_source_annotations", "read_casme2_workbook",
           "read_samm_workbook", "read_smic_workbook", "read_csv_annotations",
           "read_reference_csv"]

SAMM_SHEET = "FACS_Movement_Only"
SAMM_HEADER = ("Subject", "Filename", "Onset", "Apex", "Offset", "Type", "Action Units")



def read_annotations(path: str | Path) -> AnnotationTable:
    """Read a CAS(ME)^2, SAMM-LV or SMIC-E-long workbook (.xlsx, detected from its sheets) or a
    plain CSV.
    A file that yields no usable row is a UserError saying how many rows were read and why
    each kind was skipped (before any work is done with it)."""
    try:
        path = local_file(path)  # a URL's object: its copy in the cache (flowcore/locations.py)
    except FileNotFoundError:
        raise UserError(f"annotation file not found: {path}") from None
    if not path.is_file():
        raise UserError(f"annotation file not found: {path}")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return read_csv_annotations(path)
    if suffix in (".xlsx", ".xlsm", ".xls"):
        try:
            sheets = pd.ExcelFile(path).sheet_names
        except Exception as err:  # a text file named .xlsx, a damaged workbook
            raise UserError(
                f"{path}: not a readable Excel workbook ({str(err).splitlines()[0]})"
            ) from None
        first_sheet = pd.read_excel(path, sheet_name=0, header=None)
        if find_smic_header(first_sheet) is not None:
            return read_smic_workbook(path)
        if SAMM_SHEET in sheets or _find_samm_header(first_sheet) is not None:
            return read_samm_workbook(path)
        return read_casme2_workbook(path)
    raise UserError(f"unknown annotation format {suffix!r} (expected .csv or .xlsx): {path}")



def read_source_annotations(source) -> AnnotationTable:
    """The annotations of a dataset copy opened by `flowcore.sources.open_source`, read from the
    workbook it found; UserError naming the copy when it has none, or the workbook when it cannot
    be read. Extraction never needs them."""
    if source.workbook is None:
        raise UserError(f"{source.root}: no annotation workbook found in this {source.name} copy")
    try:
        return read_annotations(source.workbook)
    except UserError:
        raise
    except Exception as err:
        raise UserError(f"{source.workbook}: unreadable annotation workbook ({err})") from err



# --- CAS(ME)^2 --------------------------------------------------------------------------------

_CODE_TEXT = re.compile(r"\d{1,4}(\.0+)?")  # '0101', '101', '101.0'


def _code4(cell) -> str | None:
    """A video-code cell (the number 101 or the text '0101') as 4 digits, else None."""
    if isinstance(cell, bool):
        return None
    if isinstance(cell, numbers.Real):
        return f"{int(cell):04d}" if float(cell).is_integer() and 0 < cell < 10000 else None
    text = str(cell).strip()
    return f"{int(float(text)):04d}" if _CODE_TEXT.fullmatch(text) else None


def _video_codes(naming2: pd.DataFrame) -> dict[str, str]:
    """Sheet 3 ("naming rule2") -> {video name (lower case): 4-digit code}.

    Copies differ in column order (the public MEGC copy: `101 | disgust1`; others
    `disgust1 | 0101`), so each row's code is told from its name by content, never by position:
    the code is the cell holding a number or up to 4 digits, the name the other one."""
    codes: dict[str, str] = {}
    for cells in naming2.itertuples(index=False):
        cells = [c for c in cells if not _is_blank(c)]
        found = [_code4(c) for c in cells]
        code = [c for c in found if c is not None]
        names = [str(cell).strip() for cell, c in zip(cells, found) if c is None]
        if len(code) == 1 and len(names) == 1:
            codes[names[0].lower()] = code[0]
    return codes


def read_casme2_workbook(path: str | Path) -> AnnotationTable:
    """Read `CAS(ME)^2code_final.xlsx`: three sheets by position, no header rows.

    Sheet 1: participant index, expression name `<video>_<n>`, onset, apex, offset, AUs,
    emotion, type, self-reported emotion. Sheet 2: `NN | sNN | index`. Sheet 3: video name and
    code in either order (`101 | disgust1` or `disgust1 | 0101`; the code as text or number).
    The video id is `NN_<code><name>` (the rawpic folder). UserError when no row is usable.
    """
    path = local_file(path)
    sheets = list(pd.read_excel(path, sheet_name=None, header=None).values())
    if len(sheets) < 3:
        raise UserError(f"{path}: a CAS(ME)^2 workbook has three sheets, found {len(sheets)}")
    main, naming1, naming2 = sheets[:3]
    subjects: dict[int, str] = {}
    for cells in naming1.itertuples(index=False):
        cells = [c for c in cells if not _is_blank(c)]
        names = [str(c).strip() for c in cells if re.fullmatch(r"s\d+", str(c).strip(), re.I)]
        numbers = [c for c in cells if re.fullmatch(r"\d+(\.0+)?", str(c).strip())]
        if names and numbers:
            subjects[int(float(numbers[-1]))] = names[0].lower()
    codes = _video_codes(naming2)
    if not subjects or not codes:
        raise UserError(f"{path}: sheets 2 and 3 (naming rules) are empty or unreadable")

    build = RowBuilder("casme2", str(path))
    for i, cells in enumerate(main.itertuples(index=False)):
        cells = list(cells) + [None] * 9
        source_row = i + 1
        participant, name = cells[0], str(cells[1]).strip()
        if _is_blank(cells[0]) and _is_blank(cells[1]):
            continue
        try:
            subject = subjects[int(float(participant))]
        except (KeyError, ValueError, TypeError):
            build.skip(source_row, participant, "", name, "unknown participant index")
            continue
        video_name = name.rsplit("_", 1)[0].lower()
        code = codes.get(video_name)
        if code is None:
            build.skip(source_row, subject, "", name, "unknown video name", f"{video_name!r}")
            continue
        if code not in CASME2_VIDEO_NAMES:
            build.skip(
                source_row, subject, "", name, "unknown video code", f"{video_name!r} -> {code}"
            )
            continue
        video_id = f"{subject[1:]}_{code}{CASME2_VIDEO_NAMES[code]}"
        row = dict(source_row=source_row, subject=subject, video_id=video_id, expression=name)
        build.add(row, cells[2], cells[3], cells[4], cells[7], cells[5])
    named = ", ".join(f"{n} {c}" for n, c in sorted(codes.items(), key=lambda kv: kv[1]))
    return build.table(
        hints={
            "unknown video name": f"sheet 3 maps {named}; sheet 1 names e.g. "
            f"{build.example('unknown video name')}",
            "unknown video code": f"known codes: {', '.join(CASME2_VIDEO_NAMES)}",
            "unknown participant index": f"sheet 2 maps participant indices {sorted(subjects)}",
        }
    )


# --- SAMM-LV ----------------------------------------------------------------------------------


def _find_samm_header(sheet: pd.DataFrame) -> int | None:
    for i, cells in enumerate(sheet.head(40).itertuples(index=False)):
        text = {str(c).strip() for c in cells if not _is_blank(c)}
        if {"Subject", "Filename"} <= text:
            return i
    return None


def read_samm_workbook(path: str | Path) -> AnnotationTable:
    """Read `SAMM_LongVideos_V*_Release.xlsx`, sheet `FACS_Movement_Only` (preamble rows, then a
    header row with Subject, Filename, ..., Onset, Apex, Offset, ..., Type, Action Units)."""
    path = local_file(path)
    book = pd.ExcelFile(path)
    sheet_name = SAMM_SHEET if SAMM_SHEET in book.sheet_names else book.sheet_names[0]
    sheet = pd.read_excel(book, sheet_name=sheet_name, header=None)
    header_at = _find_samm_header(sheet)
    if header_at is None:
        raise UserError(
            f"{path}: no header row with 'Subject' and 'Filename' in sheet {sheet_name!r}"
        )
    header = [str(c).strip() for c in sheet.iloc[header_at]]
    missing = [h for h in SAMM_HEADER if h not in header]
    if missing:
        raise UserError(f"{path}: SAMM-LV header lacks {missing}; found {header}")
    col = {h: header.index(h) for h in SAMM_HEADER}

    build = RowBuilder("samm-lv", str(path))
    for i in range(header_at + 1, len(sheet)):
        cells = list(sheet.iloc[i])
        source_row = i + 1  # spreadsheet row number
        filename = "" if _is_blank(cells[col["Filename"]]) else str(cells[col["Filename"]]).strip()
        if not filename:
            if any(not _is_blank(c) for c in cells):
                build.skip(source_row, cells[col["Subject"]], "", "", "no filename")
            continue
        parts = filename.split("_")
        video_id = "_".join(parts[:2])
        subject_cell = cells[col["Subject"]]
        if _is_blank(subject_cell):
            subject = parts[0].zfill(3)
        else:
            text = str(subject_cell).strip()
            subject = f"{int(float(text)):03d}" if re.fullmatch(r"\d+(\.0+)?", text) else text
        row = dict(source_row=source_row, subject=subject, video_id=video_id, expression=filename)
        build.add(
            row,
            cells[col["Onset"]],
            cells[col["Apex"]],
            cells[col["Offset"]],
            cells[col["Type"]],
            cells[col["Action Units"]],
        )
    return build.table()


# --- plain CSV ----------------------------------------------------------------------------------

CSV_COLUMNS = ("subject", "video", "onset", "apex", "offset", "type", "au")


def read_csv_annotations(path: str | Path) -> AnnotationTable:
    """Read a CSV with columns subject, video, onset, apex, offset, type, au (others ignored;
    an `expression` or `id` column, when present, names the expressions), or the reference's
    cross.csv (spotting/reference_csv.py), told by its columns."""
    path = local_file(path)
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    frame.columns = [c.strip().lower() for c in frame.columns]
    if is_reference_csv(frame.columns):
        return read_reference_csv(path)
    missing = [c for c in CSV_COLUMNS if c not in frame.columns]
    if missing:
        raise UserError(f"{path}: missing column(s) {missing}; expected {list(CSV_COLUMNS)}")
    id_col = next((c for c in ("expression", "id") if c in frame.columns), None)
    build = RowBuilder("csv", str(path))
    counts: Counter = Counter()
    for i, r in enumerate(frame.itertuples(index=False)):
        r = r._asdict()
        video = r["video"].strip()
        counts[video] += 1
        expression = r[id_col].strip() if id_col else f"{video}_{counts[video]}"
        row = dict(
            source_row=i + 2, subject=r["subject"].strip(), video_id=video, expression=expression
        )
        build.add(row, r["onset"], r["apex"], r["offset"], r["type"], r["au"])
    return build.table()
