"""What a measurement ran on: machine, accelerator, thread setting and library versions (JSON-able),
recorded by `mespot bench` and the scripts in benchmarks/."""

from __future__ import annotations

import datetime
import os
import platform
from pathlib import Path

from flowcore.version import __version__


def set_threads(n: int) -> None:
    """Use n CPU threads in OpenCV, torch and numba (call before timing anything)."""
    import cv2
    import numba
    import torch

    cv2.setNumThreads(n)
    torch.set_num_threads(n)
    numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))


def _numba_layer() -> str:
    """The threading layer numba chose (known only after a parallel kernel ran)."""
    import numba

    try:
        return numba.threading_layer()
    except ValueError:
        return f"not yet chosen (config: {numba.config.THREADING_LAYER})"


def describe(threads: int | None = None) -> dict:
    """Machine, versions and thread settings, JSON-able."""
    import cv2
    import numba
    import numpy
    import torch

    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "date_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": {
            "platform": platform.platform(),
            "cpu": cpu,
            "cpu_count": os.cpu_count(),
            "load_average_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
            "cuda_device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        },
        "threads": threads,
        "versions": {
            "mespot": __version__,
            "python": platform.python_version(),
            "numpy": numpy.__version__,
            "opencv": cv2.__version__,
            "torch": torch.__version__,
            "numba": numba.__version__,
            "numba_threading_layer": _numba_layer(),
        },
    }
