"""Lab members' tokens: each person gets a token of their own (made by the server's admin, the
holder of the server's own token), so every job shows who submitted it and a token that leaks
or leaves with a person is revoked alone. Only a SHA-256 hash of a token is stored (tokens are
256 random bits: a hash cannot be guessed back); the token itself is shown once, when made.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import sqlite3
import threading
import time
from pathlib import Path

ADMIN = "admin"  # the name of the server's own token (file `token` in the server's folder)
NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,31}$")
SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
    name TEXT PRIMARY KEY,
    hash TEXT NOT NULL UNIQUE,     -- SHA-256 of the token, hex
    created REAL NOT NULL,
    revoked REAL,                  -- when revoked (the token no longer signs in)
    last_used REAL
);
"""
USE_WRITE_EVERY_S = 60.0  # last_used is written at most this often per user


class UserRefused(Exception):
    """A name that cannot be used, or one that does not exist: `status` 409, 422 or 404."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class Users:
    """The users table (in the service's SQLite file)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._local = threading.local()
        self._written: dict[str, float] = {}
        self._db().executescript(SCHEMA)

    def _db(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, timeout=30.0, isolation_level=None,
                                 check_same_thread=False)
            self._local.db = db
        return db

    def add(self, name: str) -> str:
        """A new user's token (returned once; only its hash is kept)."""
        if not NAME.match(name or "") or name == ADMIN:
            raise UserRefused(422, f"{name!r}: a user name is 1-32 lower-case letters, digits, "
                                   f"'.', '_' or '-' (and not {ADMIN!r})")
        token = secrets.token_urlsafe(32)
        try:
            self._db().execute("INSERT INTO users (name, hash, created) VALUES (?, ?, ?)",
                               (name, token_hash(token), time.time()))
        except sqlite3.IntegrityError:
            raise UserRefused(409, f"user {name!r} exists already (revoke it first to make "
                                   f"a new token)") from None
        return token

    def revoke(self, name: str) -> dict:
        """Revoke `name`'s token and free the name for a new one (the row stays, renamed, so
        the jobs it submitted keep their submitter)."""
        stamp = time.time()
        changed = self._db().execute(
            "UPDATE users SET revoked = ?, name = name || '~' || CAST(? AS INTEGER) "
            "WHERE name = ? AND revoked IS NULL", (stamp, stamp, name)).rowcount
        if not changed:
            raise UserRefused(404, f"no user {name!r}")
        return {"name": name, "revoked": stamp}

    def list(self) -> list[dict]:
        rows = self._db().execute("SELECT name, created, revoked, last_used FROM users "
                                  "ORDER BY revoked IS NOT NULL, name").fetchall()
        return [{"name": n.split("~")[0], "created": c, "revoked": r, "last_used": u}
                for n, c, r, u in rows]

    def name_of(self, token: str | None) -> str | None:
        """The user whose live token this is, or None."""
        if not token:
            return None
        row = self._db().execute("SELECT name FROM users WHERE hash = ? AND revoked IS NULL",
                                 (token_hash(token),)).fetchone()
        if row is None:
            return None
        now = time.time()
        if now - self._written.get(row[0], 0.0) > USE_WRITE_EVERY_S:
            self._written[row[0]] = now
            self._db().execute("UPDATE users SET last_used = ? WHERE name = ?", (now, row[0]))
        return row[0]
