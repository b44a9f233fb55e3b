"""The normalised annotation table (`AnnotationTable`, columns as spotting.annotations
describes) and what builds it from any source: the shared cell readers and `RowBuilder`, which
applies the frame and order repairs and lists every repaired or skipped row as an `Issue`.
Every reader (spotting.annotations, spotting.smic_annotations, spotting.reference_csv) builds
its table through it.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass

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


def issues_to_frame(issues) -> pd.DataFrame:
    """Issues as a DataFrame (for CSV files in run folders)."""
    cols = ["source_row", "subject", "video_id", "expression", "reason", "action", "detail"]
    return pd.DataFrame([[getattr(i, c) for c in cols] for i in issues], columns=cols)


# --- cells -------------------------------------------------------------------------------------


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


class RowBuilder:
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
            self._row_issue(r, "duplicate", "skipped",
                            "same video, frames and type as an earlier row")
        frame = frame[~dup]
        repeated = frame[frame.duplicated(subset=["video_id", "expression"], keep=False)]
        for _, r in repeated.iterrows():
            self._row_issue(r, "duplicate expression id", "kept", f"type {r.type}")
        frame = frame.reset_index(drop=True)
        for col in ("onset", "apex", "offset", "source_row"):
            frame[col] = frame[col].astype("int64")
        return AnnotationTable(frame, tuple(self.issues), self.dataset, self.source)

    def _row_issue(self, r, reason: str, action: str, detail: str) -> None:
        """An issue of a row of the built table."""
        self.issues.append(Issue(int(r.source_row), r.subject, r.video_id, r.expression, reason,
                                 action, detail))

    def _refuse_empty(self, hints: dict[str, str]) -> None:
        if self.seen == 0:
            raise UserError(f"{self.source}: no expression row found")
        skipped = Counter(i.reason for i in self.issues if i.action == "skipped")
        parts = []
        for reason, n in skipped.most_common():
            hint = hints.get(reason) or self.example(reason)
            parts.append(f"{n} {reason}" + (f" ({hint})" if hint else ""))
        raise UserError(f"{self.source}: 0 of {self.seen} rows usable: {'; '.join(parts)}")
