"""The one home of the network's layout: graph nodes, expression types, output channels.

Nodes: one per ROI of the MDMO features (flowcore.rois, AUWGCN.md section 3). Types: index 0 is
the micro-expression (ME), 1 the macro-expression (MaE), in targets, losses and outputs alike.
Output channels of the (B, 10, T) logits:
    0-2 ME start/end/none, 3-5 MaE start/end/none, 6 ME apex, 7 MaE apex, 8 ME action,
    9 MaE action.
"""

from flowcore.rois import N_ROIS

N_NODES = N_ROIS  # 12 graph nodes
TYPES = ("me", "mae")  # type index 0, 1
N_OUTPUTS = 10
ME_START_END = slice(0, 3)
MAE_START_END = slice(3, 6)
ME_APEX, MAE_APEX, ME_ACTION, MAE_ACTION = 6, 7, 8, 9
START_END = {"me": ME_START_END, "mae": MAE_START_END}  # softmax over (start, end, none)
APEX = {"me": ME_APEX, "mae": MAE_APEX}
ACTION = {"me": ME_ACTION, "mae": MAE_ACTION}
