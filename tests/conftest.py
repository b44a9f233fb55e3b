"""Shared fixtures. Heavy fixtures are session-scoped so the suite stays fast."""

import os
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def synth_small(tmp_path_factory) -> Path:
    """`mespot synth --small` in the CAS(ME)^2 layout (3 subjects x 2 videos x 240 frames)."""
    from mespot.synth import SMALL, generate_dataset

    root = tmp_path_factory.mktemp("synth") / "small"
    generate_dataset(SMALL, root, workers=1)
    return root


@pytest.fixture(scope="session")
def synth_small_samm(tmp_path_factory) -> Path:
    """A small synthetic set in the SAMM-LV layout at 200 fps (2 subjects x 1 video x 2.5 s)."""
    from mespot.synth import SMALL, generate_dataset

    root = tmp_path_factory.mktemp("synth") / "small-samm"
    config = SMALL.replace(layout="samm", fps=200.0, seconds=2.5, subjects=2, videos_per_subject=1)
    generate_dataset(config, root, workers=1)
    return root


@pytest.fixture
def gates(tmp_path_factory):
    """Gates (tests/waiting.py) in a folder of their own, nothing held yet; opened at the end,
    so no work of a failed test stays held."""
    from waiting import Gates

    made = Gates(tmp_path_factory.mktemp("gates"))
    yield made
    made.open_all()


@pytest.fixture(scope="module")
def module_gates(tmp_path_factory):
    """Gates shared by one module's tests, for work started once per module (`local_ray`'s
    workers, a module's server); nothing held yet. A test that holds opens them at its end."""
    from waiting import Gates

    made = Gates(tmp_path_factory.mktemp("module-gates"))
    yield made
    made.open_all()


@pytest.fixture(scope="module")
def local_ray(module_gates):
    """A local Ray instance with 2 CPUs, shared by one module's tests (the engines use it); its
    tasks see the gates of `module_gates`."""
    from flowcore.testhooks import ENVIRONMENT

    ray = pytest.importorskip("ray", reason='Ray is not installed: pip install "mespot[ray]"')
    try:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
                 logging_level="WARNING",
                 runtime_env={"env_vars": {ENVIRONMENT: str(module_gates.folder)}})
    except Exception as err:  # e.g. a sandbox without loopback networking
        pytest.skip(f"Ray cannot start here: {type(err).__name__}: {err}")
    yield ray
    ray.shutdown()


LEASE = "3"  # s: the lease of object-storage locks in the tests (MESPOT_LOCK_LEASE)


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """The S3 server, this process's environment pointed at it (through its relay), a cache of
    its own for the local copies, and short leases."""
    pytest.importorskip("moto", reason="the S3 server of the tests is moto's: pip install moto")
    s3fs = pytest.importorskip("s3fs", reason='object storage needs s3fs: pip install "mespot[s3]"')
    from s3_server import S3Server

    server = S3Server()
    env = {**server.environ(), "MESPOT_CACHE": str(tmp_path_factory.mktemp("cache")),
           "MESPOT_LOCK_LEASE": LEASE}
    with pytest.MonkeyPatch.context() as patch:
        for name, value in env.items():
            patch.setenv(name, value)
        s3fs.S3FileSystem.clear_instance_cache()  # none keeps another server's address
        yield server
        s3fs.S3FileSystem.clear_instance_cache()
    server.stop()


@pytest.fixture(scope="session")
def service_lab(tmp_path_factory) -> dict:
    """A lab's folders for the service tests: data/tiny (`mespot synth --small` with 2 subjects
    x 1 video x 2 s), and under stores/ its features (64 px faces) and a 2-epoch LOSO run made
    with the library: runs/tiny."""
    from flowcore import ExtractParams, extract_source
    from flowcore.faces import FaceParams
    from mespot.synth import SMALL, generate_dataset
    from spotting.config import RunConfig, TrainParams
    from spotting.loso import train_loso

    lab = tmp_path_factory.mktemp("lab")
    data, stores = lab / "data", lab / "stores"
    stores.mkdir()
    tiny = generate_dataset(SMALL.replace(subjects=2, videos_per_subject=1, seconds=2.0),
                            data / "tiny", preview=False, workers=1).root
    params = ExtractParams(flow_backend="torch", faces=FaceParams(resize=64))
    report = extract_source(tiny, stores / "tiny.zarr", params, workers=1)
    assert not report.failed, report.summary()
    config = RunConfig(store=str(stores / "tiny.zarr"), annotations=str(tiny / "ground_truth.csv"),
                       train=TrainParams(epochs=2, batch_size=2))
    train_loso(config, stores / "runs" / "tiny", tensorboard=False)
    return {"root": lab, "data": data, "stores": stores, "tiny": tiny}


# --- the fault corpus (tests/test_reliability_*.py) --------------------------------------------

TINY_VIDEOS = {"15_0101a": 12, "16_0101b": 12}  # 2 subjects x 1 video of fixture frames
TINY_TRUTH = ("subject,video,onset,apex,offset,type,au\n"
              "s15,15_0101a,2,5,9,mae,12\ns15,15_0101a,10,11,12,me,4\n"
              "s16,16_0101b,2,5,9,mae,12\ns16,16_0101b,10,11,12,me,4\n")


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> dict:
    """A real extraction of two 12-frame fixture videos (48 px crops) and a LOSO run of 2 epochs
    on it: paths `data` (CAS(ME)^2 layout), `store`, `truth` (CSV), `run`. Read-only: copy what a
    test changes."""
    from flowcore import ExtractParams, extract_source
    from flowcore.faces import FaceParams
    from mespot.testing import write_casme2
    from spotting.config import RunConfig, TrainParams
    from spotting.loso import train_loso

    base = tmp_path_factory.mktemp("tiny-run")
    data = write_casme2(base / "data", TINY_VIDEOS)
    report = extract_source(data, base / "store.zarr", ExtractParams(faces=FaceParams(resize=48)),
                            workers=1)
    assert not report.failed, report.summary()
    truth = base / "truth.csv"
    truth.write_text(TINY_TRUTH)
    config = RunConfig(store=str(base / "store.zarr"), annotations=str(truth),
                       train=TrainParams(epochs=2, batch_size=2))
    train_loso(config, base / "run", tensorboard=False)
    return {"base": base, "data": data, "store": base / "store.zarr", "truth": truth,
            "run": base / "run"}


def _mount_namespace_works() -> bool:
    import shutil
    import subprocess

    if shutil.which("unshare") is None:
        return False
    flags = ["-m"] if os.geteuid() == 0 else ["-Urm"]
    probe = subprocess.run(["unshare", *flags, "sh", "-c", "mount -t tmpfs tmpfs /mnt 2>/dev/null "
                            "|| mount -t tmpfs tmpfs /tmp"], capture_output=True)
    return probe.returncode == 0


@pytest.fixture(scope="session")
def sandboxed_cli():
    """run(args, read_only=[folders], tmpfs=(folder, size), after="shell") -> CompletedProcess of
    `mespot args` in a private mount namespace where those folders are read-only / a tiny tmpfs
    (a real EROFS / ENOSPC, even for root, who ignores permission bits); `after` runs there
    once the command is done (its output follows). Skips where namespaces fail."""
    import shlex
    import subprocess
    import sys

    if not _mount_namespace_works():
        pytest.skip("no private mount namespace here (unshare -m) to make a read-only or full disk")
    flags = ["-m"] if os.geteuid() == 0 else ["-Urm"]

    def run(args, read_only=(), tmpfs=None, timeout=300, env=None, after=""):
        steps = ["set -e"]
        for folder in read_only:
            q = shlex.quote(str(folder))
            steps.append(f"mount --bind {q} {q}; mount -o remount,bind,ro {q} {q}")
        if tmpfs is not None:
            steps.append(f"mount -t tmpfs -o size={tmpfs[1]} tmpfs {shlex.quote(str(tmpfs[0]))}")
        steps.append("set +e")
        steps.append(shlex.join([sys.executable, "-m", "mespot.cli", *map(str, args)]))
        steps.append(f"rc=$?; {after or 'true'}; exit $rc")  # `after`: look inside before it goes
        command = ["unshare", *flags, "sh", "-c", "\n".join(steps)]
        return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)

    return run


def error_line(stderr: str) -> str:
    """The one `error: ...` line a command printed (asserting there is exactly one and no
    traceback)."""
    assert "Traceback" not in stderr, stderr[-3000:]
    lines = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, stderr[-3000:]
    return lines[0]


def command_fails(capsys, argv, code: int = 2) -> str:
    """Run `mespot ARGV` in this process: assert it exits with `code` and printed one
    `error: ...` line (no traceback); return that line."""
    from mespot.cli import main

    got = main([str(a) for a in argv])
    captured = capsys.readouterr()
    assert got == code, captured.err[-2000:]
    return error_line(captured.err)


# --- the service's page in a browser (tests/test_service_browser*.py) -----------------------------

CHROMIUM = "/usr/bin/chromium"  # Debian's package; `playwright install` cannot download here
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def browser():
    """Debian's chromium driven by Playwright (skips without either)."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright")
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is missing: apt-get install chromium (.ci/run does)")
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield launched
        launched.close()
