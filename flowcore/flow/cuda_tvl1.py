"""Backend `cuda`: the `torch` backend's TV-L1 (torch_tvl1.py) with every pass over the images of
a pyramid level one kernel launch over the whole batch (kernels/, launched by
flowcore.cuda_kernels):

    per pyramid level (torch: the pyramid, the centred gradient of I1, resizing between levels)
        per warp:                  tvl1_warp       I1 and its gradient warped by u; grad, rho_c
            per outer iteration:   tvl1_median     (u1, u2) median-filtered
                per inner iteration:   tvl1_iteration   thresholding, flow and dual updates

The stopping rule is torch_tvl1._iterate_warp_torch's, per sample, decided on the device
(kernels/tvl1_common.cuh: each launch reads the errors of the iteration before); as the torch
path, the host asks whether any sample still runs before each outer iteration and every
SYNC_EVERY inner iterations. A launch passes precomputed raw pointers: no tensor is made per
iteration. The arithmetic is the torch path's operation for operation (host-tested in
tests/test_kernels_host.py); on the GPU, NVRTC fuses multiplies and adds, and the error sums are
added in another order, so the two paths differ in the last bits and now and then in a stopping
decision.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from flowcore.cuda_kernels import CudaLauncher, device_guard, grid_over, pointer

from .params import TVL1Params
from .torch_tvl1 import SYNC_EVERY, centered_gradient


class _Level:
    """The buffers of one pyramid level: the warp's fields, u, p = (px, py) and the warp's error
    history, double-buffered as the kernels need, with their pointers."""

    def __init__(self, I0, I1, u, params: TVL1Params):
        n, c, h, w = u.shape
        I1x, I1y = centered_gradient(I1)
        self.stack = torch.cat((I1, I1x, I1y), dim=1).contiguous()  # (N, 3, h, w)
        self.I0 = I0.contiguous()
        self.warped = [torch.empty_like(self.I0) for _ in range(4)]  # I1wx, I1wy, grad, rho_c
        self.u = [u.contiguous().clone(), torch.empty_like(u.contiguous())]
        zeros = [torch.zeros_like(self.u[0]) for _ in range(2)]  # p restarts at 0 on every level
        self.p = [zeros, [torch.empty_like(z) for z in zeros]]
        rows = params.outer_iterations * params.inner_iterations + 1
        self.errors = torch.empty(rows, n, dtype=torch.float32, device=u.device)
        self.ptr = {
            "u": [pointer(t) for t in self.u],
            "p": [[pointer(t) for t in pair] for pair in self.p],
            "warped": tuple(pointer(t) for t in self.warped),
            "errors": pointer(self.errors),
        }
        self.ui = self.pi = 0  # which buffer of u, of p holds the current fields
        self.shape = (n, c, h, w)


def _running(errors_row: torch.Tensor, stop_at: np.float32) -> bool:
    """Whether any sample still runs (one read from the device)."""
    return bool((errors_row > float(stop_at)).any())


def _warp(launch, level: _Level, grid) -> None:
    n, c, h, w = level.shape
    args = (pointer(level.stack), pointer(level.I0), level.ptr["u"][level.ui], *level.ptr["warped"],
            np.int32(c), np.int32(h), np.int32(w))
    launch("tvl1_warp", grid, args)


def _iterate_warp(launch, level: _Level, params: TVL1Params, grid, stats: dict) -> None:
    """The outer and inner iterations of one warp, as torch_tvl1._iterate_warp_torch."""
    n, c, h, w = level.shape
    stop_at = np.float32(params.epsilon**2 * h * w)  # torch compares float32 errors in float32
    dims = (np.int32(c), np.int32(h), np.int32(w))
    constants = (np.float32(params.lambda_ * params.theta), np.float32(params.theta),
                 np.float32(params.tau / params.theta), np.float32(params.gamma))
    level.errors.zero_()
    level.errors[0] = math.inf  # every sample runs at first
    u, p, errors = level.ptr["u"], level.ptr["p"], level.ptr["errors"]
    t = 0
    for _ in range(params.outer_iterations):
        if t > 0 and not _running(level.errors[t], stop_at):
            break
        if params.median_filtering > 1:
            launch("tvl1_median", grid, (u[level.ui], u[1 - level.ui], errors, np.int32(t), stop_at,
                                         *dims, np.int32(params.median_filtering)))
            level.ui = 1 - level.ui
            stats["medians"] += 1
        for inner in range(params.inner_iterations):
            ui, pi = level.ui, level.pi
            launch("tvl1_iteration", grid, (*level.ptr["warped"], u[ui], *p[pi], u[1 - ui],
                                            *p[1 - pi], errors, np.int32(t), stop_at, *dims,
                                            *constants))
            level.ui, level.pi, t = 1 - ui, 1 - pi, t + 1
            if (inner + 1) % SYNC_EVERY == 0 and not _running(level.errors[t], stop_at):
                break
    stats["iterations"] += t


def new_stats() -> dict:
    """Counters a solver adds to: launches of each pass."""
    return {"warps": 0, "medians": 0, "iterations": 0}


def solve_level_cuda(I0, I1, u, params: TVL1Params, launch=None, stats: dict | None = None):
    """One pyramid level with the kernels: (N, 1, h, w) images, (N, C, h, w) initial u (float32,
    on a CUDA device) -> refined u (N, C, h, w), as torch_tvl1.solve_level_tensors.

    launch: the kernels' launcher (default: CudaLauncher on u's device and torch's current
    stream; the tests pass a host build). stats: counters (`new_stats`) the level adds to.
    """
    stats = new_stats() if stats is None else stats
    with device_guard(u.device):
        launch = launch or CudaLauncher(u.device)
        level = _Level(I0, I1, u, params)
        n, _, h, w = level.shape
        grid = grid_over(h, w, n)
        for _ in range(params.n_warps):
            _warp(launch, level, grid)
            stats["warps"] += 1
            _iterate_warp(launch, level, params, grid, stats)
        return level.u[level.ui]


def fused_iteration(I1wx, I1wy, grad, rho_c, u, px, py, active, l_t: float, theta: float,
                    taut: float, gamma: float, launch=None):
    """One TV-L1 iteration of a batch in one launch, as torch_tvl1._inner_step: I1wx, I1wy, grad,
    rho_c (N, 1, H, W), u, px, py (N, C, H, W) float32, active (N,) bool. Returns new (u, px, py)
    (a stopped sample copied through) and error (N,) the sums of squared updates (0 where
    stopped). For the tests; the solver above keeps its buffers across iterations."""
    n, c, h, w = u.shape
    fields = [t.contiguous() for t in (I1wx, I1wy, grad, rho_c, u, px, py)]
    outputs = [torch.empty_like(t) for t in fields[4:]]
    # rows t - 1, t, t + 1 of an error history at t = 1: running samples read +inf in row t,
    # stopped ones read 0 there after +inf in row t - 1 (the first launch since they stopped)
    errors = torch.zeros(3, n, dtype=torch.float32, device=u.device)
    errors[0] = math.inf
    errors[1] = torch.where(active.to(u.device), math.inf, 0.0)
    with device_guard(u.device):
        launch = launch or CudaLauncher(u.device)
        args = (*(pointer(t) for t in (*fields, *outputs, errors)), np.int32(1), np.float32(0.0),
                np.int32(c), np.int32(h), np.int32(w), np.float32(l_t), np.float32(theta),
                np.float32(taut), np.float32(gamma))
        launch("tvl1_iteration", grid_over(h, w, n), args)
    return (*outputs, errors[2])
