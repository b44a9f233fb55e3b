"""Parameters of the synthetic long-face-video generator, its presets and their validation."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from flowcore.errors import UserError

LAYOUTS = ("casme2", "samm", "smic")
SAMM_FPS = 200.0  # SAMM-LV is filmed at 200 fps; its layout defaults to it
SMIC_FPS = 100.0  # SMIC-E-long HS is filmed at 100 fps; the smic layout (HS) defaults to it
MIN_FACE_SIZE = 128  # px; measured: at 96 and 112 px dlib misses the face in 1-4% of noisy frames


@dataclass(frozen=True)
class SynthConfig:
    """Everything that decides a synthetic dataset; the same config and seed give the same bytes.

    Amplitudes are peak displacements in pixels of the rendered frame; durations in seconds.
    """

    subjects: int = 6
    videos_per_subject: int = 3
    seconds: float = 60.0  # per video
    fps: float = 30.0
    face_size: int = 128  # px, width of the detected face box; frames are 2 x face_size square
    seed: int = 0
    layout: str = "casme2"  # "casme2" (rawpic + CAS(ME)^2 workbook), "samm" (SAMM-LV), "smic"
    # Expressions (statistics shaped like AUWGCN.md section 11).
    expressions_per_minute: float = 3.0
    micro_fraction: float = 0.25
    both_types_per_video: bool = False  # force >= 1 ME and >= 1 MaE per video (small sets)
    micro_seconds: tuple[float, float] = (0.2, 0.5)
    micro_amplitude_px: tuple[float, float] = (0.3, 1.5)
    macro_seconds: tuple[float, float] = (0.5, 4.0)
    macro_median_seconds: float = 1.2  # log-normal; 5th/95th percentiles ~0.6 s / 2.5 s
    macro_amplitude_px: tuple[float, float] = (2.0, 8.0)
    # Nuisances that are not expressions.
    blinks_per_minute: float = 12.0
    head_moves_per_minute: float = 1.5
    head_move_px: tuple[float, float] = (3.0, 10.0)
    head_drift_px: float = 1.5  # amplitude of the slow wandering of the head
    flicker: float = 0.015  # relative amplitude of brightness flicker
    noise_sigma: float = 1.5  # grey levels of sensor noise
    jpeg_quality: int = 90
    # Opt-in nuisances of everyday footage (mespot/synth/nuisances.py), all off by default: the
    # benchmark and pretraining sets made before them render the same bytes.
    talking_fraction: float = 0.0  # share of each video spent talking (utterances of 1-6 s)
    talking_px: tuple[float, float] = (1.0, 4.0)  # peak jaw / lip motion of an utterance
    nods_per_minute: float = 0.0
    nod_degrees: tuple[float, float] = (4.0, 12.0)  # pitch of a nod (planar face, perspective)
    turns_per_minute: float = 0.0
    turn_degrees: tuple[float, float] = (8.0, 25.0)  # yaw of a turn away and back
    light_changes_per_minute: float = 0.0
    light_change: tuple[float, float] = (0.05, 0.25)  # relative brightness step, with a side

    @property
    def frames_per_video(self) -> int:
        return int(round(self.seconds * self.fps))

    @property
    def frame_size(self) -> int:
        """Side of the square frame in px (even)."""
        return 2 * self.face_size

    def replace(self, **changes) -> "SynthConfig":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def validate(self) -> "SynthConfig":
        """Raise UserError naming the first bad parameter; return self when all are sane."""
        checks = [
            (self.subjects >= 1, f"--subjects must be at least 1 (got {self.subjects})"),
            (
                1 <= self.videos_per_subject <= 9,
                f"--videos-per-subject must be 1..9, as CAS(ME)^2 has 9 video codes "
                f"(got {self.videos_per_subject})",
            ),
            (self.seconds > 0, f"--seconds must be positive (got {self.seconds:g})"),
            (self.fps > 0, f"--fps must be positive (got {self.fps:g})"),
            (
                self.frames_per_video >= 30,
                f"a video needs at least 30 frames; {self.seconds:g} s at {self.fps:g} fps gives "
                f"{self.frames_per_video}",
            ),
            (
                MIN_FACE_SIZE <= self.face_size <= 512,
                f"--face-size must be {MIN_FACE_SIZE}..512 px: "
                f"below {MIN_FACE_SIZE} px dlib's detector "
                f"misses the face in some frames (got {self.face_size})",
            ),
            (
                self.layout in LAYOUTS,
                f"--layout must be one of {', '.join(LAYOUTS)} (got {self.layout!r})",
            ),
            (self.seed >= 0, f"--seed must be non-negative (got {self.seed})"),
            (self.expressions_per_minute >= 0, "expressions_per_minute must be >= 0"),
            (0 <= self.micro_fraction <= 1, "micro_fraction must be in [0, 1]"),
            (
                1 <= self.jpeg_quality <= 100,
                f"jpeg_quality must be 1..100 (got {self.jpeg_quality})",
            ),
            (
                self.noise_sigma >= 0 and self.flicker >= 0 and self.head_drift_px >= 0,
                "noise_sigma, flicker and head_drift_px must be >= 0",
            ),
            (0 <= self.talking_fraction <= 0.9, "talking_fraction must be in [0, 0.9]"),
            (
                min(self.nods_per_minute, self.turns_per_minute,
                    self.light_changes_per_minute) >= 0,
                "nods_per_minute, turns_per_minute and light_changes_per_minute must be >= 0",
            ),
            (
                all(0 <= low <= high for low, high in (
                    self.talking_px, self.nod_degrees, self.turn_degrees, self.light_change))
                and self.turn_degrees[1] <= 40 and self.light_change[1] < 1,
                "talking_px, nod_degrees, turn_degrees and light_change must be (low, high) "
                "ranges with 0 <= low <= high (turns up to 40 degrees, light changes below 1)",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise UserError(message)
        return self


DEFAULT = SynthConfig()  # a realistic benchmark: 18 videos x 1 minute, 32,400 frames
SMALL = SynthConfig(  # for tests and demos: 6 videos x 8 s, a few seconds to render
    subjects=3,
    videos_per_subject=2,
    seconds=8.0,
    expressions_per_minute=15.0,
    both_types_per_video=True,
    macro_seconds=(0.5, 2.0),
    blinks_per_minute=15.0,
    head_moves_per_minute=4.0,
)
EVERYDAY = dict(  # the opt-in nuisances of everyday footage (mespot synth --nuisances)
    talking_fraction=0.4,
    nods_per_minute=3.0,
    turns_per_minute=1.5,
    light_changes_per_minute=1.0,
)
NEUTRAL = dict(  # no expression at all (mespot synth --neutral): footage for false alarms
    expressions_per_minute=0.0,
    both_types_per_video=False,
)
CLEAN = dict(  # switch every nuisance off: for measuring the rendered motion itself
    blinks_per_minute=0.0,
    head_moves_per_minute=0.0,
    head_drift_px=0.0,
    flicker=0.0,
    noise_sigma=0.0,
    jpeg_quality=100,
)
