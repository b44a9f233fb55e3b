"""Scaling over Ray worker nodes: the same extraction and training, from and to object storage,
through a cluster of 1 and of 2 worker nodes started by `ray start` on this machine.

An S3 server (moto's, in its own process; tests/s3_server.py) holds a synthetic set (`mespot
synth --small`, --subjects x 1 video x --seconds); for each cluster size a head node (no CPU for
tasks) and N worker nodes of 1 CPU each are started (mespot/local_cluster.py), and the commands
of docs/cluster.md run through them, timed on the wall clock from the command's start to its
end:

  mespot extract s3://lab/data --out s3://lab/store-N.zarr --resize R --engine ray
      --address HEAD
  mespot train s3://lab/store-N.zarr -a s3://lab/data/ground_truth.csv --out s3://lab/run-N
      --engine ray --address HEAD --epochs E

The baseline, timed in the same call: `mespot extract` of the local copy on this machine without
Ray or object storage, with --workers 1 (one process, its OpenCV and torch on every core) and 2.
The stores' arrays are hashed (equal hashes: the same store bit for bit) and the evaluations'
overall F1 compared. Cluster start-up is timed on its own. Each size runs --rounds times, in
alternating order; the summary keeps each size's best round and the ratio 1 node / 2 nodes.

    python benchmarks/cluster_scaling.py [--subjects 4] [--seconds 4] [--epochs 4]
        [--resize 128] [--rounds 1] [--out PATH]

Writes benchmarks/results/cluster_scaling.json and docs/images/cluster_scaling.png (with --out:
both there).
Limits: both "machines" are processes on this one, sharing its cores with the head, the driver
and the S3 server (moto: one Python process serving every frame as one request), so two worker
nodes of 1 CPU compete with them for 2 cores; a node's task runs OpenCV and torch on one thread.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).parent
FIGURE = HERE.parent / "docs" / "images" / "cluster_scaling.png"  # shown by docs/cluster.md
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))  # the S3 server the tests use
from _flow_env import environment, write_json  # noqa: E402
from s3_server import BUCKET, S3Server  # noqa: E402


def store_digest(url: str, env: dict) -> str:
    """sha256 (16 hex digits) of every video's arrays of the store at `url`, read by a process
    with the cluster's environment."""
    code = """
import hashlib, sys, zarr
digest = hashlib.sha256()
videos = zarr.open_group(sys.argv[1], mode="r")["videos"]
for video in sorted(videos.group_keys()):
    for name in ("mdmo", "landmarks", "face_box", "frame_numbers"):
        a = videos[video][name][...]
        digest.update(f"{video}/{name}/{a.dtype}/{a.shape}".encode() + a.tobytes())
print(digest.hexdigest()[:16])
"""
    done = subprocess.run([sys.executable, "-c", code, url], env=env, capture_output=True,
                          text=True, check=True)
    return done.stdout.strip()


def timed(command: list[str], env: dict | None) -> float:
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "mespot", *command], env=env,
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"mespot {' '.join(command)} failed: {done.stderr[-2000:]}")
    return time.perf_counter() - started


def one_size(nodes: int, server: S3Server, data: str, folder: Path, epochs: int, resize: int,
             tag: str) -> dict:
    """Start a cluster of `nodes` worker nodes, extract and train through it, stop it."""
    from mespot.local_cluster import LocalCluster

    started = time.perf_counter()
    cluster = LocalCluster(folder / f"nodes-{tag}", workers=[1] * nodes,
                           env=server.environ()).start()
    startup = time.perf_counter() - started
    try:
        env = cluster.environ()
        store, run = f"s3://{BUCKET}/store-{tag}.zarr", f"s3://{BUCKET}/run-{tag}"
        ray = ["--engine", "ray", "--address", cluster.address]
        extract = timed(["extract", data, "--out", store, "--resize", str(resize), "--quiet",
                         *ray], env)
        train = timed(["train", store, "-a", f"{data}/ground_truth.csv", "--out", run,
                       "--epochs", str(epochs), "--no-tensorboard", "--quiet", *ray], env)
        metrics = _metrics(run, env)
        return {"worker_nodes": nodes, "cluster_start_s": round(startup, 2),
                "extract_s": round(extract, 2), "train_s": round(train, 2),
                "store_digest": store_digest(store, env), "overall_f1": metrics}
    finally:
        cluster.stop()


def _metrics(run: str, env: dict) -> float:
    code = ("import json, sys, fsspec; fs, p = fsspec.core.url_to_fs(sys.argv[1]); "
            "m = [f for f in fs.find(p) if f.endswith('/metrics.json') and '/evaluation/' in f]; "
            "print(json.loads(fs.cat_file(sorted(m)[0]))['metrics']['overall']['f1'])")
    done = subprocess.run([sys.executable, "-c", code, run], env=env, capture_output=True,
                          text=True, check=True)
    return float(done.stdout.strip())


def figure(summary: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = [1, 2]
    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    for offset, (key, label) in enumerate((("extract_s", "extract"), ("train_s", "train"))):
        values = [summary[str(n)][key] for n in sizes]
        bars = ax.bar([n + (offset - 0.5) * 0.35 for n in sizes], values, 0.35, label=label)
        ax.bar_label(bars, fmt="%.0f s")
    local = summary["local_baseline"]["workers_1_extract_s"]
    ax.axhline(local, color="grey", linestyle="--", linewidth=1,
               label=f"extract, local disk, no Ray ({local:.0f} s)")
    ax.set_ylim(0, max(summary[str(n)]["extract_s"] for n in sizes) * 1.45)
    ax.set_xticks(sizes, [f"{n} worker node{'s' if n > 1 else ''}" for n in sizes])
    ax.set_ylabel("wall time (s)")
    ax.set_title("Same run through `ray start` nodes on one 2-core machine")
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--subjects", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--resize", type=int, default=128, help="face crops of N x N px (the "
                        "flow's cost grows with it; the default's 256 px takes minutes a video)")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    from mespot.synth import SMALL, generate_dataset

    folder = Path(tempfile.mkdtemp(prefix="cluster-scaling-"))
    generate_dataset(SMALL.replace(subjects=args.subjects, videos_per_subject=1,
                                   seconds=args.seconds), folder / "data", workers=1)
    local = {}  # the baseline in the same call: this machine, no Ray, no object storage
    for workers in (1, 2):
        local[f"workers_{workers}_extract_s"] = round(timed(
            ["extract", str(folder / "data"), "--out", str(folder / f"local-{workers}.zarr"),
             "--resize", str(args.resize), "--workers", str(workers), "--quiet"], None), 2)
    print(json.dumps({"local": local}))
    server = S3Server()
    try:
        data = server.upload(folder / "data", "data")
        rounds = []
        for k in range(args.rounds):
            for nodes in ([1, 2] if k % 2 == 0 else [2, 1]):
                row = one_size(nodes, server, data, folder, args.epochs, args.resize,
                               f"{nodes}-{k}")
                print(json.dumps(row))
                rounds.append(row)
    finally:
        server.stop()
    best = {str(n): min((r for r in rounds if r["worker_nodes"] == n),
                        key=lambda r: r["extract_s"] + r["train_s"]) for n in (1, 2)}
    summary = {**best, "extract_speedup_2_vs_1": round(best["1"]["extract_s"]
                                                        / best["2"]["extract_s"], 2),
               "train_speedup_2_vs_1": round(best["1"]["train_s"] / best["2"]["train_s"], 2),
               "local_baseline": local,
               "extract_1_node_vs_local_1_worker": round(
                   best["1"]["extract_s"] / local["workers_1_extract_s"], 2),
               "same_store": len({r["store_digest"] for r in rounds}) == 1,
               "same_f1": len({r["overall_f1"] for r in rounds}) == 1}
    path = write_json("cluster_scaling.json", {
        "benchmark": "cluster_scaling", "parameters": vars(args),
        "setup": "moto S3 server + ray start head (0 CPU) + N worker nodes of 1 CPU, one machine",
        "environment": environment(1), "rounds": rounds, "summary": summary}, args.out)
    picture = FIGURE if args.out is None else path.with_suffix(".png")
    figure(summary, picture)
    print(json.dumps(summary, indent=2))
    print(f"wrote {path} and {picture}")


if __name__ == "__main__":
    main()
