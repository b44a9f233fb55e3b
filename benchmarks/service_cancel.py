"""How long a cancel of a running extraction takes through `mespot serve`: from the request to
the job's "cancelled", with a video in progress (the second of four), for 1 core (the work in the
runner itself) and 2 cores (worker processes).

Writes benchmarks/results/service_cancel.json with the machine and versions.

    python benchmarks/service_cancel.py --repeats 3
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from mespot.environment import describe
from mespot.service.testing import start_server
from mespot.synth import SMALL, generate_dataset

RESULTS = Path(__file__).parent / "results"
DEADLINE_S = 300.0


def one_cancel(client, store: str) -> dict:
    """Submit, wait until a video is complete and the next one has begun, cancel; seconds."""
    job = client.submit("extract", {"source": "four", "store": store, "resize": 64})["id"]
    deadline = time.monotonic() + DEADLINE_S
    while "complete," not in client.log(job):
        if time.monotonic() > deadline:
            raise RuntimeError(f"job {job}: no video complete within {DEADLINE_S} s")
        time.sleep(0.05)
    started = time.monotonic()
    client.cancel(job)
    while (answer := client.job(job))["state"] not in ("cancelled", "failed", "done"):
        if time.monotonic() > deadline:
            raise RuntimeError(f"job {job} did not end within {DEADLINE_S} s")
        time.sleep(0.02)
    return {"seconds": round(time.monotonic() - started, 3), "state": answer["state"],
            "message": answer["progress"]["message"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=RESULTS / "service_cancel.json")
    args = parser.parse_args()
    runs = {}
    with tempfile.TemporaryDirectory() as scratch:
        lab = Path(scratch)
        generate_dataset(SMALL.replace(subjects=2, videos_per_subject=2, seconds=1.0),
                         lab / "data" / "four", preview=False, workers=1)
        (lab / "stores").mkdir()
        for cores in (1, 2):
            server = start_server(lab / f"home{cores}", lab / "data", lab / "stores",
                                  "--cores-per-slot", str(cores))
            try:
                runs[cores] = [one_cancel(server.client(), f"c{cores}-{k}.zarr")
                               for k in range(args.repeats)]
            finally:
                server.stop()
    summary = {f"{cores}_cores": {"median_s": statistics.median(r["seconds"] for r in done),
                                  "max_s": max(r["seconds"] for r in done), "runs": done}
               for cores, done in runs.items()}
    record = {"benchmark": "service_cancel", "what": "seconds from POST /api/jobs/ID/cancel to "
              "the job's state 'cancelled' (polled every 20 ms), the second of four videos of "
              "30 frames in progress", "result": summary, "machine": describe()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=1))
    print(json.dumps(summary, indent=1))
    print(f"written: {args.out}")


if __name__ == "__main__":
    main()
