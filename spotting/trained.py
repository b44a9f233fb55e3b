"""A trained run (or a reference checkpoint) loaded once to spot new videos: its networks, the
proposal rules they apply, and how a new video must be extracted to match its features. Read
from the run folder alone (spotting/run_record.py); `predict` and `mespot.api.Spotter` use it.

What it applies by default is what `mespot evaluate` applies by default:
- the last epoch of each fold (`fixed:N` on request);
- the test-time flip (the logits of the face and of its mirror averaged), except for `--compat`
  features and reference checkpoints;
- each fold's proposal rules calibrated on its inner-validation subjects, as recorded by
  `mespot train` in folds/<subject>/rules.json (spotting/fold_rules.py), where every fold used
  has them for these options; else AUW-GCN's fixed rules of the run's preset.
One fold (`fold`): that fold's model with its own rules, exactly what `evaluate` applies to the
fold's test subject. Every fold (the default): the mean of the folds' logits, with per type the
lower median of the folds' calibrated apex thresholds, K and score floors
(`Calibrated.combined`); docs/quality.md measures what that scores on a subject no fold saw.
The expected precision of each interval comes from the run's precision record for the same
options (RunFolder.precision_path, written by `mespot train` and `mespot evaluate`): one fold's
map (fitted without
its test subject) or the map of every fold's held-out intervals.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from pathlib import Path

from flowcore.errors import UserError
from flowcore.locations import local_folder
from spotting.augment import flip_by_default
from spotting.calibrate import Calibrated
from spotting.data import REFERENCE_MEAN, REFERENCE_STD
from spotting.evaluate import SpotOptions
from spotting.selection import parse_selection
from spotting.fold_rules import recorded_rules, rules_key
from spotting.metrics import MEGC
from spotting.precision import maps_from_json, read_precision
from spotting.proposals import PRESETS, PROPOSAL_VARIANTS, ProposalParams
from spotting.run_folder import FoldFolder, RunFolder
from spotting.run_record import RunRecord, read_record
from spotting.spot import Model, WeightsFile
from spotting.windows import WindowParams


LONGER = 1.5  # a video this many times longer than the calibration videos gets a note


@dataclass(frozen=True)
class Trained:
    """What spotting a new video needs, loaded once (see the module docstring)."""

    path: Path  # the run folder or checkpoint file
    files: tuple[WeightsFile | Loaded, ...]  # checked; `models` builds their networks
    rules: ProposalParams | Calibrated  # applied to the models' mean logits
    options: SpotOptions  # calibrate (the rules are calibrated ones), flip
    selection: str  # e.g. "last"
    params: dict  # extraction parameters of the training features (ExtractParams.to_dict())
    preset: str
    fps: float  # the training videos' frame rate after subsampling
    subjects: tuple[str, ...] = ()  # the run's LOSO folds (none for a checkpoint)
    missing_folds: tuple[str, ...] = ()  # folds of the run not averaged (allowed missing)
    fold_rules: dict | None = None  # fold -> its calibrated rules (JSON), when calibrated
    note: str = ""  # why the rules are not evaluate's default, when they are not
    device: str = "cpu"  # where the networks are
    precision: dict | None = None  # type -> PrecisionMap (spotting/precision.py), None: none
    precision_note: str = ""  # where the maps come from, or why there are none

    @functools.cached_property
    def models(self) -> tuple[Model, ...]:
        """The networks of `files`, built on first use (importing torch), then kept."""
        return tuple(f.load(self.device) for f in self.files)

    @property
    def calibrated_on_rows(self) -> int | None:
        """The longest video (feature rows) any fold's calibrated rules were chosen on; None
        without calibrated rules or where the record does not say."""
        rows = [r for info in (self.fold_rules or {}).values()
                for r in info.get("val_video_rows", [])]
        return max(rows) if rows else None

    def length_note(self, videos) -> str:
        """A warning when `videos` (flowcore VideoFeatures) are much longer than those the
        calibrated rules were chosen on: K, the proposals kept per video and type, then caps
        what is spotted; "" otherwise."""
        longest = self.calibrated_on_rows
        if longest is None:
            return ""
        long = [v.video_id for v in videos if v.n_rows > LONGER * longest]
        if not long:
            return ""
        k = {kind: self.rules.to_json()[kind]["top_k"] for kind in ("me", "mae")}
        return (f"{', '.join(long[:3])}{' ...' if len(long) > 3 else ''}: more than "
                f"{LONGER:g}x as long as the videos the proposal rules were calibrated on (up to "
                f"{longest} rows), which keep {k['me']} ME and {k['mae']} MaE proposals per video: "
                f"fewer may be spotted than they hold; --no-calibrate keeps AUW-GCN's 5 per video")

    @property
    def compat(self) -> bool:
        return bool(self.params.get("compat"))

    @property
    def applied(self) -> str:
        """What is applied, in the words of `mespot evaluate`'s selection labels."""
        if not self.subjects:  # a reference checkpoint
            return f"reference checkpoint {self.files[0].name}{self.options.label}"
        label = parse_selection(self.selection).label + self.options.label
        if len(self.files) == 1:
            return f"{label}; the model of {self.files[0].name}"
        how = ("their calibrated rules combined per type by the median" if self.options.calibrate
               else "fixed proposal rules")
        return f"{label}; the mean of {len(self.files)} folds' logits, {how}"

    def rules_json(self) -> dict:
        """The proposal rules applied, as JSON."""
        if isinstance(self.rules, Calibrated):
            return {"calibrated": True, **self.rules.to_json()}
        return {"calibrated": False, **json_params(self.rules)}


@dataclass(frozen=True)
class Loaded:
    """A network loaded already: a reference checkpoint (read, and so checked, by loading it)."""

    model: Model

    @property
    def name(self) -> str:
        return self.model.name

    @property
    def windows(self) -> WindowParams:
        return self.model.windows

    def load(self, device) -> Model:
        return self.model


def json_params(params: ProposalParams) -> dict:
    return {k: list(v) if isinstance(v, tuple) else v
            for k, v in dataclasses.asdict(params).items()}


def load_trained(model: str | Path, *, fold: str | None = None, select: str = "last",
                 device="cpu", allow_missing_folds: bool = False, calibrate: bool | None = None,
                 flip: bool | None = None, preset: str | None = None,
                 proposals: str | None = None) -> Trained:
    """A run folder (every fold's model, or `fold`'s) or a reference checkpoint file, loaded.
    `select`: last or fixed:N; `calibrate`, `flip`: as `mespot evaluate` (None: its defaults);
    `preset`, `proposals`: proposal ranges and arithmetic (None: the run's). A run with LOSO
    folds missing or unfinished is refused unless `allow_missing_folds`."""
    try:
        model = local_folder(model)  # a URL's run folder: its copy in the cache
    except FileNotFoundError:
        raise UserError(f"{model}: no such run folder or checkpoint file") from None
    if not model.exists():
        raise UserError(f"{model}: no such run folder or checkpoint file")
    if model.is_file():
        return _checkpoint(model, device, calibrate, flip, preset, proposals)
    selection = parse_selection(select)
    if selection.mode not in ("last", "fixed"):
        raise UserError("predict takes --select last or fixed:N (the others choose epochs on "
                        "labelled data)")
    record = read_record(model)
    folds, missing = _folds(RunFolder(model), record, fold, allow_missing_folds)
    epochs = [f.last_epoch() if selection.mode == "last" else _fixed(f, selection.epoch)
              for f in folds]
    files = tuple(WeightsFile.read(f.weights_path(e), record.windows, f.path.name)
                  for f, e in zip(folds, epochs))
    base = proposal_params(preset or record.preset, proposals, record.compat)
    flip = flip_by_default(record.compat) if flip is None else flip
    rules, chosen, note = _rules(folds, epochs, base, flip, calibrate, record.compat)
    options = SpotOptions(chosen is not None, flip)
    maps, said = _precision(RunFolder(model), selection.name + options.suffix,
                            {f.path.name: e for f, e in zip(folds, epochs)}, base,
                            preset or record.preset, fold)
    return Trained(model, files, rules, options, select, record.params,
                   preset or record.preset, record.fps, record.subjects, tuple(missing), chosen,
                   note, str(device), maps, said)


def _precision(run: RunFolder, name: str, epochs: dict[str, int], base: ProposalParams,
               preset: str, fold: str | None) -> tuple[dict | None, str]:
    """(type -> PrecisionMap, where from) of the run's precision record for these options
    (RunFolder.precision_path, written by `mespot train` and `evaluate`): one fold's, fitted
    without its test subject, or, for every fold together, the map of all their held-out
    intervals; (None, why) when there is none for these options."""
    path = run.precision_path(name)
    record = read_precision(path)
    again = (f"run `mespot evaluate {run.path}` with these options ({name}) to record it; "
             f"until then every interval is listed, without an expected precision")
    if record is None:
        return None, f"no score -> precision map for {name} in the run folder: {again}"
    key = record["key"]
    if (key.get("proposals") != base.variant or key.get("preset") != preset
            or any(key["epochs"].get(s) != e for s, e in epochs.items())):
        return None, f"{path} was made for other epochs or proposal rules: {again}"
    maps = maps_from_json(record, fold)
    if maps is None:
        return None, f"{path} has no map for fold {fold}: {again}"
    where = (f"fitted on the held-out test intervals of the folds other than {fold}" if fold
             else f"fitted on the held-out test intervals of all {len(key['epochs'])} folds")
    return maps, f"expected precision from {path.name} ({where})"


def _folds(run: RunFolder, record: RunRecord, fold: str | None,
           allow_missing: bool) -> tuple[list[FoldFolder], list[str]]:
    """The complete fold folders to use and the LOSO folds missing (every fold, or `fold`)."""
    subjects = list(record.subjects)
    if fold is not None:
        if fold not in subjects:
            raise UserError(f"{run.path} has no fold {fold!r} (its folds: {', '.join(subjects)})")
        subjects = [fold]
    return run.complete_folds(subjects, allow_missing)


def _fixed(fold: FoldFolder, epoch: int) -> int:
    if epoch not in fold.epochs():
        raise UserError(f"{fold.path}: no weights for epoch {epoch}")
    return epoch


def _rules(folds: list[FoldFolder], epochs: list[int], base: ProposalParams, flip: bool,
           calibrate: bool | None, compat: bool):
    """(rules to apply, {fold: its calibrated rules} or None, note): the folds' recorded rules
    for these options, combined, else the fixed `base`. `calibrate` None: as `evaluate`, where
    every fold has an inner model and the features are not --compat (with a note when some
    fold has no record for these options); True: UserError when some fold has none."""
    inner = all(f.inner.inner_meta_path.is_file() for f in folds)
    if calibrate is False or (calibrate is None and (compat or not inner)):
        return base, None, ""
    found = {f.path.name: recorded_rules(f, rules_key(e, MEGC, flip, base), base)
             for f, e in zip(folds, epochs)}
    lacking = sorted(name for name, rules in found.items() if rules is None)
    if lacking:
        why = (f"fold(s) {', '.join(lacking)} record no proposal rules calibrated for these "
               f"options (rules.json: `mespot train --inner-val K` writes them for the last "
               f"epoch, the flip default and the run's preset; `mespot evaluate RUN` writes "
               f"them for an older run whose store is at hand)")
        if calibrate:
            raise UserError(f"--calibrate: {why}; or --no-calibrate")
        return base, None, f"fixed proposal rules: {why}"
    combined = Calibrated.combined([rules for rules, _ in found.values()])
    return combined, {name: info for name, (_, info) in found.items()}, ""


def proposal_params(preset: str, variant: str | None, compat: bool) -> ProposalParams:
    """The preset's ranges with the arithmetic asked for, by default the reference's for compat
    features (a reference checkpoint, or a run trained on a `--compat` store)."""
    variant = variant or ("reference" if compat else "mespot")
    if variant not in PROPOSAL_VARIANTS:
        raise UserError(f"--proposals must be one of {', '.join(PROPOSAL_VARIANTS)} "
                        f"(got {variant!r})")
    if preset not in PRESETS:
        raise UserError(f"--preset must be one of {', '.join(PRESETS)} (got {preset!r})")
    return dataclasses.replace(PRESETS[preset], variant=variant)


def _checkpoint(path: Path, device, calibrate, flip, preset, proposals) -> Trained:
    """A reference checkpoint: the reference's 8-bit features, normalisation, windows and fixed
    proposal rules in its arithmetic; no flip by default."""
    from flowcore.extract import ExtractParams
    from spotting.model import load_reference_checkpoint

    if calibrate:
        raise UserError(f"--calibrate: {path} is a reference checkpoint, which has no "
                        f"inner-validation model to calibrate on")
    network, _epoch = load_reference_checkpoint(path)
    model = Model(path.name, network.to(device).eval(), list(REFERENCE_MEAN),
                  list(REFERENCE_STD), WindowParams())
    defaults = ExtractParams()
    params = dataclasses.replace(defaults, flow_backend="opencv",  # the reference's DualTVL1
                                 mdmo=dataclasses.replace(defaults.mdmo, compat=True))
    rules = proposal_params(preset or "casme2", proposals, True)
    return Trained(path, (Loaded(model),), rules, SpotOptions(False, bool(flip)), "last",
                   params.to_dict(), preset or "casme2", 30.0, device=str(device),
                   precision_note="a reference checkpoint has no held-out intervals to fit an "
                                  "expected precision on: every interval is listed")
