"""A picture of a synthetic dataset: a frame with its landmarks and ROIs, what an expression
changes (apex minus onset) for a macro- and a micro-expression, and the video's timeline."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from flowcore.landmarks import detect_faces, fit_landmarks
from flowcore.rois import ROI_LANDMARKS, ROI_RADIUS
from mespot.synth.config import SynthConfig
from mespot.synth.layouts import video_slot
from mespot.synth.timeline import blink_intensity, expression_intensity, head_pose, plan_for


def _pick_video(config: SynthConfig):
    """The first video holding both an ME and a MaE (else the first video) and its plan."""
    first = None
    for s in range(config.subjects):
        for v in range(config.videos_per_subject):
            plan = plan_for(config, s, v)
            first = first or (s, v, plan)
            if {e.kind for e in plan.expressions} == {"me", "mae"}:
                return s, v, plan
    return first


def _read_rgb(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise OSError(f"cannot read frame {path}")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def _smoothed_grey(path: Path) -> np.ndarray:
    """Grey frame blurred by 1 px: sensor noise and JPEG blocks fade, motion stays visible."""
    grey = cv2.cvtColor(_read_rgb(path), cv2.COLOR_RGB2GRAY).astype(np.float32)
    return cv2.GaussianBlur(grey, (0, 0), 1.0)


def write_preview(root: Path, config: SynthConfig, path: Path | None = None) -> Path:
    """Write `root/preview.png` (or `path`) for the dataset at `root`; return its path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    s, v, plan = _pick_video(config)
    slot = video_slot(config.layout, s, v)
    frame_path = lambda t: root / slot.folder / slot.frame_pattern.format(t + 1)  # noqa: E731
    # the largest of each kind wins
    by_kind = {e.kind: e for e in sorted(plan.expressions, key=lambda e: e.amplitude_px)}
    showcase = by_kind.get("mae") or plan.expressions[0]
    apex = _read_rgb(frame_path(showcase.apex))

    fig, axes = plt.subplots(2, 2, figsize=(10, 9), dpi=80)
    ax = axes[0, 0]
    ax.imshow(apex)
    boxes = detect_faces(apex)
    if boxes:
        landmarks = fit_landmarks(apex, boxes[0])
        left, top, right, bottom = boxes[0]
        ax.add_patch(Rectangle((left, top), right - left, bottom - top, fill=False, ec="yellow",
                               lw=1))
        ax.scatter(landmarks[:, 0], landmarks[:, 1], s=6, c="cyan")
        for i in ROI_LANDMARKS:
            x, y = landmarks[i]
            ax.add_patch(Rectangle((x - ROI_RADIUS - 0.5, y - ROI_RADIUS - 0.5), 2 * ROI_RADIUS + 1,
                                   2 * ROI_RADIUS + 1, fill=False, ec="red", lw=0.8))
        ax.set_title(f"{slot.video} frame {showcase.apex + 1}\ndlib face box, 68 landmarks, "
                     "12 ROIs", fontsize=9)
    else:
        ax.set_title(f"{slot.video} frame {showcase.apex + 1}: NO FACE DETECTED", fontsize=9,
                     color="red")
    for ax, kind in ((axes[0, 1], "mae"), (axes[1, 0], "me")):
        e = by_kind.get(kind)
        if e is None:
            ax.set_title(f"no {kind.upper()} in this video", fontsize=9)
            ax.axis("off")
            continue
        difference = np.abs(_smoothed_grey(frame_path(e.apex))
                            - _smoothed_grey(frame_path(e.onset)))
        image = ax.imshow(difference, cmap="magma", vmin=0,
                          vmax=max(np.percentile(difference, 99.9), 1))
        fig.colorbar(image, ax=ax, fraction=0.046, label="grey levels")
        ax.set_title(f"{kind.upper()} AU {e.aus}: |apex - onset|, grey blurred 1 px\n"
                     f"frames {e.onset + 1}-{e.offset + 1}, peak motion {e.amplitude_px:.2f} px",
                     fontsize=9)
    for ax in (axes[0, 0], axes[0, 1], axes[1, 0]):
        ax.set_xticks([])
        ax.set_yticks([])

    ax = axes[1, 1]
    frames = np.arange(plan.n_frames)
    for e in plan.expressions:
        colour = "tab:red" if e.kind == "me" else "tab:blue"
        ax.plot(frames + 1, expression_intensity(e, frames.astype(np.float32)), color=colour, lw=1)
        ax.text(e.apex + 1, 1.03, e.aus, fontsize=7, ha="center", color=colour)
    if plan.blinks:
        blinks = [blink_intensity(b, frames.astype(np.float32)) for b in plan.blinks]
        ax.plot(frames + 1, np.max(blinks, 0) * 0.5, color="grey", lw=0.8, label="blinks (x0.5)")
    pose = head_pose(plan)
    ax.plot(frames + 1, np.hypot(pose[:, 0], pose[:, 1]) / max(config.head_move_px[1], 1),
            color="tab:green", lw=0.8, label="head shift (/max)")
    ax.plot([], [], color="tab:blue", label="MaE intensity")
    ax.plot([], [], color="tab:red", label="ME intensity")
    ax.set_xlabel("frame (1-based)")
    ax.set_ylim(-0.05, 1.15)
    ax.legend(fontsize=7, loc="upper right")
    ax.set_title(f"timeline of {slot.video} ({plan.n_frames} frames at {config.fps:g} fps)",
                 fontsize=9)
    fig.tight_layout()
    path = Path(path) if path else root / "preview.png"
    fig.savefig(path)
    plt.close(fig)
    shrink_png(path)
    return path


def shrink_png(path: Path) -> None:
    """Re-save with a 256-colour palette: a quarter of the bytes, no visible change."""
    from PIL import Image

    with Image.open(path) as image:
        small = image.convert("RGB").quantize(colors=256, method=Image.Quantize.FASTOCTREE)
    small.save(path, optimize=True)
