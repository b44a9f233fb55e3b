"""Helpers of the service tests: a `mespot serve` subprocess on a free loopback port."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from mespot.service.client import Client


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
                self.process.wait()


def start_server(home: Path, data_root: Path, store_root: Path, *flags: str,
                 timeout: float = 90.0) -> Server:
    """`mespot serve` on a free port; returns once /healthz answers."""
    port = free_port()
    home.mkdir(parents=True, exist_ok=True)
    log = home.parent / f"{home.name}-serve-{port}.log"
    command = [sys.executable, "-m", "mespot.cli", "serve", "--home", str(home),
               "--data-root", str(data_root), "--store-root", str(store_root),
               "--port", str(port), *flags]
    with open(log, "ab") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, env=dict(os.environ))
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


def wait_for(predicate, timeout: float, every: float = 0.2, what: str = "condition"):
    """Poll `predicate()` until it returns something true; its value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")
