// The median filter of the flow between outer TV-L1 iterations, at one pixel, written once for
// the GPU kernel (tvl1_median.cu) and for the host build of the tests: as
// torch_tvl1.median_filter on the flow components (u1, u2) (size x size window, size 3 or 5,
// replicated border, the middle value of the size^2 sorted), u3 copied; a stopped sample as
// tvl1_common.cuh says. The window is sorted by a bitonic network of 32 values (padded with the
// largest float), which picks exactly the value torch's median picks.

#pragma once

#include "tvl1_common.cuh"

#define TVL1_MEDIAN_VALUES 32             // the network's width: windows up to 5 x 5
#define TVL1_MEDIAN_PAD 3.402823466e+38f  // the largest float32: sorts after every flow value

// Sorts v[0..31] ascending in place (bitonic sorting network, fixed compare-exchanges).
__host__ __device__ __forceinline__ void tvl1_sort32(float* v) {
#pragma unroll
    for (int k = 2; k <= TVL1_MEDIAN_VALUES; k <<= 1) {
#pragma unroll
        for (int j = k >> 1; j > 0; j >>= 1) {
#pragma unroll
            for (int i = 0; i < TVL1_MEDIAN_VALUES; ++i) {
                const int l = i ^ j;
                if (l > i) {
                    const float a = v[i], b = v[l];
                    const bool up = (i & k) == 0;
                    v[i] = up ? fminf(a, b) : fmaxf(a, b);
                    v[l] = up ? fmaxf(a, b) : fminf(a, b);
                }
            }
        }
    }
}

struct Tvl1MedianBatch {  // one launch of tvl1_median: N samples
    const float* u;  // (N, C, H, W), read
    float* u_out;    // (N, C, H, W), written
    const float* errors;
    int t;
    float stop_at;
    int n, c, h, w, size;
};

// Thread (n, y, x): pixel (y, x) of sample n filtered (or copied, or left, as its state says).
__host__ __device__ __forceinline__ void tvl1_median_thread(const Tvl1MedianBatch& b, int state, int n, int y,
                                                            int x) {
    const long plane = (long)b.h * b.w;
    const long i = (long)y * b.w + x;
    const float* u = b.u + n * b.c * plane;
    float* out = b.u_out + n * b.c * plane;
    if (state == TVL1_SKIP) return;
    if (state == TVL1_COPY) {
        tvl1_copy_pixel(u, out, b.c, plane, i);
        return;
    }
    // the 5 x 5 window at fixed places of v (so that v stays in registers); with size 3 its outer
    // ring is padding
    const int r = b.size / 2;
    for (int k = 0; k < 2; ++k) {
        float v[TVL1_MEDIAN_VALUES];
#pragma unroll
        for (int m = 25; m < TVL1_MEDIAN_VALUES; ++m) v[m] = TVL1_MEDIAN_PAD;
#pragma unroll
        for (int dy = -2; dy <= 2; ++dy) {
            const long row = (long)tvl1_clamp(y + dy, 0, b.h - 1) * b.w;
#pragma unroll
            for (int dx = -2; dx <= 2; ++dx) {
                const bool inside = dy >= -r && dy <= r && dx >= -r && dx <= r;
                const int xx = tvl1_clamp(x + dx, 0, b.w - 1);
                v[(dy + 2) * 5 + dx + 2] = inside ? u[k * plane + row + xx] : TVL1_MEDIAN_PAD;
            }
        }
        tvl1_sort32(v);
        out[k * plane + i] = b.size == 3 ? v[4] : v[12];  // the middle of 9 or of 25
    }
    for (int k = 2; k < b.c; ++k) out[k * plane + i] = u[k * plane + i];  // u3 is not filtered
}
