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

import math
import numbers
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from flowcore.errors import UserError
from spotting.au_codes import parse_au_string

COLUMNS = (
    "subject", "video_id", "expression", "onset", "apex", "offset", "type", "au", "au_codes",
    "au_numbers", "source_row",
)

# CAS(ME)^2 video codes -> the name part of the video folder (DATASETS.md; 'unny' sic).
CASME2_VIDEO_NAMES = {
    "0101": "disgustingteeth",
    "0102": "eatingworms",
    "0401": "girlcrashing",
    "0402": "beatingpregnantwoman",
    "0502": "funnyerrors",
    "0503": "unnyfarting",
    "0505": "funnyinnovations",
    "0507": "climbingthewall",
    "0508": "funnydunkey",
}
SAMM_SHEET = "FACS_Movement_Only"
SAMM_HEADER = ("Subject", "Filename", "Onset", "Apex", "Offset", "Type", "Action Units")


@dataclass(frozen=True)
class Issue:
    """One repaired or skipped annotation row: where it came from, why, and what was done."""

    source_row: int
    subject: str
    video_id: str
    expression: str
    reason: str
    action: str  # 'repaired', 'skipped' or 'kept' (kept as is, reported)
    detail: str = ""

    def as_line(self) -> str:
        where = f"row {self.source_row}" if self.source_row >= 0 else "-"
        what = f"{self.video_id} {self.expression}".strip()
        extra = f" ({self.detail})" if self.detail else ""
        return f"{where}: {what}: {self.reason} -> {self.action}{extra}"


@dataclass(frozen=True)
class AnnotationTable:
    """Normalised annotations (`frame`, columns as in the module docstring) and the `issues`
    met while reading them; `dataset` is 'casme2', 'samm-lv', 'smic', 'csv' or 'cross'."""

    frame: pd.DataFrame
    issues: tuple[Issue, ...]
    dataset: str
    source: str

    def summary(self) -> str:
        """A few readable lines: counts per type and a count per issue reason."""
        counts = self.frame["type"].value_counts()
        lines = [
            f"{len(self.frame)} expressions ({counts.get('mae', 0)} macro, {counts.get('me', 0)} "
            f"micro) in {self.frame['video_id'].nunique()} videos of "
            f"{self.frame['subject'].nunique()} subjects from {self.source}"
        ]
        reasons = Counter((i.reason.split(":")[0], i.action) for i in self.issues)
        for (reason, action), n in sorted(reasons.items()):
            lines.append(f"  {n:4d} x {reason} -> {action}")
        return "\n".join(lines)

    def issues_frame(self) -> pd.DataFrame:
        return issues_to_frame(self.issues)


def issues_to_frame(issues) -> pd.DataFrame:
    """Issues as a DataFrame (for CSV files in run folders)."""
    cols = ["source_row", "subject", "video_id", "expression", "reason", "action", "detail"]
    return pd.DataFrame([[getattr(i, c) for c in cols] for i in issues], columns=cols)


def read_annotations(path: str | Path) -> AnnotationTable:
    """Read a CAS(ME)^2, SAMM-LV or SMIC-E-long workbook (.xlsx, detected from its sheets) or a
    plain CSV.
    A file that yields no usable row is a UserError saying how many rows were read and why
    each kind was skipped (before any work is done with it)."""
    path = Path(path)
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
        from spotting.smic_annotations import find_smic_header, read_smic_workbook  # (cycle)

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

# --- cells ------------------------------------------------------------------------------------


def _is_blank(cell) -> bool:
    return cell is None or (isinstance(cell, float) and math.isnan(cell)) or str(cell).strip() == ""


def _frame_cell(cell) -> float | None:
    """A frame-number cell as a float (None when blank or not a number)."""
    if _is_blank(cell):
        return None
    try:
        return float(str(cell).strip())
    except ValueError:
        return None


def normalise_type(cell) -> str | None:
    """'me' / 'mae' from 'micro-expression', 'Micro - 1/2', 'Macro', 'me', 'MaE', ... (else
    None)."""
    text = str(cell).strip().lower()
    if text in ("me", "micro") or text.startswith("micro"):
        return "me"
    if text in ("mae", "macro") or text.startswith("macro"):
        return "mae"
    return None


class _Builder:
    """Collects rows and issues; applies the shared frame and order repairs."""

    def __init__(self, dataset: str, source: str):
        self.dataset, self.source = dataset, source
        self.rows: list[dict] = []
        self.issues: list[Issue] = []
        self.seen = 0  # expression rows read (usable or not)

    def issue(self, row: dict, reason: str, action: str, detail: str = "") -> None:
        self.issues.append(
            Issue(row["source_row"], row["subject"], row["video_id"], row["expression"], reason,
                  action, detail)
        )

    def skip(self, source_row, subject, video_id, expression, reason, detail="") -> None:
        self.seen += 1
        self.issues.append(Issue(source_row, str(subject), str(video_id), str(expression), reason,
                                 "skipped", detail))

    def add(self, row: dict, onset, apex, offset, type_cell, au_cell) -> None:
        """Add one expression; `row` holds source_row, subject, video_id, expression."""
        self.seen += 1
        kind = normalise_type(type_cell)
        if kind is None:
            self.issue(row, "unknown type", "skipped", f"type {type_cell!r}")
            return
        frames = {}
        for name, cell in (("onset", onset), ("apex", apex), ("offset", offset)):
            value = _frame_cell(cell)
            if value is None:
                if not _is_blank(cell):
                    self.issue(row, f"unreadable {name}", "skipped", f"{cell!r}")
                    return
                self.issue(row, f"missing {name}", "repaired", "left as 0, filled at targets")
                frames[name] = 0
                continue
            if value < 0:
                self.issue(row, f"{name} {value:g} (not annotated)", "repaired", "set to 0")
                frames[name] = 0
                continue
            if not value.is_integer():
                self.issue(row, f"fractional {name}", "repaired",
                           f"{value:g} rounded to {int(math.floor(value + 0.5))}")
            frames[name] = int(math.floor(value + 0.5))
            if frames[name] == 0:
                self.issue(row, f"missing {name}", "repaired", "0, filled at targets")
        s, a, e = frames["onset"], frames["apex"], frames["offset"]
        if s and a and s > a:
            self.issue(row, "onset after apex", "repaired", f"onset {s} > apex {a}: apex set to 0")
            a = 0
        if e and a and e < a:
            self.issue(row, "offset before apex", "repaired",
                       f"offset {e} < apex {a}: offset set to 0")
            e = 0
        if e and s and e < s:
            self.issue(
                row, "offset before onset", "repaired", f"offset {e} < onset {s}: offset set to 0"
            )
            e = 0
        parsed = parse_au_string(au_cell)
        if parsed.dropped:
            self.issue(
                row,
                "unparseable AU token",
                "kept",
                f"{', '.join(repr(t) for t in parsed.dropped)} in {parsed.raw!r}",
            )
        self.rows.append(
            dict(
                row,
                onset=s,
                apex=a,
                offset=e,
                type=kind,
                au=parsed.raw,
                au_codes=parsed.codes,
                au_numbers="+".join(str(n) for n in parsed.numbers),
            )
        )

    def example(self, reason: str, n: int = 3) -> str:
        """Up to n distinct details of the skipped rows of `reason` (for error messages)."""
        seen = dict.fromkeys(
            i.detail for i in self.issues if i.reason == reason and i.action == "skipped"
        )
        return ", ".join(list(seen)[:n])

    def table(self, hints: dict[str, str] | None = None) -> AnnotationTable:
        """The normalised table; UserError when no row is usable, with the count per reason
        (and `hints[reason]`, where given, saying what the reader expected)."""
        if not self.rows:
            self._refuse_empty(hints or {})
        frame = pd.DataFrame(self.rows, columns=list(COLUMNS))
        # Exact duplicates (same video, frames and type) are dropped; a repeated id is reported.
        key = ["video_id", "onset", "apex", "offset", "type"]
        dup = frame.duplicated(subset=key, keep="first")
        for _, r in frame[dup].iterrows():
            self.issues.append(
                Issue(
                    int(r.source_row),
                    r.subject,
                    r.video_id,
                    r.expression,
                    "duplicate",
                    "skipped",
                    "same video, frames and type as an earlier row",
                )
            )
        frame = frame[~dup]
        repeated = frame[frame.duplicated(subset=["video_id", "expression"], keep=False)]
        for _, r in repeated.iterrows():
            self.issues.append(
                Issue(
                    int(r.source_row),
                    r.subject,
                    r.video_id,
                    r.expression,
                    "duplicate expression id",
                    "kept",
                    f"type {r.type}",
                )
            )
        frame = frame.reset_index(drop=True)
        for col in ("onset", "apex", "offset", "source_row"):
            frame[col] = frame[col].astype("int64")
        return AnnotationTable(frame, tuple(self.issues), self.dataset, self.source)

    def _refuse_empty(self, hints: dict[str, str]) -> None:
        if self.seen == 0:
            raise UserError(f"{self.source}: no expression row found")
        skipped = Counter(i.reason for i in self.issues if i.action == "skipped")
        parts = []
        for reason, n in skipped.most_common():
            hint = hints.get(reason) or self.example(reason)
            parts.append(f"{n} {reason}" + (f" ({hint})" if hint else ""))
        raise UserError(f"{self.source}: 0 of {self.seen} rows usable: {'; '.join(parts)}")


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
    path = Path(path)
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

    build = _Builder("casme2", str(path))
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
    path = Path(path)
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

    build = _Builder("samm-lv", str(path))
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
    an `expression` or `id` column, when present, names the expressions)."""
    path = Path(path)
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    frame.columns = [c.strip().lower() for c in frame.columns]
    missing = [c for c in CSV_COLUMNS if c not in frame.columns]
    if missing:
        raise UserError(f"{path}: missing column(s) {missing}; expected {list(CSV_COLUMNS)}")
    id_col = next((c for c in ("expression", "id") if c in frame.columns), None)
    build = _Builder("csv", str(path))
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
