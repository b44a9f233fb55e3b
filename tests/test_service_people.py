"""Several people on one `mespot serve`: tokens of their own (made, listed and revoked by the
admin, stored hashed), the submitter on every job, queue and run times, archive and delete of
ended jobs (by their submitter or the admin)."""

from __future__ import annotations

import hashlib
import sqlite3

import pytest
from service_checks import refused
from waiting import DEADLINE

from mespot.cli import main
from mespot.service.client import Client
from mespot.service.testing import start_server


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    root = tmp_path_factory.mktemp("people")
    (root / "data" / "tiny").mkdir(parents=True)
    (root / "stores" / "runs" / "tiny").mkdir(parents=True)
    (root / "stores" / "runs" / "tiny" / "config.json").write_text("{}")  # evaluation fails
    server = start_server(root / "home", root / "data", root / "stores", "--cores-per-slot", "1")
    yield server
    server.stop()


def test_users_tokens_submitters_archive_and_delete(lab, capsys):
    admin = lab.client()
    assert main(["users", "add", "ana", "--server", lab.url, "--token", lab.token]) == 0
    ana_token = capsys.readouterr().out.split("token ")[1].strip()
    bob_token = admin.request("POST", "/api/users", body={"name": "bob"})["token"]
    ana, bob = Client(lab.url, ana_token), Client(lab.url, bob_token)
    assert ana.request("GET", "/api/whoami") == {"name": "ana", "admin": False}
    refused(lambda: admin.request("POST", "/api/users", body={"name": "ana"}), 409, "exists")
    refused(lambda: admin.request("POST", "/api/users", body={"name": "Ana Lee"}), 422,
            "user name")
    refused(lambda: ana.request("GET", "/api/users"), 403, "only the admin")
    refused(lambda: ana.request("POST", "/api/users", body={"name": "eve"}), 403, "admin")

    with sqlite3.connect(lab.home / "jobs.sqlite") as db:  # only hashes are kept
        stored = db.execute("SELECT name, hash FROM users ORDER BY name").fetchall()
    assert stored == [("ana", hashlib.sha256(ana_token.encode()).hexdigest()),
                      ("bob", hashlib.sha256(bob_token.encode()).hexdigest())]
    assert ana_token.encode() not in (lab.home / "jobs.sqlite").read_bytes()

    job = ana.submit("evaluate", {"run": "runs/tiny", "report": False})
    assert job["submitter"] == "ana"
    ended = ana.wait(job["id"], timeout=DEADLINE, every=0.2)
    assert ended["state"] == "failed"  # the run folder holds no model
    assert ended["waited_seconds"] >= 0 and ended["ran_seconds"] >= 0
    page = ana.request("GET", "/")
    assert '<span class="submitter">ana</span>' in page and "waited" in page and "ran " in page
    mine = admin.submit("evaluate", {"run": "runs/tiny", "report": False})
    assert mine["submitter"] == "admin"
    admin.wait(mine["id"], timeout=DEADLINE, every=0.2)

    refused(lambda: bob.request("DELETE", f"/api/jobs/{job['id']}"), 403, "submitted by ana")
    ana.request("POST", f"/api/jobs/{job['id']}/archive")
    assert job["id"] not in [j["id"] for j in ana.jobs()]
    archived = ana.request("GET", "/api/jobs", query={"archived": "true"})["jobs"]
    assert [j["archived"] for j in archived if j["id"] == job["id"]] == [True]
    folder = lab.home / "jobs" / str(job["id"])
    assert (folder / "log.txt").is_file()
    answer = ana.request("DELETE", f"/api/jobs/{job['id']}")
    assert answer["deleted"] == job["id"] and not folder.exists()
    refused(lambda: ana.job(job["id"]), 404, "no job")
    admin.request("DELETE", f"/api/jobs/{mine['id']}")  # the admin deletes anyone's

    listed = {u["name"]: u for u in admin.request("GET", "/api/users")["users"]}
    assert listed["ana"]["last_used"] is not None and listed["bob"]["revoked"] is None
    assert main(["users", "revoke", "ana", "--server", lab.url, "--token", lab.token]) == 0
    refused(lambda: ana.jobs(), 401, "missing or wrong token")
    assert bob.jobs() is not None  # the others' tokens still work
    again = admin.request("POST", "/api/users", body={"name": "ana"})  # the name is free again
    assert again["token"] != ana_token
