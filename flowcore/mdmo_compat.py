"""Reference-compatible MDMO: the reference's numbers (AUW-GCN's feature extraction as it ran:
NumPy 1.x, OpenCV 4.x), with `MDMOParams(compat=True)`. The rules and the border rule are
flowcore.mdmo_rules'; `flowcore.mdmo.mdmo` and `mdmo_reference` come here for compat.

The reference's arithmetic, step by step:
- flow (float32 px) -> the 8-bit code denseflow stored: 255 above 10 px, 0 below -10 px, else
  round-half-even(255 * (f + 10) / 20) in float64; read back as float32(float32(q / 255) - 0.5).
  The JPEG loss of the stored images is not reproduced.
- landmarks rounded half to even (NumPy's `round`, as the reference's landmark files were made);
  b = int((x[42] - x[39]) / 2 * 0.35), a negative b shrinks the nose rectangle as it did there.
- each set (nose rectangle, ROI patch) in row-major order: angles from one `cv2.cartToPolar` call
  on the whole set in float32 (OpenCV's result for a vector depends on the call's length: calls
  of fewer than 16 values take a scalar path that differs in the last bit), compared in float32
  with the sector edges rounded to float32; ROI vectors are float32(v - head).
- the kept vectors: float32 norms sqrt(x * x + y * y), ordered as NumPy 1.x's `np.argsort`
  (introsort) ordered them, ascending, the last int(n * keep) kept; s = their float32 sum added
  one by one in that order; feature = s / float32(float64(|s|) + 1e-6) * float32(float64(sum of
  the kept norms) / k), the norm sum being NumPy's pairwise float32 sum. (NumPy 1.x added the
  1e-6 to a float32 scalar in float64; NumPy 2 would do it in float32.) |s| is
  float32(sqrt(float32(x * x) + float32(y * y))), what NumPy's OpenBLAS dot gave; a BLAS that
  fuses the multiply-add would differ in the last bit.
Checked bit for bit against the reference's rules run under NumPy 1.24.4 and OpenCV 4.6.0 on
300 near-still and moving frames, and against the plain-loop restatement in
tests/test_mdmo_compat.py; OpenCV 4.6.0 and the 5.0.0 installed here give identical float32
angles (all 65,536 8-bit vectors and 200,000 random ones, both call paths), on this x86-64
machine with AVX2/FMA: another CPU family may round OpenCV's angles differently.
Equal norms of different vectors (frequent on near-still faces: mirror codes) are ordered as
NumPy 1.x did, so they are broken the reference's way; a reference run with NumPy 2 or a
SIMD-sorting NumPy 1.25+ would have ordered them otherwise. Where the reference failed (a set
leaving nothing kept gave NaN or an error, patches past the border wrapped or failed), compat
uses the border and zero rules of flowcore.mdmo_rules. Compat runs on the CPU (torch tensors
are moved there and the result moved back), one frame and one set at a time (a few ms a frame).

One implementation (`compat_frame`, one frame and one set at a time), which both `mdmo` and
`mdmo_reference` use; tests/test_mdmo_compat.py checks it against an independent restatement.
NumPy 1.x's argsort (introsort) and pairwise float32 sum are replicated here (`np1_argsort`,
`_pairwise_sum32`).
"""

from __future__ import annotations

import numpy as np

from flowcore.mdmo_rules import (
    EYE_INNER_CORNERS,
    HEAD_SECTOR_EDGES,
    NORM_EPS,
    NOSE_GROW,
    ROI_SECTOR_EDGES,
    MDMOParams,
    flow_angles,
    nose_rectangle,
    patch,
    roi_square,
    sector_index,
)

COMPAT_CLIP_PX = 10.0  # the reference clipped flow to [-10, 10] px before 8-bit storage
COMPAT_LEVELS = 255  # ... as 8-bit codes 0..255
NP1_SMALL_PARTITION = 15  # NumPy 1.x quicksort: partitions this small are insertion-sorted


def compat_codes(flow) -> np.ndarray:
    """Compat: (..., H, W) flow in px -> (..., H, W) uint8, the 8-bit value the reference stored.

    As denseflow's 8-bit writer (bound 10 px): 255 above 10 px, 0 below -10 px, otherwise
    round-half-even(255 * (f + 10) / 20) computed in float64 from the float32 flow value.
    """
    f = np.asarray(flow, dtype=np.float32).astype(np.float64)
    q = np.rint(COMPAT_LEVELS * (f + COMPAT_CLIP_PX) / (2 * COMPAT_CLIP_PX))
    q = np.where(f > COMPAT_CLIP_PX, COMPAT_LEVELS, np.where(f < -COMPAT_CLIP_PX, 0, q))
    return np.nan_to_num(q).astype(np.uint8)  # NaN flow (never produced) reads as code 0


def compat_read_back(codes) -> np.ndarray:
    """Compat: uint8 codes -> float32 values q / 255 - 0.5 ("20 px" units), both steps rounded
    to float32 as the reference's `codes / np.float32(255) - 0.5` does."""
    q = np.asarray(codes, dtype=np.uint8).astype(np.float32)
    return (q / np.float32(COMPAT_LEVELS)) - np.float32(0.5)


def quantise_flow(flow) -> np.ndarray:
    """Compat: (..., H, W) float flow in px -> float32 values the reference read back.

    `compat_read_back(compat_codes(flow))`: clip to [-10, 10] px, 8 bits, q / 255 - 0.5.
    """
    return compat_read_back(compat_codes(flow))


def compat_round_landmarks(landmarks) -> np.ndarray:
    """Compat: landmarks (..., 68, 2) float -> int64, halves to even (NumPy's `round`, as the
    reference rounded its detector's float landmarks before writing them)."""
    return np.rint(np.asarray(landmarks, dtype=np.float64)).astype(np.int64)


def mdmo_compat(flow: np.ndarray, landmarks: np.ndarray, params: MDMOParams) -> np.ndarray:
    """Compat MDMO of N frame pairs: flow (N, 2, H, W) px, landmarks (N, 68, 2) -> (N, R, 2)
    float32 in "20 px" units; one frame at a time through `compat_frame`."""
    values = quantise_flow(flow)  # (N, 2, H, W) float32
    lm = compat_round_landmarks(landmarks)
    out = np.zeros((len(values), len(params.roi_landmarks), 2), np.float32)
    for i in range(len(values)):
        out[i] = compat_frame(values[i], lm[i], params)
    return out


def compat_frame(values: np.ndarray, lm: np.ndarray, params: MDMOParams) -> np.ndarray:
    """One frame: read-back flow (2, H, W) float32, rounded landmarks (68, 2) int -> (R, 2)
    float32. The nose grow b may be negative here (the reference shrinks the rectangle then)."""
    left, right = EYE_INNER_CORNERS
    b = int((lm[right, 0] - lm[left, 0]) / 2 * NOSE_GROW)  # float64, truncated toward zero
    head = compat_main_direction_mean(patch(values, nose_rectangle(lm, b)), HEAD_SECTOR_EDGES,
                                      params.head_keep)
    out = np.zeros((len(params.roi_landmarks), 2), np.float32)
    for i, index in enumerate(params.roi_landmarks):
        vectors = patch(values, roi_square(lm[index], params.roi_radius)) - head  # f32 - f32
        out[i] = compat_main_direction_mean(vectors, ROI_SECTOR_EDGES, params.roi_keep)
    return out


def compat_main_direction_mean(vectors: np.ndarray, edges, keep: float) -> np.ndarray:
    """Rule 4 in the reference's float32 arithmetic: (P, 2) float32 -> (2,) float32.

    Angles by one `cartToPolar` call on the set; sectors by float32 comparisons; n = size of the
    first most populated sector, k = int(n * keep); members sorted by their float32 norms with
    NumPy 1.x's quicksort (`np1_argsort`) and the last k kept; s = their float32 sum, added in
    kept order; feature = s / float32(float64(|s|) + 1e-6) * float32(pairwise sum of the kept
    norms / k), the pairwise sum being NumPy's for a float32 array. Nothing kept: (0, 0).
    """
    zero = np.zeros(2, np.float32)
    if len(vectors) == 0:
        return zero
    sectors = sector_index(flow_angles(vectors[:, 0], vectors[:, 1], compat=True), edges)
    main = int(np.argmax(np.bincount(sectors, minlength=4)))  # ties: the earliest sector
    members = vectors[sectors == main]  # set order preserved
    n = len(members)
    k = int(n * keep)
    if k == 0:
        return zero
    norms = _norms32(members)
    order = _ascending_order(norms, members)[n - k :]
    kept, kept_norms = members[order], norms[order]
    s = np.cumsum(kept, axis=0, dtype=np.float32)[-1]  # one float32 rounding per addition
    denom = np.float32(float(_norms32(s[None])[0]) + NORM_EPS)  # the + 1e-6 happens in float64
    mean = np.float32(float(_pairwise_sum32(kept_norms)) / k)  # float64 division, then float32
    return (s / denom) * mean


def _norms32(v: np.ndarray) -> np.ndarray:
    """(M, 2) float32 -> (M,) float32 sqrt(x * x + y * y), each step rounded to float32."""
    return np.sqrt(v[:, 0] * v[:, 0] + v[:, 1] * v[:, 1])


def _pairwise_sum32(a: np.ndarray) -> np.float32:
    """NumPy's pairwise sum of a contiguous float32 array (what `np.sum` does there): below 8
    values one by one from 0; up to 128 values 8 running partial sums combined as
    ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7)), then the rest one by one; longer arrays
    split at n2 = n // 2 rounded down to a multiple of 8 and the two sums added."""
    n = len(a)
    if n < 8:
        res = np.float32(0)
        for value in a:
            res = np.float32(res + value)
        return res
    if n <= 128:
        whole = n - n % 8
        r = np.cumsum(a[:whole].reshape(-1, 8), axis=0, dtype=np.float32)[-1]
        res = np.float32(np.float32(r[0] + r[1]) + np.float32(r[2] + r[3]))
        res = np.float32(res + np.float32(np.float32(r[4] + r[5]) + np.float32(r[6] + r[7])))
        for value in a[whole:]:
            res = np.float32(res + value)
        return res
    n2 = n // 2
    n2 -= n2 % 8
    return np.float32(_pairwise_sum32(a[:n2]) + _pairwise_sum32(a[n2:]))


def _ascending_order(norms: np.ndarray, members: np.ndarray) -> np.ndarray:
    """Indices sorting `norms` ascending as NumPy 1.x's `np.argsort` did. Equal norms of equal
    vectors can be ordered any way without changing a result, so a stable sort stands in unless
    some equal norms belong to different vectors; then `np1_argsort` gives the exact order."""
    order = np.argsort(norms, kind="stable")
    same_norm = norms[order[1:]] == norms[order[:-1]]
    differ = np.any(members[order[1:]] != members[order[:-1]], axis=1)
    if not np.any(same_norm & differ):
        return order
    return np1_argsort(norms)


def np1_argsort(values: np.ndarray) -> np.ndarray:
    """(n,) float -> (n,) int64: `np.argsort(values)` as NumPy 1.x computed it (its default
    introsort, which the reference ran; NumPy 2 sorts float32 with SIMD code and orders equal
    values differently). Median-of-3 quicksort; partitions of at most 16 values are
    insertion-sorted; the larger part waits on a stack with the depth budget 2 * floor(log2 n)
    counted down per partition, and a waiting part whose budget is below 0 is heap-sorted."""
    v = [float(x) for x in values]
    idx = list(range(len(v)))
    if len(v) < 2:
        return np.array(idx, dtype=np.int64)
    stack = [(0, len(v) - 1, 2 * (len(v).bit_length() - 1))]
    while stack:
        lo, hi, depth = stack.pop()
        if depth < 0:
            _np1_heapsort(v, idx, lo, hi)
            continue
        while hi - lo > NP1_SMALL_PARTITION:
            p = _np1_partition(v, idx, lo, hi)
            depth -= 1
            if p - lo < hi - p:
                stack.append((p + 1, hi, depth))
                hi = p - 1
            else:
                stack.append((lo, p - 1, depth))
                lo = p + 1
        for i in range(lo + 1, hi + 1):  # insertion sort
            moving, j = idx[i], i
            while j > lo and v[moving] < v[idx[j - 1]]:
                idx[j] = idx[j - 1]
                j -= 1
            idx[j] = moving
    return np.array(idx, dtype=np.int64)


def _np1_partition(v, idx, lo, hi) -> int:
    """One quicksort partition of idx[lo..hi] (in place); returns the pivot's final place."""
    mid = lo + ((hi - lo) >> 1)
    if v[idx[mid]] < v[idx[lo]]:
        idx[mid], idx[lo] = idx[lo], idx[mid]
    if v[idx[hi]] < v[idx[mid]]:
        idx[hi], idx[mid] = idx[mid], idx[hi]
    if v[idx[mid]] < v[idx[lo]]:
        idx[mid], idx[lo] = idx[lo], idx[mid]
    pivot = v[idx[mid]]
    i, j = lo, hi - 1
    idx[mid], idx[j] = idx[j], idx[mid]
    while True:
        i += 1
        while v[idx[i]] < pivot:
            i += 1
        j -= 1
        while pivot < v[idx[j]]:
            j -= 1
        if i >= j:
            break
        idx[i], idx[j] = idx[j], idx[i]
    idx[i], idx[hi - 1] = idx[hi - 1], idx[i]
    return i


def _np1_heapsort(v, idx, lo, hi) -> None:
    """NumPy 1.x's heap sort of idx[lo..hi] by v (in place), 1-based heap over the range."""
    n = hi - lo + 1
    a = lambda i: idx[lo + i - 1]  # noqa: E731 -- 1-based view of the range

    def sift(i, n, moving):
        j = 2 * i
        while j <= n:
            if j < n and v[a(j)] < v[a(j + 1)]:
                j += 1
            if not v[moving] < v[a(j)]:
                break
            idx[lo + i - 1] = a(j)
            i, j = j, 2 * j
        idx[lo + i - 1] = moving

    for start in range(n >> 1, 0, -1):
        sift(start, n, a(start))
    while n > 1:
        moving = a(n)
        idx[lo + n - 1] = a(1)
        n -= 1
        sift(1, n, moving)

