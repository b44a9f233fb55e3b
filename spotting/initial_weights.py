"""The initial weights of every fold (`mespot train --init`): scratch, pretrained, or a file.

`--init` values: `pretrained` (the default: weights shipped with the package at `PRETRAINED`,
made by `mespot pretrain` on synthetic sets, `make pretrained`; see spotting/pretrain.py and
docs/quality.md for what they are worth), `scratch` (the paper's random initialisation: the
AUW-GCN reproduction) or the path of a weights file (`mespot pretrain`'s output, or any
`weights_epoch_EEE.safetensors` of a run). The shipped weights fit the default network
(`ModelDims()`); a network of other dimensions trains with `scratch` or its own file.

A fold started from such weights keeps what is its own: the AU prior (the `adj` buffer is not
taken from the file) and the feature normalisation of its training subjects. Every other
weight, BatchNorm statistics included, is copied before the first epoch; training then goes on
as from scratch (same optimiser, schedule and epochs unless the configuration says otherwise).
"""

from __future__ import annotations

from pathlib import Path

from flowcore.errors import UserError

PRETRAINED = Path(__file__).parent / "weights" / "pretrained_synth.safetensors"
MAKE_PRETRAINED = ("mespot pretrain STORE... -a ANNOTATIONS... -o weights.safetensors "
                   "(README: Synthetic pretraining), then --init weights.safetensors")


def init_path(init: str) -> Path | None:
    """The weights file of an `--init` value (None for scratch); UserError when it is missing,
    for `pretrained` saying that none are shipped yet and how to make them."""
    if init == "scratch":
        return None
    if init == "pretrained":
        if not PRETRAINED.is_file():
            raise UserError(f"--init pretrained: no pretrained weights are shipped with mespot "
                            f"yet ({PRETRAINED} is missing); make them with {MAKE_PRETRAINED}")
        return PRETRAINED
    path = Path(init)
    if not path.is_file():
        raise UserError(f"--init {init}: no weights file at {path} (expected scratch, pretrained "
                        f"or a .safetensors file)")
    return path


def apply_init(model, init: str) -> None:
    """Copy the weights of `init` into `model` (an AUWGCN, in place), all but the AU prior
    `adj`; nothing for `scratch`. UserError when the file is not weights of this network."""
    path = init_path(init)
    if path is None:
        return
    from safetensors.torch import load_file

    try:
        state = load_file(str(path))
    except Exception as err:  # safetensors raises its own error types for a bad file
        raise UserError(f"--init {init}: {path} is not a safetensors weights file "
                        f"({err})") from None
    state = {k: v for k, v in state.items() if not k.endswith(".adj")}
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as err:  # same names, other shapes (another ModelDims)
        raise UserError((f"--init {init}: {path} does not fit this network ({err}".splitlines()[0]
                         + "); --init scratch trains it from random weights")) from None
    missing = [k for k in result.missing_keys if not k.endswith(".adj")]
    if missing or result.unexpected_keys:
        raise UserError(f"--init {init}: {path} does not fit AUW-GCN (missing {missing}, "
                        f"unexpected {list(result.unexpected_keys)})")
