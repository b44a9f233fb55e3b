"""Opt-in nuisances of everyday footage that are not expressions: talking, nods and turns of the
head, and changes of the lighting (SynthConfig's `talking_fraction`, `nods_per_minute`,
`turns_per_minute`, `light_changes_per_minute`; all 0 by default).

They are planned from a third seed stream of each video (`nuisance_seed`: `SeedSequence([seed,
subject, video, 3])`), apart from the plan's and the noise's, so turning them on leaves a set's
subjects, expressions, blinks and quick head movements as they were, and a set without them
(every benchmark and pretraining set made before they existed) renders the same bytes.

- Talking: utterances of 1-6 s, about `talking_fraction` of the video, each a train of 3-5
  syllables a second; a syllable opens the jaw and parts the lips (AU26+25) and stretches (AU20)
  or rounds (AU18) the lips, by up to the utterance's peak motion (`talking_px`).
- Nods: the head pitches by `nod_degrees` and back in 0.4-1 s, once or twice in a row.
- Turns: the head yaws by `turn_degrees` to one side in 0.3-0.8 s, stays there 0.5-3 s and
  comes back as fast. The face is a plane turned about its centre and seen in perspective (focal
  length FOCAL_FACES face widths); the head pivots behind it, so the face also moves sideways
  (PIVOT_X face widths x sin(yaw)) and up or down (PIVOT_Y x sin(pitch)).
- Light changes: the brightness moves to a new level (1 +- `light_change`) in 0.2-1.5 s, with a
  new slope across the face (one side up to that much brighter than the other), and stays.

Convention: frame indices 0-based; angles in degrees; x right and y down in the frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mespot.synth.config import SynthConfig

TALK_SHAPES = (("26", "25"), ("20",), ("18",))  # jaw open + lips apart, lips stretched, rounded
FOCAL_FACES = 4.0  # focal length in face widths (a face of 15 cm seen from 60 cm)
PIVOT_X, PIVOT_Y = 0.5, 0.4  # how far behind the face the head turns and nods, in face widths


@dataclass(frozen=True)
class Nuisances:
    """The opt-in nuisances of one video, frame by frame."""

    talk: np.ndarray  # (n, 3) float32 px: peak motion of each of TALK_SHAPES
    turn: np.ndarray  # (n, 2) float32 degrees: yaw, pitch
    light: np.ndarray  # (n, 2) float32: brightness level (1: as planned), slope across the face
    events: tuple[dict, ...]  # kind (talk, nod, turn, light), start, peak, end, detail

    @property
    def turning(self) -> bool:
        return bool(np.any(self.turn))

    @property
    def lighting(self) -> bool:
        return bool(np.any(self.light[:, 0] != 1) or np.any(self.light[:, 1]))


def wanted(config: SynthConfig) -> bool:
    """Whether `config` asks for any of the opt-in nuisances."""
    return (config.talking_fraction > 0 or config.nods_per_minute > 0
            or config.turns_per_minute > 0 or config.light_changes_per_minute > 0)


def nuisance_seed(config: SynthConfig, subject_index: int, video_index: int):
    """The seed stream of one video's opt-in nuisances (see the module docstring)."""
    return np.random.SeedSequence([config.seed, subject_index, video_index, 3])


def plan_nuisances(config: SynthConfig, n: int, seed_sequence) -> Nuisances | None:
    """The opt-in nuisances of an `n`-frame video, None when the config asks for none."""
    if not wanted(config):
        return None
    rng = np.random.default_rng(seed_sequence)
    frames = np.arange(n, dtype=np.float32)
    talk, talking = _talking(config, frames, rng)
    turn, moves = _nods_and_turns(config, frames, rng)
    light, changes = _light(config, frames, rng)
    events = sorted(talking + moves + changes, key=lambda e: e["start"])
    return Nuisances(talk, turn, light, tuple(events))


def _window(frames: np.ndarray, centre: float, width: float) -> np.ndarray:
    """A raised-cosine bump: 1 at `centre`, 0 from `width` / 2 away."""
    x = np.clip((frames - centre) / max(width, 1e-6), -0.5, 0.5)
    return (0.5 + 0.5 * np.cos(2 * np.pi * x)).astype(np.float32)


def _ramp(frames: np.ndarray, start: float, end: float) -> np.ndarray:
    """0 before `start`, 1 after `end`, a half cosine between."""
    x = np.clip((frames - start) / max(end - start, 1e-6), 0.0, 1.0)
    return (0.5 - 0.5 * np.cos(np.pi * x)).astype(np.float32)


def _talking(config: SynthConfig, frames: np.ndarray, rng) -> tuple[np.ndarray, list[dict]]:
    """(n, 3) peak motion of the talking shapes, and one event per utterance."""
    n, fps, share = len(frames), config.fps, config.talking_fraction
    talk, events = np.zeros((n, 3), np.float32), []
    if share <= 0:
        return talk, events
    mean_pause = 3.5 * (1 - share) / share  # s; utterances last 3.5 s on average
    start = rng.exponential(mean_pause) * fps
    while start < n - fps:
        end = min(start + rng.uniform(1.0, 6.0) * fps, n - 1)
        rate, peak = rng.uniform(3.0, 5.0), rng.uniform(*config.talking_px)
        step = fps / rate
        centre = start + step / 2
        while centre < end - step / 4:
            bump = _window(frames, centre, step * rng.uniform(0.9, 1.3))
            lips = rng.uniform(-0.6, 0.6)  # > 0 stretched, < 0 rounded
            talk[:, 0] += peak * rng.uniform(0.35, 1.0) * bump
            talk[:, 1 if lips > 0 else 2] += peak * abs(lips) * bump
            centre += step * rng.uniform(0.8, 1.2)
        events.append({"kind": "talk", "start": int(start), "peak": int(start), "end": int(end),
                       "detail": f"{rate:.1f} syllables/s, up to {peak:.2f} px"})
        start = end + max(0.3, rng.exponential(mean_pause)) * fps
    return talk, events


def _nods_and_turns(config: SynthConfig, frames: np.ndarray,
                    rng) -> tuple[np.ndarray, list[dict]]:
    """(n, 2) yaw and pitch in degrees, and one event per nod or turn."""
    n, fps = len(frames), config.fps
    minutes = n / fps / 60
    turn, events = np.zeros((n, 2), np.float32), []
    for _ in range(rng.poisson(config.nods_per_minute * minutes)):
        start, length = float(rng.integers(0, max(1, n - int(fps)))), rng.uniform(0.4, 1.0) * fps
        degrees = rng.uniform(*config.nod_degrees)
        times = 1 + int(rng.random() < 0.4)
        for k in range(times):
            s = start + k * length
            turn[:, 1] += degrees * (_ramp(frames, s, s + 0.45 * length)
                                     - _ramp(frames, s + 0.45 * length, s + length))
        events.append({"kind": "nod", "start": int(start), "peak": int(start + 0.45 * length),
                       "end": int(start + times * length),
                       "detail": f"{degrees:.1f} deg x{times}"})
    for _ in range(rng.poisson(config.turns_per_minute * minutes)):
        start = float(rng.integers(0, max(1, n - int(fps))))
        reach, hold, back = (rng.uniform(0.3, 0.8) * fps, rng.uniform(0.5, 3.0) * fps,
                             rng.uniform(0.3, 0.8) * fps)
        degrees = rng.uniform(*config.turn_degrees) * rng.choice([-1.0, 1.0])
        turn[:, 0] += degrees * (_ramp(frames, start, start + reach)
                                 - _ramp(frames, start + reach + hold, start + reach + hold + back))
        events.append({"kind": "turn", "start": int(start), "peak": int(start + reach),
                       "end": int(start + reach + hold + back), "detail": f"{degrees:.1f} deg"})
    turn[:, 0] = np.clip(turn[:, 0], -config.turn_degrees[1], config.turn_degrees[1])
    turn[:, 1] = np.clip(turn[:, 1], -config.nod_degrees[1], config.nod_degrees[1])
    return turn, events


def _light(config: SynthConfig, frames: np.ndarray, rng) -> tuple[np.ndarray, list[dict]]:
    """(n, 2) brightness level and slope across the face, and one event per change."""
    n, fps = len(frames), config.fps
    light, events = np.zeros((n, 2), np.float32), []
    light[:, 0] = 1.0
    count = rng.poisson(config.light_changes_per_minute * n / fps / 60)
    for start in np.sort(rng.integers(0, n, size=count)).astype(float):
        end = start + rng.uniform(0.2, 1.5) * fps
        change = rng.uniform(*config.light_change)
        target = np.array([1.0 + rng.choice([-1.0, 1.0]) * change,
                           rng.uniform(-1.0, 1.0) * change], np.float32)
        ramp = _ramp(frames, start, end)[:, None]
        light = light * (1 - ramp) + target * ramp  # from whatever it was to the new level
        events.append({"kind": "light", "start": int(start), "peak": int(end), "end": int(end),
                       "detail": f"level {target[0]:.2f}, slope {target[1]:+.2f}"})
    return light.astype(np.float32), events


def undo_turn(x: np.ndarray, y: np.ndarray, yaw: float, pitch: float,
              face_size: float) -> tuple[np.ndarray, np.ndarray]:
    """The points of the face plane (offsets from its centre, px) that a head turned by `yaw`
    and `pitch` degrees shows at frame offsets (x, y) from the face centre.

    Forward: a point p = (x, y, 0) of the face plane turns to R p about the face centre, at depth
    f (the focal length) from the camera, and is seen at f (R p)_xy / (f + (R p)_z), then moved by
    the pivot's shift. Inverse: undo the shift, then the homography H = [[f R00, f R01, 0],
    [f R10, f R11, 0], [R20, R21, f]]."""
    f = FOCAL_FACES * face_size
    a, b = np.deg2rad(yaw), np.deg2rad(pitch)
    x = x - PIVOT_X * face_size * np.sin(a)
    y = y - PIVOT_Y * face_size * np.sin(b)
    yawed = np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])
    pitched = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    r = pitched @ yawed
    h = np.array([[f * r[0, 0], f * r[0, 1], 0], [f * r[1, 0], f * r[1, 1], 0],
                  [r[2, 0], r[2, 1], f]])
    hi = np.linalg.inv(h)
    w = hi[2, 0] * x + hi[2, 1] * y + hi[2, 2]
    return (hi[0, 0] * x + hi[0, 1] * y + hi[0, 2]) / w, (hi[1, 0] * x + hi[1, 1] * y
                                                          + hi[1, 2]) / w
