"""Where things are: a local path, or an fsspec URL (s3://, gs://, az://, memory://, ...).

Every command takes either, for dataset roots, single videos, annotation files, feature stores
and run folders. A local path (or a file:// URL) stays a `pathlib.Path`; any other URL becomes a
universal_pathlib `UPath`, which has the same interface (`/`, name, suffix, exists, is_dir,
iterdir, glob, read_bytes, read_text), so the code that walks a dataset, reads frames or reads a
store's metadata is one code for both; Zarr opens the URL itself.

Credentials and endpoints come from the filesystem's own standard configuration, never from an
argument: for s3:// that is AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN,
AWS_PROFILE and ~/.aws, and AWS_ENDPOINT_URL for an S3-compatible server (MinIO, Ceph, moto).
So no secret is ever written into a store, a run folder or a log: they record the URL only.

What needs a file on this machine works on a local copy in the cache (MESPOT_CACHE, default
~/.cache/mespot/remote): `local_file` downloads a video file or a workbook once (fetched again
when the object's size or ETag changes); `working_copy` mirrors a folder (a run folder) down,
yields it, and uploads what was written or changed (and deletes what was deleted) every
WRITE_BACK_SECONDS while the work goes on and on the way out.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import threading
from pathlib import Path

CACHE_ENV = "MESPOT_CACHE"
WRITE_BACK_SECONDS = 30.0  # a working copy's changes go back to object storage this often
WRITE_BACK_ENV = "MESPOT_WRITE_BACK_SECONDS"


def _no_stale_listings() -> None:
    """Listings of object storage are read afresh each time (s3fs caches them by default): a
    process that lives long, the service, must see the stores and runs that others wrote since.
    A user's own fsspec configuration for s3 wins."""
    import fsspec.config

    fsspec.config.conf.setdefault("s3", {}).setdefault("use_listings_cache", False)


def is_url(text) -> bool:
    """Whether `text` names an fsspec URL other than a local file (file:// is a local path)."""
    value = str(text)
    return "://" in value and not value.startswith("file://")


def location(text):
    """A `Path` for a local path or file:// URL, a `UPath` for any other URL."""
    value = os.fspath(text) if not isinstance(text, str) and not is_url(text) else str(text)
    if is_url(value):
        from upath import UPath

        _no_stale_listings()  # here, not at import: the service's client imports no fsspec
        return UPath(value)
    if value.startswith("file://"):
        value = value[len("file://"):]
    return Path(value)


def absolute(text):
    """`location(text)`, made absolute when local (stores record where frames are: a path must
    stay valid from any folder)."""
    where = location(text)
    return where if is_url(where) else where.absolute()


def unreachable(err: BaseException) -> str | None:
    """The first line of what says that object storage could not be reached (a connection
    refused, dropped or timed out, from botocore or aiohttp), or None for any other error."""
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        kind = type(err)
        if kind.__module__.split(".")[0] in ("botocore", "aiobotocore", "aiohttp") and any(
                word in kind.__name__ for word in ("Connect", "Timeout", "Endpoint")):
            return str(err).splitlines()[0] if str(err) else kind.__name__
        err = err.__cause__ or err.__context__
    return None


def filesystem(url):
    """(fsspec filesystem, path inside it) for a URL."""
    import fsspec

    _no_stale_listings()
    return fsspec.core.url_to_fs(str(url))


def listing(folder, folders: bool = False) -> list[str]:
    """Sorted names in `folder` (only its subfolders with `folders`), read afresh from remote
    storage; [] when it is absent."""
    if is_url(folder):
        fs, path = filesystem(folder)
        fs.invalidate_cache(path)
        try:
            entries = fs.ls(path, detail=True)
        except FileNotFoundError:
            return []
        return sorted(e["name"].rstrip("/").rsplit("/", 1)[-1] for e in entries
                      if not folders or e["type"] == "directory")
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir() if not folders or p.is_dir())


def remove_tree(where) -> None:
    """Delete a folder (local or remote) and everything in it; nothing when it is absent."""
    if is_url(where):
        fs, path = filesystem(where)
        if fs.exists(path):
            fs.rm(path, recursive=True)
        fs.invalidate_cache()
        return
    import shutil

    if Path(where).exists():
        shutil.rmtree(where)


def cache_root() -> Path:
    """The folder of local copies (MESPOT_CACHE, default ~/.cache/mespot/remote)."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "mespot" / "remote")


def _cache_dir(url: str, kind: str) -> Path:
    key = hashlib.sha256(url.encode()).hexdigest()[:20]
    return cache_root() / kind / key


def _version(info: dict) -> list:
    """What tells one version of a remote object from another: its size and ETag (or mtime)."""
    return [info.get("size"), info.get("ETag") or info.get("etag") or str(info.get("mtime", ""))]


def local_file(where) -> Path:
    """A local path holding the file at `where`: itself when local; for a URL a copy in the
    cache, downloaded once and again only when the object changed (size or ETag)."""
    if not is_url(where):
        return location(where)
    url = str(where)
    fs, path = filesystem(url)
    try:
        info = fs.info(path)
    except FileNotFoundError:
        raise FileNotFoundError(f"{url}: no such object") from None
    folder = _cache_dir(url, "files")
    target = folder / Path(path).name
    stamp = folder / "version.json"
    version = _version(info)
    if target.is_file() and stamp.is_file() and json.loads(stamp.read_text()) == version:
        return target
    folder.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + f".part{os.getpid()}")
    fs.get_file(path, str(partial))
    os.replace(partial, target)
    stamp.write_text(json.dumps(version))
    return target


def download_folder(url: str, local: Path, under: str = "") -> dict[str, list]:
    """Mirror the folder at `url` into `local` (replacing what is there; with `under`, a
    relative folder, only the top level's files and that folder); return what each downloaded
    file is ({relative path: [size, mtime_ns]}) to tell later changes by."""
    import shutil

    fs, path = filesystem(url)
    fs.invalidate_cache()
    if local.exists():
        shutil.rmtree(local)
    local.mkdir(parents=True)
    prefix = under.rstrip("/") + "/" if under else ""
    if fs.isdir(path):
        for remote in fs.find(path):
            relative = remote[len(path.rstrip("/")) + 1:]
            if prefix and "/" in relative and not relative.startswith(prefix):
                continue
            target = local / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            fs.get_file(remote, str(target))
    return _snapshot(local)


def copy_down(url: str, local: Path) -> None:
    """Download every file of the folder at `url` into `local`, each replacing its local copy
    whole (a temporary name, then a rename), deleting nothing: safe while the folder is being
    written back (working_copy)."""
    fs, path = filesystem(url)
    if not fs.isdir(path):
        return
    for remote in fs.find(path):
        target = local / remote[len(path.rstrip("/")) + 1:]
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(target.name + f".part{os.getpid()}.tmp")
        fs.get_file(remote, str(partial))
        os.replace(partial, target)


def _snapshot(local: Path) -> dict[str, list]:
    """{relative path: [size, mtime_ns]} of the files of `local`, but those being written (a
    `.tmp` name, renamed whole when done) and those gone meanwhile."""
    found = {}
    for p in local.rglob("*"):
        try:
            if p.is_file() and not p.name.endswith(".tmp"):
                stat = p.stat()
                found[str(p.relative_to(local))] = [stat.st_size, stat.st_mtime_ns]
        except FileNotFoundError:
            continue
    return found


def upload_changes(local: Path, url: str, before: dict[str, list], under: str = "") -> dict:
    """Upload the files of `local` (only those below `under`, a relative folder, when given)
    that are new or changed since the snapshot `before`, and delete at `url` those deleted
    here; return the snapshot to compare the next changes with."""
    fs, path = filesystem(url)
    now = _snapshot(local)
    prefix = under.rstrip("/") + "/" if under else ""
    for relative, stamp in sorted(now.items()):
        if relative.startswith(prefix) and before.get(relative) != stamp:
            fs.put_file(str(local / relative), f"{path.rstrip('/')}/{relative}")
    for relative in sorted(set(before) - set(now)):
        if relative.startswith(prefix):
            with contextlib.suppress(FileNotFoundError):
                fs.rm_file(f"{path.rstrip('/')}/{relative}")
    fs.invalidate_cache()
    return {**{k: v for k, v in before.items() if not k.startswith(prefix)},
            **{k: v for k, v in now.items() if k.startswith(prefix)}}


def _folder_copy(url: str) -> Path:
    """Where this process keeps its copy of the folder at `url` (one per process: two processes
    never work in one copy)."""
    return _cache_dir(url, "folders") / f"{os.getpid()}" / Path(filesystem(url)[1]).name


def local_folder(where) -> Path:
    """A local folder holding the folder at `where` (a run folder, to read): itself when local;
    for a URL a fresh copy in the cache (FileNotFoundError when there is none)."""
    if not is_url(where):
        return location(where)
    url = str(where).rstrip("/")
    fs, path = filesystem(url)
    if not fs.isdir(path):
        raise FileNotFoundError(f"{url}: no such folder")
    local = _folder_copy(url)
    download_folder(url, local)
    return local


@contextlib.contextmanager
def working_copy(where, writeback: bool = True, under: str = ""):
    """Yield a local folder to work in for the folder at `where`: itself when local; for a URL
    a fresh copy in the cache, whose new, changed and deleted files are written back to the URL
    every WRITE_BACK_SECONDS while the work goes on (MESPOT_WRITE_BACK_SECONDS), and on the way
    out, also when the work failed (what was finished is kept) - unless `writeback` is False. A
    process killed with SIGKILL so loses at most the last interval's files: a training run
    resumes from the last epoch written back. `under`: a relative folder (a fold's own): only
    it and the top level's files are copied, and only it is written back."""
    if not is_url(where):
        yield location(where)
        return
    url = str(where).rstrip("/")
    local = _folder_copy(url)
    state = {"before": download_folder(url, local, under)}
    stop = threading.Event()

    def write_back():
        while not stop.wait(float(os.environ.get(WRITE_BACK_ENV) or WRITE_BACK_SECONDS)):
            try:
                state["before"] = upload_changes(local, url, state["before"], under)
            except Exception:  # noqa: BLE001 - unreachable for now: the next try, or the
                pass  # last one on the way out, says so
    writer = threading.Thread(target=write_back, daemon=True, name="mespot-write-back")
    if writeback:
        writer.start()
    try:
        yield local
    finally:
        stop.set()
        if writeback:
            writer.join()
            upload_changes(local, url, state["before"], under)
