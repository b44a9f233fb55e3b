"""The service's pieces without a server: path checks, the SQLite job queue and its leases,
upload checks, tokens."""

import os
import threading

import pytest
from waiting import DEADLINE

from flowcore.errors import UserError
from mespot.service import auth
from mespot.service.jobs import JobConflict, JobStore
from mespot.service.roots import PathRefused, Roots
from mespot.service.uploads import UploadRefused, check_name, looks_like_video


@pytest.fixture
def roots(tmp_path):
    (tmp_path / "data" / "set" / "videos").mkdir(parents=True)
    (tmp_path / "stores").mkdir()
    (tmp_path / "secret").mkdir()
    return Roots(tmp_path / "data", tmp_path / "stores")


def test_paths_under_a_root_are_resolved(roots):
    assert roots.data_path("set/videos") == roots.data / "set" / "videos"
    assert roots.data_path(str(roots.data / "set")) == roots.data / "set"  # absolute, inside
    assert roots.store_path("new/store.zarr") == roots.store / "new" / "store.zarr"
    assert roots.shown(roots.data / "set" / "videos") == "set/videos"


@pytest.mark.parametrize("text, status, words", [
    ("../secret", 422, "'..' is not allowed"),
    ("set/../../secret", 422, "'..' is not allowed"),
    ("", 422, "empty path"),
    ("set\0x", 422, "NUL"),
    ("/etc", 403, "outside the data root"),
])
def test_refused_paths(roots, text, status, words):
    with pytest.raises(PathRefused) as refused:
        roots.data_path(text)
    assert refused.value.status == status and words in str(refused.value)


def test_a_symlink_out_of_the_root_is_refused(roots):
    os.symlink(roots.data.parent / "secret", roots.data / "set" / "escape")
    with pytest.raises(PathRefused) as refused:
        roots.data_path("set/escape")
    assert refused.value.status == 403 and "symbolic link" in str(refused.value)
    os.symlink(roots.data / "set" / "videos", roots.data / "inside")  # a link within is fine
    assert roots.data_path("inside") == roots.data / "set" / "videos"


def test_jobs_are_claimed_in_order_and_never_two_on_one_path(tmp_path):
    store = JobStore(tmp_path / "jobs.sqlite")
    a = store.submit("extract", {}, ["/s/a.zarr"])
    b = store.submit("train", {}, ["/s/a.zarr", "/s/runs/r"])  # reads what a writes
    c = store.submit("extract", {}, ["/s/c.zarr"])
    assert store.claim("cpu0", "cpu", "one", 10).id == a.id
    assert store.claim("cpu1", "cpu", "two", 10).id == c.id  # b waits for a's store
    assert store.claim("cpu2", "cpu", "three", 10) is None
    assert store.finish(a.id, "one", "done", "ok")
    assert store.claim("cpu0", "cpu", "four", 10).id == b.id
    assert store.counts() == {"queued": 0, "running": 2, "done": 1, "failed": 0, "cancelled": 0}


def test_a_job_after_another_runs_once_it_is_done_or_never(tmp_path):
    store = JobStore(tmp_path / "jobs.sqlite")
    a = store.submit("extract", {}, ["/s/a.zarr"], makes="/s/a.zarr")
    assert store.maker_of("/s/a.zarr") == a.id and store.maker_of("/s/b.zarr") is None
    b = store.submit("train", {}, ["/s/a.zarr", "/s/r"], after=a.id, makes="/s/r")
    c = store.submit("evaluate", {}, ["/s/r"], after=b.id)
    other = store.submit("extract", {}, ["/s/c.zarr"])
    assert store.claim("cpu0", "cpu", "one", 10).id == a.id
    assert store.claim("cpu1", "cpu", "two", 10).id == other.id  # b waits for a, c for b
    assert store.claim("cpu2", "cpu", "three", 10) is None
    assert store.finish(a.id, "one", "done")
    assert store.claim("cpu0", "cpu", "four", 10).id == b.id
    assert store.finish(b.id, "four", "failed", "failed", "bad annotations")
    assert store.claim("cpu0", "cpu", "five", 10) is None
    stopped = store.get(c.id)
    assert stopped.state == "cancelled"
    assert stopped.message == f"not run: job #{b.id} (train) failed"
    d = store.submit("evaluate", {}, ["/s/r"], after=c.id)  # after a job that never ran
    assert store.claim("cpu0", "cpu", "six", 10) is None and store.get(d.id).state == "cancelled"


def test_cancelling_is_shown_until_the_runner_ends(tmp_path):
    store = JobStore(tmp_path / "jobs.sqlite")
    job = store.submit("extract", {}, ["/s/a.zarr"])
    store.claim("cpu0", "cpu", "owner", 10)
    assert store.request_cancel(job.id).to_json()["state"] == "cancelling"
    assert store.cancel_asked(job.id) and [j.id for j in store.list("cancelling")] == [job.id]
    assert store.get(job.id).state == "running"  # stored: still running (its lease holds)
    store.finish(job.id, "owner", "cancelled", "stopped")
    assert store.get(job.id).to_json()["state"] == "cancelled"


def test_only_the_lease_owner_writes(tmp_path):
    store = JobStore(tmp_path / "jobs.sqlite")
    job = store.submit("extract", {}, ["/s/a.zarr"])
    store.claim("cpu0", "cpu", "owner", 10)
    assert store.heartbeat(job.id, "intruder", 10, 1.0) == (False, False)
    assert not store.progress(job.id, "intruder", 5, 10, "frames", None, None, "")
    assert not store.finish(job.id, "intruder", "done")
    assert store.heartbeat(job.id, "owner", 10, 1.0) == (True, False)
    assert store.progress(job.id, "owner", 5, 10, "frames", 2.0, 2.5, "half")
    got = store.get(job.id)
    assert (got.state, got.done, got.total, got.busy_seconds) == ("running", 5, 10, 1.0)


def test_an_expired_lease_goes_back_to_the_queue_in_its_place(tmp_path):
    store = JobStore(tmp_path / "jobs.sqlite")
    first = store.submit("extract", {}, ["/s/a.zarr"])
    second = store.submit("extract", {}, ["/s/b.zarr"])
    store.claim("cpu0", "cpu", "dead", lease_s=-1.0)  # already expired
    assert [j.id for j in store.expired()] == [first.id]
    assert store.requeue(first.id, "dead", "resuming")
    assert not store.requeue(first.id, "dead", "twice")  # no longer held
    again = store.claim("cpu0", "cpu", "new", 10)
    assert again.id == first.id and again.attempts == 2 and second.id != again.id
    assert not store.finish(first.id, "dead", "done")  # the old runner changes nothing


def test_cancel(tmp_path):
    store = JobStore(tmp_path / "jobs.sqlite")
    queued = store.submit("extract", {}, ["/s/a.zarr"])
    assert store.request_cancel(queued.id).state == "cancelled"
    running = store.submit("extract", {}, ["/s/b.zarr"])
    store.claim("cpu0", "cpu", "owner", 10)
    asked = store.request_cancel(running.id)
    assert asked.state == "running" and asked.cancel
    assert store.heartbeat(running.id, "owner", 10, 0.5) == (True, True)
    store.finish(running.id, "owner", "done")
    with pytest.raises(JobConflict, match="already done"):
        store.request_cancel(running.id)
    with pytest.raises(KeyError):
        store.request_cancel(999)


def test_claims_from_many_threads_never_share_a_job(tmp_path):
    store = JobStore(tmp_path / "jobs.sqlite")
    for k in range(40):
        store.submit("extract", {}, [f"/s/{k}.zarr"])
    claimed, lock = [], threading.Lock()

    def worker(name):
        while (job := store.claim(name, "cpu", name, 10)) is not None:
            with lock:
                claimed.append(job.id)

    threads = [threading.Thread(target=worker, args=(f"w{k}",)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(DEADLINE)
    assert not any(t.is_alive() for t in threads), f"claims still going after {DEADLINE} s"
    assert sorted(claimed) == list(range(1, 41))


@pytest.mark.parametrize("name, status", [("../x.mp4", 422), ("a/b.mp4", 422), ("clip.exe", 415),
                                          ("clip.txt", 415), ("", 422)])
def test_upload_names(name, status):
    with pytest.raises(UploadRefused) as refused:
        check_name(name)
    assert refused.value.status == status


def test_upload_content_sniffing():
    assert looks_like_video(b"\x00\x00\x00\x18ftypmp42" + b"\0" * 8)
    assert looks_like_video(b"RIFF\x10\x00\x00\x00AVI LIST")
    assert looks_like_video(b"\x1a\x45\xdf\xa3" + b"\0" * 12)
    assert not looks_like_video(b"#!/bin/sh\necho hi\n")
    assert not looks_like_video(b"\x89PNG\r\n\x1a\n" + b"\0" * 8)


def test_token_made_once_private_and_read_back(tmp_path):
    token, created = auth.load_or_create(tmp_path / "home", None)
    assert created and len(token) >= 40
    assert (tmp_path / "home" / "token").stat().st_mode & 0o777 == 0o600
    assert auth.load_or_create(tmp_path / "home", None) == (token, False)
    given = tmp_path / "given"
    given.write_text("short\n")
    with pytest.raises(UserError, match="at least 16"):
        auth.load_or_create(tmp_path / "home", given)
    given.write_text("a-token-set-by-the-operator\n")
    assert auth.load_or_create(tmp_path / "home", given) == ("a-token-set-by-the-operator", False)
    assert auth.same_token("a", "a") and not auth.same_token("a", "b")
    assert not auth.same_token(None, "b")


def test_the_app_in_process_answers_an_unexpected_error_with_json_and_no_trace(tmp_path):
    from fastapi.testclient import TestClient

    from mespot.service.app import create_app
    from mespot.service.config import ServiceConfig

    (tmp_path / "data").mkdir()
    (tmp_path / "stores").mkdir()
    config = ServiceConfig(home=tmp_path / "home", data_root=tmp_path / "data",
                           store_root=tmp_path / "stores")
    config.home.mkdir()
    app = create_app(config, "a-token-for-this-test-only")  # no scheduler: nothing runs

    @app.get("/api/boom")
    def boom():
        raise RuntimeError("secret detail /etc/shadow")

    with TestClient(app, raise_server_exceptions=False) as client:
        answer = client.get("/api/boom",
                            headers={"Authorization": "Bearer a-token-for-this-test-only"})
        assert answer.status_code == 500
        assert answer.json() == {"ok": False, "status": 500,
                                 "error": "internal error; the server's log has the details"}
        submitted = client.post("/api/jobs/extract", json={"source": ".", "store": "s.zarr"},
                                headers={"Authorization": "Bearer a-token-for-this-test-only"})
        assert submitted.status_code == 201 and submitted.json()["state"] == "queued"


def test_the_client_says_when_no_server_answers_or_no_token_is_found(tmp_path, capsys, monkeypatch):
    from mespot.cli import main
    from mespot.service.testing import free_port

    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    assert main(["jobs", "list", "--server", url, "--token", "t" * 20]) == 2
    assert f"cannot reach the mespot server at {url}" in capsys.readouterr().err
    monkeypatch.delenv("MESPOT_TOKEN", raising=False)
    assert main(["jobs", "--server", url, "--token-file", str(tmp_path / "none")]) == 2
    assert "no token" in capsys.readouterr().err
    assert main(["submit", "predict", str(tmp_path / "missing.mp4"), "--model", "runs/x",
                 "--server", url, "--token", "t" * 20]) == 2
    assert "no such file here (add --remote" in capsys.readouterr().err
