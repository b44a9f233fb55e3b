"""A training run's configuration: every parameter that determines its results (config.json).

`RunConfig` gathers the sections (train, windows, prior, losses), each a frozen dataclass of
its stage; `config_from_dict` builds one from a YAML file or a run's own config.json.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from flowcore.errors import UserError
from spotting.losses import LossParams
from spotting.model import ModelDims
from spotting.datasets import DatasetRef
from spotting.prior import PriorParams
from spotting.train_params import (  # noqa: F401  (the train section's names, here too)
    AUGMENTATIONS,
    DEFAULT_INNER_VAL,
    MIN_INNER_TRAIN,
    TrainParams,
    resolve_inner_val,
)
from spotting.protocols import PROTOCOLS, SplitParams
from spotting.windows import WindowParams

# What a config.json written before a training field existed meant by its absence: runs from
# before `init` was a field started from random weights, whatever today's default is.
LEGACY_TRAIN = {"init": "scratch", "augment": "none"}


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
