"""Paths a client names are only accepted under the configured roots.

A path is given relative to its root ("synth/small") or absolute inside it
("/data/lab/synth/small"). Refused: `..` parts, NUL bytes, empty paths (422: malformed), an
absolute path elsewhere and anything whose symlinks lead out of the root (403: forbidden). A root
may be a URL on object storage (s3://...): its paths are URLs under it (no symbolic links there).
The check runs at submission and again when the job starts.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath

from flowcore.locations import is_url, location


class PathRefused(Exception):
    """A path the service will not touch: `status` 403 or 422, `str()` says why."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


ROOT_NAMES = {"data": "data root", "store": "store root"}


def resolve_under(root: Path, text: str, root_name: str = "data root") -> Path:
    """The real path that `text` names under `root` (which is absolute and resolved)."""
    if not isinstance(text, str) or not text.strip():
        raise PathRefused(422, f"empty path; give a path under the {root_name}")
    if "\0" in text:
        raise PathRefused(422, f"{text!r}: a path must not contain NUL bytes")
    if ".." in PurePosixPath(text).parts or ".." in Path(text).parts:
        raise PathRefused(422, f"{text!r}: '..' is not allowed; give a path under the {root_name}")
    if is_url(root):  # object storage: no symbolic links; an absolute name is a URL under it
        inside = str(root).rstrip("/") + "/"
        if is_url(text) and not (text.rstrip("/") + "/").startswith(inside):
            raise PathRefused(403, f"{text}: outside the {root_name} ({root}); give a path "
                                   f"under it")
        return location(text) if is_url(text) else root / text.strip("/")
    given = Path(text)
    candidate = given if given.is_absolute() else root / given
    if given.is_absolute() and not (_inside(given, root) or _inside(given.resolve(), root)):
        raise PathRefused(403, f"{text}: outside the {root_name} ({root}); give a path under it")
    real = candidate.resolve(strict=False)
    if not _inside(real, root):
        raise PathRefused(403, f"{text}: leads out of the {root_name} through a symbolic link "
                               f"(to {real}); refused")
    return real


def relative_name(root: Path, path: Path) -> str:
    """`path` (under `root`) as the root-relative POSIX text clients see ('.' for the root)."""
    return path.relative_to(root).as_posix() or "."


def require(path: Path, what: str, text: str, kind: str = "any") -> Path:
    """`path` if it exists (as a folder with kind 'dir', a file with 'file'); else 422."""
    ok = {"any": path.exists(), "dir": path.is_dir(), "file": path.is_file()}[kind]
    if not ok:
        noun = {"any": "file or folder", "dir": "folder", "file": "file"}[kind]
        raise PathRefused(422, f"{text}: no such {noun} ({what})")
    return path


def _root(where):
    """A root as given: a local folder (absolute, resolved) or a URL (flowcore.locations)."""
    return location(where) if is_url(where) else Path(where).resolve()


def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


class Roots:
    """The two roots of a service: `data` (read) and `store` (read and write)."""

    def __init__(self, data: Path, store: Path):
        self.data, self.store = _root(data), _root(store)

    def data_path(self, text: str) -> Path:
        return resolve_under(self.data, text, "data root")

    def store_path(self, text: str) -> Path:
        return resolve_under(self.store, text, "store root")

    def shown(self, path: Path) -> str:
        """`path` as clients name it: relative to its root."""
        for root in (self.store, self.data):
            if path == root or root in path.parents:
                return relative_name(root, path)
        return path.name
