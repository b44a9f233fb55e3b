"""The training losses: known answers on small hand-computed cases."""

import math

import pytest
import torch

from spotting.losses import LossParams, binary_focal_loss, spotting_loss, start_end_loss

EPS = 1e-5


# --- losses -------------------------------------------------------------------------------------


def test_binary_focal_loss_known_answer():
    logits = torch.zeros(1, 4)  # p = 0.5 everywhere
    target = torch.tensor([[1.0, 0.5, 0.0, 0.0]])
    a = 0.9
    pos = [a * 0.5 * math.log(0.5 + EPS), a * 0.0 * math.log(0.5 + EPS)]
    neg = [(1 - a) * abs(0.16 - 0.5) * math.log(0.5 + EPS)] * 2
    expected = -(sum(pos) + sum(neg)) / 4
    assert float(binary_focal_loss(logits, target, a)) == pytest.approx(expected, rel=1e-6)


def test_start_end_loss_known_answer():
    logits = torch.zeros(1, 3, 3)  # uniform softmax: p = 1/3
    target = torch.tensor([[0, 1, 2]])
    w = (0.45, 0.45, 0.1)
    expected = -sum(wc * (2 / 3) * math.log(1 / 3) for wc in w) / 3
    assert float(start_end_loss(logits, target)) == pytest.approx(expected, rel=1e-6)
    # a confident correct prediction costs almost nothing
    sure = torch.tensor([[[20.0], [0.0], [0.0]]])
    assert float(start_end_loss(sure, torch.tensor([[0]]))) < 1e-6


def test_total_loss_weights():
    torch.manual_seed(0)
    logits = torch.randn(2, 10, 8)
    se = torch.randint(0, 3, (2, 2, 8))
    apex = torch.rand(2, 2, 8) * (torch.rand(2, 2, 8) > 0.5)
    action = (torch.rand(2, 2, 8) > 0.5).float()
    p = LossParams(macro_ratio=0.7)
    total, parts = spotting_loss(logits, se, apex, action, p)
    expected = (1.8 * parts["me_apex"] + parts["me_start_end"] + 0.1 * parts["me_action"]
                + 0.7 * (parts["mae_apex"] + parts["mae_start_end"] + 0.1 * parts["mae_action"]))
    assert float(total) == pytest.approx(float(expected), rel=1e-6)
    assert float(parts["mae_start_end"]) == pytest.approx(
        float(start_end_loss(logits[:, 3:6], se[:, 1]))
    )
