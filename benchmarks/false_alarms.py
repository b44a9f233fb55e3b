"""False alarms per minute on footage without expressions: neutral faces that talk, blink, nod
and turn, under lighting changes and compression.

    python benchmarks/false_alarms.py --run runs/demo/run            # the demo's run
    python benchmarks/false_alarms.py --run RUN --subjects 2 --seconds 30

Renders `mespot synth --neutral --nuisances` footage (no expression at all; talking 40% of the
time, nods 3/min, turns of the head 1.5/min, lighting changes 1/min, besides the generator's
blinks, quick head movements, drift, flicker and sensor noise; JPEG quality 60; a seed of
BENCHMARK_SEEDS, so no training or pretraining set saw these identities), extracts it with the
run's extraction parameters, and spots it twice:

- `run`: the run as `mespot predict` applies it by default (every fold together, calibrated
  rules, flip), each interval with the expected precision of the run's map (recorded by
  `mespot evaluate`: fitted on its held-out LOSO test intervals);
- `pretrained`: the shipped synthetic pretraining (spotting/weights/) alone, with AUW-GCN's
  fixed rules of the run's preset and the flip. It has no LOSO folds, so its map is fitted here
  on the run's own labelled set (the demo's subjects, which the pretraining never saw: their
  seeds differ): every video spotted, matched (MEGC), one isotonic map per type.

Every interval spotted is a false alarm. Reported per model: false alarms per minute of
footage at --min-precision 0 (the MEGC listing: every proposal) and at the default minimum
expected precision, per type, and which nuisance of events.csv each false alarm overlaps.
Results: benchmarks/results/false_alarms.json (machine, load, versions, parameters).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from spotting_quality import environment  # noqa: E402

SEED = 9501  # in mespot.synth.seeds.BENCHMARK_SEEDS
JPEG_QUALITY = 60  # compression: visible blocks on the face at 256 px


def render(out: Path, subjects: int, seconds: float) -> Path:
    """The neutral footage with every nuisance (see the module docstring)."""
    from mespot.synth import SMALL, generate_dataset
    from mespot.synth.config import EVERYDAY, NEUTRAL

    config = SMALL.replace(subjects=subjects, videos_per_subject=1, seconds=seconds, seed=SEED,
                           jpeg_quality=JPEG_QUALITY, **EVERYDAY, **NEUTRAL)
    if not (out / "synth.json").is_file():
        generate_dataset(config, out, preview=False, workers=1)
    return out


def pretrained_model(run: Path, device: str):
    """(the shipped pretraining as a spotting Model with the run's windows, the fixed rules of
    the run's preset, its maps fitted on the run's labelled set)."""
    from spotting.evaluate import prepare_run
    from spotting.initial_weights import PRETRAINED
    from spotting.metrics import MEGC
    from spotting.precision import fit_by_type
    from spotting.run_folder import RunFolder
    from spotting.run_record import read_record
    from spotting.spot import Model, spot_subjects
    from spotting.trained import proposal_params
    from spotting.truths import count, ground_truth

    record = read_record(run)
    rules = proposal_params(record.preset, None, record.compat)
    prep = prepare_run(RunFolder(run))
    truths = ground_truth(prep, record.windows)
    found, _ = spot_subjects(prep, PRETRAINED, list(prep.features.subjects), rules,
                             record.windows, device, flip=True)
    matches = count(found, truths, MEGC, prep.features)
    tp = matches.loc[matches["outcome"] == "TP", "proposal"].to_numpy()
    maps = fit_by_type(found.assign(hit=found.index.isin(tp)))
    model = Model.from_weights(PRETRAINED, record.windows, device, "pretrained")
    return model, rules, maps, {"videos": len(prep.features.videos), "intervals": len(found),
                                "tp": int(len(tp)), "truths": int(len(truths))}


def spot_pretrained(features, model, rules, maps, device: str) -> pd.DataFrame:
    """Every video of `features` spotted by the pretraining alone: intervals in frames with
    their expected precision."""
    from spotting.precision import with_precision
    from spotting.spot import mean_logits, spot_rows
    from spotting.windows import rows_to_frames

    parts = []
    for video in features.videos.values():
        found = with_precision(spot_rows(mean_logits([model], video, device, True), rules), maps)
        parts.append(pd.DataFrame({
            "video": video.video_id, "type": found["type"],
            "onset": rows_to_frames(found["start"], video.frame_numbers),
            "offset": rows_to_frames(found["end"], video.frame_numbers),
            "score": found["score"], "precision": found["precision"]}))
    return pd.concat(parts, ignore_index=True)


def overlaps(intervals: pd.DataFrame, events: pd.DataFrame) -> dict:
    """How many intervals overlap each kind of nuisance event (an interval may count for
    several kinds), and how many overlap none."""
    counts: dict[str, int] = {}
    for row in intervals.itertuples():
        mine = events[(events["video"] == row.video) & (events["start"] <= row.offset)
                      & (events["end"] >= row.onset)]
        for kind in sorted(set(mine["kind"])) or ["none"]:
            counts[kind] = counts.get(kind, 0) + 1
    return counts


def summary(intervals: pd.DataFrame, minutes: float, level: float, events) -> dict:
    """False alarms per minute at --min-precision 0 and at `level`, per type."""
    out = {}
    for name, shown in (("all (min precision 0, MEGC listing)", intervals),
                        (f"min precision {level:g}", intervals[intervals["precision"] >= level])):
        out[name] = {"false_alarms": len(shown),
                     "per_minute": round(len(shown) / minutes, 2),
                     "per_minute_by_type": {k: round(int((shown["type"] == k).sum()) / minutes, 2)
                                            for k in ("me", "mae")},
                     "overlapping": overlaps(shown, events)}
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, required=True, help="a run folder (with its store "
                        "and `mespot evaluate`'s precision record), e.g. runs/demo/run")
    parser.add_argument("--work", type=Path, default=Path("runs/false-alarms"))
    parser.add_argument("--subjects", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "false_alarms.json")
    args = parser.parse_args(argv)
    from flowcore.store import load_features
    from spotting.precision import DEFAULT_MIN_PRECISION
    from spotting.predict import predict_videos

    load_before, started = os.getloadavg(), time.perf_counter()
    data = render(args.work / "data", args.subjects, args.seconds)
    rendered = time.perf_counter()
    batch = predict_videos(data, args.run, args.work / "spotted", device=args.device,
                           min_precision=0.0)
    spotted = time.perf_counter()
    features = load_features(args.work / "spotted" / "features.zarr")
    minutes = args.subjects * args.seconds / 60  # of footage, faces or not
    events = pd.read_csv(data / "events.csv")
    model, rules, maps, fitted_on = pretrained_model(args.run, args.device)
    pretrained = spot_pretrained(features, model, rules, maps, args.device)
    result = {
        "benchmark": "false_alarms", "environment": environment(),
        "load_average_before": [round(v, 2) for v in load_before],
        "load_average_after": [round(v, 2) for v in os.getloadavg()],
        "load_note": "2 CPU cores shared with other jobs (other helpers' tests and a CPU stress "
                     "test): timings are several times an idle machine's",
        "footage": {"seed": SEED, "subjects": args.subjects, "seconds_each": args.seconds,
                    "minutes_spotted": round(minutes, 3), "jpeg_quality": JPEG_QUALITY,
                    "events": events["kind"].value_counts().to_dict()},
        "default_min_precision": DEFAULT_MIN_PRECISION,
        "run": {"path": str(args.run), "applied": batch.trained.applied,
                "precision": batch.trained.precision_note,
                **summary(batch.intervals, minutes, DEFAULT_MIN_PRECISION, events)},
        "pretrained": {"rules": "AUW-GCN's fixed rules of the run's preset, test-time flip",
                       "map_fitted_on": fitted_on,
                       "maps": {k: m.to_json() for k, m in maps.items()},
                       **summary(pretrained, minutes, DEFAULT_MIN_PRECISION, events)},
        "seconds": {"render": round(rendered - started, 1),
                    "extract_and_spot_run": round(spotted - rendered, 1),
                    "pretrained": round(time.perf_counter() - spotted, 1)},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1, default=_plain))
    for name in ("run", "pretrained"):
        print(name, {k: v["per_minute"] for k, v in result[name].items()
                     if isinstance(v, dict) and "per_minute" in v})
    print("->", args.out)


def _plain(value):
    return value.item() if isinstance(value, np.generic) else str(value)


if __name__ == "__main__":
    main()
