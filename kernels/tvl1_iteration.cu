// One fused TV-L1 iteration for a batch of pairs: thresholding, flow update and dual update in
// one launch (the arithmetic is tvl1_iteration.cuh's, tested on the host against the `torch`
// backend). Every field is read once and written once per iteration, instead of the ~25 tensor
// operations (each a pass over memory) of torch_tvl1._inner_step.
//
// Launch: blocks of (32, 8) threads over (W, H) tiles, gridDim.z = N samples. The caller
// double-buffers (u, px, py) -> (u_out, px_out, py_out) and swaps them between iterations.
// A sample whose `active` flag is 0 has stopped: its fields are copied through unchanged.
// `error[n]` (zeroed by the caller) receives the sample's sum of squared flow updates, reduced
// within each warp before one atomicAdd per warp; the caller compares it with epsilon^2 H W to
// clear `active` (per-sample early stopping) without reading it back every iteration.
//
// Status: compiled with nvcc by the tests; not yet run on a GPU (no device was lent to the
// session that wrote it). The next step is the CuPy launch in a `cuda` flow backend and its
// tests on a GPU against the `torch` backend (issue 4).

#include "tvl1_iteration.cuh"

extern "C" __global__ void tvl1_iteration(const float* __restrict__ I1wx, const float* __restrict__ I1wy,
                                          const float* __restrict__ grad, const float* __restrict__ rho_c,
                                          const float* __restrict__ u, const float* __restrict__ px,
                                          const float* __restrict__ py, float* __restrict__ u_out,
                                          float* __restrict__ px_out, float* __restrict__ py_out,
                                          float* __restrict__ error, const unsigned char* __restrict__ active,
                                          const int components, const int height, const int width,
                                          const float l_t, const float theta, const float taut,
                                          const float gamma) {
    const int x = blockIdx.x * blockDim.x + threadIdx.x;
    const int y = blockIdx.y * blockDim.y + threadIdx.y;
    const int n = blockIdx.z;
    const long plane = (long)height * width;
    const long field = components * plane;
    const bool inside = x < width && y < height;

    if (!active[n]) {  // the whole block belongs to one sample: a uniform branch
        if (inside) {
            for (int c = 0; c < components; ++c) {
                const long j = n * field + c * plane + (long)y * width + x;
                u_out[j] = u[j];
                px_out[j] = px[j];
                py_out[j] = py[j];
            }
        }
        return;
    }
    float e = 0.0f;
    if (inside) {
        const Tvl1Fields f = {I1wx + n * plane, I1wy + n * plane, grad + n * plane, rho_c + n * plane,
                              u + n * field, px + n * field, py + n * field, components, height, width};
        const Tvl1Constants k = {l_t, theta, taut, gamma};
        e = tvl1_pixel_step(f, k, y, x, u_out + n * field, px_out + n * field, py_out + n * field);
    }
    // every thread of the warp takes part (those outside the image add 0)
    for (int offset = 16; offset > 0; offset >>= 1) e += __shfl_down_sync(0xffffffffu, e, offset);
    if ((threadIdx.x + threadIdx.y * blockDim.x) % 32 == 0) atomicAdd(error + n, e);
}
