"""FACS action-unit (AU) strings as the workbooks write them -> parsed AU codes.

Input: one raw cell (a number like 4, or a string like `4+10+14`, `R1+R2`, `12(B/C)`, `L14`,
`A12B`, `4,24`, `14or23`, `NULL`, `4+glare`, `Chewing`). Output: the AU codes found, in order,
with side and intensity where given, plus the tokens that could not be parsed. Parsing never
fails: what it cannot read is returned in `dropped` so callers can report it.

Token grammar (case-insensitive, spaces ignored):
    [AU] [side] number [intensity]
    side      = L | R | U (unilateral) | A (asymmetric) | T (top) | B (bottom)
    intensity = A..E, or a range such as B/C, optionally in parentheses: 12(B/C), 1D/E
Tokens are separated by '+', ',', ';', '&' or the word 'or'. `NULL`, `None`, `-` and empty
cells mean "no AU" and are not reported as dropped.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

_SEPARATORS = re.compile(r"\s*(?:\+|,|;|&|(?<=[0-9a-eA-E)])\s*or\s*(?=[0-9a-zA-Z(]))\s*", re.I)
_TOKEN = re.compile(
    r"^(?:AU)?(?P<side>[LRUATB])?(?P<number>\d{1,2})"
    r"(?P<intensity>[A-E](?:/[A-E])?|\([A-E](?:/[A-E])?\))?$",
    re.I,
)
_EMPTY = {"", "null", "none", "-", "nan", "n/a", "na"}


@dataclass(frozen=True)
class AUCode:
    """One parsed action unit: `number` (e.g. 12), `side` ('L', 'R', 'U', 'A', 'T', 'B' or ''),
    `intensity` ('' or 'A'..'E' or a range like 'B/C')."""

    number: int
    side: str = ""
    intensity: str = ""

    def __str__(self) -> str:
        return f"{self.side}{self.number}{self.intensity}"


@dataclass(frozen=True)
class ParsedAUs:
    """The result of parsing one AU cell: `codes` in order of appearance, `dropped` tokens."""

    raw: str
    codes: tuple[AUCode, ...]
    dropped: tuple[str, ...]

    @property
    def numbers(self) -> tuple[int, ...]:
        return tuple(c.number for c in self.codes)


def raw_au_string(cell: object) -> str:
    """The raw text of a workbook AU cell: numbers without a trailing '.0', text stripped."""
    if cell is None:
        return ""
    if isinstance(cell, float):
        if math.isnan(cell):
            return ""
        if cell.is_integer():
            return str(int(cell))
    return str(cell).strip()


def parse_au_string(cell: object) -> ParsedAUs:
    """Parse one AU cell (number or string) into AU codes; unparseable tokens go to `dropped`."""
    raw = raw_au_string(cell)
    codes: list[AUCode] = []
    dropped: list[str] = []
    if raw.lower() in _EMPTY:
        return ParsedAUs(raw, (), ())
    for token in _SEPARATORS.split(raw):
        token = token.strip()
        if token.lower() in _EMPTY:
            continue
        match = _TOKEN.match(token.replace(" ", ""))
        if match is None:
            dropped.append(token)
            continue
        intensity = match["intensity"] or ""
        codes.append(
            AUCode(
                number=int(match["number"]),
                side=(match["side"] or "").upper(),
                intensity=intensity.strip("()").upper(),
            )
        )
    return ParsedAUs(raw, tuple(codes), tuple(dropped))
