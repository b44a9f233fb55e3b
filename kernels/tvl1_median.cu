// The median filter of the flow (u1, u2) between outer TV-L1 iterations for a batch of pairs in
// one launch; tvl1_median.cuh holds the arithmetic, host-tested against torch_tvl1.median_filter.
// Replaces the unfold into (N, 2, H, W, 25) and the median over it.
//
// Launch: blocks of (32, 8) threads over (W, H) tiles (at least 4 blocks per SM: at most 64
// registers), gridDim.z = N samples; t is the index of the iteration that follows (the stopping
// rule of tvl1_common.cuh). size: 3 or 5.
//
// Checked without a GPU by tests/test_kernels_build.py (NVRTC, sm_80 and sm_90) and
// tests/test_kernels_host.py; what has run on a GPU is recorded in benchmarks/results/
// (*_h200.*), not here. Launched by flowcore/flow/cuda_tvl1.py.

#include "tvl1_median.cuh"

extern "C" __global__ void __launch_bounds__(256, 4) tvl1_median(
    const float* __restrict__ u, float* __restrict__ u_out, const float* __restrict__ errors, const int t,
    const float stop_at, const int components, const int height, const int width, const int size) {
    const int x = blockIdx.x * blockDim.x + threadIdx.x;
    const int y = blockIdx.y * blockDim.y + threadIdx.y;
    const int n = blockIdx.z;
    const int state = tvl1_sample_state(errors, t, n, gridDim.z, stop_at);
    if (state == TVL1_SKIP || x >= width || y >= height) return;
    const Tvl1MedianBatch b = {u, u_out, errors, t, stop_at, (int)gridDim.z, components, height, width, size};
    tvl1_median_thread(b, state, n, y, x);
}
