"""mespot: spot facial macro- and micro-expressions in long face videos.

Packages: `flowcore` (videos -> features in Zarr), `spotting` (features -> AUW-GCN -> intervals)
and `mespot.synth` (synthetic long face videos with ground truth). The command line is
`mespot.cli`.
"""

from flowcore.version import __version__

__all__ = ["__version__"]
