"""A short bounded load on `mespot serve` (the suite's version of benchmarks/service_load.py):
clients polling and submitting at once get no error. Latencies are reported by the benchmark,
never asserted."""

import pytest

from mespot.service.testing import run_load, start_server


@pytest.mark.slow
def test_clients_polling_and_submitting_at_once_get_no_error(tmp_path, gates):
    (tmp_path / "data" / "videos").mkdir(parents=True)
    (tmp_path / "stores").mkdir()
    gates.hold("job-*")  # no job ends by itself: every one is still there to be cancelled
    server = start_server(tmp_path / "home", tmp_path / "data", tmp_path / "stores",
                          env=gates.environ())
    try:
        result = run_load(server.url, server.token, {"source": "videos", "store": "load.zarr"},
                          clients=5, calls=20, seconds=300.0)
        summary = result.summary()
        assert summary["errors"] == 0, summary["error_examples"]
        # each client made its 20 calls, every 10th a submission
        assert summary["status_calls"] == 5 * 18 and summary["jobs_submitted"] == 5 * 2
        jobs = server.client().jobs()
        assert len(jobs) == summary["jobs_submitted"]  # every submission made exactly one job
        assert all(j["cancel_requested"] for j in jobs)
        assert server.process.poll() is None  # still serving
    finally:
        server.stop()
