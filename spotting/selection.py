"""Which epoch of each fold a run is evaluated with: the values of `--select` (last, fixed:N,
inner-val, oracle), parsed once, with the names and labels evaluations carry."""

from __future__ import annotations

import re
from dataclasses import dataclass

from flowcore.errors import UserError

ORACLE_LABEL = "oracle (TEST-SET SELECTION: optimistic, for comparison with published numbers only)"


@dataclass(frozen=True)
class Selection:
    mode: str  # "last", "fixed", "inner-val", "oracle"
    epoch: int | None = None  # for "fixed"

    @property
    def name(self) -> str:
        return f"fixed-{self.epoch}" if self.mode == "fixed" else self.mode

    @property
    def short_label(self) -> str:
        return "oracle (TEST-SET selection)" if self.mode == "oracle" else self.label

    @property
    def label(self) -> str:
        return (
            ORACLE_LABEL
            if self.mode == "oracle"
            else {
                "last": "last epoch",
                "fixed": f"fixed epoch {self.epoch}",
                "inner-val": "epoch chosen on held-out training subjects",
            }[self.mode]
        )


def parse_selection(text: str) -> Selection:
    match = re.fullmatch(r"(last|oracle|inner-val|fixed:(\d+))", text.strip())
    if not match:
        raise UserError(f"--select must be last, fixed:N, inner-val or oracle (got {text!r})")
    if match.group(2):
        return Selection("fixed", int(match.group(2)))
    return Selection(match.group(1))
