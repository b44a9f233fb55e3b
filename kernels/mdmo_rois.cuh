// MDMO features of one frame pair (flowcore/mdmo.py, float rules 1-4), written once for the GPU
// kernel (mdmo_rois.cu: the threads of a block work on one pair) and for the host build of the
// tests (one lane does everything), which checks it against flowcore.mdmo.mdmo to 1e-5. Float64
// throughout, as flowcore's float MDMO:
//   1. landmarks rounded to floor(v + 0.5)
//   2. head motion: the nose rectangle (bounding box of the two nose landmarks grown by
//      b = max(trunc(nose_grow (x[eye right] - x[eye left]) / 2), 0) px) -> main-direction mean
//      with the head rule
//   3. each ROI: the (2r + 1)^2 patch around its landmark, minus the head vector -> main-direction
//      mean with the ROI rule
//   4. main-direction mean of a set: sector of each vector by atan2 in [0, 2 pi) against the
//      rule's four edges; the most populated sector (ties: the earliest); its int(n keep) vectors
//      of largest magnitude (ties: the earliest in row-major order); s / (|s| + norm_eps)
//      * mean magnitude, s their sum; nothing kept: (0, 0)
// Pixels outside the image are dropped. Sums are added in another order than NumPy's, and libm's
// atan2 and NumPy's hypot may round otherwise (a few units in the last place).
//
// The set algorithm is written for a team of lanes (`Team`): lane(), lanes(), sync(), a shared
// count per sector, a shared tile of lanes() doubles and a team-wide sum. A vector's rank among
// its sector's members (how many outrank it) is counted against tiles of the set, so no set size
// limit and no sort are needed; sets are small (ROIs 121 px, the nose rectangle a few hundred).

#pragma once

#ifndef __CUDACC__  // host build: the qualifiers mean nothing
#include <math.h>
#define __host__
#define __device__
#define __forceinline__ inline
#define __noinline__
#endif

#define MDMO_PI 3.141592653589793  // math.pi
#define MDMO_FAR 1073741824        // a landmark coordinate that is not finite or absurd: far outside

struct MdmoRule {  // one main-direction mean
    double edges[4];  // the left edges of sectors 0..3 (radians); sector 3 wraps around
    double keep;      // the fraction of the main sector's vectors kept
};

struct MdmoBox {  // inclusive pixel bounds, clipped to the image; empty when x1 < x0 or y1 < y0
    int x0, x1, y0, y1;
};

struct MdmoSet {  // the flow vectors of a box minus one vector (the head motion)
    const float* fx;  // (H, W) dx
    const float* fy;  // (H, W) dy
    int width;
    MdmoBox box;
    double hx, hy;

    __host__ __device__ int size() const {
        return box.x1 < box.x0 || box.y1 < box.y0 ? 0 : (box.x1 - box.x0 + 1) * (box.y1 - box.y0 + 1);
    }
    __host__ __device__ void vector(int p, double& x, double& y) const {  // p-th in row-major order
        const int cols = box.x1 - box.x0 + 1;
        const long i = (long)(box.y0 + p / cols) * width + box.x0 + p % cols;
        x = (double)fx[i] - hx;
        y = (double)fy[i] - hy;
    }
};

__host__ __device__ __forceinline__ int mdmo_round(double v) {  // rule 1
    if (!(v > -MDMO_FAR && v < MDMO_FAR)) return -MDMO_FAR;
    return (int)floor(v + 0.5);
}

__host__ __device__ __forceinline__ MdmoBox mdmo_clip(int x0, int x1, int y0, int y1, int height, int width) {
    const MdmoBox box = {x0 < 0 ? 0 : x0, x1 > width - 1 ? width - 1 : x1, y0 < 0 ? 0 : y0,
                         y1 > height - 1 ? height - 1 : y1};
    return box;
}

// Sector 0..3 of vector (x, y): [e0, e1) -> 0, [e1, e2) -> 1, [e2, e3) -> 2, else 3.
__host__ __device__ __forceinline__ int mdmo_sector(double x, double y, const MdmoRule& rule) {
    double a = atan2(y, x);
    if (a < 0) a += 2 * MDMO_PI;
    if (a >= rule.edges[0] && a < rule.edges[1]) return 0;
    if (a >= rule.edges[1] && a < rule.edges[2]) return 1;
    if (a >= rule.edges[2] && a < rule.edges[3]) return 2;
    return 3;
}

// |(x, y)| as sqrt(x x + y y), built without fused multiply-adds (--fmad=false on the GPU,
// -ffp-contract=off on the host), so mirrored vectors get equal magnitudes as with NumPy's hypot;
// the two differ at most in the last place (CUDA's hypot would call a slow path that spills).
__host__ __device__ __forceinline__ double mdmo_magnitude(double x, double y) { return sqrt(x * x + y * y); }

// Magnitude of the p-th vector of the set if it lies in sector `main`, else -1. Not inlined: the
// float64 atan2, division and square root have slow paths that are calls, and where they are
// inlined into the ranking loops ptxas spills registers around them; as a call of its own it
// saves them in its frame instead (the stack budget of mdmo_rois in flowcore/cuda_kernels.py).
__host__ __device__ __noinline__ double mdmo_member(const MdmoSet& set, int p, int main, const MdmoRule& rule,
                                                       double& x, double& y) {
    set.vector(p, x, y);
    return mdmo_sector(x, y, rule) == main ? mdmo_magnitude(x, y) : -1.0;
}

// Rule 4 for the team: the main-direction mean of `set` into out[0..1] (every lane gets it).
template <class Team>
__host__ __device__ void mdmo_main_direction_mean(Team& team, const MdmoSet& set, const MdmoRule& rule,
                                                  double norm_eps, double* out) {
    const int size = set.size();
    if (team.lane() == 0)
        for (int s = 0; s < 4; ++s) team.counts[s] = 0;
    team.sync();
    for (int p = team.lane(); p < size; p += team.lanes()) {
        double x, y;
        set.vector(p, x, y);
        team.count(mdmo_sector(x, y, rule));
    }
    team.sync();
    int main = 0;
    for (int s = 1; s < 4; ++s)
        if (team.counts[s] > team.counts[main]) main = s;  // the first maximum
    const int keep = (int)floor((double)team.counts[main] * rule.keep);
    team.sync();  // every lane has read the counts before the next set resets them
    double sx = 0.0, sy = 0.0, smag = 0.0;
    for (int base = 0; keep > 0 && base < size; base += team.lanes()) {
        const int i = base + team.lane();
        double xi = 0.0, yi = 0.0, mi = -1.0;
        if (i < size) mi = mdmo_member(set, i, main, rule, xi, yi);
        int rank = 0;  // members that outrank vector i: larger, or as large and earlier
        for (int tile = 0; tile < size; tile += team.lanes()) {
            const int j = tile + team.lane();
            double xj, yj;
            team.tile[team.lane()] = j < size ? mdmo_member(set, j, main, rule, xj, yj) : -1.0;
            team.sync();
            const int count = size - tile < team.lanes() ? size - tile : team.lanes();
            for (int k = 0; mi >= 0.0 && k < count; ++k) {
                const double m = team.tile[k];
                rank += m > mi || (m == mi && tile + k < i);
            }
            team.sync();
        }
        if (mi >= 0.0 && rank < keep) {
            sx += xi;
            sy += yi;
            smag += mi;
        }
    }
    sx = team.sum(sx);
    sy = team.sum(sy);
    smag = team.sum(smag);
    out[0] = out[1] = 0.0;
    if (keep > 0) {
        const double denom = mdmo_magnitude(sx, sy) + norm_eps;
        const double mean = smag / keep;
        out[0] = sx / denom * mean;
        out[1] = sy / denom * mean;
    }
}

struct MdmoBatch {  // one launch of mdmo_rois: N frame pairs
    const float* flow;        // (N, 2, H, W) dx, dy in px
    const double* landmarks;  // (N, 68, 2) x, y of the second frame of each pair
    int height, width;
    const int* anchors;  // nose landmarks a, b; eye inner corners left, right; then the R ROIs'
    int rois;            // R
    int radius;          // r
    double nose_grow;
    const MdmoRule* rules;  // head, ROI
    double norm_eps;
    float* out;  // (N, R, 2) x, y
};

// Pair n: the head vector, then each ROI's feature; lane 0 writes them.
template <class Team>
__host__ __device__ void mdmo_pair(Team& team, const MdmoBatch& b, int n) {
    const long plane = (long)b.height * b.width;
    const double* lm = b.landmarks + n * 68 * 2;
    const int* a = b.anchors;
    const int xa = mdmo_round(lm[2 * a[0]]), ya = mdmo_round(lm[2 * a[0] + 1]);
    const int xb = mdmo_round(lm[2 * a[1]]), yb = mdmo_round(lm[2 * a[1] + 1]);
    const int left = mdmo_round(lm[2 * a[2]]), right = mdmo_round(lm[2 * a[3]]);
    int grow = (int)(b.nose_grow * (double)(right - left) / 2);  // truncated toward zero
    if (grow < 0) grow = 0;
    MdmoSet set = {b.flow + n * 2 * plane, b.flow + n * 2 * plane + plane, b.width,
                   mdmo_clip((xa < xb ? xa : xb) - grow, (xa > xb ? xa : xb) + grow, (ya < yb ? ya : yb) - grow,
                             (ya > yb ? ya : yb) + grow, b.height, b.width),
                   0.0, 0.0};
    double head[2], feature[2];
    mdmo_main_direction_mean(team, set, b.rules[0], b.norm_eps, head);
    set.hx = head[0];
    set.hy = head[1];
    for (int r = 0; r < b.rois; ++r) {
        const int x = mdmo_round(lm[2 * a[4 + r]]), y = mdmo_round(lm[2 * a[4 + r] + 1]);
        set.box = mdmo_clip(x - b.radius, x + b.radius, y - b.radius, y + b.radius, b.height, b.width);
        mdmo_main_direction_mean(team, set, b.rules[1], b.norm_eps, feature);
        if (team.lane() == 0) {
            b.out[(n * b.rois + r) * 2] = (float)feature[0];
            b.out[(n * b.rois + r) * 2 + 1] = (float)feature[1];
        }
    }
}
