"""Feature rows + annotations -> fixed-length windows and per-frame targets (AUWGCN.md section 6).

Conventions
- Feature row k of a video (0-based, N = T - 1 rows) is the motion from kept frame k to k + 1.
- Annotation frames are 1-based ORIGINAL frame numbers (0 = not annotated). They become feature
  rows in one place only, `frames_to_rows`: frame f maps to the row of the last kept frame whose
  original number is <= f, i.e. `searchsorted(frame_numbers, f, 'right') - 1` (frames before the
  first kept frame map to row 0). At full rate (frame_numbers 1..T) that is row f - 1, the
  inverse of "reported frame = row + 1"; with SAMM-LV kept 1-in-8 (frame_numbers 1, 9, 17, ...)
  it is row (f - 1) // 8 (the reference used f // 8, one row later for f = 8, 16, ...).
- Type index 0 = ME (micro), 1 = MaE (macro) in every target array.

Windows: L = 256 central rows plus C = 7 rows of context on each side; window i of a video covers
rows [iL - C, (i+1)L + C - 1], zero outside the video; ceil(N / L) windows per video. Targets
cover the central L rows; rows past the video's end are "none" / 0.

Gaps: a video whose face was missing in some frames (flowcore.store: `mdmo_valid`) is cut into
its segments, the runs of valid rows (`VideoFeatures.segments`), and each segment into windows
as if it were a video of its own, starting at the segment's first row: no window spans a gap,
rows outside the segment are zero and "none" like the padding past a video's end. A video
without gaps is one segment: the windows above.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from spotting.annotations import AnnotationTable, Issue
from flowcore.store import FeatureSet, VideoFeatures

from spotting.channels import TYPES  # type index 0, 1

START, END, NONE = 0, 1, 2  # start/end/none classes


@dataclass(frozen=True)
class WindowParams:
    """Window geometry and target shapes (units: feature rows)."""

    length: int = 256  # L: central rows per window
    context: int = 7  # C: rows of context each side (receptive field 15 = 2C + 1)
    radius_me: int = 1  # R for micro-expressions: start/end/apex neighbourhood half-width
    radius_mae: int = 3  # R for macro-expressions
    apex_spread: float = 32.0  # apex target exp(-j^2 / apex_spread) at apex +- j

    def radius(self, type_index: int) -> int:
        return self.radius_me if type_index == 0 else self.radius_mae


def frames_to_rows(frames, frame_numbers: np.ndarray) -> np.ndarray:
    """1-based original frame numbers (int array, 0 = not annotated) -> 0-based feature rows
    (int64, -1 = not annotated). `frame_numbers` (T,) are the original numbers of the kept
    frames. The only place where annotation frames become rows (see the module docstring)."""
    frames = np.asarray(frames, dtype=np.int64)
    rows = np.searchsorted(np.asarray(frame_numbers), frames, side="right") - 1
    rows = np.maximum(rows, 0)
    return np.where(frames > 0, rows, -1).astype(np.int64)


def rows_to_frames(rows, frame_numbers: np.ndarray) -> np.ndarray:
    """0-based feature rows -> 1-based original frame numbers (the kept frame of each row)."""
    return np.asarray(frame_numbers)[np.asarray(rows, dtype=np.int64)]


@dataclass(frozen=True)
class VideoTargets:
    """Per-row targets of one video (N rows): `start_end` (2, N) int64 classes 0 start, 1 end,
    2 none; `apex` (2, N) float32 in [0, 1]; `action` (2, N) float32 in {0, 1}. Axis 0 is the
    type (0 ME, 1 MaE). `used` lists (type, s, a, e) rows of the expressions that were used;
    `used_frames` the same expressions in 1-based original frame numbers (`expression_frames`),
    when they came from annotation frames."""

    start_end: np.ndarray
    apex: np.ndarray
    action: np.ndarray
    used: tuple[tuple[int, int, int, int], ...]
    used_frames: tuple[tuple[int, int, int, int], ...] = ()


def resolve_expression(
    s: int, a: int, e: int, n_rows: int
) -> tuple[tuple[int, int, int] | None, list[str]]:
    """Apply section 6's rules to one expression in rows (-1 = not annotated).

    Returns ((s, a, e) or None when skipped, notes). Rules in order: skip when two or more are
    missing; skip when a >= N; missing e -> 2a - s; missing a -> (s + e) // 2; missing s ->
    max(0, 2a - e) (section 6 has no rule for a missing onset; the reference used row 0, which
    makes the expression start at the video's start); clip e to N - 1; skip when s >= N."""
    notes: list[str] = []
    missing = [s < 0, a < 0, e < 0]
    if sum(missing) >= 2:
        return None, ["two or more of onset/apex/offset missing"]
    if a >= n_rows:
        return None, [f"apex past the end: apex row {a} >= {n_rows} rows"]
    if e < 0:
        e = 2 * a - s
        notes.append(f"offset filled: 2*apex - onset = row {e}")
    elif a < 0:
        a = (s + e) // 2
        notes.append(f"apex filled: (onset + offset) // 2 = row {a}")
    elif s < 0:
        s = max(0, 2 * a - e)
        notes.append(f"onset filled: max(0, 2*apex - offset) = row {s}")
    if e > n_rows - 1:
        notes.append(f"offset past the end: row {e} clipped to {n_rows - 1}")
        e = n_rows - 1
    if s >= n_rows:
        return None, notes + [f"onset past the end: onset row {s} >= {n_rows} rows"]
    return (s, a, e), notes


def expression_frames(frames, mapped, resolved, frame_numbers: np.ndarray) -> tuple[int, int, int]:
    """(onset, apex, offset) of one resolved expression in 1-based original frame numbers: each
    value as annotated (`frames`), unless `resolve_expression` filled or clipped it (its row
    `resolved` differs from the annotated one, `mapped`); then the kept frame of its row."""
    return tuple(int(f) if f > 0 and got == row else int(frame_numbers[got])
                 for f, row, got in zip(frames, mapped, resolved))


def video_targets(n_rows: int, expressions, params: WindowParams = WindowParams()) -> VideoTargets:
    """Targets of one video. `expressions`: iterable of (type_index, s, a, e) in rows, already
    resolved (see `resolve_expression`), applied in order: for each expression its start range
    is written, then its end range (overwriting), so a later expression overwrites an earlier."""
    start_end = np.full((2, n_rows), NONE, dtype=np.int64)
    apex = np.zeros((2, n_rows), dtype=np.float32)
    action = np.zeros((2, n_rows), dtype=np.float32)
    used = []
    for t, s, a, e in expressions:
        r = params.radius(t)
        start_end[t, max(s - r, 0) : max(min(s + r, n_rows - 1) + 1, 0)] = START
        start_end[t, max(e - r, 0) : max(min(e + r, n_rows - 1) + 1, 0)] = END
        for j in range(-r, r + 1):
            if 0 <= a + j < n_rows:
                apex[t, a + j] = math.exp(-(j * j) / params.apex_spread)
        action[t, max(s, 0) : e + 1] = 1.0
        used.append((t, s, a, e))
    return VideoTargets(start_end, apex, action, tuple(used))


def annotation_targets(
    features: FeatureSet, table: AnnotationTable, params: WindowParams = WindowParams()
) -> tuple[dict[str, VideoTargets], list[Issue]]:
    """Targets for every video of the store from the annotation table; the issues list every
    expression skipped or filled here (and annotations of videos absent from the store)."""
    issues: list[Issue] = []
    by_video: dict[str, list] = {vid: [] for vid in features.videos}
    frame = table.frame
    for r in frame.itertuples(index=False):
        if r.video_id not in by_video:
            issues.append(
                Issue(
                    int(r.source_row),
                    r.subject,
                    r.video_id,
                    r.expression,
                    "video not in the feature store",
                    "skipped",
                )
            )
            continue
        by_video[r.video_id].append(r)
    targets: dict[str, VideoTargets] = {}
    for vid, rows in by_video.items():
        video = features.videos[vid]
        resolved, resolved_frames = [], []
        if rows:
            frames = np.array([[r.onset, r.apex, r.offset] for r in rows], dtype=np.int64)
            mapped = frames_to_rows(frames, video.frame_numbers)
            for r, (s, a, e) in zip(rows, mapped.tolist()):
                if r.subject != video.subject:
                    issues.append(
                        Issue(
                            int(r.source_row),
                            r.subject,
                            vid,
                            r.expression,
                            "subject differs from the store's",
                            "kept",
                            f"store says {video.subject!r}",
                        )
                    )
                got, notes = resolve_expression(s, a, e, video.n_rows)
                action = "skipped" if got is None else "repaired"
                for note in notes if got is not None else notes[-1:]:
                    reason, _, detail = note.partition(": ")
                    issues.append(
                        Issue(
                            int(r.source_row), r.subject, vid, r.expression, reason, action, detail
                        )
                    )
                if got is not None:
                    resolved.append((TYPES.index(r.type), *got))
                    resolved_frames.append(
                        (
                            TYPES.index(r.type),
                            *expression_frames(
                                (r.onset, r.apex, r.offset), (s, a, e), got, video.frame_numbers
                            ),
                        )
                    )
        targets[vid] = replace(
            video_targets(video.n_rows, resolved, params), used_frames=tuple(resolved_frames)
        )
    return targets, issues


@dataclass(frozen=True)
class WindowSet:
    """All windows of a set of videos, built once.

    x          (W, L + 2C, 12, 2) float32  raw MDMO features (pixels), 0 outside the video
    valid      (W, L + 2C) bool            True where the row lies inside the window's segment
                                           (the video, for a video without gaps)
    start_end  (W, 2, L) int64             classes of the central rows (0 start, 1 end, 2 none)
    apex       (W, 2, L) float32
    action     (W, 2, L) float32
    video      (W,) int64                  index into `video_ids`
    first_row  (W,) int64                  feature row of the first central row (i * L)
    """

    x: np.ndarray
    valid: np.ndarray
    start_end: np.ndarray
    apex: np.ndarray
    action: np.ndarray
    video: np.ndarray
    first_row: np.ndarray
    video_ids: tuple[str, ...]
    subjects: tuple[str, ...]  # per video
    n_rows: tuple[int, ...]  # per video

    def __len__(self) -> int:
        return int(self.video.shape[0])

    @property
    def has_expression(self) -> np.ndarray:
        """(W,) bool: the window's central rows hold at least one expression frame."""
        return self.action.reshape(len(self), -1).max(axis=1) > 0

    def of_subjects(self, subjects) -> np.ndarray:
        """(W,) bool: windows of videos of these subjects."""
        per_video = np.array([s in set(subjects) for s in self.subjects], dtype=bool)
        return per_video[self.video] if len(self) else np.zeros(0, bool)


def build_windows(
    videos: list[VideoFeatures],
    targets: dict[str, VideoTargets],
    params: WindowParams = WindowParams(),
) -> WindowSet:
    """Cut every segment of every video into ceil(n / L) windows (vectorised per segment; see the
    module docstring)."""
    L, C = params.length, params.context
    xs, valids, ses, apexes, actions, vids, firsts = [], [], [], [], [], [], []
    for index, v in enumerate(videos):
        tg = targets[v.video_id]
        for start, stop in v.segments:
            n = stop - start
            n_win = -(-n // L)
            padded_len = n_win * L + 2 * C
            x = np.zeros((padded_len, 12, 2), np.float32)
            x[C : C + n] = v.mdmo[start:stop]
            valid = np.zeros(padded_len, bool)
            valid[C : C + n] = True
            starts = np.arange(n_win) * L  # window i starts at padded row i*L = row i*L - C
            take = starts[:, None] + np.arange(L + 2 * C)[None, :]
            xs.append(x[take])
            valids.append(valid[take])
            se = np.full((2, n_win * L), NONE, np.int64)
            ap = np.zeros((2, n_win * L), np.float32)
            ac = np.zeros((2, n_win * L), np.float32)
            se[:, :n] = tg.start_end[:, start:stop]
            ap[:, :n], ac[:, :n] = tg.apex[:, start:stop], tg.action[:, start:stop]
            ses.append(se.reshape(2, n_win, L).transpose(1, 0, 2))
            apexes.append(ap.reshape(2, n_win, L).transpose(1, 0, 2))
            actions.append(ac.reshape(2, n_win, L).transpose(1, 0, 2))
            vids.append(np.full(n_win, index, np.int64))
            firsts.append(start + starts)
    if not xs:
        raise ValueError("no video has a feature row")
    return WindowSet(
        x=np.concatenate(xs),
        valid=np.concatenate(valids),
        start_end=np.ascontiguousarray(np.concatenate(ses)),
        apex=np.ascontiguousarray(np.concatenate(apexes)),
        action=np.ascontiguousarray(np.concatenate(actions)),
        video=np.concatenate(vids),
        first_row=np.concatenate(firsts).astype(np.int64),
        video_ids=tuple(v.video_id for v in videos),
        subjects=tuple(v.subject for v in videos),
        n_rows=tuple(v.n_rows for v in videos),
    )
