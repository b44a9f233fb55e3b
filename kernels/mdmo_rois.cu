// MDMO features of a batch of frame pairs in one launch: each block takes one pair (its flow field
// and its landmarks) and gives the 12 ROIs' main direction and magnitude, as flowcore's float
// MDMO (mdmo_rois.cuh holds the arithmetic, host-tested against flowcore.mdmo.mdmo to 1e-5).
// Compat MDMO (the reference's 8-bit flow and float32 arithmetic) stays on the CPU.
//
// Launch: gridDim.x = N pairs, blocks of MDMO_LANES threads (one dimension).
//
// Checked without a GPU by tests/test_kernels_build.py (NVRTC, sm_80 and sm_90) and
// tests/test_kernels_host.py; what has run on a GPU is recorded in benchmarks/results/
// (*_h200.*), not here. Launched by flowcore/mdmo_cuda.py.

#include "mdmo_rois.cuh"

#define MDMO_LANES 128  // threads per block (flowcore.cuda_kernels.KERNELS says the same)

struct BlockTeam {  // the threads of one block, working on one set at a time
    int* counts;      // [4], shared
    double* tile;     // [MDMO_LANES], shared
    double* partial;  // [MDMO_LANES / 32], shared

    __device__ int lane() const { return threadIdx.x; }
    __device__ int lanes() const { return MDMO_LANES; }
    __device__ void sync() const { __syncthreads(); }
    __device__ void count(int sector) { atomicAdd(counts + sector, 1); }
    __device__ double sum(double v) {  // every lane gets the team's total
        for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_down_sync(0xffffffffu, v, offset);
        if (lane() % 32 == 0) partial[lane() / 32] = v;
        sync();
        double total = 0.0;
        for (int w = 0; w < MDMO_LANES / 32; ++w) total += partial[w];
        sync();  // every lane has read the partials before the next sum writes them
        return total;
    }
};

extern "C" __global__ void __launch_bounds__(MDMO_LANES) mdmo_rois(
    const float* __restrict__ flow, const double* __restrict__ landmarks, const int height, const int width,
    const int* __restrict__ anchors, const int rois, const int radius, const double nose_grow,
    const MdmoRule* __restrict__ rules, const double norm_eps, float* __restrict__ out) {
    __shared__ int counts[4];
    __shared__ double tile[MDMO_LANES];
    __shared__ double partial[MDMO_LANES / 32];
    BlockTeam team = {counts, tile, partial};
    const MdmoBatch b = {flow, landmarks, height, width, anchors, rois, radius, nose_grow, rules, norm_eps, out};
    mdmo_pair(team, b, blockIdx.x);
}
