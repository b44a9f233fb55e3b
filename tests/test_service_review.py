"""Review of spotted intervals: the review of an evaluation (its intervals, the ground truth,
frame strips read from the videos the store was made from), accepted, rejected and corrected
intervals exported as mespot's annotation CSV that `mespot train -a` trains on, and Label
Studio's video timeline JSON exported and imported back."""

from __future__ import annotations

import json

import pytest
from waiting import DEADLINE

from mespot.cli import main
from mespot.service import review as rv
from mespot.service.client import ServiceError
from mespot.service.testing import start_server
from spotting.annotations import read_annotations


@pytest.fixture(scope="module")
def review_server(service_lab, tmp_path_factory):
    home = tmp_path_factory.mktemp("review") / "home"
    running = start_server(home, service_lab["data"], service_lab["stores"],
                           "--cores-per-slot", "1")
    yield running
    running.stop()


def test_label_studio_round_trip_and_the_csv_hold_only_accepted_intervals():
    review = {"videos": {"v1": {"subject": "s1", "intervals": [
        {"type": "me", "onset": 10, "apex": 12, "offset": 20, "status": "accepted",
         "score": 0.9, "origin": "spotted"},
        {"type": "mae", "onset": 30, "apex": 40, "offset": 60, "status": "rejected",
         "score": 0.4, "origin": "spotted"}]}}}
    tasks = rv.label_studio(review, {})
    result = tasks[0]["annotations"][0]["result"]
    assert [(r["value"]["timelinelabels"], r["value"]["ranges"]) for r in result] == [
        (["me"], [{"start": 10, "end": 20}]), (["apex"], [{"start": 12, "end": 12}])]
    back = rv.from_label_studio(json.loads(json.dumps(tasks)), review)
    assert [(i["type"], i["onset"], i["apex"], i["offset"], i["status"])
            for i in back["videos"]["v1"]["intervals"]] == [("me", 10, 12, 20, "accepted")]
    assert rv.annotations_csv(review) == ("subject,video,onset,apex,offset,type,au\n"
                                          "s1,v1,10,12,20,me,\n")
    with pytest.raises(Exception, match="not in this review"):
        rv.from_label_studio([{"data": {"video_id": "other"}, "annotations": []}], review)
    with pytest.raises(Exception, match="apex 5 <= offset 3"):
        rv.Interval(type="me", onset=1, apex=5, offset=3)
    assert rv.strip_frames(10, 12, 20)[0] == 4 and {10, 12, 20} <= set(rv.strip_frames(10, 12, 20))


@pytest.mark.slow
def test_review_an_evaluation_correct_it_export_it_and_train_on_the_export(
        review_server, service_lab, tmp_path):
    client = review_server.client()
    job = client.submit("evaluate", {"run": "runs/tiny", "report": False})
    assert client.wait(job["id"], DEADLINE, every=0.2)["state"] == "done"
    got = client.request("GET", f"/api/jobs/{job['id']}/review")
    truth = read_annotations(service_lab["tiny"] / "ground_truth.csv").frame
    assert set(got["videos"]) <= set(truth["video_id"]) and got["truth"]
    video = sorted(v for v in got["truth"] if got["truth"][v])[0]
    assert len(got["truth"][video]) == int((truth["video_id"] == video).sum())
    for reviewed in got["videos"].values():
        assert all(i["status"] == "pending" for i in reviewed["intervals"])

    first = got["truth"][video][0]
    reviewed = got["videos"]
    for name, v in reviewed.items():  # a person rejects what was spotted, adds the truth...
        for i in v["intervals"]:
            i["status"] = "rejected"
        v["intervals"] += [{**t, "status": "accepted", "origin": "added"}
                           for t in got["truth"][name]]
    reviewed[video]["intervals"][-len(got["truth"][video])]["onset"] += 1  # ...corrects one
    client.request("PUT", f"/api/jobs/{job['id']}/review", body={"videos": reviewed})
    with pytest.raises(ServiceError) as refused:
        client.request("PUT", f"/api/jobs/{job['id']}/review",
                       body={"videos": {"nope": {"subject": "s", "intervals": []}}})
    assert refused.value.status == 422 and "nope" in str(refused.value)

    strip = client.request("GET", f"/api/jobs/{job['id']}/review/strip.jpg", raw=True,
                           query={"video": video, "onset": first["onset"],
                                  "apex": first["apex"], "offset": first["offset"]})
    assert strip.headers["Content-Type"] == "image/jpeg" and strip.read()[:2] == b"\xff\xd8"

    exported = tmp_path / "reviewed.csv"
    exported.write_text(client.request("GET", f"/api/jobs/{job['id']}/review/annotations.csv"))
    rows = read_annotations(exported).frame
    assert len(rows) == sum(len(t) for t in got["truth"].values())
    mine = rows[rows["video_id"] == video]
    assert first["onset"] + 1 in set(mine["onset"].astype(int))

    tasks = client.request("GET", f"/api/jobs/{job['id']}/review/labelstudio.json")
    assert [t["data"]["video_id"] for t in tasks] == sorted(reviewed)
    imported = client.request("POST", f"/api/jobs/{job['id']}/review/labelstudio", body=tasks)
    assert [(i["onset"], i["status"]) for i in imported["videos"][video]["intervals"]][0] == (
        first["onset"] + 1, "accepted")
    assert "review" in client.request("GET", "/")  # the queue links the review
    assert "mespot.review()" in client.request("GET", f"/jobs/{job['id']}/review")

    run = tmp_path / "run"  # `mespot train -a` on the export
    assert main(["train", str(service_lab["stores"] / "tiny.zarr"), "-a", str(exported),
                 "-o", str(run), "--epochs", "1", "--batch-size", "2"]) == 0
    assert json.loads((run / "config.json").read_text())["annotations"] == str(exported)
