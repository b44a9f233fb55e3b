"""A run's ground truth, and the matching of spotted rows with it on a rule's scale.

Scales (`--rule`, spotting/metrics.py): the MEGC rule matches in the video's ORIGINAL 1-based
frame numbers (proposal rows through `rows_to_frames`; truths as annotated, a value section 6's
repairs filled or clipped as the kept frame of its row); the reference rules (`reference`, the
AUW-GCN code's counting today; `reference-2023`, the one behind its published numbers) match on
the reference's rows, proposal row + 1 against annotated frame // k for frames kept 1 in k
(SAMM-LV: k = 8, the reference's `samm_new_25.csv`; at full rate the two scales agree). Every
table and file names its scale; every file a person reads gives 1-based original frame numbers
(`rows_to_frames`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from spotting.data import Prepared, prepare
from spotting.metrics import MEGC, MatchRule, match_all, summarise
from spotting.windows import TYPES, WindowParams, annotation_targets, rows_to_frames

# ground_truth's columns: frames 1-based original, rows of the feature store
TRUTH_COLUMNS = ("video", "subject", "type", "onset", "apex", "offset", "onset_row", "apex_row",
                 "offset_row")
AT = ("at_onset", "at_offset")  # the columns a rule matches on


def ground_truth(prep: Prepared, windows: WindowParams) -> pd.DataFrame:
    """Ground truth after section 6's repairs: video, subject, type, onset, apex, offset (1-based
    original frame numbers) and onset_row, apex_row, offset_row (feature rows)."""
    targets, _ = annotation_targets(prep.features, prep.table, windows)
    rows = []
    for video_id, target in targets.items():
        subject = prep.features.videos[video_id].subject
        for (t, s, a, e), (_, fs, fa, fe) in zip(target.used, target.used_frames):
            rows.append((video_id, subject, TYPES[t], fs, fa, fe, s, a, e))
    return pd.DataFrame(rows, columns=list(TRUTH_COLUMNS))


def kept_one_in(video) -> int:
    """k of a video whose frames were kept 1 in k (from its frame numbers; 1 for one frame)."""
    numbers = video.frame_numbers
    return int(numbers[1] - numbers[0]) if len(numbers) > 1 else 1


def scale_label(rule: MatchRule, features) -> str:
    """The scale a rule matches on, in words, e.g. "frames: original 200 fps numbering" or
    "rows: subsampled /8"."""
    videos = list(features.videos.values())
    k = sorted({kept_one_in(v) for v in videos}) or [1]
    if rule.scale == "rows":
        return "rows: subsampled " + ", ".join(f"/{n}" for n in k)
    fps = sorted({round(v.fps * kept_one_in(v), 3) for v in videos})
    return "frames: original " + ", ".join(f"{f:g}" for f in fps) + " fps numbering"


def count(proposals: pd.DataFrame, truths: pd.DataFrame, rule: MatchRule, features) -> pd.DataFrame:
    """Match `proposals` (rows, from `spot_subjects`) with `truths` (`ground_truth`) on the rule's
    scale. The match table gives 1-based original frame numbers whatever the scale."""
    shown = to_frames(proposals, features)
    truths = truths.copy()
    if rule.scale == "frames":
        shown["at_onset"], shown["at_offset"] = shown["onset"], shown["offset"]
        truths["at_onset"], truths["at_offset"] = truths["onset"], truths["offset"]
    else:  # the reference's rows: proposal row + 1 against annotated frame // k
        shown["at_onset"], shown["at_offset"] = proposals["onset"] + 1, proposals["offset"] + 1
        k = truths["video"].map(lambda v: kept_one_in(features.videos[v])).to_numpy(np.int64)
        truths["at_onset"], truths["at_offset"] = truths["onset"] // k, truths["offset"] // k
    matches = match_all(shown, truths, rule, on=AT)
    for column in [
        f"{side}_{c}" for side in ("proposal", "truth") for c in ("onset", "apex", "offset")
    ]:
        if column in matches:
            matches[column] = pd.array(matches[column].astype("float64"), dtype="Int64")
    return matches


def to_frames(table: pd.DataFrame, features, columns=("onset", "apex", "offset")) -> pd.DataFrame:
    """Row columns -> 1-based original frame numbers (Int64), per video."""
    table = table.copy()
    for column in columns:
        if column not in table:
            continue
        values = table[column].to_numpy()
        out = np.full(len(table), np.nan)
        for video_id, index in table.groupby("video").indices.items():
            ok = ~pd.isna(values[index])
            numbers = features.videos[video_id].frame_numbers
            out[index[ok]] = rows_to_frames(values[index][ok].astype(np.int64), numbers)
        table[column] = pd.array(np.where(np.isnan(out), pd.NA, out), dtype="Int64")
    return table


def uncounted(prep: Prepared) -> pd.DataFrame:
    """Annotated videos whose truths no evaluation of this store counts: in the annotations but
    not among the store's complete videos. Columns video, subject, truths (annotation rows),
    why (the store's reason, e.g. "status 'failed': ...", or "not in the feature store")."""
    frame = prep.table.frame
    absent = frame[~frame["video_id"].isin(list(prep.features.videos))]
    rows = []
    for video, part in absent.groupby("video_id", sort=True):
        reason = prep.features.skipped.get(video)
        why = f"in the store with {reason}" if reason else "not in the feature store"
        rows.append((video, str(part["subject"].iloc[0]), len(part), why))
    return pd.DataFrame(rows, columns=["video", "subject", "truths", "why"])


def score_spotted(rows: pd.DataFrame, videos: list[str], store, annotations,
                  windows: WindowParams, rule: MatchRule = MEGC) -> tuple[pd.DataFrame,
                                                                         pd.DataFrame]:
    """(metrics, matches) of the intervals spotted in `videos` of `store`, `rows` (video,
    subject, type, onset, apex, offset, score; feature rows), against `annotations`, counted as
    `evaluate` counts: the truths of those videos after section 6's repairs, matched on
    `rule`'s scale."""
    prep = prepare(store, annotations, windows)
    truths = ground_truth(prep, windows)
    truths = truths[truths["video"].isin(set(videos))]
    matches = count(rows, truths, rule, prep.features)
    return summarise(matches), matches
