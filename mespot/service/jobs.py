"""The job queue in one SQLite file: jobs, their state, progress, result files and leases.

States: queued -> running -> done | failed | cancelled (queued -> cancelled too). A running job
is held by one runner process through a lease (`owner`, `lease_until`) that the runner renews;
every write of a runner names its owner, so a runner that lost its lease changes nothing. The
server, the only one to claim jobs (it holds the folder's server.lock), gives a job whose
lease ran out back to the queue, where it resumes through the store's or the run's own resume.
Connections are per thread (WAL mode: readers do not wait for the writer).
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from mespot.service.config import FINAL_STATES, STATES

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    state TEXT NOT NULL,
    params TEXT NOT NULL,           -- JSON: what was asked (paths relative to their roots)
    locks TEXT NOT NULL,            -- JSON: absolute paths it reads or writes (no two jobs at once)
    submitted REAL NOT NULL,
    started REAL, finished REAL,
    done REAL NOT NULL DEFAULT 0, total REAL NOT NULL DEFAULT 0, unit TEXT NOT NULL DEFAULT '',
    rate REAL, eta REAL, message TEXT NOT NULL DEFAULT '',
    error TEXT NOT NULL DEFAULT '',
    files TEXT NOT NULL DEFAULT '{}',   -- JSON: name -> absolute path, the job's downloads
    result TEXT NOT NULL DEFAULT '{}',  -- JSON: the job's summary
    attempts INTEGER NOT NULL DEFAULT 0,
    cancel INTEGER NOT NULL DEFAULT 0,
    owner TEXT, lease_until REAL, pid INTEGER, slot TEXT, device TEXT,
    frames INTEGER NOT NULL DEFAULT 0,       -- frames extracted (complete videos)
    busy_seconds REAL NOT NULL DEFAULT 0     -- time a slot spent on it
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs(state, id);
CREATE TABLE IF NOT EXISTS pipelines (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    params TEXT NOT NULL,           -- JSON: what was asked (the pipeline's body)
    submitted REAL NOT NULL,
    submitter TEXT NOT NULL DEFAULT '',
    cloned_from INTEGER
);
"""
# columns added after the first release: (name, declaration); added to an older file at open
ADDED_COLUMNS = (
    ("after_job", "INTEGER"),  # the job this one waits for (it runs once that one is done)
    ("pipeline", "INTEGER"),  # the pipeline it is a step of
    ("step", "TEXT NOT NULL DEFAULT ''"),  # its step's name in the pipeline
    ("makes", "TEXT"),  # the absolute path it creates (a store, a run folder)
    ("submitter", "TEXT NOT NULL DEFAULT ''"),  # who submitted it (the token's user)
    ("archived", "INTEGER NOT NULL DEFAULT 0"),  # hidden from the queue unless asked for
    ("also_after", "TEXT NOT NULL DEFAULT '[]'"),  # JSON: more jobs it waits for, as after_job
)


class JobConflict(Exception):
    """The job cannot do that in its state (e.g. cancel a finished job): HTTP 409."""


@dataclass
class Job:
    id: int
    kind: str
    state: str
    params: dict
    locks: list
    submitted: float
    started: float | None = None
    finished: float | None = None
    done: float = 0.0
    total: float = 0.0
    unit: str = ""
    rate: float | None = None
    eta: float | None = None
    message: str = ""
    error: str = ""
    files: dict = field(default_factory=dict)
    result: dict = field(default_factory=dict)
    attempts: int = 0
    cancel: int = 0
    owner: str | None = None
    lease_until: float | None = None
    pid: int | None = None
    slot: str | None = None
    device: str | None = None
    frames: int = 0
    busy_seconds: float = 0.0
    after_job: int | None = None
    pipeline: int | None = None
    step: str = ""
    makes: str | None = None
    submitter: str = ""
    archived: int = 0
    also_after: list = field(default_factory=list)

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> "Job":
        values = dict(row)
        for key in ("params", "locks", "files", "result", "also_after"):
            values[key] = json.loads(values[key])
        return cls(**values)

    @property
    def shown_state(self) -> str:
        """The state clients see: a running job asked to stop is "cancelling"."""
        return "cancelling" if self.state == "running" and self.cancel else self.state

    def to_json(self) -> dict:
        """What clients see (no lease internals, no absolute paths of files)."""
        fraction = 1.0 if self.state == "done" else (self.done / self.total if self.total else 0.0)
        return {
            "id": self.id, "kind": self.kind, "state": self.shown_state, "params": self.params,
            "submitted": self.submitted, "started": self.started, "finished": self.finished,
            "progress": {"done": self.done, "total": self.total, "unit": self.unit,
                         "fraction": round(min(fraction, 1.0), 4), "rate": self.rate,
                         "eta_seconds": self.eta, "message": self.message},
            "error": self.error, "files": sorted(self.files), "result": self.result,
            "attempts": self.attempts, "cancel_requested": bool(self.cancel), "slot": self.slot,
            "device": self.device, "after": self.after_job, "pipeline": self.pipeline,
            "step": self.step, "submitter": self.submitter, "archived": bool(self.archived),
            "waited_seconds": _span(self.submitted, self.started or self.finished),
            "ran_seconds": _span(self.started, self.finished) if self.started else None,
        }


def _span(start: float | None, end: float | None) -> float | None:
    """Seconds from `start` to `end` (to now while `end` is None)."""
    if start is None:
        return None
    return round((end if end is not None else time.time()) - start, 1)


def _after_done(db: sqlite3.Connection, job_id: int, after: int) -> bool:
    """Whether the job `job_id` waits for is done; when it ended otherwise, `job_id` is
    cancelled (in the caller's transaction), saying which step stopped it."""
    row = db.execute("SELECT state, kind, step, message FROM jobs WHERE id = ?",
                     (after,)).fetchone()
    if row is None or row[0] in ("failed", "cancelled"):
        what = f"job #{after} ({row[2] or row[1]}) {row[0]}" if row else f"job #{after} is gone"
        db.execute("UPDATE jobs SET state = 'cancelled', finished = ?, message = ? WHERE id = ?",
                   (time.time(), f"not run: {what}", job_id))
        return False
    return row[0] == "done"


def overlaps(a: str, b: str) -> bool:
    """Whether paths a and b are the same or one holds the other."""
    pa, pb = Path(a), Path(b)
    return pa == pb or pa in pb.parents or pb in pa.parents


class JobStore:
    """The jobs table of one SQLite file; safe to use from several threads and processes."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._local = threading.local()
        with self._connect() as db:
            db.executescript(SCHEMA)
            have = {row[1] for row in db.execute("PRAGMA table_info(jobs)")}
            for name, declaration in ADDED_COLUMNS:
                if name not in have:
                    db.execute(f"ALTER TABLE jobs ADD COLUMN {name} {declaration}")

    def _connect(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, timeout=30.0, isolation_level=None,
                                 check_same_thread=False)
            db.row_factory = sqlite3.Row
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            self._local.db = db
        return db

    def _one(self, sql: str, args=()) -> Job | None:
        row = self._connect().execute(sql, args).fetchone()
        return Job.from_row(row) if row is not None else None

    def _write(self, sql: str, args=()) -> int:
        """Run one statement; the number of rows it changed."""
        return self._connect().execute(sql, args).rowcount

    # ---- clients -------------------------------------------------------------------------------

    def submit(self, kind: str, params: dict, locks: list[str], after: int | None = None,
               makes: str | None = None, submitter: str = "", pipeline: int | None = None,
               step: str = "", also_after: tuple[int, ...] = ()) -> Job:
        """A new queued job; with `after` (and `also_after`), it runs only once that job (and
        those) are done."""
        cursor = self._connect().execute(
            "INSERT INTO jobs (kind, state, params, locks, submitted, after_job, makes, submitter, "
            "pipeline, step, also_after) VALUES (?, 'queued', ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (kind, json.dumps(params), json.dumps(locks), time.time(), after, makes, submitter,
             pipeline, step, json.dumps(list(also_after))))
        return self.get(cursor.lastrowid)

    def last_maker(self, path: Path) -> int | None:
        """The newest job, in any state, that made or makes `path`."""
        row = self._connect().execute("SELECT id FROM jobs WHERE makes = ? ORDER BY id DESC "
                                      "LIMIT 1", (str(path),)).fetchone()
        return row[0] if row else None

    def maker_of(self, path: Path) -> int | None:
        """The newest queued or running job (not asked to stop) that creates `path`."""
        row = self._connect().execute(
            "SELECT id FROM jobs WHERE makes = ? AND state IN ('queued', 'running') AND cancel = 0 "
            "ORDER BY id DESC LIMIT 1", (str(path),)).fetchone()
        return row[0] if row else None

    def get(self, job_id: int) -> Job | None:
        return self._one("SELECT * FROM jobs WHERE id = ?", (job_id,))

    def list(self, state: str | None = None, limit: int = 200,
             archived: bool = False) -> list[Job]:
        """Newest first; only `state` when given; archived jobs only with `archived`."""
        where, args = ("state = ?", (state,)) if state else ("1", ())
        if state == "cancelling":
            where, args = "state = 'running' AND cancel = 1", ()
        shelf = "" if archived else " AND archived = 0"
        rows = self._connect().execute(f"SELECT * FROM jobs WHERE {where}{shelf} "
                                       "ORDER BY id DESC LIMIT ?", (*args, limit)).fetchall()
        return [Job.from_row(r) for r in rows]

    def archive(self, job_id: int, archived: bool = True) -> None:
        self._write("UPDATE jobs SET archived = ? WHERE id = ?", (int(archived), job_id))

    def delete(self, job_id: int) -> bool:
        """Remove a job that has ended (its row; the caller removes its files)."""
        return self._write("DELETE FROM jobs WHERE id = ? AND state IN ('done', 'failed', "
                           "'cancelled')", (job_id,)) == 1

    def users_of(self, path: str) -> list[int]:
        """Queued or running jobs that read or write `path` (or a path in it or holding it)."""
        rows = self._connect().execute("SELECT id, locks FROM jobs WHERE state IN "
                                       "('queued', 'running')").fetchall()
        return [i for i, locks in rows if any(overlaps(path, lock) for lock in json.loads(locks))]

    def counts(self) -> dict[str, int]:
        rows = self._connect().execute("SELECT state, COUNT(*) FROM jobs GROUP BY state").fetchall()
        found = {state: n for state, n in rows}
        return {state: found.get(state, 0) for state in STATES}

    def request_cancel(self, job_id: int) -> Job:
        """A queued job is cancelled at once; a running one is asked to stop (its runner stops
        between videos or epochs). JobConflict for a finished job, KeyError for no job."""
        now = time.time()
        if self._write("UPDATE jobs SET state = 'cancelled', finished = ?, cancel = 1, "
                       "message = 'cancelled before it started' WHERE id = ? AND state = 'queued'",
                       (now, job_id)) == 0:
            self._write("UPDATE jobs SET cancel = 1 WHERE id = ? AND state = 'running'", (job_id,))
        job = self.get(job_id)
        if job is None:
            raise KeyError(job_id)
        if job.state in FINAL_STATES and not (job.state == "cancelled" and job.cancel):
            raise JobConflict(f"job {job_id} is already {job.state}")
        return job

    # ---- pipelines -----------------------------------------------------------------------------

    def add_pipeline(self, params: dict, submitter: str = "",
                     cloned_from: int | None = None) -> int:
        cursor = self._connect().execute(
            "INSERT INTO pipelines (params, submitted, submitter, cloned_from) VALUES (?, ?, ?, ?)",
            (json.dumps(params), time.time(), submitter, cloned_from))
        return cursor.lastrowid

    def pipeline(self, pipeline_id: int) -> dict | None:
        """The pipeline's row (params decoded) with its jobs in step order; None if none."""
        row = self._connect().execute("SELECT * FROM pipelines WHERE id = ?",
                                      (pipeline_id,)).fetchone()
        if row is None:
            return None
        jobs = self._connect().execute("SELECT * FROM jobs WHERE pipeline = ? ORDER BY id",
                                       (pipeline_id,)).fetchall()
        return {**dict(row), "params": json.loads(row["params"]),
                "jobs": [Job.from_row(j) for j in jobs]}

    def pipeline_ids(self, limit: int = 100) -> list[int]:
        rows = self._connect().execute("SELECT id FROM pipelines ORDER BY id DESC LIMIT ?",
                                       (limit,)).fetchall()
        return [r[0] for r in rows]

    # ---- the scheduler -------------------------------------------------------------------------

    def claim(self, slot: str, device: str, owner: str, lease_s: float) -> Job | None:
        """The oldest queued job that shares no path with a running one, now running under
        `owner`'s lease; None when there is none."""
        db = self._connect()
        db.execute("BEGIN IMMEDIATE")
        try:
            busy = [p for (locks,) in db.execute("SELECT locks FROM jobs WHERE state = 'running'")
                    for p in json.loads(locks)]
            chosen = None
            queued = db.execute("SELECT id, locks, after_job, also_after FROM jobs WHERE state = "
                                "'queued' ORDER BY id").fetchall()
            for job_id, locks, after, also in queued:
                waits = ([after] if after is not None else []) + json.loads(also)
                if not all(_after_done(db, job_id, a) for a in waits):
                    continue
                if not any(overlaps(a, b) for a in json.loads(locks) for b in busy):
                    chosen = job_id
                    break
            if chosen is not None:
                now = time.time()
                db.execute("UPDATE jobs SET state = 'running', owner = ?, lease_until = ?, "
                           "slot = ?, device = ?, pid = NULL, attempts = attempts + 1, "
                           "started = COALESCE(started, ?), message = 'starting' WHERE id = ?",
                           (owner, now + lease_s, slot, device, now, chosen))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return self.get(chosen) if chosen is not None else None

    def set_pid(self, job_id: int, owner: str, pid: int) -> None:
        self._write("UPDATE jobs SET pid = ? WHERE id = ? AND owner = ?", (pid, job_id, owner))

    def expired(self, now: float | None = None) -> list[Job]:
        """Running jobs whose lease ran out (their runner is gone or stuck)."""
        rows = self._connect().execute("SELECT * FROM jobs WHERE state = 'running' AND "
                                       "(lease_until IS NULL OR lease_until < ?) ORDER BY id",
                                       (now or time.time(),)).fetchall()
        return [Job.from_row(r) for r in rows]

    def running(self) -> list[Job]:
        rows = self._connect().execute("SELECT * FROM jobs WHERE state = 'running' ORDER BY id")
        return [Job.from_row(r) for r in rows.fetchall()]

    def requeue(self, job_id: int, owner: str | None, message: str) -> bool:
        """Give a running job back to the queue (keeping its place: the oldest id goes first);
        a job asked to stop is cancelled instead."""
        held = "owner = ?" if owner is not None else "owner IS ?"
        return self._write(
            "UPDATE jobs SET state = CASE cancel WHEN 1 THEN 'cancelled' ELSE 'queued' END, "
            "finished = CASE cancel WHEN 1 THEN ? ELSE NULL END, owner = NULL, "
            f"lease_until = NULL, pid = NULL, rate = NULL, eta = NULL, message = ? "
            f"WHERE id = ? AND state = 'running' AND {held}",
            (time.time(), message, job_id, owner)) == 1

    # ---- runners (each write checks the lease's owner) -----------------------------------------

    def heartbeat(self, job_id: int, owner: str, lease_s: float,
                  busy_s: float) -> tuple[bool, bool]:
        """Renew the lease; (still held, cancel asked)."""
        held = self._write("UPDATE jobs SET lease_until = ?, busy_seconds = busy_seconds + ? "
                           "WHERE id = ? AND owner = ? AND state = 'running'",
                           (time.time() + lease_s, busy_s, job_id, owner)) == 1
        row = self._connect().execute("SELECT cancel FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return held, bool(row and row[0])

    def cancel_asked(self, job_id: int) -> bool:
        row = self._connect().execute("SELECT cancel FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return bool(row and row[0])

    def progress(self, job_id: int, owner: str, done: float, total: float, unit: str,
                 rate: float | None, eta: float | None, message: str) -> bool:
        return self._write("UPDATE jobs SET done = ?, total = ?, unit = ?, rate = ?, eta = ?, "
                           "message = ? WHERE id = ? AND owner = ? AND state = 'running'",
                           (done, total, unit, rate, eta, message, job_id, owner)) == 1

    def add_frames(self, job_id: int, owner: str, frames: int) -> None:
        self._write("UPDATE jobs SET frames = frames + ? WHERE id = ? AND owner = ?",
                    (frames, job_id, owner))

    def finish(self, job_id: int, owner: str, state: str, message: str = "", error: str = "",
               files: dict | None = None, result: dict | None = None) -> bool:
        """Final state of a running job held by `owner`; False if it no longer holds it."""
        assert state in FINAL_STATES
        return self._write(
            "UPDATE jobs SET state = ?, finished = ?, message = ?, error = ?, files = ?, "
            "result = ?, owner = NULL, lease_until = NULL, rate = NULL, eta = NULL, "
            "done = CASE ? WHEN 'done' THEN total ELSE done END "
            "WHERE id = ? AND owner = ? AND state = 'running'",
            (state, time.time(), message, error, json.dumps(files or {}), json.dumps(result or {}),
             state, job_id, owner)) == 1

    # ---- operators -----------------------------------------------------------------------------

    def totals(self) -> dict:
        """Frames extracted in all and busy seconds per device (for /metrics)."""
        db = self._connect()
        frames = db.execute("SELECT COALESCE(SUM(frames), 0) FROM jobs").fetchone()[0]
        busy = dict(db.execute("SELECT COALESCE(slot, ''), SUM(busy_seconds) FROM jobs "
                               "WHERE slot IS NOT NULL GROUP BY slot").fetchall())
        return {"frames": int(frames), "busy_seconds": busy}
