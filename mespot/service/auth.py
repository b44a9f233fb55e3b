"""The service's token: made on first start into the server's folder (mode 0600) and printed
once, or read from `--token-file`. Every endpoint but /healthz asks for it, as
`Authorization: Bearer TOKEN` (scripts, `mespot jobs`) or the cookie the login page sets."""

from __future__ import annotations

import hmac
import os
import secrets
from pathlib import Path

from flowcore.errors import UserError

TOKEN_FILE = "token"  # in the server's folder
COOKIE = "mespot_token"
MIN_LENGTH = 16  # characters of a token given in a file


def load_or_create(home: Path, token_file: Path | None) -> tuple[str, bool]:
    """(token, created now). `token_file` given: read it (UserError when missing or short);
    else the one in `home`, made with 256 random bits if there is none yet."""
    if token_file is not None:
        return read_token(token_file), False
    path = home / TOKEN_FILE
    if path.exists():
        return read_token(path), False
    home.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(32)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(token + "\n")
    return token, True


def read_token(path: Path) -> str:
    """The token in `path` (first line, stripped); UserError naming the file otherwise."""
    try:
        token = path.read_text().strip().splitlines()[0].strip() if path.read_text().strip() else ""
    except OSError as err:
        raise UserError(f"{path}: cannot read the token file ({err.strerror})") from None
    if len(token) < MIN_LENGTH:
        raise UserError(f"{path}: the token must be at least {MIN_LENGTH} characters")
    return token


def same_token(given: str | None, token: str) -> bool:
    """Constant-time comparison (no timing hint about how much of a guess was right)."""
    return bool(given) and hmac.compare_digest(given.encode(), token.encode())
