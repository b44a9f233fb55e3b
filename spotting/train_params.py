"""Training settings (`TrainParams`, the `train` section of a run's configuration) and the
number of inner-validation subjects chosen when none is given. Light on purpose (no torch):
`mespot train` reads its flags' defaults from here at start-up."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Optional

from flowcore.errors import UserError

AUGMENTATIONS = ("none", "mirror")  # TrainParams.augment
# Inner-validation subjects per fold when not given: they choose each fold's proposal rules
# (`mespot evaluate` calibrates by default) and let `--select inner-val` choose its epoch; only
# where each inner model still trains on MIN_INNER_TRAIN subjects, as in the quality benchmark
# that measured the recipe (5 to 7). With fewer it is not known to help: on the former
# 4-subject demo (inner models of one subject) calibration cost 0.09 overall F1.
DEFAULT_INNER_VAL = 2
MIN_INNER_TRAIN = 5


@dataclass(frozen=True)
class TrainParams:
    """Optimisation settings. The defaults are mespot's measured recipe (docs/quality.md): every
    fold starts from the shipped synthetic pretraining (`init` 'pretrained'; 'scratch' is the
    paper's random initialisation) and trains 50 epochs (the paper: 100 from scratch), with an
    inner model of 50 epochs beside it, so the whole costs what one 100-epoch model did.
    `normalisation`: 'fold' (mean/std of the training subjects' features) or 'compat' (the
    reference constants); `macro_ratio` None picks 0.7 for SAMM-LV stores and 0.5 otherwise;
    `save_every` keeps weights every that many epochs (the last epoch always; every epoch by
    default, so evaluation can use any epoch); `inner_val` > 0 also trains, per fold, an inner
    model without that many training subjects, on which `mespot evaluate` chooses the proposal
    rules (and `--select inner-val` the epoch); None: DEFAULT_INNER_VAL for a store of enough
    subjects, else 0 (`resolve_inner_val`); 0 is off, as the paper. The test subject's loss is
    only logged, never used to choose anything."""

    epochs: int = 50
    batch_size: int = 128
    lr: float = 0.01
    weight_decay: float = 0.1
    lr_decay: float = 0.96  # per epoch
    seed: int = 1
    normalisation: str = "fold"
    macro_ratio: Optional[float] = None
    save_every: int = 1
    inner_val: Optional[int] = None  # subjects held out per fold (0: off; None: resolve_inner_val)
    test_loss_every: int = 10  # epochs between TensorBoard test-loss points (logging only)
    init: str = "pretrained"  # pretrained, scratch or a weights file (spotting/initial_weights.py)
    augment: str = "none"  # none, or mirror: windows mirrored with p = 1/2 (spotting/augment.py)

    def __post_init__(self):
        if self.normalisation not in ("fold", "compat"):
            raise UserError(f"normalisation must be 'fold' or 'compat', got {self.normalisation!r}")
        for name in ("epochs", "batch_size", "save_every", "test_loss_every"):
            if getattr(self, name) < 1:
                raise UserError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.inner_val is not None and self.inner_val < 0:
            raise UserError(f"inner_val must be >= 0, got {self.inner_val}")
        if self.augment not in AUGMENTATIONS:
            raise UserError(f"augment must be one of {', '.join(AUGMENTATIONS)}, "
                            f"got {self.augment!r}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise UserError(f"lr (learning rate) must be a number > 0, got {self.lr}")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise UserError(f"weight_decay must be a number >= 0, got {self.weight_decay}")
        if not (math.isfinite(self.lr_decay) and 0 < self.lr_decay <= 1):
            raise UserError(f"lr_decay must be in (0, 1], got {self.lr_decay}")
        ratio = self.macro_ratio
        if ratio is not None and not (math.isfinite(ratio) and ratio >= 0):
            raise UserError(f"macro_ratio must be a number >= 0, got {ratio}")


def resolve_inner_val(train: TrainParams, n_subjects: int) -> TrainParams:
    """`train` with `inner_val` None made a number for a store of `n_subjects` subjects:
    DEFAULT_INNER_VAL where each fold's inner model keeps MIN_INNER_TRAIN training subjects (a
    fold trains on n_subjects - 1; CAS(ME)^2 has 22 subjects), else 0."""
    if train.inner_val is not None:
        return train
    enough = n_subjects - 1 - DEFAULT_INNER_VAL >= MIN_INNER_TRAIN
    return dataclasses.replace(train, inner_val=DEFAULT_INNER_VAL if enough else 0)
