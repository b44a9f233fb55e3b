"""A training run's configuration: every parameter that determines its results (config.json).

`RunConfig` gathers the sections (train, windows, prior, losses), each a frozen dataclass of
its stage; `config_from_dict` builds one from a YAML file or a run's own config.json.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Optional

from flowcore.errors import UserError
from spotting.losses import LossParams
from spotting.model import ModelDims
from spotting.datasets import DatasetRef
from spotting.prior import PriorParams
from spotting.protocols import PROTOCOLS, SplitParams
from spotting.windows import WindowParams


AUGMENTATIONS = ("none", "mirror")  # TrainParams.augment
# What a config.json written before a training field existed meant by its absence: runs from
# before `init` was a field started from random weights, whatever today's default is.
LEGACY_TRAIN = {"init": "scratch", "augment": "none"}
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


@dataclass(frozen=True)
class RunConfig:
    """Everything that determines a run's results (written to config.json)."""

    store: str  # a pooled run: every store's path joined by " + " (`datasets` has each)
    annotations: str
    protocol: str = "loso"  # spotting/protocols.py: loso, cross-dataset or split
    train: TrainParams = field(default_factory=TrainParams)
    windows: WindowParams = field(default_factory=WindowParams)
    prior: PriorParams = field(default_factory=PriorParams)
    losses: LossParams = field(default_factory=LossParams)
    model: ModelDims = field(default_factory=ModelDims)
    split: SplitParams = field(default_factory=SplitParams)  # the split protocol's draw
    test_datasets: tuple[str, ...] = ()  # the cross-dataset protocol's test datasets
    datasets: tuple[DatasetRef, ...] = ()  # a pooled run's datasets (spotting/datasets.py)

    def to_json(self) -> dict:
        d = dataclasses.asdict(self)
        d["prior"]["au_nodes"] = {str(k): list(v) for k, v in self.prior.au_nodes.items()}
        d["losses"]["class_weights"] = list(self.losses.class_weights)
        d["datasets"] = [dataclasses.asdict(r) for r in self.datasets]  # as JSON reads back
        d["test_datasets"] = list(self.test_datasets)
        return d


def config_from_dict(
    sections: dict, store: str, annotations: str, protocol: str = "loso",
    datasets: tuple[DatasetRef, ...] = (), test_datasets: tuple[str, ...] = (),
) -> RunConfig:
    """A RunConfig from sections {train, windows, prior, losses, model, split} of field values (a
    YAML file or a run's config.json; its store/annotations/environment entries are ignored)."""
    kinds = {
        "train": TrainParams,
        "windows": WindowParams,
        "prior": PriorParams,
        "losses": LossParams,
        "model": ModelDims,
        "split": SplitParams,
    }
    ignored = {"store", "annotations", "protocol", "environment", "store_params_hash",
               "features", "init_weights", "datasets", "test_datasets", "rates"}
    unknown = set(sections) - set(kinds) - ignored
    if unknown:
        raise UserError(f"unknown config section(s) {sorted(unknown)}; expected {sorted(kinds)}")
    built = {}
    for name, kind in kinds.items():
        values = dict(sections.get(name) or {})
        fields = {f.name for f in dataclasses.fields(kind)}
        bad = set(values) - fields
        if bad:
            raise UserError(
                f"config section {name!r}: unknown field(s) {sorted(bad)}; known: {sorted(fields)}"
            )
        if name == "prior" and "au_nodes" in values:
            values["au_nodes"] = {
                int(k): tuple(int(n) for n in v) for k, v in values["au_nodes"].items()
            }
        if name == "losses" and "class_weights" in values:
            values["class_weights"] = tuple(float(w) for w in values["class_weights"])
        try:
            built[name] = kind(**values)
        except (TypeError, ValueError) as err:
            raise UserError(f"config section {name!r}: {err}") from err
    if protocol not in PROTOCOLS:
        raise UserError(f"protocol {protocol!r} is not supported (one of {', '.join(PROTOCOLS)})")
    return RunConfig(store=store, annotations=annotations, protocol=protocol, **built,
                     datasets=tuple(datasets), test_datasets=tuple(test_datasets))
