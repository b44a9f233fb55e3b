"""Shared fixtures. Heavy fixtures are session-scoped so the suite stays fast."""

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


@pytest.fixture(scope="module")
def local_ray():
    """A local Ray instance with 2 CPUs, shared by one module's tests (the engines use it)."""
    ray = pytest.importorskip("ray", reason='Ray is not installed: pip install "mespot[ray]"')
    try:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
                 logging_level="WARNING")
    except Exception as err:  # e.g. a sandbox without loopback networking
        pytest.skip(f"Ray cannot start here: {type(err).__name__}: {err}")
    yield ray
    ray.shutdown()
