// One fused TV-L1 iteration for a batch of pairs: thresholding, flow update and dual update in
// one launch (the arithmetic is tvl1_iteration.cuh's, tested on the host against the `torch`
// backend). Every field is read once and written once per iteration, instead of the ~25 tensor
// operations (each a pass over memory) of torch_tvl1._inner_step.
//
// Launch: blocks of (32, 8) threads over (W, H) tiles (at least 4 blocks per SM: at most 64
// registers), gridDim.z = N samples; t is the iteration's index in the warp. The caller
// double-buffers (u, px, py) -> (u_out, px_out, py_out) and swaps them between iterations; a
// stopped sample is copied once, then skipped (tvl1_common.cuh). Row t + 1 of `errors` (zeroed by
// the caller) receives each running sample's sum of squared flow updates, reduced within each
// warp before one atomicAdd per warp.
//
// Checked without a GPU by tests/test_kernels_build.py (NVRTC, sm_80 and sm_90: registers,
// spills) and tests/test_kernels_host.py (arithmetic and stopping); what has run on a GPU, and
// how fast, is recorded in benchmarks/results/ (*_h200.*), not here. Launched by
// flowcore/flow/cuda_tvl1.py.

#include "tvl1_iteration.cuh"

extern "C" __global__ void __launch_bounds__(256, 4) tvl1_iteration(
    const float* __restrict__ I1wx, const float* __restrict__ I1wy, const float* __restrict__ grad,
    const float* __restrict__ rho_c, const float* __restrict__ u, const float* __restrict__ px,
    const float* __restrict__ py, float* __restrict__ u_out, float* __restrict__ px_out,
    float* __restrict__ py_out, float* errors, const int t, const float stop_at, const int components,
    const int height, const int width, const float l_t, const float theta, const float taut,
    const float gamma) {
    const int x = blockIdx.x * blockDim.x + threadIdx.x;
    const int y = blockIdx.y * blockDim.y + threadIdx.y;
    const int n = blockIdx.z;
    // the whole block belongs to one sample: the state is uniform over it
    const int state = tvl1_sample_state(errors, t, n, gridDim.z, stop_at);
    if (state == TVL1_SKIP) return;
    const Tvl1Batch b = {I1wx, I1wy, grad, rho_c, u, px, py, u_out, px_out, py_out, errors, t, stop_at,
                         (int)gridDim.z, components, height, width};
    const Tvl1Constants k = {l_t, theta, taut, gamma};
    float e = (x < width && y < height) ? tvl1_iteration_thread(b, k, state, n, y, x) : 0.0f;
    if (state != TVL1_RUN) return;
    // every thread of the warp takes part (those outside the image add 0)
    for (int offset = 16; offset > 0; offset >>= 1) e += __shfl_down_sync(0xffffffffu, e, offset);
    if ((threadIdx.x + threadIdx.y * blockDim.x) % 32 == 0) atomicAdd(errors + (long)(t + 1) * gridDim.z + n, e);
}
