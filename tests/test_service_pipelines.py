"""Pipelines through `mespot serve`: a job waits for the one making the path it needs (a train
job on a store whose extraction is still queued is accepted, and runs after it or not at all);
extract -> train -> evaluate -> predict submitted at once, each step after the one before; a
failed step says which and stops the ones after it, keeping what the earlier ones made; a clone
with changed parameters runs again from there."""

from __future__ import annotations

import shutil

import pytest
from service_checks import refused
from waiting import DEADLINE

from mespot.service.testing import start_server

FLAGS = ("--cores-per-slot", "1", "--lease-seconds", "5")


@pytest.fixture(scope="module")
def pipe_server(service_lab, tmp_path_factory, module_gates):
    home = tmp_path_factory.mktemp("pipelines") / "home"
    running = start_server(home, service_lab["data"], service_lab["stores"], *FLAGS,
                           env=module_gates.environ())
    yield running
    running.stop()


def test_a_train_job_waits_for_the_queued_extraction_of_its_store(pipe_server, module_gates):
    client = pipe_server.client()
    module_gates.hold("job-*")  # the extraction is claimed, then held before any work
    try:
        extract = client.submit("extract", {"source": "tiny", "store": "later/tiny.zarr"})
        train = client.submit("train", {"store": "later/tiny.zarr", "run": "later/run",
                                        "annotations": "tiny/ground_truth.csv"})
        assert train["state"] == "queued" and train["after"] == extract["id"]
        evaluate = client.submit("evaluate", {"run": "later/run"})  # made by the train job
        assert evaluate["after"] == train["id"]
        refused(lambda: client.submit("train", {"store": "never/tiny.zarr", "run": "never/r",
                                                "annotations": "tiny/ground_truth.csv"}),
                422, "never/tiny.zarr: no such folder")
        module_gates.arrival(f"job-{extract['id']}", what="the extraction is held")
        client.cancel(extract["id"])
        assert client.wait(extract["id"], DEADLINE, every=0.2)["state"] == "cancelled"
    finally:
        module_gates.open_all()
    stopped = client.wait(train["id"], DEADLINE, every=0.2)
    assert stopped["state"] == "cancelled"
    assert stopped["progress"]["message"] == f"not run: job #{extract['id']} (extract) cancelled"
    after = client.wait(evaluate["id"], DEADLINE, every=0.2)
    assert after["progress"]["message"] == f"not run: job #{train['id']} (train) cancelled"
    assert stopped["started"] is None and after["started"] is None  # never ran


def test_bad_pipelines_and_kinds_are_refused_naming_the_field(pipe_server):
    client = pipe_server.client()
    refused(lambda: client.submit_pipeline({"source": "tiny"}), 422,
            "store: Field required")
    refused(lambda: client.submit_pipeline({"source": "tiny", "store": "s.zarr",
                                            "annotations": "tiny/ground_truth.csv",
                                            "run": "r", "train": {"epochs": 0}}),
            422, "train.epochs")
    refused(lambda: client.submit_pipeline({"source": "nothing", "store": "s.zarr",
                                            "annotations": "tiny/ground_truth.csv",
                                            "run": "r"}), 422, "nothing: no such")
    assert client.request("GET", "/api/pipelines")["pipelines"] == []  # all or nothing
    refused(lambda: client.submit("spot", {}), 422, "unknown job kind 'spot'")


@pytest.mark.slow
def test_a_pipeline_fails_at_its_train_step_then_a_clone_runs_to_its_metrics(
        pipe_server, service_lab):
    client = pipe_server.client()
    stores, data = service_lab["stores"], service_lab["data"]
    shutil.copytree(stores / "tiny.zarr", stores / "pipe" / "tiny.zarr")  # extracted already
    (data / "pipe").mkdir()
    (data / "pipe" / "bad.csv").write_text("who,when\nnobody,never\n")
    video = next((service_lab["tiny"] / "rawpic").glob("s15/*")).relative_to(data).as_posix()
    body = {"source": "tiny", "store": "pipe/tiny.zarr", "annotations": "pipe/bad.csv",
            "run": "pipe/run", "extract": {"resize": 64}, "train": {"epochs": 1,
                                                                    "batch_size": 2},
            "evaluate": {"select": ["last"], "report": False}, "predict": [video]}
    first = client.submit_pipeline(body)
    assert [j["step"] for j in first["jobs"]] == ["extract", "train", "evaluate", "predict"]
    ids = [j["id"] for j in first["jobs"]]
    assert [j["after"] for j in first["jobs"]][1:] == ids[:-1]
    for job_id in ids:
        client.wait(job_id, DEADLINE, every=0.2)
    failed = client.pipeline(first["id"])
    assert failed["state"] == "failed", failed
    assert failed["message"].startswith(f"step train (job #{ids[1]}) failed: ")
    assert "bad.csv" in failed["message"]
    assert [j["state"] for j in failed["jobs"]] == ["done", "failed", "cancelled", "cancelled"]
    assert failed["jobs"][0]["result"]["skipped"] == 2  # what the extract step made stays

    fixed = client.clone_pipeline(first["id"], {"annotations": "tiny/ground_truth.csv"})
    assert fixed["cloned_from"] == first["id"]
    assert fixed["params"]["train"] == {**first["params"]["train"]}
    for job in fixed["jobs"]:
        assert client.wait(job["id"], DEADLINE, every=0.2)["state"] == "done", client.log(job["id"])
    done = client.pipeline(fixed["id"])
    assert done["state"] == "done"
    jobs = done["jobs"]
    for before, after in zip(jobs, jobs[1:]):
        assert after["started"] >= before["finished"]  # each step after the one before
    metrics = jobs[2]["result"]["evaluations"]["last"]["metrics"]
    assert [m["type"] for m in metrics] == ["me", "mae", "overall"]
    assert "intervals.csv" in jobs[3]["files"]

    again = client.clone(jobs[2]["id"], {"select": ["fixed:1"]})  # one step, changed
    assert again["params"]["select"] == ["fixed:1"] and again["params"]["run"] == "pipe/run"
    refused(lambda: client.clone(jobs[2]["id"], {"select": ["best"]}), 422, "select")
    assert client.wait(again["id"], DEADLINE, every=0.2)["state"] == "done"
