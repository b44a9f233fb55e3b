"""Synthetic long face videos with ground truth, in the CAS(ME)^2 or SAMM-LV layout.

Stages, one per module: config (parameters, presets), faces (identities from a real photo),
actions (AU displacement fields), timeline (what happens when), render (frames), layouts (files
and workbooks), preview (a picture), generate (the driver), command (`mespot synth`).
"""

from mespot.synth.config import CLEAN, DEFAULT, SMALL, SynthConfig
from mespot.synth.generate import SynthResult, generate_dataset

__all__ = ["CLEAN", "DEFAULT", "SMALL", "SynthConfig", "SynthResult", "generate_dataset"]
