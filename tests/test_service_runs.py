"""Runs side by side through `mespot serve`: loss curves that grow while a run trains (the
training is held at an epoch's gate while the test looks), every run's parameters and metrics
in one table, and the difference of two runs' parameters."""

from __future__ import annotations

import pytest
from waiting import DEADLINE

from mespot.service.client import ServiceError
from mespot.service.run_pages import MAX_PARAM_COLUMNS, param_columns
from mespot.service.testing import start_server

FLAGS = ("--cores-per-slot", "1", "--lease-seconds", "5")


@pytest.fixture(scope="module")
def runs_server(service_lab, tmp_path_factory, module_gates):
    home = tmp_path_factory.mktemp("runs") / "home"
    running = start_server(home, service_lab["data"], service_lab["stores"], *FLAGS,
                           env=module_gates.environ())
    yield running
    running.stop()


def _losses(client, run: str) -> dict:
    return client.request("GET", "/api/runs/losses", query={"run": run})


@pytest.mark.slow
def test_live_curves_a_table_of_runs_and_the_difference_of_two(runs_server, module_gates):
    client, gates = runs_server.client(), module_gates
    body = {"store": "tiny.zarr", "annotations": "tiny/ground_truth.csv", "run": "curves/a",
            "epochs": 2, "batch_size": 2}
    gates.hold("train-*-epoch-1")
    try:
        train = client.submit("train", body)
        point, _ = gates.arrival("train-*-epoch-1", what="the first fold's first epoch ended")
        live = _losses(client, "curves/a")
        assert live["training"] is True
        fold = point[len("train-"):-len("-epoch-1")]
        assert [p[0] for p in live["folds"][fold]["train/loss"]] == [1]  # one epoch so far
        page = client.request("GET", "/runs")
        assert "curves/a" in page and "training" in page
        view = client.request("GET", "/runs/view", query={"run": "curves/a"})
        assert 'id="curves"' in view and "mespot.curves()" in view
    finally:
        gates.open_all()
    assert client.wait(train["id"], DEADLINE, every=0.2)["state"] == "done"
    done = _losses(client, "curves/a")
    assert done["training"] is False and len(done["folds"]) == 2
    for curves in done["folds"].values():
        assert [p[0] for p in curves["train/loss"]] == [1, 2]
        assert all(isinstance(p[1], float) for p in curves["train/loss"])

    other = client.clone(train["id"], {"run": "curves/b", "lr": 0.05})
    evaluate = client.submit("evaluate", {"run": "curves/a", "report": False})
    for job in (other, evaluate):
        assert client.wait(job["id"], DEADLINE, every=0.2)["state"] == "done"
    diff = client.request("GET", "/api/runs/diff", query={"a": "curves/a", "b": "curves/b"})
    assert [(d["name"], d["b"]) for d in diff["differences"]] == [("train.lr", 0.05)]
    listed = {r["run"]: r for r in client.request("GET", "/api/runs")["runs"]}
    assert {"curves/a", "curves/b"} <= set(listed)
    assert listed["curves/a"]["params"]["train.epochs"] == 2
    assert listed["curves/a"]["folds_complete"] == 2
    (selection,) = listed["curves/a"]["metrics"]  # last, with the run's default options
    assert selection.startswith("last")
    overall = listed["curves/a"]["metrics"][selection]["overall"]
    assert set(overall) == {"precision", "recall", "f1", "TP", "FP", "FN"}
    page = client.request("GET", "/runs")
    assert "<th data-sort>train.lr</th>" in page and f"<th data-sort>{selection} F1</th>" in page
    with pytest.raises(ServiceError) as refused:
        _losses(client, "curves/none")
    assert refused.value.status == 404 and "no run folder" in str(refused.value)


def test_the_table_shows_the_training_parameters_that_differ_first():
    """With more differing parameters than columns (runs on other stores and datasets beside),
    those of the training section come first: a learning rate is not pushed out by names that
    sort before it."""
    found = [{"params": {"train.epochs": 2, "train.lr": lr, "train.seed": 1,
                         **{f"datasets.{k}": f"{k}{lr}" for k in "abcdefghijklmn"}}}
             for lr in (0.01, 0.05)]
    columns = param_columns(found)
    assert columns[:2] == ["train.epochs", "train.lr"] and len(columns) == MAX_PARAM_COLUMNS
    assert "train.seed" not in columns  # the same in every run
