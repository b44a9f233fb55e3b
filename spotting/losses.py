"""Training losses of AUW-GCN (AUWGCN.md section 7), on the central rows of each window.

Shapes: logits (B, 10, L) float32 (channel layout in spotting/channels.py); targets from
spotting/windows.py: start_end (B, 2, L) int64 classes, apex and action (B, 2, L) float32; axis 1
is the type (0 ME, 1 MaE). Every loss is a mean over all B * L frames.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.nn import functional as F

from spotting.channels import MAE_ACTION, MAE_APEX, MAE_START_END, ME_ACTION, ME_APEX, ME_START_END


@dataclass(frozen=True)
class LossParams:
    """Loss constants of the paper; `macro_ratio` r weights the MaE terms (0.5 CAS(ME)^2, 0.7
    SAMM-LV)."""

    gamma: float = 1.0
    label_smoothing: float = 0.16
    alpha_apex: float = 0.9
    alpha_action: float = 0.8
    class_weights: tuple[float, float, float] = (0.45, 0.45, 0.1)
    w_apex: float = 1.8  # ME apex weight (MaE apex: 1.0)
    w_start_end: float = 1.0
    w_action: float = 0.1
    macro_ratio: float = 0.5
    eps: float = 1e-5


def binary_focal_loss(logits: torch.Tensor, target: torch.Tensor, alpha: float,
                      p: LossParams = LossParams()) -> torch.Tensor:
    """Scalar: -mean(alpha |y-p|^g [y>0] log(p+eps) + (1-alpha) |y+ls-p|^g [y=0] log(1-p+eps))."""
    prob = torch.sigmoid(logits)
    pos = (target > 0).to(prob.dtype)
    pos_term = alpha * (target - prob).abs().pow(p.gamma) * pos * torch.log(prob + p.eps)
    neg_term = ((1 - alpha) * (target + p.label_smoothing - prob).abs().pow(p.gamma) * (1 - pos)
                * torch.log(1 - prob + p.eps))
    return -(pos_term + neg_term).mean()


def start_end_loss(
    logits: torch.Tensor, target: torch.Tensor, p: LossParams = LossParams()
) -> torch.Tensor:
    """Scalar: class-weighted focal loss of the 3-way start/end/none softmax.

    logits (B, 3, L), target (B, L) int64. Start/end frames: -w_c (1-p_c)^g log p_c; "none"
    frames: -w_2 max(1-p_2, 0)^g log p_2; mean over frames."""
    log_p = F.log_softmax(logits, dim=1)
    log_pc = log_p.gather(1, target.unsqueeze(1)).squeeze(1)  # (B, L)
    pc = log_pc.exp()
    weights = torch.tensor(p.class_weights, dtype=logits.dtype, device=logits.device)[target]
    focal = torch.clamp(1 - pc, min=0).pow(p.gamma)
    return -(weights * focal * log_pc).mean()


def spotting_loss(
    logits: torch.Tensor,
    start_end: torch.Tensor,
    apex: torch.Tensor,
    action: torch.Tensor,
    p: LossParams = LossParams(),
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """(total, parts): 1.8 ME-apex + 1.0 ME-start/end + 0.1 ME-action + r (1.0 MaE-apex + 1.0
    MaE-start/end + 0.1 MaE-action). `parts` holds the six unweighted terms (detached)."""
    parts = {
        "me_apex": binary_focal_loss(logits[:, ME_APEX], apex[:, 0], p.alpha_apex, p),
        "me_start_end": start_end_loss(logits[:, ME_START_END], start_end[:, 0], p),
        "me_action": binary_focal_loss(logits[:, ME_ACTION], action[:, 0], p.alpha_action, p),
        "mae_apex": binary_focal_loss(logits[:, MAE_APEX], apex[:, 1], p.alpha_apex, p),
        "mae_start_end": start_end_loss(logits[:, MAE_START_END], start_end[:, 1], p),
        "mae_action": binary_focal_loss(logits[:, MAE_ACTION], action[:, 1], p.alpha_action, p),
    }
    me = (
        p.w_apex * parts["me_apex"]
        + p.w_start_end * parts["me_start_end"]
        + p.w_action * parts["me_action"]
    )
    mae = (
        1.0 * parts["mae_apex"]
        + p.w_start_end * parts["mae_start_end"]
        + p.w_action * parts["mae_action"]
    )
    total = me + p.macro_ratio * mae
    return total, {k: v.detach() for k, v in parts.items()}
