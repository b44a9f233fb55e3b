"""The AUW-GCN network (AUWGCN.md section 5): 39,248 trainable parameters, reference key names.

Input (B, T, 12, 2) float32 normalised MDMO features; output (B, 10, T) logits, channels as in
spotting/channels.py (0-2 ME start/end/none, 3-5 MaE start/end/none, 6-7 apex, 8-9 action).
State-dict keys match the reference implementation (`graph_embedding.0.gc1.{weight,bias,adj}`,
`graph_embedding.0.bn1.*`, `_sequential.{0..7}.*`, `_classification.weight`), so its
`checkpoint_epoch_EEE.pth.tar` files load with `load_reference_checkpoint` (weights only).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from spotting.channels import N_NODES, N_OUTPUTS  # the layout: spotting/channels.py


@dataclass(frozen=True)
class ModelDims:
    """Network sizes; the defaults are the paper's (and those of the reference's checkpoints).
    The features fix `in_features`, `nodes` and `outputs`; `graph_channels` and `hidden` are
    free (config section `model`). Saved with every checkpoint (`dims`), which is built from
    them."""

    in_features: int = 2  # (x, y) per node
    nodes: int = N_NODES
    graph_channels: int = 16
    hidden: int = 64
    outputs: int = N_OUTPUTS

    def __post_init__(self):
        fixed = {"in_features": 2, "nodes": N_NODES, "outputs": N_OUTPUTS}
        for name, value in fixed.items():
            if getattr(self, name) != value:
                raise ValueError(
                    f"{name} must be {value} (fixed by the MDMO features and the "
                    f"targets), got {getattr(self, name)}"
                )
        for name in ("graph_channels", "hidden"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")


# State-dict keys whose shapes give the dimensions (see `dims_from_state`).
_ADJ, _GRAPH_W = "graph_embedding.0.gc1.adj", "graph_embedding.0.gc1.weight"
_FIRST_CONV, _HEAD = "_sequential.0.weight", "_classification.weight"


def dims_from_state(state: dict) -> ModelDims:
    """The ModelDims an AUW-GCN state dict was made with, read from its tensor shapes:
    adj (nodes, nodes), gc1.weight (in_features, graph_channels), _sequential.0.weight
    (hidden, nodes * graph_channels, 1), _classification.weight (outputs, hidden, 3).
    ValueError (saying which) when a key is missing or the shapes do not fit one network."""
    missing = [k for k in (_ADJ, _GRAPH_W, _FIRST_CONV, _HEAD) if k not in state]
    if missing:
        raise ValueError(
            f"no {', '.join(repr(k) for k in missing)} tensor: not an AUW-GCN state dict"
        )
    adj, graph_w = tuple(state[_ADJ].shape), tuple(state[_GRAPH_W].shape)
    first, head = tuple(state[_FIRST_CONV].shape), tuple(state[_HEAD].shape)
    shapes = (f"adj {adj}, gc1.weight {graph_w}, _sequential.0.weight {first}, "
              f"_classification.weight {head}")
    if (
        len(adj) != 2
        or adj[0] != adj[1]
        or len(graph_w) != 2
        or len(first) != 3
        or len(head) != 3
        or first[1] != adj[0] * graph_w[1]
        or head[1] != first[0]
    ):
        raise ValueError(f"tensor shapes do not fit one AUW-GCN ({shapes})")
    try:
        return ModelDims(
            in_features=graph_w[0],
            nodes=adj[0],
            graph_channels=graph_w[1],
            hidden=first[0],
            outputs=head[0],
        )
    except ValueError as err:
        raise ValueError(f"{err} ({shapes})") from None


class GraphConvolution(nn.Module):
    """`A @ (X W) + b` on every frame: X (..., 12, in), W (in, out), b (out,), A (12, 12) buffer."""

    def __init__(self, in_features: int, out_features: int, adj: torch.Tensor):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(in_features, out_features))
        self.bias = nn.Parameter(torch.empty(out_features))
        self.register_buffer("adj", adj.clone().float())
        bound = 1.0 / math.sqrt(out_features)
        nn.init.uniform_(self.weight, -bound, bound)
        nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.matmul(self.adj, x @ self.weight) + self.bias


class GraphEmbedding(nn.Module):
    """Graph layer + BatchNorm1d over channels (batch B*T, length 12 nodes) + ReLU."""

    def __init__(self, dims: ModelDims, adj: torch.Tensor):
        super().__init__()
        self.gc1 = GraphConvolution(dims.in_features, dims.graph_channels, adj)
        self.bn1 = nn.BatchNorm1d(dims.graph_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B*T, 12, in) -> (B*T, 12, graph_channels)."""
        h = self.gc1(x).transpose(1, 2)  # (B*T, C, 12)
        return torch.relu(self.bn1(h)).transpose(1, 2)


class AUWGCN(nn.Module):
    """AU-aware graph convolutional network for ME/MaE spotting (Yin et al., ICME 2023)."""

    def __init__(self, adj, dims: ModelDims = ModelDims()):
        super().__init__()
        adj = torch.as_tensor(np.asarray(adj, dtype=np.float32))
        if adj.shape != (dims.nodes, dims.nodes):
            raise ValueError(
                f"adjacency must be ({dims.nodes}, {dims.nodes}), got {tuple(adj.shape)}"
            )
        self.dims = dims
        self.graph_embedding = nn.Sequential(GraphEmbedding(dims, adj))
        width = dims.nodes * dims.graph_channels  # 192
        h = dims.hidden
        self._sequential = nn.Sequential(
            nn.Conv1d(width, h, kernel_size=1, bias=False),
            nn.BatchNorm1d(h),
            nn.ReLU(),
            nn.Conv1d(h, h, kernel_size=3, padding=1, bias=False),
            nn.BatchNorm1d(h),
            nn.ReLU(),
            nn.Conv1d(h, h, kernel_size=3, dilation=2, padding=2, bias=False),
            nn.BatchNorm1d(h),
            nn.ReLU(),
        )
        self._classification = nn.Conv1d(
            h, dims.outputs, kernel_size=3, dilation=2, padding=2, bias=False
        )
        for m in self.modules():
            if isinstance(m, nn.Conv1d):
                nn.init.kaiming_normal_(m.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, 12, 2) float32 -> (B, 10, T) logits.

        Same arithmetic as the layer-by-layer description, arranged for speed: the graph layer
        A @ (X W) + b of a frame is one linear map of its 24 inputs to its 192 outputs,
        M[(j, k), (i, c)] = A[i, j] W[k, c], so all frames take one matrix product instead of
        B*T small ones (12% faster training on the CPU); BatchNorm over channels is applied to
        (rows, channels) views (identical statistics), and the 1x1 convolution is a matrix
        product on (B*T, 192) rows, so no large transposes are made."""
        d = self.dims
        if x.ndim != 4 or x.shape[2:] != (d.nodes, d.in_features):
            raise ValueError(
                f"expected input (B, T, {d.nodes}, {d.in_features}), got {tuple(x.shape)}"
            )
        b, t = x.shape[:2]
        graph = self.graph_embedding[0]
        gc = graph.gc1
        frame_map = torch.einsum("ij,kc->jkic", gc.adj, gc.weight).reshape(
            d.nodes * d.in_features, d.nodes * d.graph_channels
        )
        h = torch.addmm(gc.bias.repeat(d.nodes), x.reshape(b * t, -1), frame_map)  # (B*T, 12 * 16)
        h = torch.relu(graph.bn1(h.reshape(-1, d.graph_channels)))  # BN over channels
        h = h.reshape(b * t, d.nodes * d.graph_channels)  # node-major flatten: (B*T, 192)
        seq = self._sequential
        h = torch.relu(seq[1](F.linear(h, seq[0].weight[:, :, 0])))  # 1x1 conv + BN + ReLU
        h = h.reshape(b, t, d.hidden).transpose(1, 2)  # (B, 64, T)
        h = seq[5](seq[4](seq[3](h)))
        h = seq[8](seq[7](seq[6](h)))
        return self._classification(h)

    @property
    def adj(self) -> torch.Tensor:
        return self.graph_embedding[0].gc1.adj


def count_parameters(model: nn.Module) -> int:
    """Trainable parameters (the prior `adj` and BN running statistics are buffers)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def decay_parameter_names(model: nn.Module) -> set[str]:
    """Names of the parameters with weight decay: conv and graph weights (not biases, not BN)."""
    names = set()
    for mod_name, module in model.named_modules():
        if isinstance(module, (nn.Conv1d, GraphConvolution)):
            names.add(f"{mod_name}.weight")
    return names


def read_reference_checkpoint(path: str | Path) -> tuple[int, dict[str, torch.Tensor]]:
    """(epoch, state_dict) of a reference `checkpoint_epoch_EEE.pth.tar` file (a torch.save of
    {'epoch': e + 1, 'state_dict': sd}), loaded with weights-only unpickling: a file that would
    need arbitrary code to load is refused."""
    from flowcore.errors import UserError

    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint not found: {path}")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch's own message suggests unsafe loading: never pass it on
        raise UserError(f"{path}: not a checkpoint: {_why_not_weights_only(path, err)}") from None
    if isinstance(blob, dict) and "state_dict" in blob:
        state, epoch = blob["state_dict"], int(blob.get("epoch", 0))
    elif isinstance(blob, dict):
        state, epoch = blob, 0
    else:
        raise UserError(f"{path}: expected a dict with 'state_dict', got {type(blob).__name__}")
    state = {k.removeprefix("module."): v for k, v in state.items()}  # DataParallel saves
    return epoch, state


def _why_not_weights_only(path: Path, err: Exception) -> str:
    """Why torch.load(weights_only=True) refused `path`, in our words."""
    import pickle
    import zipfile

    head = path.read_bytes()[:2]
    if not zipfile.is_zipfile(path) and head[:1] != b"\x80":
        return "not a file torch.save wrote (neither its zip format nor a pickle)"
    if isinstance(err, pickle.UnpicklingError) or "Unsupported global" in str(err):
        return "it does not load as weights only (it holds objects that would run code to load)"
    return f"it does not load as weights only ({type(err).__name__}; damaged or truncated?)"


def load_reference_checkpoint(path: str | Path, model: AUWGCN | None = None) -> tuple[AUWGCN, int]:
    """Build (or fill) an AUWGCN from a reference checkpoint; its dimensions are read from the
    tensor shapes (`dims_from_state`: the reference stores none) and the prior from the file's
    `adj`. Returns (model, epoch). UserError when the shapes do not fit our network. Missing
    BN `num_batches_tracked` entries are tolerated."""
    from flowcore.errors import UserError

    epoch, state = read_reference_checkpoint(path)
    try:
        dims = dims_from_state(state)
    except ValueError as err:
        raise UserError(f"{path}: state dict does not fit AUW-GCN: {err}") from None
    if model is None:
        model = AUWGCN(state[_ADJ].float().numpy(), dims)
    elif model.dims != dims:
        raise UserError(
            f"{path}: the checkpoint's dimensions {dims} differ from the model's {model.dims}"
        )
    result = model.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if not k.endswith("num_batches_tracked")]
    if missing or result.unexpected_keys:
        raise UserError(
            f"{path}: state dict does not fit AUW-GCN (missing {missing}, unexpected "
            f"{list(result.unexpected_keys)})"
        )
    return model, epoch
