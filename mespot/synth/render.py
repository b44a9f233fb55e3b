"""Render the frames of a planned video: deform the face, move the head, light it, add noise.

Per frame t, for every output pixel z of the frame:
  u = P_t^-1(z)           head pose (drift + quick movements; turns and nods) undone, canvas
                          coordinates
  x : x + D_t(x) = u      the skin point that the expression/blink/talking field D_t moved to u
  frame_t(z) = gain_t * light_t(z) * canvas(x) + noise
where D_t = sum of (intensity_e(t) * amplitude_e * unit field_e) over the active expressions,
blinks and talking shapes, and light_t(z) = level_t + slope_t * (z_x / S - 1/2) the opt-in
light changes (mespot/synth/nuisances.py; 1 without them). The inverse of the forward field is
found with a few fixed-point steps (x <- u - D_t(x)), exact for the smooth fields used here
to well under 0.05 px.
"""

from __future__ import annotations

from collections.abc import Iterator

import cv2
import numpy as np

from mespot.synth.actions import blink_field, expression_field
from mespot.synth.faces import Subject
from mespot.synth.nuisances import TALK_SHAPES, undo_turn
from mespot.synth.timeline import VideoPlan, blink_intensity, expression_intensity, head_pose

FIXED_POINT_STEPS = 3


class FieldSchedule:
    """The deformation of every frame as a sum of few fixed fields with per-frame weights."""

    def __init__(self, subject: Subject, plan: VideoPlan):
        shape = subject.canvas.shape[:2]
        frames = np.arange(plan.n_frames, dtype=np.float32)
        self.fields: list[np.ndarray] = []  # each (Hc, Wc, 2) float32, unit peak (blink: lids meet)
        self.weights: list[np.ndarray] = []  # each (n_frames,) float32
        for e in plan.expressions:
            self.fields.append(expression_field(shape, subject.landmarks, e.aus.split("+")))
            self.weights.append(expression_intensity(e, frames) * e.amplitude_px)
        if plan.blinks:
            self.fields.append(blink_field(shape, subject.landmarks))
            self.weights.append(np.max([blink_intensity(b, frames) for b in plan.blinks], axis=0))
        talk = plan.nuisances.talk if plan.nuisances is not None else np.zeros((0, 3))
        for k, tokens in enumerate(TALK_SHAPES):
            if talk[:, k].any():
                self.fields.append(expression_field(shape, subject.landmarks, list(tokens)))
                self.weights.append(talk[:, k])

    def at(self, t: int) -> np.ndarray | None:
        """(Hc, Wc, 2) forward displacement of frame t, or None when the face is at rest."""
        field = None
        for f, w in zip(self.fields, self.weights):
            if w[t] > 1e-4:
                field = f * w[t] if field is None else field + f * w[t]
        return field


def _pose_maps(subject: Subject, pose: np.ndarray, grid: tuple[np.ndarray, np.ndarray],
               turn: np.ndarray | None = None):
    """Canvas coordinates (u_x, u_y) of every frame pixel under head pose (dx, dy, degrees) and,
    where not None or zero, the turn (yaw, pitch degrees) of the face plane."""
    zx, zy = grid
    ox, oy = subject.offset
    cx, cy = subject.landmarks[27:36].mean(0) - np.array(subject.offset)  # rotate about the nose
    dx, dy, degrees = pose
    c, s = np.cos(np.deg2rad(degrees)), np.sin(np.deg2rad(degrees))
    rx, ry = zx - cx - dx, zy - cy - dy  # undo translation, then rotation (R^T)
    if turn is None or not np.any(turn):
        return (c * rx + s * ry + cx + ox).astype(np.float32), (-s * rx + c * ry + cy + oy).astype(
            np.float32
        )
    ux, uy = undo_turn(c * rx + s * ry, -s * rx + c * ry, float(turn[0]), float(turn[1]),
                       subject.frame_size / 2)  # then the turn of the face plane
    return (ux + cx + ox).astype(np.float32), (uy + cy + oy).astype(np.float32)


def render_frames(
    subject: Subject, plan: VideoPlan, config_noise: float, seed_sequence: np.random.SeedSequence
) -> Iterator[np.ndarray]:
    """Yield the (S, S, 3) uint8 RGB frames of `plan`, S = subject.frame_size, in order."""
    rng = np.random.default_rng(seed_sequence)
    size = subject.frame_size
    grid = np.meshgrid(np.arange(size, dtype=np.float32), np.arange(size, dtype=np.float32))
    schedule = FieldSchedule(subject, plan)
    poses = head_pose(plan)
    extra = plan.nuisances
    turns = extra.turn if extra is not None and extra.turning else None
    across = (grid[0] / size - 0.5)[..., None] if extra is not None and extra.lighting else None
    for t in range(plan.n_frames):
        ux, uy = _pose_maps(subject, poses[t], grid, None if turns is None else turns[t])
        field = schedule.at(t)
        if field is not None:
            sx, sy = ux, uy
            for _ in range(FIXED_POINT_STEPS):
                d = cv2.remap(field, sx, sy, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
                sx, sy = ux - d[..., 0], uy - d[..., 1]
            ux, uy = sx, sy
        frame = cv2.remap(subject.canvas, ux, uy, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        frame *= plan.gain[t]
        if across is not None:  # the opt-in light changes: a level and a slope across the face
            frame *= extra.light[t, 0] + extra.light[t, 1] * across
        if config_noise > 0:
            frame += rng.standard_normal(frame.shape, dtype=np.float32) * config_noise
        yield np.clip(frame + 0.5, 0, 255).astype(np.uint8)


def true_displacement(subject: Subject, plan: VideoPlan, t: int) -> np.ndarray:
    """(S, S, 2) float32 forward displacement of the face at frame t in frame pixels, ignoring
    head pose: the optical flow from a neutral frame to frame t when the head is still."""
    field = FieldSchedule(subject, plan).at(t)
    size, (ox, oy) = subject.frame_size, subject.offset
    if field is None:
        return np.zeros((size, size, 2), np.float32)
    return field[oy : oy + size, ox : ox + size].copy()
