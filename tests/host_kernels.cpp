// The kernels of kernels/ built for the host (tests/kernel_host.py compiles this with g++): each
// `NAME_host` takes the launch's grid and block, then the kernel's own arguments, and runs the
// kernel's per-thread work (the __host__ __device__ functions of kernels/*.cuh) for every block
// and thread in turn. Only what the GPU shells (kernels/*.cu) do around that work is restated
// here: the thread's coordinates, the early exits, and the error sum (atomicAdd there).

#include "mdmo_rois.cuh"
#include "tvl1_iteration.cuh"
#include "tvl1_median.cuh"
#include "tvl1_warp.cuh"

// Calls work(x, y) for every thread of a (gx, gy) grid of (bx, by) blocks, as blockIdx * blockDim
// + threadIdx gives them on the GPU.
template <class Work>
void for_each_thread(unsigned gx, unsigned gy, unsigned bx, unsigned by, Work work) {
    for (unsigned block_y = 0; block_y < gy; ++block_y)
        for (unsigned block_x = 0; block_x < gx; ++block_x)
            for (unsigned ty = 0; ty < by; ++ty)
                for (unsigned tx = 0; tx < bx; ++tx) work((int)(block_x * bx + tx), (int)(block_y * by + ty));
}

extern "C" void tvl1_warp_host(unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned,
                               const float* stack, const float* I0, const float* u, float* I1wx, float* I1wy,
                               float* grad, float* rho_c, int components, int height, int width) {
    const Tvl1WarpBatch b = {stack, I0, u, I1wx, I1wy, grad, rho_c, components, height, width};
    for (unsigned n = 0; n < gz; ++n)
        for_each_thread(gx, gy, bx, by, [&](int x, int y) {
            if (x < width && y < height) tvl1_warp_thread(b, n, y, x);
        });
}

extern "C" void tvl1_median_host(unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned,
                                 const float* u, float* u_out, const float* errors, int t, float stop_at,
                                 int components, int height, int width, int size) {
    const Tvl1MedianBatch b = {u, u_out, errors, t, stop_at, (int)gz, components, height, width, size};
    for (unsigned n = 0; n < gz; ++n) {
        const int state = tvl1_sample_state(errors, t, n, gz, stop_at);
        if (state == TVL1_SKIP) continue;
        for_each_thread(gx, gy, bx, by, [&](int x, int y) {
            if (x < width && y < height) tvl1_median_thread(b, state, n, y, x);
        });
    }
}

extern "C" void tvl1_iteration_host(unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned,
                                    const float* I1wx, const float* I1wy, const float* grad, const float* rho_c,
                                    const float* u, const float* px, const float* py, float* u_out, float* px_out,
                                    float* py_out, float* errors, int t, float stop_at, int components, int height,
                                    int width, float l_t, float theta, float taut, float gamma) {
    const Tvl1Batch b = {I1wx, I1wy, grad, rho_c, u, px, py, u_out, px_out, py_out, errors, t, stop_at,
                         (int)gz, components, height, width};
    const Tvl1Constants k = {l_t, theta, taut, gamma};
    for (unsigned n = 0; n < gz; ++n) {
        const int state = tvl1_sample_state(errors, t, n, gz, stop_at);
        if (state == TVL1_SKIP) continue;
        float e = 0.0f;
        for_each_thread(gx, gy, bx, by, [&](int x, int y) {
            if (x < width && y < height) e += tvl1_iteration_thread(b, k, state, n, y, x);
        });
        if (state == TVL1_RUN) errors[(long)(t + 1) * gz + n] += e;
    }
}

struct SerialTeam {  // one lane: the team of mdmo_rois.cuh on the host
    int counts[4];
    double tile[1];

    int lane() const { return 0; }
    int lanes() const { return 1; }
    void sync() const {}
    void count(int sector) { ++counts[sector]; }
    double sum(double v) const { return v; }
};

extern "C" void mdmo_rois_host(unsigned gx, unsigned, unsigned, unsigned, unsigned, unsigned, const float* flow,
                               const double* landmarks, int height, int width, const int* anchors, int rois,
                               int radius, double nose_grow, const MdmoRule* rules, double norm_eps,
                               float* out) {
    const MdmoBatch b = {flow, landmarks, height, width, anchors, rois, radius, nose_grow, rules, norm_eps, out};
    for (unsigned n = 0; n < gx; ++n) {
        SerialTeam team;
        mdmo_pair(team, b, n);
    }
}
