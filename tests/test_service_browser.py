"""The service's web page in a real headless browser (Playwright driving Debian's chromium):
sign in, submit an extraction of a tiny synthetic set and watch its progress bar reach 100 %,
train one run on two stores pooled, evaluate a run and open its report, spot an uploaded video
and download its intervals.

Set MESPOT_SCREENSHOT_DIR to keep the page's screenshot (docs/images/service.png)."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest

from mespot.service.testing import start_server

JOB_TIMEOUT_S = 600
PAGE_TIMEOUT_MS = 120_000  # the longest a page waits for an element or a condition

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(service_lab, tmp_path_factory):
    running = start_server(tmp_path_factory.mktemp("browser") / "home", service_lab["data"],
                           service_lab["stores"])
    yield running
    running.stop()


def _row(page, job_id: int):
    return page.locator(f'#jobs tr[data-job="{job_id}"]')


def _submitted(page) -> int:
    page.wait_for_function("/job #\\d+ queued/.test("
                           "document.getElementById('submit-status').textContent)"
                           " || document.getElementById('submit-status').className === 'error'")
    text = page.locator("#submit-status").inner_text()
    assert "queued" in text, text
    return int(text.split("#")[1].split()[0])


def _watch(page, job_id: int) -> list[float]:
    """The row's progress values as the page shows them, until the job ends."""
    seen, deadline = [], time.monotonic() + JOB_TIMEOUT_S
    while time.monotonic() < deadline:
        row = _row(page, job_id)
        if row.count():
            # the state first: a row that says it ended shows its final progress after it (two
            # reads the other way round could see the progress of one refresh and the state
            # of the next)
            state = row.get_attribute("data-state")
            seen.append(float(row.locator("progress").get_attribute("value")))
            if state in ("done", "failed", "cancelled"):
                assert state == "done", row.inner_text()
                return seen
        time.sleep(0.3)
    raise AssertionError(f"job {job_id} did not end within {JOB_TIMEOUT_S} s")


def test_the_page_runs_jobs_end_to_end(browser, server, service_lab, tmp_path):
    context = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    context.set_default_timeout(PAGE_TIMEOUT_MS)  # playwright's 30 s is short on a busy machine
    page = context.new_page()
    page.goto(server.url + "/")
    assert page.url.endswith("/login?next=/")  # no token yet
    page.fill("input[name=token]", "not-the-token-at-all")
    page.click("button[type=submit]")
    assert "not this server's" in page.inner_text("main")
    page.fill("input[name=token]", server.token)
    page.click("button[type=submit]")
    page.wait_for_selector("#jobs")

    page.click("nav.tabs button[data-tab=extract]")  # the pipeline's tab is the first
    form = page.locator("#form-extract")
    form.locator("input[name=source]").fill("tiny")
    form.locator("input[name=store]").fill("browser/tiny.zarr")
    form.locator("input[name=resize]").fill("64")
    form.locator("button[type=submit]").click()
    extract = _submitted(page)
    seen = _watch(page, extract)
    assert seen[-1] == 1.0 and seen == sorted(seen), seen  # reaches 100 %, never goes back
    assert "100 %" in _row(page, extract).locator(".progress-text").inner_text()
    assert "120/120 frames" in _row(page, extract).inner_text()

    page.click("nav.tabs button[data-tab=train]")  # two stores pooled (issue 31): lists
    form = page.locator("#form-train")
    form.locator("input[name=store]").fill("a=tiny.zarr, b=browser/tiny.zarr")
    copy = service_lab["data"] / "browser" / "ground_truth.csv"  # b's own file (the same truth)
    copy.parent.mkdir(exist_ok=True)
    shutil.copyfile(service_lab["tiny"] / "ground_truth.csv", copy)
    form.locator("input[name=annotations]").fill("tiny/ground_truth.csv, browser/ground_truth.csv")
    form.locator("input[name=run]").fill("runs/pooled")
    form.locator("input[name=epochs]").fill("1")
    form.locator("button[type=submit]").click()
    train = _submitted(page)
    _watch(page, train)
    params = server.client().request("GET", f"/api/jobs/{train}")["params"]
    assert params["store"] == ["a=tiny.zarr", "b=browser/tiny.zarr"], params
    config = json.loads((service_lab["stores"] / "runs/pooled/config.json").read_text())
    assert [d["name"] for d in config["datasets"]] == ["a", "b"], config["datasets"]

    page.click("nav.tabs button[data-tab=evaluate]")
    page.locator("#form-evaluate input[name=run]").fill("runs/tiny")
    page.locator("#form-evaluate input[value=oracle]").check()
    page.locator("#form-evaluate button[type=submit]").click()
    evaluate = _submitted(page)
    _watch(page, evaluate)
    with context.expect_page() as opened:
        _row(page, evaluate).locator("a", has_text="report").click()
    report = opened.value
    report.wait_for_load_state()
    assert "runs/tiny" in report.inner_text("body") or "report" in report.title().lower()
    assert report.locator("img").count() >= 3  # curves, metrics, losses: inline pictures
    report.close()

    video = _clip(service_lab["tiny"], tmp_path / "clip.mp4")
    page.click("nav.tabs button[data-tab=predict]")
    page.locator("#form-predict input[name=model]").fill("runs/tiny")
    page.locator("#form-predict input[name=file]").set_input_files(str(video))
    page.locator("#form-predict button[type=submit]").click()
    predict = _submitted(page)
    _watch(page, predict)
    with page.expect_download() as download:
        _row(page, predict).locator("a", has_text="intervals").click()
    saved = tmp_path / "intervals.csv"
    download.value.save_as(saved)
    assert saved.read_text().startswith("video,type,onset,offset,apex,score")

    page.goto(f"{server.url}/jobs/{evaluate}")
    assert "oracle" in page.inner_text("#result")
    assert page.locator("#result table.metrics").count() == 2
    page.goto(server.url + "/")
    page.wait_for_selector(f'#jobs tr[data-job="{predict}"]')
    shot = tmp_path / "service.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    if os.environ.get("MESPOT_SCREENSHOT_DIR"):
        shutil.copyfile(shot, Path(os.environ["MESPOT_SCREENSHOT_DIR"]) / "service.png")
    context.close()


def _clip(dataset: Path, path: Path) -> Path:
    import cv2

    folder = next((dataset / "rawpic").glob("s15/*"))
    files = sorted(folder.glob("*.jpg"), key=lambda p: int(p.stem[3:]))
    first = cv2.imread(str(files[0]))
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 30.0, first.shape[1::-1])
    for f in files:
        writer.write(cv2.imread(str(f)))
    writer.release()
    return path
