// One TV-L1 iteration at one pixel, written once for the GPU kernel (tvl1_iteration.cu) and for
// a host build that tests it against the `torch` backend's `_inner_step` on the CPU
// (tests/test_kernels_host.py), so the arithmetic is checked without a GPU.
//
// Symbols as flowcore/flow/torch_tvl1.py (Sanchez Perez et al., IPOL 2013): for each sample,
//   I1wx, I1wy, grad, rho_c  (H, W)     gradient of the warped second image, |grad|^2, and the
//                                       constant part of the linearised residual
//   u, px, py                (C, H, W)  flow (u1, u2[, u3 illumination]) and its dual variables
// One iteration, per component k:
//   rho   = rho_c + I1wx u1 + I1wy u2 (+ gamma u3)
//   v_k   = u_k + coef(rho) dir_k                         (thresholding; dir = I1wx, I1wy, gamma)
//   u'_k  = v_k + theta div p_k                           (div: backward differences, 0 outside)
//   p'_k  = (p_k + taut grad u'_k) / (1 + taut |grad u'_k|)  (grad: forward differences, 0 at the
//                                                           last column / row)
// The dual update needs u' at the right and lower neighbours: a thread recomputes them from the
// old fields instead of waiting for other threads, so one launch does the whole iteration
// (u and p are double-buffered by the caller). The returned error is sum_k (u'_k - u_k)^2.
// `tvl1_iteration_thread` is one thread's whole work in a launch over a batch, stopping included
// (tvl1_common.cuh).

#pragma once

#include "tvl1_common.cuh"

struct Tvl1Fields {  // one sample; planes row-major, contiguous
    const float* I1wx;
    const float* I1wy;
    const float* grad;
    const float* rho_c;
    const float* u;   // (C, H, W)
    const float* px;  // (C, H, W)
    const float* py;  // (C, H, W)
    int c, h, w;
};

struct Tvl1Constants {
    float l_t;    // lambda * theta
    float theta;
    float taut;   // tau / theta
    float gamma;  // weight of the illumination term (C = 3)
};

// u' (all components) at pixel (y, x), from the old fields.
__host__ __device__ __forceinline__ void tvl1_updated_flow(const Tvl1Fields& f, const Tvl1Constants& k,
                                                           int y, int x, float* out) {
    const long plane = (long)f.h * f.w;
    const long i = (long)y * f.w + x;
    const float g = f.grad[i];
    float rho = f.rho_c[i] + f.I1wx[i] * f.u[i] + f.I1wy[i] * f.u[plane + i];
    if (f.c == 3) rho += k.gamma * f.u[2 * plane + i];
    const float lam_grad = k.l_t * g;
    const float inside = g > TVL1_FLOAT_EPS ? -rho / fmaxf(g, TVL1_FLOAT_EPS) : 0.0f;
    const float coef = rho < -lam_grad ? k.l_t : (rho > lam_grad ? -k.l_t : inside);
    const float dir[TVL1_MAX_COMPONENTS] = {f.I1wx[i], f.I1wy[i], k.gamma};
#pragma unroll  // fixed indices keep the arrays in registers
    for (int c = 0; c < TVL1_MAX_COMPONENTS; ++c) {
        if (c >= f.c) break;
        const long j = c * plane + i;
        const float div = (f.px[j] - (x > 0 ? f.px[j - 1] : 0.0f)) + (f.py[j] - (y > 0 ? f.py[j - f.w] : 0.0f));
        out[c] = (f.u[j] + coef * dir[c]) + k.theta * div;
    }
}

// The whole iteration at pixel (y, x): writes u', p' there and returns the pixel's error.
__host__ __device__ __forceinline__ float tvl1_pixel_step(const Tvl1Fields& f, const Tvl1Constants& k, int y,
                                                          int x, float* u_out, float* px_out, float* py_out) {
    const long plane = (long)f.h * f.w;
    const long i = (long)y * f.w + x;
    const bool has_right = x + 1 < f.w;
    const bool has_down = y + 1 < f.h;
    float here[TVL1_MAX_COMPONENTS], right[TVL1_MAX_COMPONENTS], down[TVL1_MAX_COMPONENTS];
    tvl1_updated_flow(f, k, y, x, here);
    if (has_right) tvl1_updated_flow(f, k, y, x + 1, right);
    if (has_down) tvl1_updated_flow(f, k, y + 1, x, down);
    float error = 0.0f;
#pragma unroll
    for (int c = 0; c < TVL1_MAX_COMPONENTS; ++c) {
        if (c >= f.c) break;
        const long j = c * plane + i;
        const float step = here[c] - f.u[j];
        error += step * step;
        u_out[j] = here[c];
        const float ux = has_right ? right[c] - here[c] : 0.0f;
        const float uy = has_down ? down[c] - here[c] : 0.0f;
        const float denom = 1.0f + k.taut * sqrtf(ux * ux + uy * uy);
        px_out[j] = (f.px[j] + k.taut * ux) / denom;
        py_out[j] = (f.py[j] + k.taut * uy) / denom;
    }
    return error;
}

struct Tvl1Batch {  // one launch of tvl1_iteration: N samples, iteration t of the warp
    const float* I1wx;   // (N, 1, H, W)
    const float* I1wy;
    const float* grad;
    const float* rho_c;
    const float* u;      // (N, C, H, W), read
    const float* px;
    const float* py;
    float* u_out;        // (N, C, H, W), written
    float* px_out;
    float* py_out;
    float* errors;       // (T + 1, N) error history (tvl1_common.cuh)
    int t;
    float stop_at;       // epsilon^2 H W
    int n, c, h, w;
};

// Thread (n, y, x) of iteration t: updates pixel (y, x) of sample n as its state says; returns
// the pixel's share of the sample's error (0 unless the sample runs).
__host__ __device__ __forceinline__ float tvl1_iteration_thread(const Tvl1Batch& b, const Tvl1Constants& k,
                                                                int state, int n, int y, int x) {
    const long plane = (long)b.h * b.w;
    const long field = b.c * plane;
    const long i = (long)y * b.w + x;
    if (state == TVL1_SKIP) return 0.0f;
    if (state == TVL1_COPY) {
        tvl1_copy_pixel(b.u + n * field, b.u_out + n * field, b.c, plane, i);
        tvl1_copy_pixel(b.px + n * field, b.px_out + n * field, b.c, plane, i);
        tvl1_copy_pixel(b.py + n * field, b.py_out + n * field, b.c, plane, i);
        return 0.0f;
    }
    const Tvl1Fields f = {b.I1wx + n * plane, b.I1wy + n * plane, b.grad + n * plane, b.rho_c + n * plane,
                          b.u + n * field, b.px + n * field, b.py + n * field, b.c, b.h, b.w};
    return tvl1_pixel_step(f, k, y, x, b.u_out + n * field, b.px_out + n * field, b.py_out + n * field);
}
