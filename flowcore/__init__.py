"""flowcore: turn face videos into motion features (landmarks, TV-L1 flow, 12-ROI MDMO).

Knows nothing about labels or models.

Entry points: `extract_source(path, out)` (a dataset copy, video folder or video file -> a Zarr
feature store; see flowcore.store for its layout), `open_source`, `ExtractParams`, `RunOptions`.
"""

from flowcore.batch import ExtractReport, extract_source, run_extraction
from flowcore.extract import ExtractParams, RunOptions
from flowcore.sources import open_source

__all__ = ["ExtractParams", "ExtractReport", "RunOptions", "extract_source", "open_source",
           "run_extraction"]
