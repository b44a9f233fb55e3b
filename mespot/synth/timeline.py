"""Plan what happens in one synthetic video, frame by frame, before anything is rendered.

Planning is a pure function of the config and a seed: it decides the expressions (type, AU mix,
onset/apex/offset, amplitude), the blinks, the quick head movements, the slow head drift and the
brightness flicker. Rendering (render.py) then only follows the plan.

Convention: frame indices in a plan are 0-based; the ground-truth files add 1.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mespot.synth.config import SynthConfig
from mespot.synth.nuisances import Nuisances, nuisance_seed, plan_nuisances

# AU mixes with their emotion and relative frequency, shaped so that the token counts resemble
# CAS(ME)^2's (AUWGCN.md section 11: AU12 and AU4 dominate, then 14, 6, 7, 2, 24, 1).
AU_MIXES: list[tuple[str, str, float]] = [
    ("12", "happiness", 26), ("6+12", "happiness", 18), ("L12", "happiness", 5),
    ("R12", "happiness", 4), ("6+7+12", "happiness", 4), ("12+25", "happiness", 4),
    ("4", "anger", 22), ("4+7", "disgust", 12), ("4+24", "anger", 7), ("24", "anger", 5),
    ("4+9", "disgust", 6), ("9+10", "disgust", 3), ("14", "disgust", 12), ("4+14", "disgust", 7),
    ("L14", "others", 4), ("R14", "others", 4), ("1+2", "surprise", 10), ("1+2+26", "surprise", 3),
    ("2", "surprise", 3), ("1+4+15", "sadness", 5), ("15", "sadness", 4), ("15+17", "sadness", 3),
    ("1+2+4", "fear", 3), ("7", "others", 5), ("26", "others", 3),
]
EDGE_SECONDS = 1.0  # no expression in the first and last second (the face box comes from frame 0)
MIN_GAP_SECONDS = 0.4  # between consecutive expressions


@dataclass(frozen=True)
class Expression:
    """One expression: intensity rises onset -> apex, holds to apex + hold, falls to offset."""

    kind: str  # "me" or "mae"
    onset: int
    apex: int
    hold: int  # frames at full intensity after the apex
    offset: int
    aus: str  # "+"-joined AU tokens, e.g. "6+12" or "L14"
    emotion: str
    amplitude_px: float  # peak displacement anywhere on the face at the apex

    @property
    def length(self) -> int:
        return self.offset - self.onset + 1


@dataclass(frozen=True)
class Blink:
    start: int
    closed: int  # frame of full closure
    end: int


@dataclass(frozen=True)
class HeadMove:
    """A quick head movement: a shift (dx, dy px) and turn (degrees), reached at `peak`.

    `returns` moves back by `end`; otherwise the head stays displaced from `peak` on.
    """

    start: int
    peak: int
    end: int
    dx: float
    dy: float
    degrees: float
    returns: bool


@dataclass(frozen=True)
class VideoPlan:
    n_frames: int
    fps: float
    expressions: tuple[Expression, ...]
    blinks: tuple[Blink, ...]
    head_moves: tuple[HeadMove, ...]
    drift: np.ndarray  # (n_frames, 3) float32: slow head drift dx, dy (px) and rotation (degrees)
    gain: np.ndarray  # (n_frames,) float32: brightness gain (flicker), 1 = none
    nuisances: Nuisances | None = None  # talking, nods, turns, light changes (opt-in)


def raised_cosine(t: np.ndarray, start: float, end: float) -> np.ndarray:
    """Smooth step from 0 at `start` to 1 at `end` (half a cosine period); clipped outside."""
    if end <= start:
        return (t >= start).astype(np.float32)
    x = np.clip((t - start) / (end - start), 0.0, 1.0)
    return (0.5 - 0.5 * np.cos(np.pi * x)).astype(np.float32)


def expression_intensity(expression: Expression, frames: np.ndarray) -> np.ndarray:
    """(len(frames),) float32 in [0, 1]: 0 at onset and offset, 1 from apex to apex + hold."""
    e = expression
    rise = raised_cosine(frames, e.onset, e.apex)
    fall = 1.0 - raised_cosine(frames, e.apex + e.hold, e.offset)
    return (
        np.where(frames <= e.apex, rise, fall).astype(np.float32)
        * (frames >= e.onset)
        * (frames <= e.offset)
    )


def blink_intensity(blink: Blink, frames: np.ndarray) -> np.ndarray:
    closing = raised_cosine(frames, blink.start, blink.closed)
    opening = 1.0 - raised_cosine(frames, blink.closed, blink.end)
    return np.where(frames <= blink.closed, closing, opening).astype(np.float32)


def head_move_pose(move: HeadMove, frames: np.ndarray) -> np.ndarray:
    """(len(frames), 3) float32: dx, dy (px), rotation (degrees) contributed by one movement."""
    there = raised_cosine(frames, move.start, move.peak)
    if move.returns:
        there = np.where(
            frames <= move.peak, there, 1.0 - raised_cosine(frames, move.peak, move.end)
        )
    return there[:, None] * np.array([move.dx, move.dy, move.degrees], np.float32)


def _expression_lengths(
    config: SynthConfig, kinds: list[str], rng: np.random.Generator
) -> list[int]:
    lengths = []
    for kind in kinds:
        if kind == "me":
            seconds = rng.uniform(*config.micro_seconds)
        else:
            low, high = config.macro_seconds
            seconds = float(
                np.clip(
                    config.macro_median_seconds * np.exp(0.45 * rng.standard_normal()), low, high
                )
            )
        lengths.append(max(int(round(seconds * config.fps)), 3))
    return lengths


def _place(
    lengths: list[int], first: int, last: int, gap: int, rng: np.random.Generator
) -> list[int]:
    """Start frames for intervals of `lengths` in [first, last], in order, `gap` apart, at
    random."""
    slack = (last - first + 1) - sum(lengths) - gap * (len(lengths) - 1)
    cuts = np.sort(rng.integers(0, slack + 1, size=len(lengths)))
    starts, cursor = [], first
    for i, length in enumerate(lengths):
        starts.append(cursor + int(cuts[i]) - (int(cuts[i - 1]) if i else 0))
        cursor = starts[-1] + length + gap
    return starts


def _plan_expressions(config: SynthConfig, n: int, rng: np.random.Generator) -> list[Expression]:
    minutes = n / config.fps / 60
    count = int(min(rng.poisson(config.expressions_per_minute * minutes), 15))
    if config.expressions_per_minute > 0 or config.both_types_per_video:
        count = max(count, 2 if config.both_types_per_video else 1)
    kinds = ["me" if rng.random() < config.micro_fraction else "mae" for _ in range(count)]
    if config.both_types_per_video:
        kinds[:2] = ["me", "mae"]
        rng.shuffle(kinds)
    lengths = _expression_lengths(config, kinds, rng)
    edge = min(int(EDGE_SECONDS * config.fps), n // 6)
    first, last = edge, n - 1 - edge
    gap = int(MIN_GAP_SECONDS * config.fps)
    while kinds and sum(lengths) + gap * (len(lengths) - 1) > last - first + 1:
        drop = int(np.argmax(lengths))  # the video is too short: drop the longest
        if config.both_types_per_video and kinds.count(kinds[drop]) == 1 and lengths[drop] > 3:
            lengths[drop] = max(3, lengths[drop] // 2)
            continue
        del kinds[drop], lengths[drop]
    weights = np.array([w for _, _, w in AU_MIXES], float)
    expressions = []
    for kind, length, start in zip(kinds, lengths, _place(lengths, first, last, gap, rng)):
        aus, emotion, _ = AU_MIXES[int(rng.choice(len(AU_MIXES), p=weights / weights.sum()))]
        end = start + length - 1
        rise = max(1, int(round((length - 1) * rng.uniform(0.3, 0.5))))
        hold = int(round((end - start - rise) * rng.uniform(0.0, 0.3))) if kind == "mae" else 0
        low, high = config.micro_amplitude_px if kind == "me" else config.macro_amplitude_px
        amplitude = float(np.exp(rng.uniform(np.log(low), np.log(high))))
        expressions.append(
            Expression(kind, start, start + rise, hold, end, aus, emotion, amplitude)
        )
    return expressions


def _plan_blinks(config: SynthConfig, n: int, rng: np.random.Generator) -> list[Blink]:
    blinks, frame = [], 0.0
    rate = config.blinks_per_minute / 60 / config.fps  # per frame
    while rate > 0:
        frame += rng.exponential(1 / rate)
        length = max(int(round(rng.uniform(0.2, 0.4) * config.fps)), 3)
        start = int(frame)
        if start + length >= n:
            break
        blinks.append(Blink(start, start + max(1, int(length * 0.4)), start + length - 1))
        frame = start + length + 0.3 * config.fps
    return blinks


def _plan_head_moves(
    config: SynthConfig, n: int, expressions: list[Expression], rng: np.random.Generator
) -> list[HeadMove]:
    count = rng.poisson(config.head_moves_per_minute * n / config.fps / 60)
    moves = []
    for _ in range(count):
        length = max(int(round(rng.uniform(0.3, 1.0) * config.fps)), 4)
        for _try in range(20):  # prefer gaps between expressions: a nuisance, not a confound
            start = int(rng.integers(int(config.fps), max(int(config.fps) + 1, n - length)))
            clash = any(start <= e.offset and e.onset <= start + length for e in expressions)
            if not clash:
                break
        returns = bool(rng.random() < 0.6)
        peak = start + (length // 2 if returns else length - 1)
        distance = rng.uniform(*config.head_move_px)
        angle = rng.uniform(0, 2 * np.pi)
        moves.append(
            HeadMove(
                start,
                peak,
                start + length - 1,
                float(distance * np.cos(angle)),
                float(distance * np.sin(angle)) * 0.6,
                float(rng.uniform(-3, 3)),
                returns,
            )
        )
    return sorted(moves, key=lambda m: m.start)


def _slow_drift(config: SynthConfig, n: int, rng: np.random.Generator) -> np.ndarray:
    """(n, 3) smooth wandering: a few sinusoids with periods of 8-60 s, zero at frame 0."""
    t = np.arange(n) / config.fps
    drift = np.zeros((n, 3), np.float32)
    for axis, scale in enumerate(
        (config.head_drift_px, config.head_drift_px, config.head_drift_px * 0.5)
    ):
        for _ in range(3):
            period, phase = rng.uniform(8, 60), rng.uniform(0, 2 * np.pi)
            drift[:, axis] += scale / 3 * (np.sin(2 * np.pi * t / period + phase) - np.sin(phase))
    return drift


def _flicker(config: SynthConfig, n: int, rng: np.random.Generator) -> np.ndarray:
    """(n,) gain: a slow beat of the lights plus frame-to-frame jitter."""
    t = np.arange(n) / config.fps
    beat = np.sin(2 * np.pi * rng.uniform(0.3, 2.0) * t + rng.uniform(0, 2 * np.pi))
    jitter = rng.standard_normal(n) * 0.25
    return (1.0 + config.flicker * (beat + jitter)).astype(np.float32)


def plan_video(config: SynthConfig, seed_sequence: np.random.SeedSequence,
               nuisances_seed: np.random.SeedSequence | None = None) -> VideoPlan:
    """Everything that will happen in one video; deterministic for the seed sequences (the
    opt-in nuisances need their own, `nuisances_seed`)."""
    rng = np.random.default_rng(seed_sequence)
    n = config.frames_per_video
    expressions = _plan_expressions(config, n, rng)
    return VideoPlan(
        n_frames=n,
        fps=config.fps,
        expressions=tuple(expressions),
        blinks=tuple(_plan_blinks(config, n, rng)),
        head_moves=tuple(_plan_head_moves(config, n, expressions, rng)),
        drift=_slow_drift(config, n, rng),
        gain=_flicker(config, n, rng),
        nuisances=None if nuisances_seed is None else plan_nuisances(config, n, nuisances_seed),
    )


def head_pose(plan: VideoPlan) -> np.ndarray:
    """(n_frames, 3) float32 total head pose: slow drift plus every quick movement."""
    frames = np.arange(plan.n_frames, dtype=np.float32)
    pose = plan.drift.copy()
    for move in plan.head_moves:
        pose += head_move_pose(move, frames)
    return pose


def video_seeds(config: SynthConfig, subject_index: int, video_index: int):
    """(plan seed, noise seed) of one video: independent streams, fixed by the dataset seed."""
    base = [config.seed, subject_index, video_index]
    return np.random.SeedSequence(base + [1]), np.random.SeedSequence(base + [2])


def plan_for(config: SynthConfig, subject_index: int, video_index: int) -> VideoPlan:
    """The plan of one video of the dataset (its own seed stream, fixed by the dataset seed)."""
    return plan_video(config, video_seeds(config, subject_index, video_index)[0],
                      nuisance_seed(config, subject_index, video_index))
