"""A lab's day on the service's page in a real headless browser (Playwright driving Debian's
chromium): a pipeline submitted from the page runs to its metrics; the evaluation is reviewed
(an interval the model missed added, its onset dragged with the keyboard onto the truth, the
spotted ones rejected) and exported; `mespot train -a` trains on the export; the runs page
compares two runs.

Set MESPOT_SCREENSHOT_DIR to keep the review and runs pages' screenshots (docs/images)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from test_service_browser import PAGE_TIMEOUT_MS
from waiting import DEADLINE

from mespot.cli import main
from mespot.service.testing import start_server
from spotting.annotations import read_annotations

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(service_lab, tmp_path_factory):
    running = start_server(tmp_path_factory.mktemp("browser-lab") / "home", service_lab["data"],
                           service_lab["stores"], "--cores-per-slot", "1")
    yield running
    running.stop()


def _keep(shot: Path) -> None:
    if os.environ.get("MESPOT_SCREENSHOT_DIR"):
        shutil.copyfile(shot, Path(os.environ["MESPOT_SCREENSHOT_DIR"]) / shot.name)


def _pipeline_from_the_page(page, server, stores) -> dict:
    shutil.copytree(stores / "tiny.zarr", stores / "blab" / "tiny.zarr")  # extracted: skipped
    form = page.locator("#form-pipeline")
    for name, value in (("source", "tiny"), ("store", "blab/tiny.zarr"),
                        ("annotations", "tiny/ground_truth.csv"), ("run", "blab/run"),
                        ("extract.resize", "64"), ("train.epochs", "1")):
        form.locator(f'input[name="{name}"]').fill(value)
    form.locator("button[type=submit]").click()
    page.wait_for_function("/pipeline #\\d+ queued/.test("
                           "document.getElementById('submit-status').textContent)"
                           " || document.getElementById('submit-status').className === 'error'")
    text = page.locator("#submit-status").inner_text()
    assert "extract" in text and "train" in text and "evaluate" in text, text
    pipeline_id = int(text.split("#")[1].split()[0])
    client = server.client()
    for job in client.pipeline(pipeline_id)["jobs"]:
        assert client.wait(job["id"], DEADLINE, every=0.5)["state"] == "done", job
    page.goto(f"{server.url}/pipelines/{pipeline_id}")
    page.wait_for_function("document.querySelector('#pipeline .state').textContent === 'done'")
    return client.pipeline(pipeline_id)


def _a_drag_keeps_what_is_typed(page, video: str, truth: dict) -> None:
    """A drag redraws its own interval (the last, on `truth`) once it stops: its strip; what is
    half typed in an add form stays. Each redraw is awaited (the strip's address names the
    interval's frames), not timed."""
    section = page.locator(f'section.video[data-video="{video}"]')
    strip = f'section.video[data-video="{video}"] .interval:last-of-type img.strip'

    def drawn(offset: int) -> None:
        frames = f"onset={truth['onset']}&apex={truth['apex']}&offset={offset}"
        page.wait_for_function(f"document.querySelector('{strip}').src.includes('{frames}')")

    drawn(truth["offset"])  # the onset's drag, drawn
    typed = section.locator("form.add input[name=onset]")
    typed.fill("7")
    slider = section.locator(".interval").last.locator('input[data-field="offset"]')
    slider.press("ArrowRight")
    drawn(truth["offset"] + 1)
    assert typed.input_value() == "7"
    slider.press("ArrowLeft")  # back onto the truth
    drawn(truth["offset"])
    typed.fill("")


def test_a_pipeline_a_review_exported_and_trained_on_and_two_runs_compared(
        browser, server, service_lab, tmp_path):
    context = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    context.set_default_timeout(PAGE_TIMEOUT_MS)
    page = context.new_page()
    page.goto(f"{server.url}/?token={server.token}")  # the link `mespot serve` prints
    page.wait_for_selector("#form-pipeline")
    pipeline = _pipeline_from_the_page(page, server, service_lab["stores"])
    evaluate = pipeline["jobs"][2]["id"]
    page.goto(f"{server.url}/jobs/{evaluate}")
    assert page.locator("#result table.metrics").count() >= 1

    review = server.client().request("GET", f"/api/jobs/{evaluate}/review")
    videos = sorted(v for v, t in review["truth"].items() if t)
    page.goto(f"{server.url}/jobs/{evaluate}/review")
    for video in videos:  # what the model spotted: rejected; the truth's first: added
        truth = review["truth"][video][0]
        section = page.locator(f'section.video[data-video="{video}"]')
        section.wait_for()
        for button in section.locator("button.reject").all():
            button.click()
        start = min(truth["onset"] + 2, truth["apex"])  # off by up to two frames
        add = section.locator("form.add")
        add.locator("select[name=type]").select_option(truth["type"])
        for name, value in (("onset", start), ("apex", truth["apex"]),
                            ("offset", truth["offset"])):
            add.locator(f"input[name={name}]").fill(str(value))
        add.locator("button[type=submit]").click()
        added = section.locator(".interval").last
        onset = added.locator('input[data-field="onset"]')
        for _ in range(start - truth["onset"]):  # dragged onto the truth, a frame at a time
            onset.press("ArrowLeft")
        assert added.locator("output").first.inner_text() == str(truth["onset"])
    _a_drag_keeps_what_is_typed(page, videos[-1], truth)
    page.wait_for_function(  # the strips of the corrected intervals are drawn
        "[...document.querySelectorAll('img.strip')].every((i) => i.complete && i.naturalWidth)")
    with page.expect_download() as download:
        page.click("#export-csv")
    exported = tmp_path / "reviewed.csv"
    download.value.save_as(exported)
    rows = read_annotations(exported).frame
    expected = [(v, t["type"], t["onset"], t["apex"], t["offset"])
                for v in videos for t in review["truth"][v][:1]]
    assert sorted((r.video_id, r.type, int(r.onset), int(r.apex), int(r.offset))
                  for r in rows.itertuples()) == expected
    shot = tmp_path / "service_review.png"
    page.screenshot(path=str(shot), full_page=True)
    _keep(shot)
    run = tmp_path / "trained-on-the-review"
    assert main(["train", str(service_lab["stores"] / "tiny.zarr"), "-a", str(exported),
                 "-o", str(run), "--epochs", "1", "--batch-size", "2"]) == 0
    assert (run / "config.json").is_file()

    page.goto(f"{server.url}/runs")
    for name in ("runs/tiny", "blab/run"):
        page.locator(f'input.pick[value="{name}"]').check()
    page.click("#compare")
    page.wait_for_selector("#diff:not([hidden])")
    assert "train.epochs" in page.inner_text("#diff-table")
    page.click("#runs-table th:nth-child(1)")  # sorted by run name
    page.click("#copy")
    assert "blab/run" in page.locator("#tsv").input_value()
    shot = tmp_path / "service_runs.png"
    page.screenshot(path=str(shot), full_page=True)
    _keep(shot)
    page.goto(f"{server.url}/runs/view?run=blab/run")
    page.wait_for_selector("#curves svg circle")  # an epoch's loss: a point on its curve
    assert page.locator("#curves polyline").count() >= 2  # a curve per fold
    context.close()
