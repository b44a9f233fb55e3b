// The start of a TV-L1 warp at one pixel, written once for the GPU kernel (tvl1_warp.cu) and for
// the host build of the tests: the second image I1 and its centred gradient (I1x, I1y) sampled at
// x + u (bicubic, 0 outside), then the warp's constant fields of the iterations. As
// torch_tvl1.solve_level_tensors + warp_cubic + cubic_weights, operation for operation:
//   sx = x + u1, x0 = floor(sx), tx = sx - x0 (float32), likewise y; Keys' cubic weights (a = -0.75)
//   w0 = ((a (t + 1) - 5a) (t + 1) + 8a) (t + 1) - 4a, w1 = ((a + 2) t - (a + 3)) t t + 1,
//   w2 = the same at s = 1 - t, w3 = 1 - w0 - w1 - w2
//   I1w = sum_i wy_i (sum_j wx_j I1(y0 + i - 1, x0 + j - 1)), a tap outside the image reading 0
//   grad  = I1wx^2 + I1wy^2                    (|grad I1(x + u0)|^2)
//   rho_c = I1w - I1wx u1 - I1wy u2 - I0       (rho = rho_c + grad I1 . u)
// The stack holds (I1, I1x, I1y) as 3 planes per sample; the flow u (C components) is read at
// components 0 and 1 only.

#pragma once

#include "tvl1_common.cuh"

#define TVL1_CUBIC_A (-0.75f)  // Keys' parameter, as OpenCV and torch_tvl1.CUBIC_A

// The four weights of the taps at offsets -1, 0, 1, 2 for a sample at fraction t in [0, 1).
__host__ __device__ __forceinline__ void tvl1_cubic_weights(float t, float* w) {
    const float a = TVL1_CUBIC_A;
    const float s = 1.0f - t;
    w[0] = ((a * (t + 1.0f) - 5.0f * a) * (t + 1.0f) + 8.0f * a) * (t + 1.0f) - 4.0f * a;
    w[1] = ((a + 2.0f) * t - (a + 3.0f)) * t * t + 1.0f;
    w[2] = ((a + 2.0f) * s - (a + 3.0f)) * s * s + 1.0f;
    w[3] = 1.0f - w[0] - w[1] - w[2];
}

struct Tvl1WarpBatch {  // one launch of tvl1_warp: N samples
    const float* stack;  // (N, 3, H, W): I1, I1x, I1y
    const float* I0;     // (N, 1, H, W)
    const float* u;      // (N, C, H, W)
    float* I1wx;         // (N, 1, H, W) each, written
    float* I1wy;
    float* grad;
    float* rho_c;
    int c, h, w;
};

// Thread (n, y, x): the warped image and gradient at pixel (y, x) of sample n, and the fields
// of the iterations that follow.
__host__ __device__ __forceinline__ void tvl1_warp_thread(const Tvl1WarpBatch& b, int n, int y, int x) {
    const long plane = (long)b.h * b.w;
    const long i = (long)y * b.w + x;
    const float* u = b.u + n * b.c * plane;
    const float* stack = b.stack + n * 3 * plane;
    const float u1 = u[i], u2 = u[plane + i];
    const float sx = (float)x + u1, sy = (float)y + u2;
    const float fx = floorf(sx), fy = floorf(sy);
    float wx[4], wy[4];
    tvl1_cubic_weights(sx - fx, wx);
    tvl1_cubic_weights(sy - fy, wy);
    // a position past the border by more than the taps reach reads 0 anyway: clamped so that any
    // flow converts to an integer safely
    const long x0 = (long)fminf(fmaxf(fx, -4.0f), (float)b.w + 4.0f);
    const long y0 = (long)fminf(fmaxf(fy, -4.0f), (float)b.h + 4.0f);
    float warped[3] = {0.0f, 0.0f, 0.0f};  // I1w, I1wx, I1wy
    for (int k = 0; k < 3; ++k) {
        for (int r = 0; r < 4; ++r) {
            const long yr = y0 + r - 1;
            if (yr < 0 || yr >= b.h) continue;  // the whole row reads 0
            float row = 0.0f;
            for (int j = 0; j < 4; ++j) {
                const long xj = x0 + j - 1;
                if (xj >= 0 && xj < b.w) row += wx[j] * stack[k * plane + yr * b.w + xj];
            }
            warped[k] += wy[r] * row;
        }
    }
    const long o = n * plane + i;
    b.I1wx[o] = warped[1];
    b.I1wy[o] = warped[2];
    b.grad[o] = warped[1] * warped[1] + warped[2] * warped[2];
    b.rho_c[o] = warped[0] - warped[1] * u1 - warped[2] * u2 - b.I0[o];
}
