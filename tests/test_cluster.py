"""A cluster that is more than one process: a Ray head and two worker nodes started by `ray
start` as separate processes (mespot/local_cluster.py), each with its own temporary folder, the
data, the store and the run folder on a real S3 server (moto's, tests/s3_server.py).

Through them, with the commands of docs/cluster.md: a synthetic set is extracted from s3 into a
store on s3 (one video per node), a run is trained there with one fold per node and evaluated,
and every number equals the local run's bit for bit. Then a worker node is killed (SIGKILL of its
`ray start`, raylet and agents) while it holds a video at the test gate: Ray reruns the video on
the other node, which takes over the lost node's lock once its lease has run out, and the store
again equals the local one bit for bit.
"""

import subprocess
import sys

import pytest
from conftest import LEASE
from s3_server import BUCKET
from test_object_storage import TINY, _same_stores
from waiting import DEADLINE, finish

pytest.importorskip("ray", reason='Ray is not installed: pip install "mespot[ray]"')
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not sys.platform.startswith("linux"),
                                 reason="finds a worker's node through /proc")]

FIRST, SECOND = "15_0101disgustingteeth", "16_0101disgustingteeth"
EXTRACT = ["--resize", "64", "--quiet"]
TRAIN = ["--epochs", "2", "--batch-size", "4", "--no-tensorboard"]


@pytest.fixture(scope="module")
def lab(s3, module_gates, tmp_path_factory):
    """(local data, its URL, the local reference store and run, the cluster): a head (no CPU for
    tasks) and two worker nodes of 1 CPU each, seeing the S3 server and the module's gates."""
    from flowcore.extract import ExtractParams
    from flowcore.faces import FaceParams
    from mespot import api
    from mespot.local_cluster import LocalCluster
    from mespot.synth import SMALL, generate_dataset

    base = tmp_path_factory.mktemp("cluster")
    root = base / "tiny"
    generate_dataset(SMALL.replace(**TINY), root, workers=1)
    url = s3.upload(root, "cluster-tiny")
    store = base / "local.zarr"
    api.extract(root, store, ExtractParams(faces=FaceParams(resize=64)), workers=1)
    api.train(store, root / "ground_truth.csv", base / "run", epochs=2, batch_size=4, threads=1,
              tensorboard=False)
    env = {**s3.environ(), "MESPOT_LOCK_LEASE": LEASE,
           **{k: v for k, v in module_gates.environ().items() if k.startswith("MESPOT_TEST")}}
    cluster = LocalCluster(base / "nodes", workers=[1, 1], env=env).start()
    try:
        yield root, url, store, base / "run", cluster
    finally:
        cluster.stop()


def _mespot(cluster, *args, timeout=DEADLINE) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-m", "mespot", *args], capture_output=True,
                          text=True, env=cluster.environ(), timeout=timeout)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return done


def test_extract_train_evaluate_through_ray_start_nodes_equal_the_local_run(lab):
    import json

    from mespot import api

    root, url, store, run, cluster = lab
    remote_store, remote_run = f"s3://{BUCKET}/cluster.zarr", f"s3://{BUCKET}/cluster-run"
    done = _mespot(cluster, "extract", url, "--out", remote_store, "--engine", "ray",
                   "--address", cluster.address, *EXTRACT)
    assert "2 extracted" in done.stdout + done.stderr
    _same_stores(remote_store, store, [FIRST, SECOND])
    _mespot(cluster, "train", remote_store, "-a", f"{url}/ground_truth.csv", "--out", remote_run,
            "--engine", "ray", "--address", cluster.address, *TRAIN)
    done = _mespot(cluster, "evaluate", remote_run, "--no-report")
    here = api.evaluate(run)
    folder = here.out.name
    there = json.loads(_cat(f"{remote_run}/evaluation/{folder}/metrics.json", cluster))
    assert there == json.loads((here.out / "metrics.json").read_text())
    log = _cat(f"{remote_run}/train.log", cluster)
    assert "2 fold task(s)" in log and "3 node(s)" in log, log


def _cat(url: str, cluster) -> str:
    """An object's text, read by a separate process with the cluster's environment."""
    code = "import sys, fsspec; print(fsspec.open(sys.argv[1]).open().read().decode(), end='')"
    done = subprocess.run([sys.executable, "-c", code, url], capture_output=True, text=True,
                          env=cluster.environ(), timeout=DEADLINE)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_a_worker_node_killed_mid_extraction_is_retried_on_the_other(lab, module_gates):
    root, url, store, run, cluster = lab
    remote_store = f"s3://{BUCKET}/cluster-killed.zarr"
    module_gates.hold("extract-*")
    process = subprocess.Popen(
        [sys.executable, "-m", "mespot", "extract", url, "--out", remote_store, "--engine",
         "ray", "--address", cluster.address, *EXTRACT], stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, env=cluster.environ())
    try:
        point, pid = module_gates.arrival("extract-*", process, what="a video is held on a node")
        node = cluster.node_of(pid)
        assert node is not None and node.name.startswith("worker"), (point, pid)
        cluster.kill_node(node)  # the machine is lost while its video is begun in the store
        module_gates.open_all()
        out, err = finish(process, "the extraction ends on the surviving node")
    finally:
        module_gates.open_all()
        process.kill()
    assert process.returncode == 0, out[-2000:] + err[-3000:]
    assert "2 extracted" in out + err
    _same_stores(remote_store, store, [FIRST, SECOND])
    assert sum(n.process.poll() is None for n in cluster.nodes) == 2  # the head and one worker
