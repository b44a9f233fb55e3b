"""Train jobs on several stores: `mespot submit train` with two stores trains one pooled run
through `mespot serve` (its config.json names both datasets, its progress counts the folds of
the run's plan), or one cross-dataset model; and a train job on stores that queued extractions
make waits for every one of them. (The split protocol's options reach the run too.)"""

from __future__ import annotations

import json
import shutil

import pytest
from waiting import DEADLINE

from mespot.cli import main
from mespot.service import tasks
from mespot.service.jobs import JobStore
from mespot.service.roots import PathRefused, Roots
from mespot.service.testing import start_server
from mespot.testing import write_tiny_store

SUBJECTS = ("s1", "s2", "s3")  # write_tiny_store's


@pytest.fixture(scope="module")
def pooled_lab(tmp_path_factory) -> dict:
    """stores/pool/{alpha,beta}.zarr with data/pool/{alpha,beta}.csv: two tiny stores of 3
    subjects each (features written directly, nothing to extract)."""
    lab = tmp_path_factory.mktemp("pooled")
    data, stores = lab / "data" / "pool", lab / "stores" / "pool"
    data.mkdir(parents=True)
    stores.mkdir(parents=True)
    for name in ("alpha", "beta"):
        made = write_tiny_store(lab / "made" / name)
        shutil.move(made / "store.zarr", stores / f"{name}.zarr")
        shutil.move(made / "gt.csv", data / f"{name}.csv")
    return {"root": lab, "data": lab / "data", "stores": lab / "stores"}


@pytest.fixture(scope="module")
def pooled_server(pooled_lab):
    running = start_server(pooled_lab["root"] / "home", pooled_lab["data"],
                           pooled_lab["stores"], "--cores-per-slot", "1", "--lease-seconds", "5")
    yield running
    running.stop()


def _submit_train(server, capsys, *args) -> dict:
    """`mespot submit train ARGS` with both stores, then the job once it has ended."""
    capsys.readouterr()
    assert main(["submit", "train", "alpha=pool/alpha.zarr", "beta=pool/beta.zarr",
                 "-a", "pool/alpha.csv", "-a", "pool/beta.csv", "--epochs", "1", *args,
                 "--server", server.url, "--token", server.token]) == 0
    line = capsys.readouterr().out
    assert "pool/alpha.zarr + beta=pool/beta.zarr" in line, line
    return server.client().wait(int(line.split()[1]), timeout=DEADLINE)


@pytest.mark.slow
def test_a_train_job_on_two_stores_trains_one_pooled_run(pooled_server, pooled_lab, capsys):
    job = _submit_train(pooled_server, capsys, "--run", "runs/pooled")
    assert job["state"] == "done", job
    assert job["params"]["store"] == ["alpha=pool/alpha.zarr", "beta=pool/beta.zarr"]
    # one fold per subject of both stores, one epoch each: the run plan's 6 folds, not 3
    assert (job["progress"]["done"], job["progress"]["total"]) == (6, 6)
    subjects = [f"{d}_{s}" for d in ("alpha", "beta") for s in SUBJECTS]
    assert [f["subject"] for f in job["result"]["folds"]] == subjects
    config = json.loads((pooled_lab["stores"] / "runs" / "pooled" / "config.json").read_text())
    assert [d["name"] for d in config["datasets"]] == ["alpha", "beta"]
    assert config["protocol"] == "loso" and config["features"]["subjects"] == subjects
    # as mespot.api.train (`mespot train`) ends: the precision maps fitted for predict
    assert (pooled_lab["stores"] / "runs" / "pooled" / "precision").is_dir()

    job = _submit_train(pooled_server, capsys, "--run", "runs/cross", "--protocol",
                        "cross-dataset", "--test-on", "beta")
    assert job["state"] == "done", job
    assert [f["subject"] for f in job["result"]["folds"]] == ["cross-beta"]
    assert (job["progress"]["done"], job["progress"]["total"]) == (1, 1)  # one model
    config = json.loads((pooled_lab["stores"] / "runs" / "cross" / "config.json").read_text())
    assert (config["protocol"], config["test_datasets"]) == ("cross-dataset", ["beta"])

    job = _submit_train(pooled_server, capsys, "--run", "runs/split", "--protocol", "split",
                        "--split-seed", "3", "--split-test", "0.5")
    assert job["state"] == "done", job
    config = json.loads((pooled_lab["stores"] / "runs" / "split" / "config.json").read_text())
    assert (config["protocol"], config["split"]) == ("split", {"test_fraction": 0.5, "seed": 3})
    fold = json.loads((pooled_lab["stores"] / "runs" / "split" / "folds" / "split" /
                       "fold.json").read_text())
    assert len(fold["test_units"]) == 3 and len(fold["train_subjects"]) == 3  # of 6 videos


def test_a_train_on_stores_being_made_waits_for_every_extraction(tmp_path):
    roots = Roots(tmp_path / "data", tmp_path / "stores")
    for folder in (roots.data, roots.store):
        folder.mkdir()
    for name in ("a", "b"):
        (roots.data / f"{name}.csv").write_text("subject,video,onset,apex,offset,type,au\n")
    jobs = JobStore(tmp_path / "jobs.sqlite")
    paths = [str(roots.store / f"{n}.zarr") for n in ("a", "b")]
    made = {p: jobs.submit("extract", {}, [p], makes=p).id for p in paths}
    body = {"store": ["one=a.zarr", "b.zarr"], "annotations": ["a.csv", "b.csv"], "run": "r"}
    planned = tasks.plan("train", body, roots, tmp_path, lambda path: made.get(str(path)))
    assert (planned.after, planned.also_after) == tuple(made.values())[:1] + (
        tuple(made.values())[1:],)
    assert planned.params["store"] == ["one=a.zarr", "b.zarr"]
    assert planned.locks == [*made, str(roots.store / "r")]
    train = jobs.submit("train", planned.params, planned.locks, planned.after, planned.makes,
                        also_after=planned.also_after)
    first, second = made.values()
    assert jobs.claim("cpu0", "cpu", "one", 10).id == first
    assert jobs.finish(first, "one", "done")
    assert jobs.claim("cpu0", "cpu", "two", 10).id == second  # the train waits for b's too
    assert jobs.claim("cpu1", "cpu", "three", 10) is None
    assert jobs.finish(second, "two", "failed", "failed", "no face")
    assert jobs.claim("cpu0", "cpu", "four", 10) is None
    assert jobs.get(train.id).state == "cancelled"  # b failed: the train does not run
    assert jobs.get(train.id).message == f"not run: job #{second} (extract) failed"
    with pytest.raises(PathRefused, match="2 stores and 3 annotation files"):
        tasks.plan("train", {**body, "annotations": ["a.csv"] * 3}, roots, tmp_path,
                   lambda path: made.get(str(path)))
    with pytest.raises(PathRefused, match="c.zarr: no such folder"):
        tasks.plan("train", {**body, "store": ["a.zarr", "c.zarr"]}, roots, tmp_path,
                   lambda path: made.get(str(path)))
