"""Synthetic long face videos with ground truth, in the CAS(ME)^2 or SAMM-LV layout.

Stages, one per module: config (parameters, presets), faces (identities from a real photo),
actions (AU displacement fields), timeline (what happens when), render (frames), layouts (files
and workbooks), preview (a picture), generate (the driver), command (`mespot synth`).
"""

from mespot.synth.config import CLEAN, DEFAULT, SMALL, SynthConfig

__all__ = ["CLEAN", "DEFAULT", "SMALL", "SynthConfig", "SynthResult", "generate_dataset"]


def __getattr__(name: str):
    """The generator (OpenCV, pandas, openpyxl) imported when asked for, not by every `mespot`
    command that reads the presets (`mespot.synth.config`)."""
    if name in ("SynthResult", "generate_dataset"):
        from mespot.synth import generate

        return getattr(generate, name)
    raise AttributeError(f"module 'mespot.synth' has no attribute {name!r}")
