"""Backend `torch`: TV-L1 optical flow with batched tensor operations, on CPU or CUDA.

The same algorithm as OpenCV's CPU DualTVL1 (Zach, Pock & Bischof 2007, in the form of
Sanchez Perez et al., IPOL 2013), step for step:

    pyramid (bilinear resize by scale_step, no pre-smoothing; levels under 16 px dropped)
    for each level, coarsest first; the dual variable p restarts at zero on every level:
        for each of n_warps warps:
            warp I1 and its centred gradient by the flow u (bicubic, zero outside)
            repeat up to outer_iterations times:
                median-filter the flow (5 x 5, replicated border)
                repeat up to inner_iterations times:
                    v   = u + TH(rho(u))           thresholding step, lambda * theta
                    u   = v + theta * div(p)       the update; error = sum |u_new - u_old|^2
                    p   = (p + tau/theta * grad u) / (1 + tau/theta * |grad u|)
                until error <= epsilon**2 * H * W  (both loops, per sample)
        upsample u to the next level (bilinear) and divide the flow by scale_step

With gamma > 0 an illumination term u3 joins the flow (rho gains gamma * u3; u3 has its own
dual variable, is neither median-filtered nor rescaled), as in OpenCV.

Every sample stops on its own: a finished sample is frozen (its u and p no longer change),
so its result never depends on the other samples of the batch.

`flow_torch` takes the solver of one pyramid level as an argument: `solve_level_tensors` below
(the readable reference, and the CUDA path of this backend), `tvl1_numba.solve_level_numba`
(fused numba kernels on the CPU, one thread per sample) or `cuda_tvl1.solve_level_cuda` (the
`cuda` backend: CUDA kernels): the coarse-to-fine skeleton every tensor backend shares; each
backend's `level_solver` (flowcore/flow/backends.py) is the one place that chooses.

Convention: images (N, H, W) float32 grey values 0..255; flow (N, 2, H, W) float32 in pixels
holding (dx, dy), y pointing down, from the first image to the second:
first(y, x) ~ second(y + dy, x + dx).
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F

from .params import TVL1Params

MIN_LEVEL_SIZE = 16  # px: OpenCV stops the pyramid before a level narrower than this
FLOAT_EPS = torch.finfo(torch.float32).eps  # OpenCV's guard against a zero image gradient


# ---------------------------------------------------------------------------------------------
# Resampling and finite differences
# ---------------------------------------------------------------------------------------------
def _round_half_even(x: float) -> int:
    return int(round(x))  # Python rounds half to even, like OpenCV's cvRound


def _linear_axis(n_out: int, n_in: int, scale: float, device) -> tuple:
    """Indices and weights of 1-D linear resampling, OpenCV's half-pixel convention.

    scale: input pixels per output pixel. Returns (i0, i1, w1) with out = (1-w1) x[i0] + w1 x[i1].
    """
    src = (torch.arange(n_out, device=device, dtype=torch.float64) + 0.5) * scale - 0.5
    src = src.clamp(0, n_in - 1)  # replicate border
    i0 = src.floor().long().clamp(max=n_in - 1)
    i1 = (i0 + 1).clamp(max=n_in - 1)
    w1 = (src - i0).to(torch.float32)
    return i0, i1, w1


def resize_linear(
    x: torch.Tensor, size: tuple[int, int], scale: tuple[float, float]
) -> torch.Tensor:
    """(N, C, H, W) -> (N, C, h, w) bilinear, as cv2.resize(INTER_LINEAR) without antialiasing.

    scale: (input rows per output row, input columns per output column); OpenCV uses 1/fx when
    the factor is given and in/out sizes when the size is given, so the caller passes it.
    """
    h, w = size
    iy0, iy1, wy = _linear_axis(h, x.shape[-2], scale[0], x.device)
    ix0, ix1, wx = _linear_axis(w, x.shape[-1], scale[1], x.device)
    rows = x.index_select(-2, iy0) * (1 - wy)[:, None] + x.index_select(-2, iy1) * wy[:, None]
    return rows.index_select(-1, ix0) * (1 - wx) + rows.index_select(-1, ix1) * wx


def build_pyramid(image: torch.Tensor, params: TVL1Params) -> list[torch.Tensor]:
    """(N, 1, H, W) -> levels, finest first, each scale_step times the previous (rounded).

    Stops early when a level would be narrower than 16 px (OpenCV drops that level).
    """
    levels = [image]
    for _ in range(1, params.n_scales):
        h, w = levels[-1].shape[-2:]
        size = (_round_half_even(h * params.scale_step), _round_half_even(w * params.scale_step))
        if min(size) < MIN_LEVEL_SIZE:
            break
        step = 1.0 / params.scale_step
        levels.append(resize_linear(levels[-1], size, (step, step)))
    return levels


def pad_replicate(x: torch.Tensor, r: int) -> torch.Tensor:
    """(N, C, H, W) -> (N, C, H + 2r, W + 2r), edge pixels repeated (index_select: on CPU much
    faster than F.pad(mode="replicate"))."""
    h, w = x.shape[-2:]
    rows = (torch.arange(-r, h + r, device=x.device)).clamp(0, h - 1)
    cols = (torch.arange(-r, w + r, device=x.device)).clamp(0, w - 1)
    return x.index_select(-2, rows).index_select(-1, cols)


def centered_gradient(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, C, H, W) -> (d/dx, d/dy), central differences 0.5 (f[i+1] - f[i-1]), replicated
    border."""
    padded = pad_replicate(x, 1)
    dx = 0.5 * (padded[..., 1:-1, 2:] - padded[..., 1:-1, :-2])
    dy = 0.5 * (padded[..., 2:, 1:-1] - padded[..., :-2, 1:-1])
    return dx, dy


def forward_gradient(u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, C, H, W) -> (du/dx, du/dy), forward differences, zero on the last column / row."""
    ux = F.pad(u[..., :, 1:] - u[..., :, :-1], (0, 1, 0, 0))
    uy = F.pad(u[..., 1:, :] - u[..., :-1, :], (0, 0, 0, 1))
    return ux, uy


def divergence(px: torch.Tensor, py: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) x 2 -> div p, backward differences; the adjoint of -forward_gradient."""
    return (px - F.pad(px[..., :, :-1], (1, 0, 0, 0))) + (py - F.pad(py[..., :-1, :], (0, 0, 1, 0)))


CUBIC_A = -0.75  # Keys' cubic convolution parameter used by OpenCV (and PyTorch)


def cubic_weights(t: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Weights of the taps at offsets -1, 0, 1, 2 for a sample at fraction t in [0, 1).

    Exact at t = 0 (weights 0, 1, 0, 0), so a zero flow reproduces the image exactly.
    """
    a = CUBIC_A
    s = 1.0 - t
    w0 = ((a * (t + 1) - 5 * a) * (t + 1) + 8 * a) * (t + 1) - 4 * a
    w1 = ((a + 2) * t - (a + 3)) * t * t + 1
    w2 = ((a + 2) * s - (a + 3)) * s * s + 1
    return w0, w1, w2, 1.0 - w0 - w1 - w2


def warp_cubic(x: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) sampled at (x + dx, y + dy) -> (N, C, H, W), bicubic, 0 outside.

    flow: (N, 2, H, W) pixels. Matches cv2.remap(INTER_CUBIC, BORDER_CONSTANT 0) (each of the
    4 x 4 taps outside the image reads 0), without its 1/32-pixel quantisation of positions.
    """
    n, c, h, w = x.shape
    ys = torch.arange(h, device=x.device, dtype=x.dtype)[:, None]
    xs = torch.arange(w, device=x.device, dtype=x.dtype)
    sx = xs + flow[:, 0]  # (N, H, W) sampling positions in pixels
    sy = ys + flow[:, 1]
    x0, y0 = sx.floor(), sy.floor()
    wx, wy = cubic_weights(sx - x0), cubic_weights(sy - y0)
    x0, y0 = x0.long(), y0.long()
    flat = x.reshape(n, c, h * w)
    out = torch.zeros_like(x)
    for i in range(4):
        yi = y0 + (i - 1)
        y_ok = (yi >= 0) & (yi < h)
        row = torch.zeros_like(x)
        for j in range(4):
            xj = x0 + (j - 1)
            ok = (y_ok & (xj >= 0) & (xj < w)).to(x.dtype)
            index = (yi.clamp(0, h - 1) * w + xj.clamp(0, w - 1)).reshape(n, 1, h * w)
            taps = flat.gather(2, index.expand(n, c, h * w)).reshape(n, c, h, w)
            row += (wx[j] * ok)[:, None] * taps
        out += wy[i][:, None] * row
    return out


def median_filter(u: torch.Tensor, size: int) -> torch.Tensor:
    """(N, C, H, W) -> same, size x size median with replicated border (cv2.medianBlur)."""
    r = size // 2
    padded = pad_replicate(u, r)
    patches = padded.unfold(2, size, 1).unfold(3, size, 1)  # (N, C, H, W, size, size)
    return patches.reshape(*u.shape, size * size).median(dim=-1).values


# ---------------------------------------------------------------------------------------------
# One pyramid level
# ---------------------------------------------------------------------------------------------
def _inner_step(I1wx, I1wy, grad, rho_c, u, px, py, keep, l_t: float, theta: float,
                taut: float, gamma: float):
    """One TV-L1 iteration for the samples where keep (N, 1, 1, 1) is true; others unchanged.

    I1wx, I1wy, grad, rho_c: (N, 1, H, W); u, px, py: (N, C, H, W) holding the flow (u1, u2)
    (and with C = 3 the illumination term u3, weighted by gamma) and the x / y parts of their
    dual variables (p11, p21[, p31]) / (p12, p22[, p32]).
    Returns (u, px, py, error) with error (N,) the sum of squared updates.
    """
    # Thresholding step: v = u + TH(rho(u)), rho the linearised brightness residual
    rho = rho_c + I1wx * u[:, :1] + I1wy * u[:, 1:2]
    direction = [I1wx, I1wy]  # d rho / d u
    if u.shape[1] == 3:
        rho = rho + gamma * u[:, 2:]
        direction.append(torch.full_like(I1wx, gamma))
    lam_grad = l_t * grad  # grad = |grad I1|^2, without gamma^2 (as OpenCV)
    inside = torch.where(grad > FLOAT_EPS, -rho / grad.clamp_min(FLOAT_EPS), 0.0)
    coef = torch.where(rho < -lam_grad, l_t, torch.where(rho > lam_grad, -l_t, inside))
    v = u + coef * torch.cat(direction, dim=1)
    # Flow update: u = v + theta div p
    u_new = v + theta * divergence(px, py)
    error = (u_new - u).square().sum(dim=(1, 2, 3))
    u = torch.where(keep, u_new, u)
    # Dual update (Chambolle's fixed point): p = (p + taut grad u) / (1 + taut |grad u|)
    ux, uy = forward_gradient(u)
    denom = 1.0 + taut * torch.sqrt(ux.square() + uy.square())
    px = torch.where(keep, (px + taut * ux) / denom, px)
    py = torch.where(keep, (py + taut * uy) / denom, py)
    return u, px, py, error


SYNC_EVERY = 10  # inner iterations between checks whether any sample is still running


def _iterate_warp_torch(I1wx, I1wy, grad, rho_c, u, px, py, params: TVL1Params, step):
    """The outer/inner iterations of one warp, batched tensors, per-sample stopping.

    I1wx, I1wy, grad, rho_c: (N, 1, H, W); u, px, py: (N, C, H, W) (see `_inner_step`).
    A sample stops once its update error <= epsilon^2 H W and is frozen from then on, so the
    loop may run on (a few iterations, without effect) until all samples have stopped; the
    host checks that only every SYNC_EVERY iterations. Returns the new (u, px, py).
    step: the iteration, `_inner_step`'s signature.
    """
    n, _, h, w = u.shape
    l_t = params.lambda_ * params.theta
    taut = params.tau / params.theta
    scaled_eps = params.epsilon**2 * h * w  # OpenCV: sum of squared updates vs eps^2 * area
    active = torch.ones(n, dtype=torch.bool, device=u.device)
    for _ in range(params.outer_iterations):
        if not bool(active.any()):
            break
        keep = active[:, None, None, None]
        if params.median_filtering > 1:  # on the flow (u1, u2) only, not on u3
            filtered = median_filter(u[:, :2], params.median_filtering)
            u = torch.where(keep, torch.cat((filtered, u[:, 2:]), dim=1), u)
        for inner in range(params.inner_iterations):
            keep = active[:, None, None, None]
            u, px, py, error = step(I1wx, I1wy, grad, rho_c, u, px, py, keep, l_t,
                                    params.theta, taut, params.gamma)
            active = active & (error > scaled_eps)
            if (inner + 1) % SYNC_EVERY == 0 and not bool(active.any()):
                break
    return u, px, py


def solve_level_tensors(I0, I1, u, params: TVL1Params, step=_inner_step):
    """One pyramid level with tensor operations: (N, 1, h, w) images, (N, C, h, w) initial u ->
    refined u (N, C, h, w). `step`: one iteration, `_inner_step`'s signature (e.g. a
    torch.compile'd `_inner_step`)."""
    I1x, I1y = centered_gradient(I1)
    stack = torch.cat((I1, I1x, I1y), dim=1)
    px = torch.zeros_like(u)  # dual variables, x parts (p11, p21[, p31]), y parts (p12, ...)
    py = torch.zeros_like(u)
    for _ in range(params.n_warps):
        I1w, I1wx, I1wy = warp_cubic(stack, u[:, :2]).split(1, dim=1)
        grad = I1wx.square() + I1wy.square()  # |grad I1(x + u0)|^2
        rho_c = I1w - I1wx * u[:, :1] - I1wy * u[:, 1:2] - I0  # rho = rho_c + grad I1 . u
        u, px, py = _iterate_warp_torch(I1wx, I1wy, grad, rho_c, u, px, py, params, step)
    return u


@contextlib.contextmanager
def _single_torch_thread():
    """Run torch operations on the calling thread only, restoring the setting afterwards.

    Used on CPU. Beside the numba kernels the tensor operations are small, and torch's pool
    would leave its threads spinning on the cores the kernels want (about 2x slower on 2
    cores). The tensor path on its own is no better off: on a busy 2-core machine torch's
    thread synchronisation made it up to 30x slower than on one thread.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def flow_torch(first: torch.Tensor, second: torch.Tensor, params: TVL1Params,
               solve_level) -> torch.Tensor:
    """(N, H, W) float32 grey 0..255 pairs -> (N, 2, H, W) float32 flow in pixels, same device.

    solve_level: the solver of one pyramid level, `solve_level_tensors`'s signature
    (`solve_level_tensors`, `tvl1_numba.solve_level_numba` on CPU tensors, or the tensor path with
    another iteration step); a backend's `level_solver` chooses it for a device.
    """
    on_cpu = first.device.type == "cpu"
    with _single_torch_thread() if on_cpu else contextlib.nullcontext():
        I0s = build_pyramid(first[:, None].float(), params)
        I1s = build_pyramid(second[:, None].float(), params)
        n = first.shape[0]
        n_comp = 3 if params.gamma > 0 else 2  # u1, u2 and the illumination term u3
        u = torch.zeros(n, n_comp, *I0s[-1].shape[-2:], dtype=torch.float32, device=first.device)
        for level in range(len(I0s) - 1, -1, -1):
            u = solve_level(I0s[level], I1s[level], u, params)
            if level > 0:
                (h, w), (h0, w0) = I0s[level - 1].shape[-2:], u.shape[-2:]
                u = resize_linear(u, (h, w), (h0 / h, w0 / w))
                u[:, :2] /= params.scale_step  # flow in pixels grows with the level; u3 does not
        return u[:, :2].contiguous()
