"""MDMO features on the GPU: flowcore.mdmo's float rules (rules 1-4 of its docstring) for a batch
of frame pairs in one launch of kernels/mdmo_rois.cu, each pair's flow field and landmarks taken
by one block of threads (flowcore.cuda_kernels launches it).

The kernel's arithmetic is the float MDMO's in float64; sums are added in another order and
atan2 / the magnitudes may round otherwise in the last place, so the features agree with
`flowcore.mdmo.mdmo` to about 1e-12 (tests/test_mdmo_kernel.py checks 1e-5 on the host build).
Compat MDMO (the reference's 8-bit flow and float32 steps) stays on the CPU: `mdmo` does it.
"""

from __future__ import annotations

import numpy as np
import torch

from flowcore.cuda_kernels import CudaLauncher, device_guard, pointer
from flowcore.landmarks import N_LANDMARKS
from flowcore.mdmo_rules import (
    EYE_INNER_CORNERS,
    HEAD_SECTOR_EDGES,
    NORM_EPS,
    NOSE_GROW,
    NOSE_LANDMARKS,
    ROI_SECTOR_EDGES,
    MDMOParams,
)


def mdmo_cuda(flow: torch.Tensor, landmarks, params: MDMOParams = MDMOParams(), launch=None):
    """MDMO of N frame pairs in one kernel launch: flow (N, 2, H, W) float32 px (dx, dy) on a CUDA
    device, landmarks (N, 68, 2) of the second frame of each pair (any float tensor or array)
    -> (N, R, 2) float32 (x, y) on the flow's device, R = len(params.roi_landmarks).

    launch: the kernel's launcher (default: CudaLauncher on the flow's device; the tests pass a
    host build, with CPU tensors).
    """
    if params.compat:
        raise ValueError("compat MDMO runs on the CPU: use flowcore.mdmo.mdmo (it moves the flow "
                         "there and back)")
    if not isinstance(flow, torch.Tensor) or flow.dtype != torch.float32:
        raise TypeError(f"flow must be a float32 torch tensor, got "
                        f"{getattr(flow, 'dtype', type(flow).__name__)}")
    if flow.ndim != 4 or flow.shape[1] != 2:
        raise ValueError(f"flow must be (N, 2, H, W), got shape {tuple(flow.shape)}")
    device = flow.device
    lm = torch.as_tensor(landmarks).to(device=device, dtype=torch.float64).contiguous()
    if tuple(lm.shape) != (flow.shape[0], N_LANDMARKS, 2):
        raise ValueError(f"landmarks must be {(flow.shape[0], N_LANDMARKS, 2)}, got shape "
                         f"{tuple(lm.shape)}")
    n, _, height, width = flow.shape
    rois = len(params.roi_landmarks)
    flow = flow.contiguous()
    # the kernel's tables (kernels/mdmo_rois.cuh): anchors = nose a, nose b, eye left, eye right,
    # then the ROIs' landmarks; rules = (4 sector edges, keep) of the head, then of the ROIs
    anchors = torch.tensor([*NOSE_LANDMARKS, *EYE_INNER_CORNERS, *params.roi_landmarks],
                           dtype=torch.int32, device=device)
    rules = torch.tensor([*HEAD_SECTOR_EDGES, params.head_keep, *ROI_SECTOR_EDGES, params.roi_keep],
                         dtype=torch.float64, device=device)
    out = torch.empty(n, rois, 2, dtype=torch.float32, device=device)
    if n == 0:
        return out
    with device_guard(device):
        launch = launch or CudaLauncher(device)
        launch("mdmo_rois", (n, 1, 1), (
            pointer(flow), pointer(lm), np.int32(height), np.int32(width), pointer(anchors),
            np.int32(rois), np.int32(params.roi_radius), np.float64(NOSE_GROW), pointer(rules),
            np.float64(NORM_EPS), pointer(out)))
    return out
