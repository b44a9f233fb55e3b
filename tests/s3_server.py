"""A real S3-compatible server for the tests: moto's server mode (`python -m moto.server`) in a
process of its own, reached through a TCP relay that a test can cut and restore, so that the
server disappears for every client (connections refused, open ones dropped) while what it holds
stays.

`S3Server.environ()` is what a client process needs: the relay's address as AWS_ENDPOINT_URL and
throw-away credentials, the standard variables botocore, s3fs and so mespot read (nothing of it
is passed as an argument).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time

BUCKET = "lab"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for_port(port: int, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), 0.5).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{what} did not listen on port {port} within {timeout:g} s")
            time.sleep(0.1)


class Relay:
    """Forwards TCP connections from its own port to `target`; `cut()` closes the port and every
    open connection, `restore()` opens the same port again."""

    def __init__(self, target: int):
        self.target, self.port = target, free_port()
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self.restore()

    def restore(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def cut(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()
        with self._lock:
            for sock in list(self._open):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                sock.close()
            self._open.clear()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:  # cut
                return
            try:
                server = socket.create_connection(("127.0.0.1", self.target))
            except OSError:
                client.close()
                continue
            with self._lock:
                self._open.update((client, server))
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            with self._lock:
                self._open.discard(source)
                self._open.discard(sink)


class S3Server:
    """moto's S3 server in its own process, with the bucket BUCKET, behind a Relay."""

    def __init__(self):
        self.port = free_port()
        self.process = subprocess.Popen([sys.executable, "-m", "moto.server", "-p",
                                         str(self.port)],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _wait_for_port(self.port, "moto's S3 server")
        self.relay = Relay(self.port)
        self.filesystem(direct=True).mkdir(BUCKET)

    def environ(self, direct: bool = False) -> dict:
        """The variables a client needs (through the relay, or `direct` to the server)."""
        port = self.port if direct else self.relay.port
        return {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                "AWS_DEFAULT_REGION": "us-east-1",
                "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}"}

    def filesystem(self, direct: bool = True):
        """An s3fs filesystem of the server (for the test's own checks: `direct`, not through
        the relay, unless asked)."""
        import s3fs

        env = self.environ(direct)
        return s3fs.S3FileSystem(key=env["AWS_ACCESS_KEY_ID"],
                                 secret=env["AWS_SECRET_ACCESS_KEY"],
                                 endpoint_url=env["AWS_ENDPOINT_URL"], skip_instance_cache=True)

    def upload(self, local, key: str) -> str:
        """Copy a local folder to s3://BUCKET/key; return its URL."""
        self.filesystem().put(f"{os.fspath(local).rstrip('/')}/", f"{BUCKET}/{key}/",
                              recursive=True)
        return f"s3://{BUCKET}/{key}"

    def stop(self) -> None:
        self.relay.cut()
        self.process.terminate()
        self.process.wait(timeout=30)
