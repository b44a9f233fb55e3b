"""Pictures of a run: score curves with intervals, metrics, per-subject F1, losses, the AU prior
and interval lengths. matplotlib with the Agg backend; every function writes one PNG and returns
its path.

Colours: ground truth that was found (TP) green, missed ground truth (FN) orange, spotted
intervals that matched (TP) blue, false positives (FP) red; spotted intervals of a video
without ground truth (`mespot predict`: nothing to match them with) grey, with their expected
precision written above them.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from flowcore.rois import ROI_NAMES  # noqa: E402

OUTCOME_COLOURS = {"truth TP": "tab:green", "truth FN": "tab:orange", "spotted TP": "tab:blue",
                   "spotted FP": "tab:red"}
SPOTTED = "spotted (no ground truth)"
SPOTTED_COLOUR = "tab:gray"
FRAMES_PER_ROW = 1500  # long videos are split into rows of at most this many frames
TYPE_NAMES = {"me": "micro (ME)", "mae": "macro (MaE)"}


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90, bbox_inches="tight")
    plt.close(fig)
    return path


def _bands(ax, matches: pd.DataFrame, kind: str, lo: float, hi: float) -> None:
    """Shade the intervals of one type between frames lo and hi: truths low, spotted high."""
    part = matches[matches["type"] == kind]
    for row in part.itertuples():
        if row.outcome in ("TP", "FN") and not pd.isna(row.truth_onset):
            colour = OUTCOME_COLOURS[f"truth {row.outcome}"]
            ax.axvspan(row.truth_onset, row.truth_offset, 0.0, 0.5, color=colour, alpha=0.25, lw=0)
        if row.outcome in ("TP", "FP", "spotted") and not pd.isna(row.proposal_onset):
            # "spotted": a prediction without ground truth to judge it (mespot predict)
            colour = (SPOTTED_COLOUR if row.outcome == "spotted"
                      else OUTCOME_COLOURS[f"spotted {row.outcome}"])
            ax.axvspan(row.proposal_onset, row.proposal_offset, 0.5, 1.0, color=colour, alpha=0.25,
                       lw=0)
            precision = getattr(row, "proposal_precision", np.nan)
            if not pd.isna(precision) and lo <= row.proposal_onset < hi:
                ax.text((row.proposal_onset + row.proposal_offset) / 2, 0.97,
                        f"P {precision:.2f}", ha="center", va="top", fontsize=7)


def plot_video_curves(
    video: str,
    curves: np.ndarray,
    frames: np.ndarray,
    matches: pd.DataFrame,
    path: Path,
    columns=None,
) -> Path:
    """Score curves of one video, ME and MaE panels per row of at most FRAMES_PER_ROW frames.

    curves (N, 8) probabilities in the order of spotting.inference.CURVES, frames (N,) their 1-based
    frame numbers; matches: that video's rows of matches.csv (frames). Truth bands fill the lower
    half of a panel, spotted intervals the upper half. Rows of outcome "spotted" (no ground
    truth) are grey; a `proposal_precision` column is written above each spotted interval.
    """
    from spotting.inference import CURVES

    columns = list(columns or CURVES)
    n = len(frames)
    chunks = max(1, int(np.ceil((frames[-1] - frames[0] + 1) / FRAMES_PER_ROW))) if n else 1
    edges = np.linspace(frames[0], frames[-1] + 1, chunks + 1) if n else np.array([0, 1])
    fig, axes = plt.subplots(2 * chunks, 1, figsize=(14, 2.6 * 2 * chunks), squeeze=False)
    for c in range(chunks):
        lo, hi = edges[c], edges[c + 1]
        sel = (frames >= lo) & (frames < hi)
        for k, kind in enumerate(("me", "mae")):
            ax = axes[2 * c + k, 0]
            _bands(ax, matches, kind, lo, hi)
            for name, style, colour in (
                ("apex", "-", "black"),
                ("start", "--", "tab:purple"),
                ("end", ":", "tab:brown"),
            ):
                ax.plot(
                    frames[sel],
                    curves[sel, columns.index(f"{kind}_{name}")],
                    style,
                    color=colour,
                    lw=0.9,
                    label=f"p({name})",
                )
            ax.set_xlim(lo, hi)
            ax.set_ylim(0, 1.02)
            ax.set_ylabel(TYPE_NAMES[kind], fontsize=8)
            if c == 0 and k == 0:
                ax.set_title(
                    f"{video}: probabilities per frame; "
                    + ("bands: spotted, P = expected precision (no ground truth to match)"
                       if set(matches["outcome"]) <= {"spotted"}
                       else "bands: truth (lower half), spotted (upper half)"),
                    fontsize=10,
                )
            ax.tick_params(labelsize=7)
    shown = ({SPOTTED: SPOTTED_COLOUR} if set(matches["outcome"]) <= {"spotted"}
             else OUTCOME_COLOURS)
    handles = [plt.Rectangle((0, 0), 1, 1, color=c, alpha=0.35) for c in shown.values()]
    line_handles, line_labels = axes[0, 0].get_legend_handles_labels()
    axes[0, 0].legend(
        line_handles + handles,
        line_labels + list(shown),
        fontsize=7,
        ncol=7,
        loc="upper right",
    )
    axes[-1, 0].set_xlabel("frame (1-based, original numbering)")
    return _save(fig, path)


def plot_metrics_table(metrics: pd.DataFrame, title: str, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(7, 1.4))
    ax.axis("off")
    shown = metrics.set_index("type").loc[
        ["me", "mae", "overall"], ["precision", "recall", "f1", "TP", "FP", "FN"]
    ]
    cells = [
        [
            f"{row[c]:.4f}" if c in ("precision", "recall", "f1") else str(int(row[c]))
            for c in shown.columns
        ]
        for _, row in shown.iterrows()
    ]
    table = ax.table(
        cellText=cells,
        rowLabels=["ME", "MaE", "overall"],
        colLabels=list(shown.columns),
        loc="center",
    )
    table.scale(1, 1.3)
    ax.set_title(title, fontsize=9)
    return _save(fig, path)


def plot_reliability(table: pd.DataFrame, path: Path) -> Path:
    """Predicted against observed precision of held-out intervals (spotting.precision.reliability:
    type, n, predicted, observed), one series per type, each point labelled with its count."""
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot([0, 1], [0, 1], ":", color="grey", lw=1, label="perfectly reliable")
    for kind, colour in (("me", "tab:blue"), ("mae", "tab:orange"), ("overall", "black")):
        part = table[table["type"] == kind]
        ax.plot(part["predicted"], part["observed"], "o-", color=colour, ms=4, lw=1,
                label=TYPE_NAMES.get(kind, kind))
        for row in part.itertuples():
            ax.annotate(str(row.n), (row.predicted, row.observed), fontsize=6,
                        xytext=(3, 3), textcoords="offset points", color=colour)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("expected precision (map fitted without the interval's subject)", fontsize=8)
    ax.set_ylabel("observed precision (share TP)", fontsize=8)
    ax.set_title("reliability on held-out LOSO test subjects\n(points: bins of 0.2; "
                 "numbers: intervals)", fontsize=9)
    ax.legend(fontsize=7, loc="upper left")
    return _save(fig, path)


def plot_subject_f1(per_subject: pd.DataFrame, path: Path) -> Path:
    table = per_subject.pivot(index="subject", columns="type", values="f1").fillna(0.0)
    fig, ax = plt.subplots(figsize=(max(6, 0.45 * len(table) + 2), 3.2))
    x = np.arange(len(table))
    for k, (kind, colour) in enumerate(
        (("me", "tab:red"), ("mae", "tab:blue"), ("overall", "black"))
    ):
        if kind in table:
            ax.bar(x + (k - 1) * 0.27, table[kind], width=0.27, color=colour, label=kind)
    ax.set_xticks(x, table.index, rotation=60, fontsize=7)
    ax.set_ylim(0, 1)
    ax.set_ylabel("F1")
    ax.set_title("F1 per test subject (LOSO folds)", fontsize=10)
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_losses(losses: dict[str, pd.DataFrame], path: Path) -> Path:
    """losses: fold (test subject) -> frame with columns epoch, loss (training loss per epoch)."""
    fig, ax = plt.subplots(figsize=(7, 3.5))
    for subject, frame in sorted(losses.items()):
        ax.plot(frame["epoch"], frame["loss"], lw=0.9, label=subject)
    ax.set_xlabel("epoch")
    ax.set_ylabel("training loss")
    ax.set_yscale("log")
    ax.set_title("training loss per fold", fontsize=10)
    if 0 < len(losses) <= 12:
        ax.legend(fontsize=7, ncol=2)
    if not losses:
        ax.text(0.5, 0.5, "no loss logs found", ha="center", transform=ax.transAxes)
    return _save(fig, path)


def plot_prior(matrix: np.ndarray, title: str, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(6.5, 5.5))
    image = ax.imshow(matrix, cmap="viridis", vmin=0)
    names = [f"{i} {n}" for i, n in enumerate(ROI_NAMES)]
    ax.set_xticks(range(12), range(12), fontsize=7)
    ax.set_yticks(range(12), names, fontsize=7)
    fig.colorbar(image, ax=ax, fraction=0.046)
    ax.set_title(title, fontsize=10)
    return _save(fig, path)


def plot_lengths(matches: pd.DataFrame, path: Path) -> Path:
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.2))
    for ax, kind in zip(axes, ("me", "mae")):
        part = matches[matches["type"] == kind]
        truth = (part["truth_offset"] - part["truth_onset"] + 1).dropna().astype(float)
        spotted = (part["proposal_offset"] - part["proposal_onset"] + 1).dropna().astype(float)
        both = np.concatenate([truth.to_numpy(), spotted.to_numpy()])
        bins = np.linspace(both.min(), both.max() + 1, 20) if len(both) else 10
        ax.hist(truth, bins=bins, alpha=0.5, label=f"truth ({len(truth)})", color="tab:green")
        ax.hist(spotted, bins=bins, alpha=0.5, label=f"spotted ({len(spotted)})", color="tab:blue")
        ax.set_xlabel("length (frames, inclusive)")
        ax.set_title(TYPE_NAMES[kind], fontsize=10)
        ax.legend(fontsize=8)
    return _save(fig, path)


MDMO_ARROW_SCALE = 4.0  # arrows show 4x the cumulative MDMO displacement


def plot_face_strips(
    video: str,
    events: list[dict],
    crops: dict[int, np.ndarray],
    landmarks: np.ndarray,
    mdmo: np.ndarray,
    frame_numbers: np.ndarray,
    path: Path,
) -> Path:
    """One row per event (a ground truth or a false positive): the face crop at its onset, apex and
    offset with the 12 ROI boxes and arrows of the MDMO motion accumulated since the onset.

    events: dicts with kind ('truth TP', 'truth FN', 'spotted FP'), type, onset, apex, offset
    (1-based original frames); crops: frame number -> (h, w) uint8; landmarks (T, 68, 2) and
    mdmo (T-1, 12, 2)
    of the video in crop pixels, with frame_numbers (T,) their original numbers.
    """
    from flowcore.rois import ROI_LANDMARKS, ROI_RADIUS

    rows = max(1, len(events))
    fig, axes = plt.subplots(rows, 3, figsize=(7.5, 2.7 * rows), squeeze=False)
    row_of = lambda f: int(max(np.searchsorted(frame_numbers, f, side="right") - 1, 0))  # noqa: E731
    for r, event in enumerate(events):
        start = row_of(event["onset"])
        for c, moment in enumerate(("onset", "apex", "offset")):
            ax = axes[r, c]
            ax.axis("off")
            frame = int(event[moment])
            if frame not in crops:
                ax.set_title(f"{moment} {frame}: frame not readable", fontsize=7)
                continue
            ax.imshow(crops[frame], cmap="gray")
            k = row_of(frame)
            motion = mdmo[start:k].sum(axis=0) if k > start else np.zeros((12, 2), np.float32)
            for node, index in enumerate(ROI_LANDMARKS):
                x, y = landmarks[k, index]
                ax.add_patch(
                    plt.Rectangle(
                        (x - ROI_RADIUS - 0.5, y - ROI_RADIUS - 0.5),
                        2 * ROI_RADIUS + 1,
                        2 * ROI_RADIUS + 1,
                        fill=False,
                        ec="red",
                        lw=0.6,
                    )
                )
                dx, dy = motion[node] * MDMO_ARROW_SCALE
                if abs(dx) + abs(dy) > 0.2:
                    ax.arrow(
                        x,
                        y,
                        dx,
                        dy,
                        color="yellow",
                        width=0.4,
                        head_width=2.0,
                        length_includes_head=True,
                    )
            colour = OUTCOME_COLOURS.get(event["kind"], "black")
            ax.set_title(
                f"{event['kind']} {event['type'].upper()} {moment} {frame}",
                fontsize=7,
                color=colour,
            )
    if not events:
        axes[0, 0].set_title("no ground truth or false positive in this video", fontsize=8)
    fig.suptitle(
        f"{video}: ROIs and MDMO motion since onset (arrows x{MDMO_ARROW_SCALE:g})", fontsize=9
    )
    fig.tight_layout()
    return _save(fig, path)
