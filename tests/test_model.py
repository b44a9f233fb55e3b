"""The AUW-GCN network: size, key names, layer-by-layer equivalence, reference checkpoints."""

import pickle

import numpy as np
import pytest
import torch

from flowcore.errors import UserError
from spotting.model import (
    AUWGCN, ModelDims, count_parameters, decay_parameter_names, load_reference_checkpoint,
)

REFERENCE_KEYS = [
    "graph_embedding.0.gc1.weight", "graph_embedding.0.gc1.bias", "graph_embedding.0.gc1.adj",
    "graph_embedding.0.bn1.weight", "graph_embedding.0.bn1.bias",
    "graph_embedding.0.bn1.running_mean", "graph_embedding.0.bn1.running_var",
    "graph_embedding.0.bn1.num_batches_tracked",
    "_sequential.0.weight", "_sequential.3.weight", "_sequential.6.weight",
    *[f"_sequential.{i}.{k}" for i in (1, 4, 7)
      for k in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")],
    "_classification.weight",
]


def make(seed=0):
    torch.manual_seed(seed)
    adj = np.random.default_rng(seed).random((12, 12)).astype(np.float32)
    return AUWGCN(adj)


def test_parameter_count_and_keys():
    model = make()
    assert count_parameters(model) == 39_248
    assert sorted(model.state_dict()) == sorted(REFERENCE_KEYS)
    assert not model.adj.requires_grad
    assert decay_parameter_names(model) == {
        "graph_embedding.0.gc1.weight", "_sequential.0.weight", "_sequential.3.weight",
        "_sequential.6.weight", "_classification.weight",
    }


def test_output_shape_and_bad_input():
    model = make()
    assert model(torch.randn(3, 270, 12, 2)).shape == (3, 10, 270)
    with pytest.raises(ValueError, match=r"\(B, T, 12, 2\)"):
        model(torch.randn(3, 270, 12))
    with pytest.raises(ValueError, match="adjacency"):
        AUWGCN(np.eye(11))


def layer_by_layer(model, x):
    """Section 5 literally: graph layer per frame, BN1d over (B*T, 16, 12), flatten, convs."""
    b, t = x.shape[:2]
    gc = model.graph_embedding[0].gc1
    h = gc.adj @ (x.reshape(b * t, 12, 2) @ gc.weight) + gc.bias  # (B*T, 12, 16)
    h = torch.relu(model.graph_embedding[0].bn1(h.transpose(1, 2))).transpose(1, 2)
    h = h.reshape(b, t, 192).transpose(1, 2)
    return model._classification(model._sequential(h))


@pytest.mark.parametrize("train", [False, True])
def test_fast_forward_equals_the_layer_by_layer_network(train):
    model = make()
    x = torch.randn(2, 40, 12, 2)
    model.train(train)
    copy = make()
    copy.load_state_dict(model.state_dict())
    copy.train(train)
    torch.testing.assert_close(model(x), layer_by_layer(copy, x), rtol=1e-4, atol=1e-5)
    # training mode updated the same running statistics
    for (k, a), b in zip(model.state_dict().items(), copy.state_dict().values()):
        torch.testing.assert_close(a.float(), b.float(), rtol=1e-4, atol=1e-5, msg=k)


def test_graph_layer_is_prior_times_xw_plus_b():
    model = make()
    gc = model.graph_embedding[0].gc1
    x = torch.randn(5, 12, 2)
    expected = torch.stack([gc.adj @ (xi @ gc.weight) + gc.bias for xi in x])
    torch.testing.assert_close(gc(x), expected)


def test_reference_checkpoint_loads_weights_only(tmp_path):
    source = make(seed=3)
    with torch.no_grad():
        for p in source.parameters():
            p.add_(0.1)
    state = {k: v.clone() for k, v in source.state_dict().items()}
    del state["_sequential.1.num_batches_tracked"]  # older torch saves had none
    path = tmp_path / "checkpoint_epoch_042.pth.tar"
    torch.save({"epoch": 42, "state_dict": state}, path)
    model, epoch = load_reference_checkpoint(path)
    assert epoch == 42
    torch.testing.assert_close(model.adj, source.adj)
    model.eval(), source.eval()
    x = torch.randn(1, 30, 12, 2)
    torch.testing.assert_close(model(x), source(x))


class _Evil:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_checkpoint_with_pickled_code_is_refused(tmp_path, capsys):
    path = tmp_path / "checkpoint_epoch_001.pth.tar"
    with open(path, "wb") as f:
        pickle.dump({"epoch": 1, "state_dict": {}, "x": _Evil()}, f, protocol=2)
    with pytest.raises(UserError, match="weights only"):
        load_reference_checkpoint(path)
    assert "must never run" not in capsys.readouterr().out


def test_checkpoint_of_another_network_is_refused(tmp_path):
    path = tmp_path / "checkpoint_epoch_001.pth.tar"
    torch.save({"epoch": 1, "state_dict": {"graph_embedding.0.gc1.adj": torch.eye(12),
                                           "fc.weight": torch.zeros(2)}}, path)
    with pytest.raises(UserError, match="does not fit"):
        load_reference_checkpoint(path)


def test_conv_stack_matches_section_5():
    model = make()
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv1d)]
    assert [
        (c.in_channels, c.out_channels, c.kernel_size[0], c.dilation[0], c.padding[0])
        for c in convs
    ] == [(192, 64, 1, 1, 0), (64, 64, 3, 1, 1), (64, 64, 3, 2, 2), (64, 10, 3, 2, 2)]
    assert all(c.bias is None for c in convs)


def test_model_dims_free_and_fixed_fields():
    assert ModelDims(graph_channels=8, hidden=32).hidden == 32
    with pytest.raises(ValueError, match="nodes must be 12"):
        ModelDims(nodes=11)
    with pytest.raises(ValueError, match="hidden must be a positive integer"):
        ModelDims(hidden=0)


def test_reference_checkpoint_of_other_dims_is_built_from_its_shapes(tmp_path):
    from spotting.model import dims_from_state

    torch.manual_seed(1)
    dims = ModelDims(graph_channels=8, hidden=24)
    source = AUWGCN(np.random.default_rng(1).random((12, 12)).astype(np.float32), dims)
    assert dims_from_state(source.state_dict()) == dims
    path = tmp_path / "checkpoint_epoch_007.pth.tar"
    torch.save({"epoch": 7, "state_dict": source.state_dict()}, path)
    model, epoch = load_reference_checkpoint(path)
    assert model.dims == dims and epoch == 7
    model.eval(), source.eval()
    x = torch.randn(2, 30, 12, 2)
    torch.testing.assert_close(model(x), source(x), rtol=0, atol=0)


def test_reference_checkpoint_whose_shapes_do_not_fit_is_refused(tmp_path):
    path = tmp_path / "checkpoint_epoch_001.pth.tar"
    state = make().state_dict()
    state["_classification.weight"] = torch.zeros(10, 48, 3)  # the head does not fit the 64 hidden
    torch.save({"epoch": 1, "state_dict": state}, path)
    with pytest.raises(
        UserError,
        match=r"tensor shapes do not fit one AUW-GCN \(.*_classification.weight "
        r"\(10, 48, 3\)\)",
    ):
        load_reference_checkpoint(path)
    state = make().state_dict()  # a network on 11 nodes, as another ROI set would give
    state["graph_embedding.0.gc1.adj"] = torch.eye(11)
    state["_sequential.0.weight"] = torch.zeros(64, 11 * 16, 1)
    torch.save({"epoch": 1, "state_dict": state}, path)
    with pytest.raises(UserError, match="nodes must be 12"):
        load_reference_checkpoint(path)


def test_weights_without_stored_dims_load_with_the_defaults_and_say_so(tmp_path):
    import dataclasses
    import json

    from safetensors.torch import save_file

    from flowcore.errors import UserError
    from spotting.model import AUWGCN, ModelDims
    from spotting.run_folder import load_weights

    torch.manual_seed(0)
    network = AUWGCN(np.eye(12, dtype=np.float32))
    old = tmp_path / "weights_epoch_001.safetensors"  # as written before dims were stored
    save_file(
        network.state_dict(),
        str(old),
        metadata={"epoch": "1", "fold": json.dumps({"test_subject": "s1"})},
    )
    model, meta = load_weights(old)
    assert model.dims == ModelDims() and meta["dims"] == dataclasses.asdict(ModelDims())
    assert meta["dims_source"].startswith("tensor shapes (the file stores no dimensions")
    wrong = tmp_path / "weights_epoch_002.safetensors"
    save_file(network.state_dict(), str(wrong), metadata={"dims": json.dumps({"hidden": 32})})
    with pytest.raises(
        UserError,
        match=r"weights_epoch_002.safetensors: weights do not fit AUW-GCN: .*size mismatch",
    ):
        load_weights(wrong)
