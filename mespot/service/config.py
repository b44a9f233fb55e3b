"""The service's settings: where it keeps its files, which folders it may read and write, its
slots (one job at a time each), its limits. One place for the service's constants."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from flowcore.locations import location

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8750
DEFAULT_HOME = Path("~/.mespot/server")  # the server's folder: jobs.sqlite, token, jobs/, uploads/
LEASE_S = 15.0  # a running job's lease: renewed every HEARTBEAT_S by its runner process
HEARTBEAT_S = 1.0
CANCEL_POLL_S = 0.2  # a runner looks for a cancel request this often, then interrupts its work
CANCEL_GRACE_S = 30.0  # a cancelled runner still running after this is killed (its group)
PROGRESS_EVERY_S = 0.5  # at most one progress write per job per this many seconds
MAX_UPLOAD_MB = 2048.0
UPLOAD_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg")
JOB_KINDS = ("extract", "train", "evaluate", "predict")
STATES = ("queued", "running", "done", "failed", "cancelled")
# shown, not stored: a running job asked to stop reads "cancelling" until its runner has stopped
SHOWN_STATES = ("queued", "running", "cancelling", "done", "failed", "cancelled")
FINAL_STATES = ("done", "failed", "cancelled")


@dataclass(frozen=True)
class Slot:
    """One place a job runs: a GPU (`device` 'cuda', `gpu` its index) or `cores` CPU cores."""

    name: str  # "gpu0", "cpu0", ...
    device: str  # "cpu" or "cuda" (the runner sees only its GPU, as cuda:0)
    cores: int
    gpu: int | None = None


@dataclass(frozen=True)
class ServiceConfig:
    """Everything `mespot serve` was told (paths absolute and resolved)."""

    home: Path
    data_root: Path  # read: datasets, video folders, annotation files (or a URL's UPath)
    store_root: Path  # read and write: feature stores and run folders (or a URL's UPath)
    slots: tuple[Slot, ...] = field(default_factory=lambda: (cpu_slots(1)))
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    engine: str = "local"  # or "ray": the jobs' work goes to a Ray cluster (flowcore.ray_engine)
    ray_address: str | None = None
    max_upload_bytes: int = int(MAX_UPLOAD_MB * 2**20)
    lease_s: float = LEASE_S
    cancel_grace_s: float = CANCEL_GRACE_S

    @property
    def database(self) -> Path:
        return self.home / "jobs.sqlite"

    def job_folder(self, job_id: int) -> Path:
        return self.home / "jobs" / str(job_id)

    @property
    def uploads(self) -> Path:
        return self.home / "uploads"


def cpu_slots(n: int, cores: int | None = None) -> tuple[Slot, ...]:
    """`n` CPU slots sharing the machine's cores (or `cores` each)."""
    if n < 1:
        raise ValueError(f"--slots must be >= 1, got {n}")
    each = cores or max(1, (os.cpu_count() or 1) // n)
    return tuple(Slot(f"cpu{i}", "cpu", each) for i in range(n))


def ray_slots(n: int, device: str) -> tuple[Slot, ...]:
    """`n` jobs at once whose work goes to a Ray cluster (its tasks get their own CPUs/GPUs)."""
    if n < 1:
        raise ValueError(f"--slots must be >= 1, got {n}")
    if device not in ("cpu", "cuda"):
        raise ValueError(f"--device must be cpu or cuda, got {device!r}")
    return tuple(Slot(f"ray{i}", device, 1) for i in range(n))


def gpu_slots(gpus: list[int]) -> tuple[Slot, ...]:
    """One slot per GPU index, each with a share of the CPU cores (decoding, landmarks)."""
    if not gpus:
        raise ValueError("--device cuda: no CUDA device is visible on this machine")
    each = max(1, (os.cpu_count() or 1) // len(gpus))
    return tuple(Slot(f"gpu{g}", "cuda", each, g) for g in gpus)


def to_json(config: ServiceConfig) -> dict:
    """The settings a runner process needs, as JSON (written to HOME/service.json)."""
    return {"home": str(config.home), "data_root": str(config.data_root),
            "store_root": str(config.store_root), "engine": config.engine,
            "ray_address": config.ray_address, "lease_s": config.lease_s,
            "slots": [vars(s) for s in config.slots]}


def from_json(values: dict) -> ServiceConfig:
    return ServiceConfig(home=Path(values["home"]), data_root=location(values["data_root"]),
                         store_root=location(values["store_root"]), engine=values["engine"],
                         ray_address=values["ray_address"], lease_s=values["lease_s"],
                         slots=tuple(Slot(**s) for s in values["slots"]))
