"""CPU kernels of the `torch` backend: one pyramid level per sample, fused with numba.

`torch_tvl1` holds the readable tensor reference; this module computes the same thing per
sample: bicubic warp, linearisation, then the iterations with one pass over the pixels for
(thresholding, divergence, flow update), one per flow component for (forward gradient, dual
update), and an exact median filter, instead of dozens of tensor operations. Samples run in
parallel (numba prange, one sample per thread), each stopping on its own.

Symbols as in Sanchez Perez et al., IPOL 2013: u = (u1, u2) the flow (and u3, the
illumination term, when gamma > 0), v its auxiliary copy, p1 = (p11, p12), p2 = (p21, p22)
(and p3) the dual variables, kept as px = (p11, p21[, p31]) and py = (p12, p22[, p32]);
rho the linearised residual, l_t = lambda * theta, taut = tau / theta.

Compiled on first use (about 25 s) and cached beside the sources by numba.
"""

from __future__ import annotations

import math

import numba
import numpy as np
import torch

from .params import TVL1Params
from .torch_tvl1 import centered_gradient, cubic_weights

FLOAT_EPS = np.float32(np.finfo(np.float32).eps)
# Reassociation lets the error sums vectorise (no approximate maths, no NaN assumptions);
# error_model="numpy" drops the Python zero-division check that blocks vectorisation.
_FASTMATH = {"reassoc", "contract", "nsz"}


@numba.njit(cache=True, inline="always")
def _compare_exchange(win, i, j, w):
    """win[i, :w], win[j, :w] <- elementwise (min, max): one branch-free, vectorisable step."""
    for x in range(w):
        a = win[i, x]
        b = win[j, x]
        win[i, x] = min(a, b)
        win[j, x] = max(a, b)


@numba.njit(cache=True, fastmath=_FASTMATH, error_model="numpy")
def _median_filter(u, out, size, win):
    """(H, W) float32 -> out (H, W): size x size median, replicated border (cv2.medianBlur).

    Exact forgetful selection, one image row at a time (win: (size^2, W) scratch): of the n
    window values keep n // 2 + 2, drop their minimum and maximum (neither can be the median of
    the rest), take in the next value, repeat; three values remain, whose median is the answer.
    """
    h, w = u.shape
    r = size // 2
    n = size * size
    for y in range(h):
        k = 0
        for dy in range(-r, r + 1):
            yy = min(max(y + dy, 0), h - 1)
            for dx in range(-r, r + 1):
                for x in range(r, w - r):  # interior: a plain shifted copy, vectorises
                    win[k, x] = u[yy, x + dx]
                for x in range(min(r, w)):  # borders: replicate the edge pixels
                    win[k, x] = u[yy, min(max(x + dx, 0), w - 1)]
                for x in range(max(w - r, r), w):
                    win[k, x] = u[yy, min(max(x + dx, 0), w - 1)]
                k += 1
        m = n // 2 + 2  # size of the kept set win[:m]
        for nxt in range(m, n + 1):
            for i in range(1, m):  # minimum to row 0
                _compare_exchange(win, 0, i, w)
            for i in range(1, m - 1):  # maximum to row m - 1
                _compare_exchange(win, i, m - 1, w)
            if nxt == n:
                break
            for x in range(w):  # drop both, take in the next value
                win[0, x] = win[nxt, x]
            m -= 1
        # m == 3 kept values win[0..2] minus the dropped extremes: the middle one, win[1]
        for x in range(w):
            out[y, x] = win[1, x]


@numba.njit(cache=True, inline="always")
def _threshold(g, rho, l_t):
    """Coefficient c of the thresholding step v = u + c (I1x, I1y[, gamma]) for residual rho."""
    # step along the data gradient so that rho(v) shrinks by at most l_t |grad I1|^2
    lg = l_t * g
    safe_g = g if g > FLOAT_EPS else np.float32(1.0)
    inside = -rho / safe_g if g > FLOAT_EPS else np.float32(0.0)
    return l_t if rho < -lg else (-l_t if rho > lg else inside)


@numba.njit(cache=True, fastmath=_FASTMATH, error_model="numpy")
def _update_flow(Ix, Iy, grad, rho_c, u, px, py, l_t, theta, gamma, coef):
    """Thresholding step, divergence of p and u = v + theta div p, in place; returns the error
    sum |u_new - u_old|^2 over the components.

    u, px, py: (C, H, W), C = 2 (u1, u2) or 3 (u1, u2, u3: the illumination term, gamma > 0).
    div p by backward differences, p taken as zero left of / above the image (the first
    column is done apart so the rest of a row vectorises). coef: (W,) scratch.
    """
    n_comp, h, w = u.shape
    error = 0.0
    zero = np.float32(0.0)
    for y in range(h):
        y_up = max(y - 1, 0)
        up = np.float32(1.0) if y > 0 else zero  # p above the first row counts as zero
        row_error = np.float32(0.0)
        for x in range(w):
            left = np.float32(1.0) if x > 0 else zero  # p left of the first column: zero
            x_left = max(x - 1, 0)
            a1 = u[0, y, x]
            a2 = u[1, y, x]
            ix = Ix[y, x]
            iy = Iy[y, x]
            rho = rho_c[y, x] + ix * a1 + iy * a2
            if n_comp == 3:
                rho += gamma * u[2, y, x]
            c = _threshold(grad[y, x], rho, l_t)
            coef[x] = c
            div1 = px[0, y, x] - left * px[0, y, x_left] + py[0, y, x] - up * py[0, y_up, x]
            div2 = px[1, y, x] - left * px[1, y, x_left] + py[1, y, x] - up * py[1, y_up, x]
            n1 = a1 + c * ix + theta * div1
            n2 = a2 + c * iy + theta * div2
            row_error += (n1 - a1) * (n1 - a1) + (n2 - a2) * (n2 - a2)
            u[0, y, x] = n1
            u[1, y, x] = n2
        if n_comp == 3:  # u3 = v3 + theta div p3, v3 = u3 + c gamma
            for x in range(w):
                left = np.float32(1.0) if x > 0 else zero
                x_left = max(x - 1, 0)
                a3 = u[2, y, x]
                div3 = px[2, y, x] - left * px[2, y, x_left] + py[2, y, x] - up * py[2, y_up, x]
                n3 = a3 + coef[x] * gamma + theta * div3
                row_error += (n3 - a3) * (n3 - a3)
                u[2, y, x] = n3
        error += row_error
    return error


@numba.njit(cache=True, fastmath=_FASTMATH, error_model="numpy")
def _update_dual(u, px, py, taut):
    """Dual update of one flow component u (u1 or u2) and its dual p = (px, py), in place:
    p = (p + taut grad u) / (1 + taut |grad u|), grad u by forward differences, zero on the last
    column / row (the last column is done apart so the rest of a row vectorises)."""
    h, w = u.shape
    one = np.float32(1.0)
    for y in range(h):
        y_dn = min(y + 1, h - 1)  # on the last row u[y_dn] - u[y] = 0
        for x in range(w - 1):
            ux = u[y, x + 1] - u[y, x]
            uy = u[y_dn, x] - u[y, x]
            d = one + taut * math.sqrt(ux * ux + uy * uy)
            px[y, x] = (px[y, x] + taut * ux) / d
            py[y, x] = (py[y, x] + taut * uy) / d
        uy = u[y_dn, w - 1] - u[y, w - 1]
        d = one + taut * abs(uy)
        px[y, w - 1] = px[y, w - 1] / d
        py[y, w - 1] = (py[y, w - 1] + taut * uy) / d


@numba.njit(cache=True)
def _iterate_one(Ix, Iy, grad, rho_c, u, px, py, l_t, theta, taut, gamma, scaled_eps, n_outer,
                 n_inner, median):
    """One sample, one warp: up to n_outer x n_inner iterations, in place on u, px, py
    ((C, H, W) each, see `_update_flow`). The median filter acts on u1 and u2 only."""
    error = np.inf
    tmp = np.empty_like(u[0])
    win = np.empty((max(median * median, 1), u.shape[2]), np.float32)
    coef = np.empty(u.shape[2], np.float32)
    for _ in range(n_outer):
        if error <= scaled_eps:
            break
        if median > 1:
            for k in range(2):
                _median_filter(u[k], tmp, median, win)
                u[k] = tmp
        for _ in range(n_inner):
            if error <= scaled_eps:
                break
            error = _update_flow(Ix, Iy, grad, rho_c, u, px, py, l_t, theta, gamma, coef)
            for k in range(u.shape[0]):
                _update_dual(u[k], px[k], py[k], taut)


# the same formula as the tensor path, compiled for scalars
_cubic_weights = numba.njit(cache=True, inline="always")(cubic_weights)


@numba.njit(cache=True, error_model="numpy")
def _warp_cubic(images, u1, u2, out):
    """images (C, H, W) sampled at (x + u1, y + u2) -> out (C, H, W), bicubic, 0 outside."""
    c, h, w = images.shape
    for y in range(h):
        for x in range(w):
            sx = x + np.float64(u1[y, x])
            sy = y + np.float64(u2[y, x])
            fx = math.floor(sx)
            fy = math.floor(sy)
            wxs = _cubic_weights(sx - fx)  # taps at columns fx - 1 .. fx + 2
            wys = _cubic_weights(sy - fy)
            x0 = int(fx) - 1
            y0 = int(fy) - 1
            for k in range(c):
                acc = 0.0
                for i in range(4):
                    yi = y0 + i
                    if 0 <= yi < h:  # taps outside the image read 0
                        row = 0.0
                        for j in range(4):
                            xj = x0 + j
                            if 0 <= xj < w:
                                row += wxs[j] * images[k, yi, xj]
                        acc += wys[i] * row
                out[k, y, x] = acc


@numba.njit(cache=True, fastmath=_FASTMATH, error_model="numpy")
def _linearise(I0, warped, u1, u2, grad, rho_c):
    """From the warped (I1, I1x, I1y): |grad I1|^2 and rho_c = I1w - grad I1 . u0 - I0."""
    h, w = I0.shape
    for y in range(h):
        for x in range(w):
            ix = warped[1, y, x]
            iy = warped[2, y, x]
            grad[y, x] = ix * ix + iy * iy
            rho_c[y, x] = warped[0, y, x] - ix * u1[y, x] - iy * u2[y, x] - I0[y, x]


@numba.njit(cache=True)
def _solve_level_one(I0, I1_stack, u, l_t, theta, taut, gamma, scaled_eps, n_warps, n_outer,
                     n_inner, median):
    """One sample, one pyramid level, in place on u (C, H, W): n_warps warps of I1_stack (I1,
    I1x, I1y: (3, H, W)), each followed by the iterations; p restarts at zero on the level."""
    warped = np.empty_like(I1_stack)
    grad = np.empty_like(I0)
    rho_c = np.empty_like(I0)
    px = np.zeros_like(u)  # dual variables: x parts (p11, p21[, p31]), y parts (p12, p22[, p32])
    py = np.zeros_like(u)
    for _ in range(n_warps):
        _warp_cubic(I1_stack, u[0], u[1], warped)
        _linearise(I0, warped, u[0], u[1], grad, rho_c)
        _iterate_one(warped[1], warped[2], grad, rho_c, u, px, py, l_t, theta, taut, gamma,
                     scaled_eps, n_outer, n_inner, median)


@numba.njit(cache=True, parallel=True)
def _solve_level_batch(I0, I1_stack, u, l_t, theta, taut, gamma, scaled_eps, n_warps, n_outer,
                       n_inner, median):
    for i in numba.prange(u.shape[0]):  # one sample per thread, each stopping on its own
        _solve_level_one(I0[i], I1_stack[i], u[i], l_t, theta, taut, gamma, scaled_eps,
                         n_warps, n_outer, n_inner, median)


def solve_level_numba(I0, I1, u, params: TVL1Params):
    """One pyramid level on CPU tensors: I0, I1 (N, 1, H, W), initial u (N, C, H, W) (C = 2, or 3
    with the illumination term u3 when gamma > 0) -> refined u, same shape. Same result as
    torch_tvl1.solve_level_tensors (`flow_torch`'s `solve_level`)."""
    if I0.device.type != "cpu":
        raise ValueError(f"the numba level solver needs CPU tensors, got device {I0.device}")
    h, w = u.shape[-2:]
    I1x, I1y = centered_gradient(I1)

    def arr(t):
        return np.ascontiguousarray(t.detach().numpy(), dtype=np.float32)

    u_np = arr(u).copy()
    _solve_level_batch(
        arr(I0[:, 0]), arr(torch.cat((I1, I1x, I1y), dim=1)), u_np,
        np.float32(params.lambda_ * params.theta), np.float32(params.theta),
        np.float32(params.tau / params.theta), np.float32(params.gamma),
        float(params.epsilon**2 * h * w), params.n_warps, params.outer_iterations,
        params.inner_iterations, params.median_filtering,
    )
    return torch.from_numpy(u_np)
