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


@pytest.fixture(scope="session")
def service_lab(tmp_path_factory) -> dict:
    """A lab's folders for the service tests: data/tiny (`mespot synth --small` with 2 subjects
    x 1 video x 2 s), and under stores/ its features (64 px faces) and a 2-epoch LOSO run made
    with the library: runs/tiny."""
    from flowcore import ExtractParams, extract_source
    from flowcore.faces import FaceParams
    from mespot.synth import SMALL, generate_dataset
    from spotting.train import RunConfig, TrainParams, train_loso

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
    train_loso(config, stores / "runs" / "tiny", show_progress=False, tensorboard=False)
    return {"root": lab, "data": data, "stores": stores, "tiny": tiny}
