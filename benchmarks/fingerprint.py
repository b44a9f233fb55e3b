"""Fingerprint of what mespot writes, to check that a refactor changed no bit of it.

usage: python benchmarks/fingerprint.py WORKDIR [MESPOT_COMMAND]

Runs through the command line only (stable across refactors): `mespot synth --small`, then
`extract` (torch backend at 64 px; and the opencv backend at 48 px on 2 videos), `train` (2 folds
x 3 epochs, 1 torch thread) and `evaluate --select last`, and prints the SHA-256 of the stores'
arrays and attributes (timings, source paths and version left out; `*_arrays`: the arrays alone),
of every fold's weights and test outputs, and of the evaluation's intervals.csv. Run it on two
commits (e.g. with PYTHONPATH=<a checkout of the other commit>) and compare: equal hashes, equal
bytes. The run trains 2 of the 3 subjects' folds: `evaluate` gets `--allow-missing-folds` where
it has the flag (since issue 15 it refuses an incomplete run without it; intervals.csv holds
the spotted intervals only, the same either way).
"""
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import zarr

ARRAYS = ("mdmo", "landmarks", "face_box", "frame_numbers")


def run(mespot: str, *args) -> None:
    subprocess.run([mespot, *args], check=True, stdout=subprocess.DEVNULL)


def store_hash(path: Path, attributes: bool = True) -> str:
    """Every video's arrays and attributes (but timings and source path), the root attributes
    (but the version); `attributes` False: the arrays alone."""
    root = zarr.open_group(str(path), mode="r")
    h = hashlib.sha256()
    for name in sorted(root["videos"].group_keys()):
        group = root["videos"][name]
        for array in ARRAYS:
            a = np.asarray(group[array][...])
            h.update(f"{name}/{array}{a.dtype}{a.shape}".encode())
            h.update(a.tobytes())
        attrs = {k: v for k, v in group.attrs.items() if k not in ("timings", "source")}
        if attributes:
            h.update(json.dumps(attrs, sort_keys=True).encode())
    attrs = {k: v for k, v in root.attrs.items() if k != "mespot_version"}
    if attributes:
        h.update(json.dumps(attrs, sort_keys=True).encode())
    return h.hexdigest()


def weights_hash(run_dir: Path) -> str:
    """Every fold's weights of every kept epoch and its test outputs."""
    from safetensors.torch import load_file

    files = (sorted(run_dir.glob("folds/*/weights_epoch_*.safetensors"))
             + sorted(run_dir.glob("folds/*/test_outputs.safetensors")))
    h = hashlib.sha256()
    for f in files:
        tensors = load_file(str(f))
        for key in sorted(tensors):
            h.update(f"{f.parent.name}/{f.name}/{key}".encode())
            h.update(tensors[key].numpy().tobytes())
    return h.hexdigest()


def main(work: Path, mespot: str) -> dict:
    work.mkdir(parents=True, exist_ok=True)
    data = work / "synth"
    if not data.exists():
        run(mespot, "synth", "--small", "--out", str(data), "--workers", "1")
    out = {}
    run(mespot, "extract", str(data), "--out", str(work / "torch.zarr"), "--backend", "torch",
        "--resize", "64", "-q", "--workers", "2")
    out["store_torch_64"] = store_hash(work / "torch.zarr")
    out["store_torch_64_arrays"] = store_hash(work / "torch.zarr", attributes=False)
    run(mespot, "extract", str(data), "--out", str(work / "opencv.zarr"), "--backend", "opencv",
        "--resize", "48", "-q", "--workers", "2", "--video", "15_0101disgustingteeth", "--video",
        "16_0102eatingworms")
    out["store_opencv_48_2videos"] = store_hash(work / "opencv.zarr")
    out["store_opencv_48_2videos_arrays"] = store_hash(work / "opencv.zarr", attributes=False)
    workbook = next(data.glob("CAS*xlsx"))
    run(mespot, "train", str(work / "torch.zarr"), "-a", str(workbook), "--out", str(work / "run"),
        "--epochs", "3", "--subjects", "s15,s16", "--threads", "1", "-q", "--batch-size", "16")
    out["weights_2folds_3epochs"] = weights_hash(work / "run")
    usage = subprocess.run([mespot, "evaluate", "--help"], capture_output=True, text=True).stdout
    partial = ["--allow-missing-folds"] if "--allow-missing-folds" in usage else []
    plain = ["--no-flip"] if "--no-flip" in usage else []  # the folder below: neither option
    run(mespot, "evaluate", str(work / "run"), "--select", "last", "--no-report", *partial,
        *plain)
    intervals = (work / "run/evaluation/last/intervals.csv").read_bytes()
    out["intervals_last"] = hashlib.sha256(intervals).hexdigest()
    return out


if __name__ == "__main__":
    print(json.dumps(main(Path(sys.argv[1]), sys.argv[2] if len(sys.argv) > 2 else "mespot"),
                     indent=1))
