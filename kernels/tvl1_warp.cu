// The start of each TV-L1 warp for a batch of pairs in one launch: the bicubic warp of the second
// image and its gradient by the flow, and the fields the iterations read (|grad|^2 and the
// constant part of the residual); tvl1_warp.cuh holds the arithmetic, host-tested against
// torch_tvl1's warp_cubic and solve_level_tensors. Replaces 16 gathers of 3 planes and ~60 tensor
// operations per warp.
//
// Launch: blocks of (32, 8) threads over (W, H) tiles (at least 4 blocks per SM: at most 64
// registers), gridDim.z = N samples. Every sample is warped (a warp restarts the per-sample
// stopping).
//
// Checked without a GPU by tests/test_kernels_build.py (NVRTC, sm_80 and sm_90) and
// tests/test_kernels_host.py; what has run on a GPU is recorded in benchmarks/results/
// (*_h200.*), not here. Launched by flowcore/flow/cuda_tvl1.py.

#include "tvl1_warp.cuh"

extern "C" __global__ void __launch_bounds__(256, 4) tvl1_warp(
    const float* __restrict__ stack, const float* __restrict__ I0, const float* __restrict__ u,
    float* __restrict__ I1wx, float* __restrict__ I1wy, float* __restrict__ grad, float* __restrict__ rho_c,
    const int components, const int height, const int width) {
    const int x = blockIdx.x * blockDim.x + threadIdx.x;
    const int y = blockIdx.y * blockDim.y + threadIdx.y;
    if (x >= width || y >= height) return;
    const Tvl1WarpBatch b = {stack, I0, u, I1wx, I1wy, grad, rho_c, components, height, width};
    tvl1_warp_thread(b, blockIdx.z, y, x);
}
