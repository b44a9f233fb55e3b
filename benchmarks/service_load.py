"""A bounded load on `mespot serve` on loopback: N clients polling the queue and their jobs'
status and submitting (then cancelling) extraction jobs for a fixed time. Reports errors and
the latency percentiles of the status calls.

Writes benchmarks/results/service_load.json with the machine, versions and parameters.

    python benchmarks/service_load.py                   # 20 clients for 30 s
    python benchmarks/service_load.py --clients 50 --seconds 60
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

from mespot.environment import describe
from mespot.service.testing import run_load, start_server
from mespot.synth import SMALL, generate_dataset

RESULTS = Path(__file__).parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--out", type=Path, default=RESULTS / "service_load.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        lab = Path(scratch)
        generate_dataset(SMALL.replace(subjects=1, videos_per_subject=1, seconds=1.0),
                         lab / "data" / "tiny", preview=False)
        (lab / "stores").mkdir()
        server = start_server(lab / "home", lab / "data", lab / "stores")
        load_before = os.getloadavg()
        try:
            result = run_load(server.url, server.token, {"source": "tiny", "store": "load.zarr"},
                              clients=args.clients, seconds=args.seconds)
        finally:
            server.stop()
    summary = result.summary()
    record = {"benchmark": "service_load", "what": "status calls are GET /api/jobs and "
              "GET /api/jobs/ID; each client submits an extract job every 10th call and "
              "cancels it at once; one uvicorn process, SQLite in WAL mode, one CPU slot",
              "parameters": {"clients": args.clients, "seconds": args.seconds},
              "load_average_1min": {"before": round(load_before[0], 2),
                                    "after": round(os.getloadavg()[0], 2),
                                    "cores": os.cpu_count()},
              "result": summary, "machine": describe()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=1))
    print(json.dumps(summary, indent=1))
    print(f"written: {args.out}")


if __name__ == "__main__":
    main()
