"""Uploaded videos for predict jobs: a size limit, a name and type check, and an id.

Each upload is kept as uploads/<32 hex digits>/<name>; jobs name it by the id only.
"""

from __future__ import annotations

import re
import shutil
import uuid
from pathlib import Path

from mespot.service.config import UPLOAD_SUFFIXES

SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._ -]{0,127}$")
SNIFF_BYTES = 16


class UploadRefused(Exception):
    """`status` 413 (too large), 415 (not a video) or 422 (bad name, empty)."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def check_name(name: str) -> str:
    """A plain file name with a video suffix; UploadRefused otherwise."""
    name = (name or "").strip()
    if not SAFE_NAME.match(name) or name in (".", ".."):
        raise UploadRefused(422, f"{name!r}: give a plain file name (letters, digits, '._- ')")
    if Path(name).suffix.lower() not in UPLOAD_SUFFIXES:
        raise UploadRefused(415, f"{name}: only video files are accepted "
                                 f"({', '.join(UPLOAD_SUFFIXES)})")
    return name


def looks_like_video(head: bytes) -> bool:
    """The first bytes of an MP4/MOV (ISO media boxes), AVI (RIFF), Matroska/WebM (EBML) or
    MPEG program/elementary stream."""
    return (head[4:8] in (b"ftyp", b"moov", b"mdat", b"wide", b"free", b"skip")
            or (head[:4] == b"RIFF" and head[8:12] == b"AVI ")
            or head[:4] == b"\x1a\x45\xdf\xa3"
            or head[:4] in (b"\x00\x00\x01\xba", b"\x00\x00\x01\xb3"))


class Upload:
    """One upload being written: `add` chunks, then `close` (checks) or `discard`."""

    def __init__(self, folder: Path, name: str, limit: int):
        self.id = uuid.uuid4().hex
        self.folder = folder / self.id
        self.folder.mkdir(parents=True)
        self.path = self.folder / name
        self.part = self.folder / (name + ".part")
        self.handle = open(self.part, "wb")
        self.limit, self.size, self.head = limit, 0, b""

    def add(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.size > self.limit:
            raise UploadRefused(413, f"{self.path.name}: larger than the limit of "
                                     f"{self.limit / 2**20:g} MiB")
        if len(self.head) < SNIFF_BYTES:
            self.head += chunk[:SNIFF_BYTES]
        self.handle.write(chunk)

    def close(self) -> dict:
        self.handle.close()
        if self.size == 0:
            raise UploadRefused(422, f"{self.path.name}: the upload is empty")
        if not looks_like_video(self.head):
            raise UploadRefused(415, f"{self.path.name}: the content is not a video file "
                                     f"(MP4, MOV, AVI, MKV, WebM or MPEG expected)")
        self.part.rename(self.path)
        return {"upload": self.id, "name": self.path.name, "bytes": self.size}

    def discard(self) -> None:
        self.handle.close()
        shutil.rmtree(self.folder, ignore_errors=True)
