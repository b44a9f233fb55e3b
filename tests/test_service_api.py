"""`mespot serve` over a real socket: the token, every refused input, JSON errors, job files
only through their job, and whole jobs (extract, cancel, resume, train, evaluate, predict)
through the `mespot submit` / `mespot jobs` client."""

from __future__ import annotations

import http.client
import http.cookiejar
import json
import os
import urllib.request

import cv2
import numpy as np
import pytest
from service_checks import refused
from waiting import DEADLINE

from mespot.cli import main
from flowcore.errors import UserError
from mespot.service.client import Client
from mespot.service.testing import start_server


FLAGS = ("--cores-per-slot", "1", "--max-upload-mb", "1", "--lease-seconds", "5")


@pytest.fixture(scope="module")
def light(tmp_path_factory) -> dict:
    """Roots with the names the refusal tests use, and nothing to compute on: data/tiny with
    an annotation file, stores/tiny.zarr and a run folder stores/runs/tiny."""
    lab = tmp_path_factory.mktemp("light")
    (lab / "data" / "tiny").mkdir(parents=True)
    (lab / "data" / "tiny" / "ground_truth.csv").write_text(
        "subject,video,onset,apex,offset,type,au\n")
    (lab / "stores" / "tiny.zarr").mkdir(parents=True)
    (lab / "stores" / "runs" / "tiny").mkdir(parents=True)
    (lab / "stores" / "runs" / "tiny" / "config.json").write_text("{}")
    return {"root": lab, "data": lab / "data", "stores": lab / "stores"}


@pytest.fixture(scope="module")
def server(light):
    """A server for the refusal tests: one CPU slot of one core, a 1 MiB upload limit."""
    running = start_server(light["root"] / "home", light["data"], light["stores"], *FLAGS)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def client(server) -> Client:
    return server.client()


@pytest.fixture(scope="module")
def lab_server(service_lab, tmp_path_factory, module_gates):
    """A server on the tiny synthetic set (slot of one core: videos one after another); its
    jobs see `module_gates`."""
    home = tmp_path_factory.mktemp("api") / "home"
    running = start_server(home, service_lab["data"], service_lab["stores"], *FLAGS,
                           env=module_gates.environ())
    yield running
    running.stop()


def _raw(server, method, path, body=None, headers=None):
    """(status, headers, body bytes) of one request, errors included."""
    request = urllib.request.Request(server.url + path, data=body, method=method,
                                     headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, answer.headers, answer.read()
    except urllib.error.HTTPError as err:
        return err.code, err.headers, err.read()


ENDPOINTS = [("GET", "/api/jobs"), ("GET", "/api/jobs/1"), ("POST", "/api/jobs/1/cancel"),
             ("GET", "/api/jobs/1/files"), ("GET", "/api/jobs/1/files/log.txt"),
             ("GET", "/api/jobs/1/log"), ("POST", "/api/jobs/extract"),
             ("POST", "/api/uploads?filename=a.mp4"), ("GET", "/api/info"), ("GET", "/api/browse"),
             ("GET", "/metrics"), ("POST", "/api/pipelines"), ("GET", "/api/pipelines"),
             ("POST", "/api/jobs/1/clone"), ("DELETE", "/api/jobs/1"),
             ("POST", "/api/jobs/1/archive"), ("GET", "/api/users"), ("POST", "/api/users"),
             ("POST", "/api/jobs/spot")]


def test_health_is_open_and_every_other_endpoint_needs_the_token(server):
    status, _, body = _raw(server, "GET", "/healthz")
    assert status == 200 and json.loads(body)["ok"] is True
    for method, path in ENDPOINTS:
        for headers in ({}, {"Authorization": "Bearer wrong-token-of-the-right-length"}):
            status, answer_headers, body = _raw(server, method, path,
                                                b"" if method == "POST" else None,
                                                headers)
            assert status == 401, (method, path, status)
            assert json.loads(body)["error"].startswith("missing or wrong token"), (method, path)
            assert answer_headers["WWW-Authenticate"] == "Bearer"
    status, headers, body = _raw(server, "GET", "/")  # the page sends a browser to its login
    assert status == 401 and b"Sign in" in body


def test_the_token_is_made_private_and_printed_once(server):
    assert (server.home / "token").stat().st_mode & 0o777 == 0o600
    assert server.output().count(server.token) == 2  # the line with it and the link


def test_refused_paths_say_why(server, client, light):
    os.symlink("/etc", light["data"] / "escape")
    outside = str(light["root"].parent)

    def extract(source, store="stores/x.zarr"):
        return client.submit("extract", {"source": source, "store": store})

    refused(lambda: extract("../tiny"), 422, "'..' is not allowed")
    refused(lambda: extract("tiny", "../elsewhere.zarr"), 422, "'..' is not allowed")
    refused(lambda: extract("/etc"), 403, "outside the data root")
    refused(lambda: extract(outside), 403, "outside the data root")
    refused(lambda: extract("escape"), 403, "symbolic link")
    refused(lambda: extract("tiny", "/tmp/x.zarr"), 403, "outside the store root")
    refused(lambda: extract("nothing-here"), 422, "no such file or folder")
    refused(lambda: extract("tiny", "."), 422, "not the root")
    refused(lambda: client.submit("train", {"store": "tiny.zarr", "annotations": "tiny/none.csv",
                                            "run": "runs/x"}), 422, "no such file")
    refused(lambda: client.submit("train", {"store": "tiny.zarr",
                                            "annotations": "tiny/ground_truth.csv",
                                            "run": "tiny.zarr/run"}), 422, "run folder of its own")
    refused(lambda: client.submit("evaluate", {"run": "tiny.zarr"}), 422, "written by a train job")
    refused(lambda: client.submit("predict", {"model": "runs/tiny"}), 422, "needs 'video'")
    refused(lambda: client.submit("predict", {"model": "runs/tiny", "upload": "0" * 32}), 422,
            "no such upload")
    refused(lambda: client.submit("predict", {"model": "runs/tiny", "upload": "../../token"}), 422,
            "not an upload id")
    refused(lambda: client.request("GET", "/api/browse", query={"root": "data", "path": ".."}),
            422, "'..'")
    assert client.jobs() == [] or all(j["kind"] != "extract" or j["params"]["source"] != "escape"
                                      for j in client.jobs())


def test_bad_fields_are_refused_before_anything_runs(server, client):
    base = {"source": "tiny", "store": "stores/y.zarr"}
    refused(lambda: client.submit("extract", {**base, "colour": "red"}), 422,
            "colour: Extra inputs")
    refused(lambda: client.submit("extract", {**base, "backend": "magic"}), 422, "backend")
    refused(lambda: client.submit("extract", {**base, "resize": 5}), 422, "resize")
    refused(lambda: client.submit("extract", {"source": "tiny"}), 422, "store: Field required")
    refused(lambda: client.submit("train", {"store": "tiny.zarr", "annotations": "a", "run": "r",
                                            "epochs": 0}), 422, "epochs")
    refused(lambda: client.submit("evaluate", {"run": "runs/tiny", "select": ["best"]}), 422,
            "select")
    refused(lambda: client.request("POST", "/api/jobs/extract", data=b"{not json"), 422,
            "the body must be a JSON object")
    status, _, body = _raw(server, "POST", "/api/jobs/extract", b"{not json",
                           {"Authorization": f"Bearer {server.token}",
                            "Content-Type": "application/json"})
    assert status == 422 and "not valid JSON" in json.loads(body)["error"]
    refused(lambda: client.request("GET", "/api/jobs", query={"state": "sleeping"}), 422,
            "state must be")
    refused(lambda: client.request("POST", "/api/jobs/extract"), 422,
            "no body: send a JSON object with at least source, store")
    refused(lambda: client.submit("spot", {"video": "a.mp4"}), 422, "unknown job kind 'spot'")


def _mp4(frames_folder, path, frames=60):
    """An MP4 of a synthetic video's frames (or of noise, without a folder)."""
    files = sorted(frames_folder.glob("*.jpg"),
                   key=lambda p: int(p.stem[3:]))[:frames] if frames_folder else []
    images = [cv2.imread(str(f)) for f in files] or [
        np.random.default_rng(k).integers(0, 255, (64, 64, 3),
                                          dtype=np.uint8) for k in range(frames)]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 30.0,
                             images[0].shape[1::-1])
    for image in images:
        writer.write(image)
    writer.release()
    return path


def _post_upload(server, name: str, head: dict, chunks=None):
    """(status, error) of POST /api/uploads with these headers and (chunked) body parts."""
    connection = http.client.HTTPConnection(server.url.split("//")[1], timeout=30)
    connection.request("POST", f"/api/uploads?filename={name}", body=chunks,
                       headers={"Authorization": f"Bearer {server.token}", **head},
                       encode_chunked=chunks is not None)
    answer = connection.getresponse()
    status, error = answer.status, json.loads(answer.read()).get("error")
    connection.close()
    return status, error


def test_uploads_are_limited_in_size_and_type(server, client, tmp_path):
    limit = 2**20
    # said by Content-Length: refused before a byte of the body is read
    status, error = _post_upload(server, "big.mp4", {"Content-Length": str(2 * limit)})
    assert status == 413 and "larger than the limit of 1 MiB" in error
    # found while streaming (no length given): refused when the limit is passed
    head = b"\x00\x00\x00\x18ftypmp42"
    parts = [head] + [b"\0" * 65536] * (limit // 65536) + [b"\0" * 100]
    status, error = _post_upload(server, "big.mp4", {}, iter(parts))
    assert status == 413 and "larger than the limit of 1 MiB" in error
    big = tmp_path / "big.mp4"
    big.write_bytes(head + os.urandom(2 * limit))
    with pytest.raises(UserError, match="larger than the server's upload limit of 1 MiB"):
        client.upload(big)  # the client checks first
    script = tmp_path / "clip.mp4"
    script.write_text("#!/bin/sh\nrm -rf /\n")
    refused(lambda: client.upload(script), 415, "not a video file")
    for name, status, words in (("clip.sh", 415, "only video files"),
                                ("../clip.mp4", 422, "plain file name")):
        refused(lambda: client.request("POST", "/api/uploads", data=b"\x00\x00\x00\x18ftyp",
                                        query={"filename": name}), status, words)
    refused(lambda: client.request("POST", "/api/uploads", data=b"", query={"filename": "e.mp4"}),
            422, "empty")
    video = _mp4(None, tmp_path / "clip.mp4", frames=10)
    upload = client.upload(video)
    kept = server.home / "uploads" / upload / "clip.mp4"
    assert len(upload) == 32 and kept.stat().st_size == video.stat().st_size
    assert not list((server.home / "uploads").glob("*/*.part"))
    assert len(list((server.home / "uploads").iterdir())) == 1  # the refused ones left nothing


def test_errors_are_json_and_files_only_through_their_job(server, client):
    for method, path, status in (("GET", "/api/nothing", 404), ("DELETE", "/api/jobs", 405),
                                 ("GET", "/api/jobs/abc", 422), ("GET", "/api/jobs/999", 404),
                                 ("GET", "/api/jobs/999/files/log.txt", 404)):
        code, headers, body = _raw(server, method, path,
                                   headers={"Authorization": f"Bearer {server.token}"})
        assert code == status, (method, path, code)
        assert headers["Content-Type"] == "application/json", (method, path, code)
        answer = json.loads(body)
        assert answer["ok"] is False and answer["status"] == status
        assert "Traceback" not in body.decode()
    job = client.submit("evaluate", {"run": "runs/tiny", "report": False})
    client.cancel(job["id"])
    for name in ("../../token", "token", "jobs.sqlite", "%2e%2e/%2e%2e/token", "/etc/passwd"):
        refused(lambda: client.request("GET", f"/api/jobs/{job['id']}/files/{name}"), 404,
                "has no file")


def test_interactive_docs_and_favicon_are_served_from_here_signed_out(server):
    import re

    status, headers, page = _raw(server, "GET", "/docs")
    assert status == 200 and b"swagger-ui" in page
    assets = re.findall(r'(?:src|href)="([^"]+)"', page.decode())
    assert assets and all(a.startswith("/") and not a.startswith("//") for a in assets), assets
    for asset in assets:  # nothing fetched from elsewhere: every asset is this server's
        assert _raw(server, "GET", asset)[0] == 200, asset
    status, _, body = _raw(server, "GET", "/openapi.json")
    schema = json.loads(body)
    assert status == 200 and "bearer" in json.dumps(schema["components"]["securitySchemes"])
    assert {"/api/jobs/extract", "/api/jobs/{job_id}/cancel", "/api/pipelines",
            "/api/uploads"} <= set(schema["paths"])
    status, headers, _ = _raw(server, "GET", "/favicon.ico")
    assert status == 200 and headers["Content-Type"].startswith("image/svg")


def test_page_docs_info_and_metrics(server, client):
    page = client.request("GET", "/")
    assert "<h2>Queue</h2>" in page and 'id="form-extract"' in page
    assert 'id="form-pipeline"' in page and 'placeholder="stores/' not in page
    login = _raw(server, "GET", "/login")[2].decode()
    assert "`" not in login and "<code>mespot serve</code>" in login
    info = client.request("GET", "/api/info")
    assert info["slots"] == [{"name": "cpu0", "device": "cpu", "cores": 1, "gpu": None}]
    assert {"name": "tiny", "folder": True} in client.request("GET", "/api/browse")["entries"]
    metrics = client.request("GET", "/metrics")
    assert 'mespot_jobs{state="queued"}' in metrics and "mespot_frames_extracted_total" in metrics
    assert 'mespot_slots{device="cpu"} 1.0' in metrics


def test_the_browser_cookie_reads_but_changes_need_the_page_header(server):
    body = f"token={server.token}".encode()
    request = urllib.request.Request(server.url + "/login", data=body, method="POST")
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    with opener.open(request, timeout=30) as answer:  # redirected to / with the cookie set
        assert answer.status == 200 and b"<h2>Queue</h2>" in answer.read()
    assert [c.name for c in jar] == ["mespot_token"]
    status, headers, _ = _raw(server, "POST", "/login", b"token=wrong")
    assert status == 401 and "Set-Cookie" not in headers
    cookie = {"Cookie": f"mespot_token={server.token}"}
    assert _raw(server, "GET", "/api/jobs", headers=cookie)[0] == 200
    job = json.loads(_raw(server, "POST", "/api/jobs/evaluate",
                          json.dumps({"run": "runs/tiny"}).encode(),
                          {**cookie, "Content-Type": "application/json", "x-mespot-page": "1"})[2])
    cancel = f"/api/jobs/{job['id']}/cancel"
    assert _raw(server, "POST", cancel, b"", cookie)[0] == 401  # no header: CSRF
    page_headers = {**cookie, "x-mespot-page": "1"}
    assert _raw(server, "POST", cancel, b"", page_headers)[0] == 200


def _cli(server, *args) -> int:
    return main([*args, "--server", server.url, "--token", server.token])


def _submit_and_wait(server, capsys, *args) -> int:
    """`mespot submit ARGS`, then `mespot jobs wait` on the job with a deadline: its exit code."""
    capsys.readouterr()
    assert _cli(server, "submit", *args) == 0
    job_id = int(capsys.readouterr().out.split()[1])
    return _cli(server, "jobs", "wait", str(job_id), "--timeout", str(DEADLINE))


def _complete(store) -> list[str]:
    """Read while the job's workers write (a video begun is deleted and created afresh)."""
    from flowcore.store import video_statuses

    return sorted(k for k, status in video_statuses(store).items() if status == "complete")


@pytest.mark.slow
def test_extract_cancel_at_once_resume_and_a_failing_job_does_not_stop_the_queue(
        lab_server, service_lab, module_gates, capsys):
    server, client = lab_server, lab_server.client()
    (service_lab["data"] / "empty").mkdir()
    module_gates.hold("extract-*")  # the videos wait at their gates until let through
    try:
        failing = client.submit("extract", {"source": "empty", "store": "empty.zarr"})
        assert _cli(server, "submit", "extract", "tiny", "--store", "api/tiny.zarr",
                    "--resize", "64") == 0
        job_id = int(capsys.readouterr().out.split()[1])
        queued = client.submit("extract", {"source": "tiny", "store": "api/other.zarr"})
        assert _cli(server, "jobs", "cancel", str(queued["id"])) == 0
        assert "cancelled" in capsys.readouterr().out
        # cancelled while its first video runs: it stops at once (the video is interrupted,
        # tests/test_service_cancel.py has the pool's case)
        module_gates.arrival("extract-*", what="the job's first video is held")
        assert _cli(server, "jobs", "cancel", str(job_id)) == 0
        code = _cli(server, "jobs", "wait", str(job_id), "--timeout", str(DEADLINE))
    finally:
        module_gates.open_all()
    assert code == 1  # not done: cancelled
    job = client.job(job_id)
    assert job["state"] == "cancelled"
    assert "0 of 2 videos are complete" in job["progress"]["message"]
    store = service_lab["stores"] / "api" / "tiny.zarr"
    assert _complete(store) == []  # the video in progress was interrupted: redone by a resume
    assert client.job(failing["id"])["state"] == "failed"
    assert "no" in client.job(failing["id"])["error"]
    assert client.job(queued["id"])["state"] == "cancelled"
    refused(lambda: client.cancel(failing["id"]), 409, "already failed")

    again = client.submit("extract", {"source": "tiny", "store": "api/tiny.zarr", "resize": 64})
    assert _cli(server, "jobs", "wait", str(again["id"]), "--timeout", str(DEADLINE)) == 0
    done = client.job(again["id"])
    assert done["result"] | {"complete": 2, "skipped": 0} == done["result"]
    assert len(_complete(store)) == 2 and done["progress"]["fraction"] == 1.0
    assert _cli(server, "jobs", "list") == 0
    listing = capsys.readouterr().out
    assert f"{again['id']:>5}  extract   done" in listing and "failed" in listing
    metrics = client.request("GET", "/metrics")
    assert 'mespot_jobs{state="failed"} 1.0' in metrics
    frames = [line for line in metrics.splitlines()
              if line.startswith("mespot_frames_extracted_total")]
    assert float(frames[0].split()[1]) == 120  # 2 videos x 60 frames, each counted once


@pytest.mark.slow
def test_train_evaluate_and_predict_an_uploaded_video(lab_server, service_lab, tmp_path, capsys):
    server, client = lab_server, lab_server.client()
    assert _submit_and_wait(server, capsys, "train", "tiny.zarr", "-a", "tiny/ground_truth.csv",
                            "--run", "runs/api", "--epochs", "2") == 0
    train = client.jobs("done")[0]
    assert train["kind"] == "train" and train["progress"]["unit"] == "epochs"
    assert train["progress"]["total"] == 4 and "train.log" in train["files"]
    assert _submit_and_wait(server, capsys, "evaluate", "runs/api", "--select", "last") == 0
    evaluation = client.jobs("done")[0]
    assert {"report.html", "last/intervals.csv", "last/metrics.json",
            "log.txt"} <= set(evaluation["files"])
    assert any(name.startswith("report/curves_") for name in evaluation["files"])
    rows = evaluation["result"]["evaluations"]["last"]["metrics"]
    assert [r["type"] for r in rows] == ["me", "mae", "overall"]
    report = client.request("GET", f"/api/jobs/{evaluation['id']}/files/report.html")
    assert "<html" in report.lower() and "data:image/png;base64" in report
    assert _cli(server, "jobs", "download", str(evaluation["id"]), "last/intervals.csv", "--out",
                str(tmp_path / "intervals.csv")) == 0
    assert (tmp_path / "intervals.csv").read_text().startswith("video,subject,type,onset")

    video = _mp4(next((service_lab["tiny"] / "rawpic").glob("s15/*")), tmp_path / "new clip.mp4")
    assert _submit_and_wait(server, capsys, "predict", str(video), "--model", "runs/api") == 0
    predict = client.jobs("done")[0]
    assert predict["kind"] == "predict" and predict["params"]["upload"]
    assert {"intervals.csv", "curves.png", "prediction.json"} <= set(predict["files"])
    intervals = client.request("GET", f"/api/jobs/{predict['id']}/files/intervals.csv")
    assert intervals.startswith("video,type,onset,offset,apex,score,precision,precision_n")
    result = predict["result"]  # each interval with its expected precision, and what was left
    assert {"intervals", "min_precision", "left_out", "precision"} <= set(result)
    assert all({"score", "precision"} <= set(row) for row in result["intervals"])
    status, headers, png = _raw(server, "GET", f"/api/jobs/{predict['id']}/files/curves.png",
                                headers={"Authorization": f"Bearer {server.token}"})
    assert status == 200 and headers["Content-Type"] == "image/png" and png[:4] == b"\x89PNG"
    assert "sandbox" in headers["Content-Security-Policy"]
    review = client.request("GET", f"/api/jobs/{predict['id']}/review")  # its review
    (video,) = review["videos"]
    assert review["videos"][video]["subject"] == video and review["truth"][video] == []
    strip = client.request("GET", f"/api/jobs/{predict['id']}/review/strip.jpg", raw=True,
                           query={"video": video, "onset": 3, "apex": 5, "offset": 9})
    assert strip.read()[:2] == b"\xff\xd8"  # frames of the uploaded video


def test_one_server_per_folder(server, light):
    import subprocess
    import sys

    second = subprocess.run([sys.executable, "-m", "mespot.cli", "serve",
                             "--home", str(server.home),
                             "--data-root", str(light["data"]),
                             "--store-root", str(light["stores"]),
                             "--port", "1"], capture_output=True, text=True, timeout=120)
    assert second.returncode == 2
    assert "another `mespot serve` is using this folder" in second.stderr
    assert server.process.poll() is None
