"""The flow-backend registry: one object per backend, the same interface, looked up by name."""

import numpy as np
import pytest

from flowcore.flow import (TVL1Params, available_backends, backend_named, check_backend,
                           compute_flow)
from flowcore.flow.backends import BACKENDS, FlowBackend

SMALL = TVL1Params(n_scales=2, n_warps=1, inner_iterations=3, outer_iterations=1)


def test_each_backend_is_registered_under_its_name():
    assert set(BACKENDS) == {"opencv", "torch", "cuda"}
    for name, backend in BACKENDS.items():
        assert isinstance(backend, FlowBackend) and backend.name == name
        assert backend_named(name) is backend
    with pytest.raises(ValueError, match="unknown flow backend 'farneback'; known"):
        backend_named("farneback")


def test_devices_each_backend_refuses():
    with pytest.raises(ValueError, match="opencv flow backend runs on cpu only"):
        backend_named("opencv").check_device("cuda")
    with pytest.raises(ValueError, match="cuda flow backend runs on a GPU"):
        backend_named("cuda").check_device("cpu")
    backend_named("torch").check_device("cpu")
    with pytest.raises(ValueError, match="cuda flow backend runs on a GPU"):
        check_backend("cuda", "cpu", here=False)
    assert backend_named("opencv").where("cuda:1") == "cpu"
    assert backend_named("torch").where("cuda:1") == "cuda:1"


@pytest.mark.parametrize("name", [b for b in available_backends() if b != "cuda"])
def test_a_backend_object_computes_what_compute_flow_returns(name):
    rng = np.random.default_rng(0)
    first = rng.integers(0, 255, (2, 32, 36)).astype(np.uint8)
    second = np.roll(first, 1, axis=2)
    flow = np.asarray(backend_named(name).flow(first, second, SMALL, "cpu"))
    assert flow.shape == (2, 2, 32, 36) and flow.dtype == np.float32
    np.testing.assert_array_equal(flow, compute_flow(first, second, params=SMALL, backend=name))
    assert np.median(flow[:, 0, 8:-8, 8:-8]) > 0.5  # the texture moved one pixel right
