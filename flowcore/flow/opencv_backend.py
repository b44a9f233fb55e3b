"""Backend `opencv`: OpenCV contrib's CPU DualTVL1, the accuracy reference and CPU fallback.

Convention: flow (N, 2, H, W) float32 in pixels holding (dx, dy), y pointing down, from the
first image to the second: first(y, x) ~ second(y + dy, x + dx).
"""

from __future__ import annotations

import numpy as np

from .params import TVL1Params


def _make_solver(params: TVL1Params):
    import cv2

    # A fresh solver per pair: OpenCV lowers its stored scale count when an image is too small
    # for all levels, which would silently change every later call on the same object.
    return cv2.optflow.DualTVL1OpticalFlow_create(
        tau=params.tau,
        lambda_=params.lambda_,
        theta=params.theta,
        nscales=params.n_scales,
        warps=params.n_warps,
        epsilon=params.epsilon,
        innnerIterations=params.inner_iterations,  # sic: OpenCV's keyword has three n
        outerIterations=params.outer_iterations,
        scaleStep=params.scale_step,
        gamma=params.gamma,
        medianFiltering=params.median_filtering,
        useInitialFlow=False,
    )


def flow_opencv(first: np.ndarray, second: np.ndarray, params: TVL1Params) -> np.ndarray:
    """(N, H, W) uint8 or float32 (0..255) pairs -> (N, 2, H, W) float32 flow in pixels.

    OpenCV reads float images as 0..1 and multiplies them by 255, so float input is divided by
    255 first; uint8 input goes through unchanged.
    """
    if first.dtype != np.uint8:
        first = np.asarray(first, np.float32) / np.float32(255)
        second = np.asarray(second, np.float32) / np.float32(255)
    out = np.empty((first.shape[0], 2) + first.shape[1:], np.float32)
    for i in range(first.shape[0]):
        flow = _make_solver(params).calc(
            np.ascontiguousarray(first[i]), np.ascontiguousarray(second[i]), None
        )  # (H, W, 2)
        out[i] = flow.transpose(2, 0, 1)
    return out
