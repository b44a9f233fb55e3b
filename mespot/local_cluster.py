"""A Ray cluster of separate processes on this machine: a head node and worker nodes, each
started by `ray start --block` in a process group of its own, with its own temporary folder
(`--temp-dir`: its session, sockets and logs) and its own mespot cache. The tests and
benchmarks run the cluster commands of docs/cluster.md through it without a second machine;
`kill_node` kills one node (its `ray start`, raylet and agents with SIGKILL, as a machine that
is lost).

Nodes authenticate with a token (Ray's token mode, RAY_AUTH_TOKEN, as on a real cluster), and
the head checks its nodes' health every second (RAY_health_check_*): a lost node (its raylet
refuses the check) is noticed after 5 failed checks, about 5 s, while a living node on a machine
whose cores are all busy has 2 s to answer each (5 missed answers in a row before it is given
up). Ports are chosen free; every node listens on 127.0.0.1.
"""

from __future__ import annotations

import atexit
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

START_SECONDS = 120.0  # the longest a node may take to join


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ray_command() -> str:
    found = Path(sys.executable).with_name("ray")
    return str(found) if found.exists() else (shutil.which("ray") or "ray")


@dataclass
class Node:
    name: str
    process: subprocess.Popen
    folder: Path  # its mespot cache and the log of its `ray start`
    ray_folder: Path  # its --temp-dir (Ray's session, sockets and logs)


class LocalCluster:
    """`LocalCluster(folder, workers=[1, 1]).start()`: a head with `head_cpus` CPUs and one
    worker node per entry of `workers` (its CPUs); `environ()` is what a driver needs
    (RAY_ADDRESS and the token); `env` is added to every node's environment (what the tasks
    see: object-storage credentials, test gates)."""

    def __init__(self, folder: Path, workers=(1, 1), head_cpus: int = 0, env: dict | None = None):
        self.folder = Path(folder)
        self.workers, self.head_cpus = list(workers), head_cpus
        self.port = _free_port()
        self.token = secrets.token_hex(16)
        self.env = dict(env or {})
        self.nodes: list[Node] = []
        # Ray's sockets live in each node's temporary folder, and a socket's path must stay
        # under 108 bytes: the folders are short ones of /tmp, removed by stop()
        self.ray_root = Path(tempfile.mkdtemp(prefix="mespot-ray-", dir="/tmp"))

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def environ(self, **more: str) -> dict:
        """This process's environment plus the cluster's address and token (and `more`)."""
        return {**os.environ, **self.env, "RAY_ADDRESS": self.address, "RAY_AUTH_MODE": "token",
                "RAY_AUTH_TOKEN": self.token, **more}

    def start(self) -> "LocalCluster":
        """Start the head, then the workers; return once every node is alive. The nodes are
        stopped when this process exits (also by Ctrl-C, not by SIGKILL) or the start fails."""
        atexit.register(self.stop)
        try:
            self._node("head", ["--head", "--port", str(self.port), "--num-cpus",
                                str(self.head_cpus), "--include-dashboard", "false"])
            self._wait_for_nodes(1)
            for k, cpus in enumerate(self.workers):
                self._node(f"worker{k + 1}", ["--address", self.address, "--num-cpus",
                                              str(cpus)])
            self._wait_for_nodes(1 + len(self.workers))
        except BaseException:
            self.stop()
            raise
        return self

    def _node(self, name: str, flags: list[str]) -> None:
        folder = self.folder / name
        folder.mkdir(parents=True, exist_ok=True)
        env = self.environ(MESPOT_CACHE=str(folder / "cache"), RAY_USAGE_STATS_ENABLED="0",
                           RAY_health_check_period_ms="1000",
                           RAY_health_check_failure_threshold="5",
                           RAY_health_check_timeout_ms="2000")
        env.pop("RAY_ADDRESS")
        command = [_ray_command(), "start", "--block", "--disable-usage-stats",
                   "--node-ip-address", "127.0.0.1", "--temp-dir", str(self.ray_root / name),
                   "--dashboard-agent-listen-port", str(_free_port()), *flags]
        log = open(folder / "ray-start.log", "w")
        process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)
        self.nodes.append(Node(name, process, folder, self.ray_root / name))

    def alive_nodes(self) -> int:
        """How many nodes the head counts alive (`ray list nodes` through the state API)."""
        code = ("import ray; ray.init(logging_level='ERROR'); "
                "print(sum(1 for n in ray.nodes() if n['Alive']))")
        try:
            done = subprocess.run([sys.executable, "-c", code], env=self.environ(),
                                  capture_output=True, text=True, timeout=START_SECONDS / 2)
        except subprocess.TimeoutExpired:
            return 0
        return int(done.stdout.strip().splitlines()[-1]) if done.returncode == 0 else 0

    def _head_listens(self) -> bool:
        try:
            socket.create_connection(("127.0.0.1", self.port), 1.0).close()
            return True
        except OSError:
            return False

    def _wait_for_nodes(self, count: int) -> None:
        deadline = time.monotonic() + START_SECONDS
        while not self._head_listens() or self.alive_nodes() < count:
            ended = [n.name for n in self.nodes if n.process.poll() is not None]
            if ended or time.monotonic() > deadline:
                logs = {n.name: (n.folder / "ray-start.log").read_text()[-1500:]
                        for n in self.nodes}
                self.stop()
                raise RuntimeError(f"the Ray cluster did not reach {count} node(s) "
                                   f"(ended: {ended}); logs: {logs}")
            time.sleep(1.0)

    def node_of(self, pid: int) -> Node | None:
        """The node a Ray worker process belongs to (its environment holds the node's own
        MESPOT_CACHE; its command line is Ray's process title)."""
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            return None
        return next((n for n in self.nodes
                     if f"MESPOT_CACHE={n.folder / 'cache'}".encode() in environ), None)

    def kill_node(self, node: Node) -> None:
        """SIGKILL the node's process group (`ray start`, raylet, agents): a lost machine."""
        try:
            os.killpg(node.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        node.process.wait(timeout=60)

    def stop(self) -> None:
        """Stop every node (SIGTERM, then SIGKILL what is left after a few seconds)."""
        for node in reversed(self.nodes):
            if node.process.poll() is None:
                os.killpg(node.process.pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        for node in reversed(self.nodes):
            try:
                node.process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
            try:
                os.killpg(node.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.nodes.clear()
        shutil.rmtree(self.ray_root, ignore_errors=True)
        atexit.unregister(self.stop)
