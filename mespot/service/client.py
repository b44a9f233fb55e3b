"""A client of `mespot serve` over HTTP (standard library only): what `mespot jobs` and
`mespot submit` use, and scripts may too.

    client = Client("http://gpu-box:8750", token)
    job = client.submit("extract", {"source": "synth/small", "store": "stores/small.zarr"})
    client.wait(job["id"])
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import quote, urlencode

from flowcore.errors import UserError
from mespot.service.config import DEFAULT_HOME, DEFAULT_PORT, FINAL_STATES

DEFAULT_SERVER = f"http://127.0.0.1:{DEFAULT_PORT}"
TIMEOUT_S = 60.0  # one request
CHUNK = 1 << 20  # bytes per read of a download


class ServiceError(UserError):
    """The server refused or failed a request: `status` and its one-line message."""

    def __init__(self, status: int, message: str):
        super().__init__(f"server answered {status}: {message}")
        self.status = status


def server_url(given: str | None) -> str:
    return (given or os.environ.get("MESPOT_SERVER") or DEFAULT_SERVER).rstrip("/")


def find_token(token: str | None, token_file: Path | None) -> str:
    """--token, else MESPOT_TOKEN, else --token-file, else the local server's token file."""
    if token:
        return token.strip()
    if os.environ.get("MESPOT_TOKEN"):
        return os.environ["MESPOT_TOKEN"].strip()
    named = os.environ.get("MESPOT_TOKEN_FILE") or DEFAULT_HOME / "token"
    path = token_file or Path(named).expanduser()
    if not path.is_file():
        raise UserError(f"no token: give --token, MESPOT_TOKEN or --token-file (no file {path})")
    return path.read_text().strip()


class Client:
    def __init__(self, server: str, token: str):
        self.server, self.token = server.rstrip("/"), token

    def request(self, method: str, path: str, body=None, data=None, query: dict | None = None,
                raw: bool = False, length: int | None = None):
        """JSON (or the raw response with `raw`); ServiceError for a 4xx/5xx answer, UserError
        when the server cannot be reached."""
        url = self.server + path + (f"?{urlencode(query)}" if query else "")
        headers = {"Authorization": f"Bearer {self.token}", "Accept": "application/json"}
        if body is not None:
            data, headers["Content-Type"] = json.dumps(body).encode(), "application/json"
        elif data is not None:  # bytes, or an open file of `length` bytes (streamed)
            headers["Content-Type"] = "application/octet-stream"
            if length is not None:
                headers["Content-Length"] = str(length)
        request = urllib.request.Request(url, data=data, method=method, headers=headers)
        try:
            response = urllib.request.urlopen(request, timeout=TIMEOUT_S)
        except urllib.error.HTTPError as err:
            raise ServiceError(err.code, _message(err)) from None
        except (urllib.error.URLError, OSError) as err:
            reason = getattr(err, "reason", err)
            raise UserError(f"cannot reach the mespot server at {self.server} ({reason})") from None
        if raw:
            return response
        with response:
            text = response.read().decode()
        return json.loads(text) if "json" in response.headers.get("Content-Type", "") else text

    def jobs(self, state: str | None = None) -> list[dict]:
        return self.request("GET", "/api/jobs", query={"state": state} if state else None)["jobs"]

    def job(self, job_id: int) -> dict:
        return self.request("GET", f"/api/jobs/{job_id}")

    def cancel(self, job_id: int) -> dict:
        return self.request("POST", f"/api/jobs/{job_id}/cancel")

    def submit(self, kind: str, params: dict) -> dict:
        return self.request("POST", f"/api/jobs/{kind}", body=params)

    def submit_pipeline(self, params: dict) -> dict:
        return self.request("POST", "/api/pipelines", body=params)

    def pipeline(self, pipeline_id: int) -> dict:
        return self.request("GET", f"/api/pipelines/{pipeline_id}")

    def clone(self, job_id: int, changes: dict | None = None) -> dict:
        """Job `job_id` again as a new job, with `changes` laid over its parameters."""
        return self.request("POST", f"/api/jobs/{job_id}/clone", body=changes or {})

    def clone_pipeline(self, pipeline_id: int, changes: dict | None = None) -> dict:
        return self.request("POST", f"/api/pipelines/{pipeline_id}/clone", body=changes or {})

    def upload(self, path: Path) -> str:
        """Send a local video file; its upload id. A file over the server's limit is refused
        here, before sending (the server would cut the connection mid-upload)."""
        limit = self.request("GET", "/api/info")["max_upload_mb"] * 2**20
        if path.stat().st_size > limit:
            raise UserError(f"{path}: {path.stat().st_size / 2**20:.1f} MiB, larger than the "
                            f"server's upload limit of {limit / 2**20:g} MiB")
        with open(path, "rb") as handle:
            answer = self.request("POST", "/api/uploads", data=handle, length=path.stat().st_size,
                                  query={"filename": path.name})
        return answer["upload"]

    def log(self, job_id: int, tail: int = 400) -> str:
        return self.request("GET", f"/api/jobs/{job_id}/log", query={"tail": tail})

    def download(self, job_id: int, name: str, out: Path) -> Path:
        response = self.request("GET", f"/api/jobs/{job_id}/files/{quote(name)}", raw=True)
        out.parent.mkdir(parents=True, exist_ok=True)
        with response, open(out, "wb") as handle:
            while chunk := response.read(CHUNK):
                handle.write(chunk)
        return out

    def wait(self, job_id: int, timeout: float | None = None, every: float = 1.0,
             on_change=None) -> dict:
        """Poll until the job is done, failed or cancelled; UserError after `timeout` s.
        `on_change(job)` is called whenever its state or progress text changes."""
        deadline = None if timeout is None else time.monotonic() + timeout
        seen = None
        while True:
            job = self.job(job_id)
            shown = (job["state"], round(job["progress"]["fraction"], 2),
                     job["progress"]["message"])
            if on_change is not None and shown != seen:
                on_change(job)
            seen = shown
            if job["state"] in FINAL_STATES:
                return job
            if deadline is not None and time.monotonic() > deadline:
                raise UserError(f"job {job_id} is still {job['state']} after {timeout:g} s")
            time.sleep(every)


def _message(err: urllib.error.HTTPError) -> str:
    try:
        return json.loads(err.read().decode()).get("error") or err.reason
    except (ValueError, AttributeError, OSError):
        return str(err.reason)
