"""`mespot serve` with its data and store roots on object storage (moto's S3 server, a process of
its own: tests/s3_server.py): jobs name paths under the roots as usual, the extraction reads the
dataset from s3 and writes its store there, the training reads that store and writes its run
there, and the runs table lists the run with its metrics. A URL outside a root is refused."""

import pytest
from s3_server import BUCKET
from waiting import DEADLINE

from flowcore.store import video_statuses
from mespot.service.client import ServiceError
from mespot.service.testing import start_server

TINY = {"subjects": 2, "videos_per_subject": 1, "seconds": 2.0}


@pytest.fixture(scope="module")
def s3_server_jobs(s3, tmp_path_factory):
    from mespot.synth import SMALL, generate_dataset

    base = tmp_path_factory.mktemp("service-s3")
    generate_dataset(SMALL.replace(**TINY), base / "tiny", workers=1)
    s3.upload(base / "tiny", "service-data/tiny")
    s3.filesystem().pipe_file(f"{BUCKET}/service-stores/README", b"stores and runs\n")
    running = start_server(base / "home", f"s3://{BUCKET}/service-data",
                           f"s3://{BUCKET}/service-stores", "--cores-per-slot", "1")
    yield running
    running.stop()


@pytest.mark.slow
def test_jobs_read_and_write_under_roots_on_object_storage(s3_server_jobs):
    client = s3_server_jobs.client()
    extract = client.submit("extract", {"source": "tiny", "store": "tiny.zarr", "resize": 64})
    job = client.wait(extract["id"], DEADLINE, every=0.2)
    assert job["state"] == "done" and job["result"]["complete"] == 2, job
    store = f"s3://{BUCKET}/service-stores/tiny.zarr"
    assert set(video_statuses(store).values()) == {"complete"}
    train = client.submit("train", {"store": "tiny.zarr", "annotations": "tiny/ground_truth.csv",
                                    "run": "runs/a", "epochs": 2, "batch_size": 2})
    job = client.wait(train["id"], DEADLINE, every=0.2)
    assert job["state"] == "done", (job, client.log(train["id"]))
    listed = {r["run"]: r for r in client.request("GET", "/api/runs")["runs"]}
    assert "runs/a" in listed and listed["runs/a"]["params"]["store"] == "tiny.zarr"
    with pytest.raises(ServiceError) as refused:
        client.submit("extract", {"source": f"s3://{BUCKET}/elsewhere", "store": "x.zarr"})
    assert "outside the data root" in str(refused.value)
