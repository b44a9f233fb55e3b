// What the TV-L1 kernels share: the qualifiers of code built both for the GPU (NVRTC, through
// CuPy) and for the host (g++, in the tests), the batch layout, and the per-sample stopping rule.
//
// Layout: every field is a batch of N samples, row-major and contiguous: a plane (N, 1, H, W)
// or a field of C components (N, C, H, W), float32.
//
// Stopping (per sample, as torch_tvl1._iterate_warp_torch): within one warp, iteration t of a
// sample runs while the sum of its squared flow updates in iteration t - 1 exceeds stop_at
// (epsilon^2 H W). The caller keeps the warp's error history `errors`, (T + 1) rows of N floats:
// row 0 holds +inf (every sample runs at first), iteration t adds its sample's sum into row t + 1
// (zeroed beforehand). A stopped sample adds nothing, so its later rows stay 0 and it stays
// stopped; the median filter between outer iterations reads the same rows. The host decides
// whether to go on from a whole row now and then, without reading the errors back every time.
//
// The caller double-buffers the fields a kernel updates (in -> out, then swapped). Kernels skip a
// stopped sample instead of copying its fields through every time: the first launch after the
// sample stopped copies them into the other buffer (TVL1_COPY), after which both buffers hold the
// final fields and later launches leave the sample alone (TVL1_SKIP).

#pragma once

// No standard header on the GPU side: NVRTC (CuPy's run-time compiler) has none.
#ifndef __CUDACC__  // host build: the qualifiers mean nothing
#include <math.h>
#define __host__
#define __device__
#define __forceinline__ inline
#endif

#define TVL1_MAX_COMPONENTS 3
#define TVL1_FLOAT_EPS 1.1920928955078125e-07f  // float32 machine epsilon (FLT_EPSILON)

enum Tvl1SampleState { TVL1_RUN = 0, TVL1_COPY = 1, TVL1_SKIP = 2 };

// What launch t (iteration t, or the median filter before it) does to sample n.
__host__ __device__ __forceinline__ int tvl1_sample_state(const float* errors, int t, int n,
                                                          int samples, float stop_at) {
    if (errors[(long)t * samples + n] > stop_at) return TVL1_RUN;
    if (t == 0 || errors[(long)(t - 1) * samples + n] > stop_at) return TVL1_COPY;
    return TVL1_SKIP;
}

// Copies pixel (y, x) of all components of sample `field` (C, H, W) into `out`.
__host__ __device__ __forceinline__ void tvl1_copy_pixel(const float* field, float* out, int c,
                                                         long plane, long i) {
    for (int k = 0; k < c; ++k) out[k * plane + i] = field[k * plane + i];
}

__host__ __device__ __forceinline__ int tvl1_clamp(int v, int lo, int hi) { return v < lo ? lo : (v > hi ? hi : v); }
