"""Helpers for tests and benchmarks of the service: `mespot serve` as a subprocess on a free
loopback port (`start_server`), and a bounded load on it (`run_load`: `clients` threads for
`seconds`, each polling the job list and one job's status and now and then submitting a job and
cancelling it, as many lab members' pages and scripts would). Used by tests/test_service_*.py
and benchmarks/service_load.py.

Only for a server of your own on loopback; every loop ends by itself at its deadline.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from mespot.service.client import Client, ServiceError

SUBMIT_EVERY = 10  # a client submits one job per this many status calls


@dataclass
class LoadResult:
    clients: int
    seconds: float
    status_latencies: list[float] = field(default_factory=list)  # s, GET /api/jobs[/ID]
    submit_latencies: list[float] = field(default_factory=list)  # s, POST /api/jobs/extract
    errors: list[str] = field(default_factory=list)
    jobs_submitted: int = 0

    def percentile(self, values: list[float], q: float) -> float | None:
        if not values:
            return None
        ordered = sorted(values)
        return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]

    def summary(self) -> dict:
        """Counts and latency percentiles in milliseconds."""
        ms = lambda v: None if v is None else round(v * 1000, 2)  # noqa: E731
        calls = len(self.status_latencies) + len(self.submit_latencies)
        return {
            "clients": self.clients, "seconds": self.seconds, "requests": calls,
            "requests_per_second": round(calls / self.seconds, 1) if self.seconds else None,
            "errors": len(self.errors), "error_examples": self.errors[:5],
            "jobs_submitted": self.jobs_submitted,
            "status_calls": len(self.status_latencies),
            "status_ms": {f"p{q}": ms(self.percentile(self.status_latencies, q))
                          for q in (50, 95, 99)}
                         | {"max": ms(max(self.status_latencies, default=None))},
            "submit_ms": {f"p{q}": ms(self.percentile(self.submit_latencies, q)) for q in (50, 95)},
        }


def run_load(server: str, token: str, job: dict, clients: int = 20,
             seconds: float = 30.0, calls: int | None = None) -> LoadResult:
    """`clients` threads for `seconds` against `server` (or, with `calls`, until each has made
    that many calls, `seconds` then being a bound); each submits `job` (an extract job's JSON)
    every SUBMIT_EVERY status calls and cancels it at once. Any answer but the expected one (or
    an exception) is an error."""
    result = LoadResult(clients, seconds)
    lock = threading.Lock()
    started = time.monotonic()
    deadline = started + seconds
    most = calls if calls is not None else float("inf")

    def client_loop(k: int) -> None:
        client = Client(server, token)
        calls, mine = 0, None
        while calls < most and time.monotonic() < deadline:
            try:
                started = time.perf_counter()
                if calls % SUBMIT_EVERY == SUBMIT_EVERY - 1:
                    mine = client.submit("extract", job)["id"]
                    took = time.perf_counter() - started
                    _cancel(client, mine)
                    with lock:
                        result.submit_latencies.append(took)
                        result.jobs_submitted += 1
                else:
                    if mine is not None and calls % 2:
                        client.job(mine)
                    else:
                        client.jobs()
                    with lock:
                        result.status_latencies.append(time.perf_counter() - started)
            except Exception as err:  # noqa: BLE001 - every failure is counted and kept
                with lock:
                    result.errors.append(f"client {k}: {type(err).__name__}: {err}")
            calls += 1

    threads = [threading.Thread(target=client_loop, args=(k,), daemon=True) for k in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=seconds + 120)
    result.seconds = round(time.monotonic() - started, 3)
    return result


def _cancel(client: Client, job_id: int) -> None:
    """Cancel a job just submitted; it may have finished already (409 is no error then)."""
    try:
        client.cancel(job_id)
    except ServiceError as err:
        if err.status != 409:
            raise


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    url: str
    home: Path
    process: subprocess.Popen
    log: Path

    @property
    def token(self) -> str:
        return (self.home / "token").read_text().strip()

    def client(self) -> Client:
        return Client(self.url, self.token)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=30)


def start_server(home: Path, data_root: Path, store_root: Path, *flags: str,
                 timeout: float = 180.0, env: dict | None = None) -> Server:
    """`mespot serve` on a free port, in `env` (None: this process's environment); returns
    once /healthz answers."""
    port = free_port()
    home.mkdir(parents=True, exist_ok=True)
    log = home.parent / f"{home.name}-serve-{port}.log"
    command = [sys.executable, "-m", "mespot.cli", "serve", "--home", str(home),
               "--data-root", str(data_root), "--store-root", str(store_root),
               "--port", str(port), *flags]
    with open(log, "ab") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, env=dict(env or os.environ))
    server = Server(f"http://127.0.0.1:{port}", home, process, log)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"mespot serve exited with {process.returncode}:\n{server.output()}")
        try:
            with urllib.request.urlopen(server.url + "/healthz", timeout=2) as answer:
                if json.loads(answer.read())["ok"]:
                    return server
        except OSError:
            time.sleep(0.2)
    server.stop()
    raise RuntimeError(f"mespot serve did not answer within {timeout} s:\n{server.output()}")

