"""`mespot serve --engine ray`: a job's work goes to Ray as with `mespot extract --engine ray`
(here a Ray instance the job's runner starts on this machine)."""

import pytest
import zarr

from mespot.service.testing import start_server


@pytest.mark.slow
def test_an_extract_job_runs_its_videos_as_ray_tasks(service_lab, tmp_path):
    pytest.importorskip("ray", reason='Ray is not installed: pip install "mespot[ray]"')
    server = start_server(tmp_path / "home", service_lab["data"], service_lab["stores"],
                          "--engine", "ray")
    try:
        client = server.client()
        assert client.request("GET", "/api/info")["slots"][0]["name"] == "ray0"
        job = client.submit("extract", {"source": "tiny", "store": "ray/tiny.zarr", "resize": 64})
        job = client.wait(job["id"], timeout=600)
        log = client.log(job["id"])
        if job["state"] == "failed" and "Ray" in job["error"] and "start" in job["error"]:
            pytest.skip(f"Ray cannot start here: {job['error']}")
        assert job["state"] == "done", (job, log)
        assert job["result"]["complete"] == 2
        assert "node(s) with" in log  # the engine's note about the cluster it ran on
        group = zarr.open_group(str(service_lab["stores"] / "ray" / "tiny.zarr"), mode="r")
        assert {group[f"videos/{v}"].attrs["status"] for v in group["videos"]} == {"complete"}
    finally:
        server.stop()
