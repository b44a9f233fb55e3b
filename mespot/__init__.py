"""mespot: spot facial macro- and micro-expressions in long face videos.

Packages, top to bottom: `mespot` (the command line `mespot.cli`, the Python API below, the
synthetic data generator `mespot.synth`, `bench`), `spotting` (features + labels -> AUW-GCN ->
intervals) and `flowcore` (videos -> features in a Zarr store; the shared basics).

The Python API (mespot.api), the same calls the commands make:
    extract, open_store, open_video, train, evaluate, report, predict (a folder of videos),
    Spotter.load(run).spot(video)
"""

from flowcore.version import __version__
from mespot.api import (Spotted, Spotter, evaluate, extract, open_store, open_video, predict,
                        report, train)

__all__ = ["Spotted", "Spotter", "__version__", "evaluate", "extract", "open_store", "open_video",
           "predict", "report", "train"]
