"""Fingerprint of what mespot writes, to check that a refactor changed no bit of it.

usage: python benchmarks/fingerprint.py WORKDIR [MESPOT_COMMAND]

Runs through the command line only (stable across refactors): `mespot synth --small`, then
`extract` (torch backend at 64 px; and the opencv backend at 48 px on 2 videos), `train` (2 folds
x 3 epochs, 1 torch thread) and `evaluate --select last`, and prints the SHA-256 of the stores'
arrays and attributes (timings, source paths and version left out), of every fold's weights and
test outputs, and of the evaluation's intervals.csv. Run it on two commits (e.g. with
PYTHONPATH=<a checkout of the other commit>) and compare: equal hashes, equal bytes.
"""
import hashlib, json, subprocess, sys
from pathlib import Path

import numpy as np
import zarr

work = Path(sys.argv[1]); mespot = sys.argv[2] if len(sys.argv) > 2 else "mespot"
work.mkdir(parents=True, exist_ok=True)

def run(*args):
    subprocess.run([mespot, *args], check=True, stdout=subprocess.DEVNULL)

def store_hash(path):
    root = zarr.open_group(str(path), mode="r")
    h = hashlib.sha256()
    for name in sorted(root["videos"].group_keys()):
        g = root["videos"][name]
        for arr in ("mdmo", "landmarks", "face_box", "frame_numbers"):
            a = np.asarray(g[arr][...]); h.update(f"{name}/{arr}{a.dtype}{a.shape}".encode()); h.update(a.tobytes())
        attrs = {k: v for k, v in g.attrs.items() if k not in ("timings", "source")}
        h.update(json.dumps(attrs, sort_keys=True).encode())
    attrs = {k: v for k, v in root.attrs.items() if k != "mespot_version"}
    h.update(json.dumps(attrs, sort_keys=True).encode())
    return h.hexdigest()

def weights_hash(run_dir):
    from safetensors.torch import load_file
    h = hashlib.sha256()
    for f in sorted(run_dir.glob("folds/*/weights_epoch_*.safetensors")) + sorted(run_dir.glob("folds/*/test_outputs.safetensors")):
        t = load_file(str(f))
        for k in sorted(t):
            h.update(f"{f.parent.name}/{f.name}/{k}".encode()); h.update(t[k].numpy().tobytes())
    return h.hexdigest()

data = work / "synth"
if not data.exists():
    run("synth", "--small", "--out", str(data), "--workers", "1")
out = {}
run("extract", str(data), "--out", str(work / "torch.zarr"), "--backend", "torch", "--resize", "64", "-q", "--workers", "2")
out["store_torch_64"] = store_hash(work / "torch.zarr")
run("extract", str(data), "--out", str(work / "opencv.zarr"), "--resize", "48", "-q", "--workers", "2",
    "--video", "15_0101disgustingteeth", "--video", "16_0102eatingworms")
out["store_opencv_48_2videos"] = store_hash(work / "opencv.zarr")
ann = next(data.glob("CAS*xlsx"))
run("train", str(work / "torch.zarr"), "-a", str(ann), "--out", str(work / "run"), "--epochs", "3",
    "--subjects", "s15,s16", "--threads", "1", "-q", "--batch-size", "16")
out["weights_2folds_3epochs"] = weights_hash(work / "run")
run("evaluate", str(work / "run"), "--select", "last", "--no-report")
iv = (work / "run/evaluation/last/intervals.csv").read_bytes()
out["intervals_last"] = hashlib.sha256(iv).hexdigest()
print(json.dumps(out, indent=1))
