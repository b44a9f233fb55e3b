"""flowcore: turn face videos into motion features (landmarks, TV-L1 flow, 12-ROI MDMO).

Knows nothing about labels or models.

Entry points: `extract_source(path, out)` (a dataset copy, video folder or video file -> a Zarr
feature store; see flowcore.store for its layout), `open_source`, `ExtractParams`, `RunOptions`.
They are imported when first used (PEP 562), so the package's light modules (`errors`,
`version`) load without NumPy: the service client (mespot.service.client) needs only those.
"""

import importlib

_ENTRY_POINTS = {"ExtractReport": "flowcore.batch", "extract_source": "flowcore.batch",
                 "run_extraction": "flowcore.batch", "ExtractParams": "flowcore.extract",
                 "RunOptions": "flowcore.extract", "open_source": "flowcore.sources"}

__all__ = sorted(_ENTRY_POINTS)


def __getattr__(name: str):
    if name not in _ENTRY_POINTS:
        raise AttributeError(f"module 'flowcore' has no attribute {name!r}")
    return getattr(importlib.import_module(_ENTRY_POINTS[name]), name)


def __dir__():
    return sorted(list(globals()) + __all__)
