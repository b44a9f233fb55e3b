"""Compat MDMO equals the reference's numbers: checked against a plain-loop float32 restatement
of the reference's rules written here from the spec (docs/datasets.md, "Compat features").

The restatement works one value at a time with NumPy float32 scalars (each operation rounded to
float32) and follows these rules of the reference (AUW-GCN's feature extraction, run with
NumPy 1.x and OpenCV 4.x):
- flow f (float32 px) is stored as the 8-bit code 255 if f > 10, 0 if f < -10, else
  round-half-even(255 * (f + 10) / 20) in float64, and read back as float32(float32(q / 255) - 0.5);
- landmarks are rounded half to even; the nose rectangle grows by int((x42 - x39) / 2 * 0.35);
- a set's angles come from one `cv2.cartToPolar` call over the set in row-major order, compared
  in float32 with the sector edges rounded to float32; the first most populated sector wins;
- its k = int(n * keep) largest float32 norms sqrt(x*x + y*y) are kept, in the order of NumPy
  1.x's `argsort` (introsort), ascending, the last k;
- s = their float32 sum added one by one in that order; the feature is
  s / float32(float64(|s|) + 1e-6) * float32(float64(NumPy pairwise sum of the kept norms) / k).
"""

import math

import cv2
import numpy as np
import pytest

from flowcore import mdmo_compat as mdmo_module
from flowcore.mdmo import (
    HEAD_SECTOR_EDGES,
    ROI_SECTOR_EDGES,
    MDMOParams,
    flow_angles,
    mdmo,
    mdmo_reference,
    quantise_flow,
    sector_index,
)
from flowcore.mdmo_compat import np1_argsort
from flowcore.rois import ROI_LANDMARKS

F32 = np.float32
COMPAT = MDMOParams(compat=True)

# NumPy 1.24.4's np.argsort(values) of three float32 arrays full of ties (recorded with that
# version; NumPy 2 orders these ties differently on machines with SIMD sorting).
NUMPY1_ARGSORT = [
    ([0, 0, 3, 1, 2, 2, 2, 0, 1, 0, 1, 3, 2, 0, 2, 0, 3, 3, 3, 2, 3, 1, 0, 2, 1, 2, 3, 1, 3, 0, 1,
      3, 0, 2, 1, 2, 3, 3, 3, 2],
     [0, 1, 15, 13, 32, 7, 29, 9, 22, 24, 27, 10, 8, 34, 3, 30, 21, 33, 25, 35, 23, 19, 39, 4, 14,
      5, 12, 6, 37, 36, 2, 38, 20, 28, 26, 16, 17, 18, 31, 11]),
    ([2, 1, 3, 3, 0, 0, 0, 0, 2, 1, 1, 0, 3, 2, 2, 0, 0, 3, 1, 3, 3, 0, 1, 2, 1, 0, 2, 1, 1, 1, 1,
      1, 3, 1, 2, 3, 0, 1, 2, 0],
     [39, 21, 16, 15, 11, 7, 25, 5, 4, 36, 6, 22, 1, 27, 28, 18, 29, 37, 31, 24, 10, 9, 30, 33, 34,
      26, 0, 38, 14, 13, 8, 23, 20, 17, 32, 12, 35, 3, 2, 19]),
    ([3, 3, 3, 3, 0, 3, 3, 1, 0, 0, 3, 3, 2, 2, 3, 0, 3, 3, 0, 3, 3, 1, 1, 3, 3, 0, 2, 1, 1, 3, 2,
      1, 3, 2, 3, 0, 3, 3, 2, 1],
     [25, 35, 4, 18, 8, 9, 15, 22, 21, 27, 28, 39, 7, 31, 26, 13, 30, 33, 38, 12, 32, 29, 34, 36,
      37, 0, 23, 20, 17, 16, 14, 11, 10, 6, 5, 3, 2, 1, 24, 19]),
]  # values are multiples of 0.25, given here as quarters


# ---- the restatement ------------------------------------------------------------------------


def ref_code(f) -> int:
    v = float(F32(f))
    if v > 10:
        return 255
    if v < -10:
        return 0
    return int(round(255 * (v + 10) / 20))  # Python's round: halves to even, as cvRound


def ref_value(q: int):
    return F32(F32(F32(q) / F32(255)) - F32(0.5))


def ref_sector(angle, edges) -> int:
    e = [F32(x) for x in edges]
    for s in range(3):
        if angle >= e[s] and angle < e[s + 1]:
            return s
    return 3  # >= e3, or in [0, e0)


def ref_angles(vectors):
    xs = np.array([v[0] for v in vectors], dtype=np.float32)
    ys = np.array([v[1] for v in vectors], dtype=np.float32)
    return [F32(a) for a in cv2.cartToPolar(xs, ys)[1].ravel()]


def ref_argsort(values):
    """NumPy 1.x's argsort: median-of-3 quicksort while a part has more than 16 values (the
    larger part waits with the depth left), insertion sort below, heap sort for a waiting part
    whose depth budget (2 * floor(log2 n), one less per partition) went below 0."""
    idx = list(range(len(values)))

    def key(i):
        return values[idx[i]]

    def heap_sort(lo, hi):
        def sift(root, end, item):  # heap positions 1..end over idx[lo..]
            child = 2 * root
            while child <= end:
                if child < end and key(lo + child - 1) < key(lo + child):
                    child += 1
                if values[item] < key(lo + child - 1):
                    idx[lo + root - 1] = idx[lo + child - 1]
                    root, child = child, 2 * child
                else:
                    break
            idx[lo + root - 1] = item

        n = hi - lo + 1
        for root in range(n // 2, 0, -1):
            sift(root, n, idx[lo + root - 1])
        for end in range(n, 1, -1):
            item = idx[lo + end - 1]
            idx[lo + end - 1] = idx[lo]
            sift(1, end - 1, item)

    def partition(lo, hi):
        mid = lo + (hi - lo) // 2
        for a, b in ((mid, lo), (hi, mid), (mid, lo)):
            if key(a) < key(b):
                idx[a], idx[b] = idx[b], idx[a]
        pivot = key(mid)
        idx[mid], idx[hi - 1] = idx[hi - 1], idx[mid]
        i, j = lo, hi - 1
        while True:
            i += 1
            while key(i) < pivot:
                i += 1
            j -= 1
            while pivot < key(j):
                j -= 1
            if i >= j:
                break
            idx[i], idx[j] = idx[j], idx[i]
        idx[i], idx[hi - 1] = idx[hi - 1], idx[i]
        return i

    waiting = [(0, len(values) - 1, 2 * int(math.log2(len(values))) if values else 0)]
    while waiting:
        lo, hi, depth = waiting.pop()
        if depth < 0:
            heap_sort(lo, hi)
            continue
        while hi - lo > 15:
            p = partition(lo, hi)
            depth -= 1
            waiting.append((p + 1, hi, depth) if p - lo < hi - p else (lo, p - 1, depth))
            lo, hi = (lo, p - 1) if p - lo < hi - p else (p + 1, hi)
        for i in range(lo + 1, hi + 1):
            j = i
            while j > lo and key(j) < key(j - 1):
                idx[j], idx[j - 1] = idx[j - 1], idx[j]
                j -= 1
    return idx


def ref_pairwise_sum(values):
    """NumPy's float32 sum of a contiguous array: pairwise, blocks of 8 partial sums."""
    n = len(values)
    if n < 8:
        total = F32(0)
        for v in values:
            total = F32(total + v)
        return total
    if n <= 128:
        r = list(values[:8])
        i = 8
        while i < n - n % 8:
            r = [F32(r[j] + values[i + j]) for j in range(8)]
            i += 8
        total = F32(F32(F32(r[0] + r[1]) + F32(r[2] + r[3]))
                    + F32(F32(r[4] + r[5]) + F32(r[6] + r[7])))
        for v in values[i:]:
            total = F32(total + v)
        return total
    half = n // 2 - (n // 2) % 8
    return F32(ref_pairwise_sum(values[:half]) + ref_pairwise_sum(values[half:]))


def ref_main_direction_mean(vectors, edges, keep):
    zero = (F32(0), F32(0))
    if not vectors:
        return zero
    groups = [[], [], [], []]
    for v, a in zip(vectors, ref_angles(vectors)):
        groups[ref_sector(a, edges)].append(v)
    counts = [len(g) for g in groups]
    members = groups[counts.index(max(counts))]
    n, k = len(members), int(len(members) * keep)
    if k == 0:
        return zero
    norms = [F32(np.sqrt(F32(F32(x * x) + F32(y * y)))) for x, y in members]
    kept = ref_argsort(norms)[n - k:]
    sx, sy = F32(0), F32(0)
    for i in kept:
        sx, sy = F32(sx + members[i][0]), F32(sy + members[i][1])
    length = F32(np.sqrt(F32(F32(sx * sx) + F32(sy * sy))))
    denom = F32(float(length) + 1e-6)
    mean = F32(float(ref_pairwise_sum([norms[i] for i in kept])) / k)
    return F32(F32(sx / denom) * mean), F32(F32(sy / denom) * mean)


def ref_frame(flow, landmarks, radius=5):
    """flow (2, H, W) px, landmarks (68, 2) -> (12, 2) float32, one value at a time."""
    _, height, width = flow.shape
    values = [[[ref_value(ref_code(flow[c, y, x])) for x in range(width)] for y in range(height)]
              for c in range(2)]
    lm = [(int(round(float(x))), int(round(float(y)))) for x, y in landmarks]

    def pixels(x0, x1, y0, y1):  # inside the image, row-major
        return [(values[0][y][x], values[1][y][x]) for y in range(y0, y1 + 1)
                for x in range(x0, x1 + 1) if 0 <= x < width and 0 <= y < height]

    b = int((lm[42][0] - lm[39][0]) / 2 * 0.35)
    xs, ys = (lm[29][0], lm[30][0]), (lm[29][1], lm[30][1])
    hx, hy = ref_main_direction_mean(
        pixels(min(xs) - b, max(xs) + b, min(ys) - b, max(ys) + b), HEAD_SECTOR_EDGES, 0.88)
    out = []
    for index in ROI_LANDMARKS:
        x, y = lm[index]
        roi = [(F32(vx - hx), F32(vy - hy))
               for vx, vy in pixels(x - radius, x + radius, y - radius, y + radius)]
        out.append(ref_main_direction_mean(roi, ROI_SECTOR_EDGES, 0.6))
    return np.array(out, dtype=np.float32)


# ---- cases -----------------------------------------------------------------------------------


def _face_landmarks(rng, n, size=48):
    """(n, 68, 2) float32 landmarks of a size x size face, jittered, with rounding halves."""
    lm = np.full((n, 68, 2), size / 2, dtype=np.float64)
    lm[:, 29], lm[:, 30] = (24, 21), (24, 27)
    lm[:, 39], lm[:, 42] = (18, 17), (30, 17)
    xs = (8, 12, 17, 31, 36, 40, 24, 24, 16, 24, 32, 24)
    ys = (10, 8, 9, 9, 8, 10, 19, 27, 36, 34, 36, 41)
    for i, x, y in zip(ROI_LANDMARKS, xs, ys):
        lm[:, i] = (x, y)
    lm += rng.integers(-2, 3, size=(n, 1, 2))
    lm[:, 42, 0] += rng.integers(-14, 16, size=n)  # nose grow from 0 to 4 px, negative too
    lm[::2] += 0.5  # halves: rounded to even
    lm[:, 18] -= (6, 6)  # an ROI across the image border
    return lm.astype(np.float32)


def _flows(rng, n, low, high, size=48):
    """(n, 2, size, size) float32 flow: per-frame scale in [low, high] px plus a head drift."""
    scale = rng.uniform(low, high, size=(n, 1, 1, 1))
    flow = rng.normal(size=(n, 2, size, size)) * scale + rng.normal(size=(n, 2, 1, 1)) * scale
    return flow.astype(np.float32)


def _bits(a):
    return np.asarray(a, dtype=np.float32).view(np.uint32)


# ---- tests -----------------------------------------------------------------------------------


def test_restated_argsort_and_ours_follow_numpy1():
    for quarters, expected in NUMPY1_ARGSORT:
        values = np.array(quarters, dtype=np.float32) * F32(0.25)
        assert list(np1_argsort(values)) == expected
        assert ref_argsort([F32(v) for v in values]) == expected
    rng = np.random.default_rng(0)
    for n in (1, 2, 16, 17, 40, 300):  # insertion sort only, one partition, many
        values = rng.integers(0, 5, n).astype(np.float32)
        assert list(np1_argsort(values)) == ref_argsort(list(values))


def test_pairwise_sum_is_numpys():
    rng = np.random.default_rng(1)
    for n in (1, 7, 8, 9, 100, 128, 129, 300, 1000):
        values = rng.random(n).astype(np.float32)
        assert mdmo_module._pairwise_sum32(values) == ref_pairwise_sum(list(values))


def test_codes_and_read_back():
    flow = np.array([0.0, 10.0, -10.0, 10.5, -15.0, 2.0, 0.2, -0.2], dtype=np.float32)
    codes = [ref_code(f) for f in flow]
    assert codes == [128, 255, 0, 255, 0, 153, 130, 125]  # 0 px: 127.5 rounds to even, 128
    np.testing.assert_array_equal(mdmo_module.compat_codes(flow), codes)
    values = quantise_flow(flow)
    assert values.dtype == np.float32
    np.testing.assert_array_equal(_bits(values), _bits([ref_value(q) for q in codes]))
    # mirror codes are not mirror values in float32: |v(127)| and |v(128)| differ by one ulp
    assert -ref_value(127) != ref_value(128)


def test_head_sector_of_every_8bit_vector():
    """All 65,536 code pairs: the compat head sector is the reference's; 64 of them lie in
    another sector than the float64 read-back gave, among them (127, 128)."""
    qx, qy = (a.ravel() for a in np.meshgrid(np.arange(256), np.arange(256), indexing="ij"))
    centres = lambda q: (q * 20 / 255 - 10).astype(np.float32)  # noqa: E731 -- px of code q
    ours = sector_index(flow_angles(quantise_flow(centres(qx)), quantise_flow(centres(qy)),
                                    compat=True), HEAD_SECTOR_EDGES)
    table = [ref_value(q) for q in range(256)]
    angles = ref_angles([(table[a], table[b]) for a, b in zip(qx, qy)])
    expected = np.array([ref_sector(a, HEAD_SECTOR_EDGES) for a in angles])
    np.testing.assert_array_equal(ours, expected)
    # the float64 read-back, as the old compat did it
    angles64 = cv2.cartToPolar(qx / 255.0 - 0.5, qy / 255.0 - 0.5)[1].ravel()
    edges64 = np.array(HEAD_SECTOR_EDGES)
    old = np.select([(angles64 >= edges64[s]) & (angles64 < edges64[s + 1]) for s in range(3)],
                    [0, 1, 2], 3)
    moved = {(int(a), int(b)) for a, b in zip(qx[old != expected], qy[old != expected])}
    assert len(moved) == 64 and (127, 128) in moved
    assert all(a + b == 255 for a, b in moved)  # all on the anti-diagonal: mirror codes


def test_near_still_faces_match_the_reference(monkeypatch):
    """Near-still flow (0.05-0.6 px): bit for bit, ties between different vectors included."""
    calls = []
    exact_sort = mdmo_module.np1_argsort
    monkeypatch.setattr(mdmo_module, "np1_argsort", lambda v: calls.append(1) or exact_sort(v))
    rng = np.random.default_rng(2)
    flow, lm = _flows(rng, 12, 0.05, 0.6), _face_landmarks(rng, 12)
    out = mdmo(flow, lm, COMPAT)
    expected = np.stack([ref_frame(f, marks) for f, marks in zip(flow, lm)])
    np.testing.assert_array_equal(_bits(out), _bits(expected))
    assert calls, "no set had equal norms of different vectors: the tie order went untested"
    assert np.abs(out).max() > 0


def test_moving_faces_match_the_reference():
    rng = np.random.default_rng(3)
    flow, lm = _flows(rng, 6, 1.0, 8.0), _face_landmarks(rng, 6)
    flow[0, :, :10] = 25.0  # clipped at 10 px
    out = mdmo(flow, lm, COMPAT)
    expected = np.stack([ref_frame(f, marks) for f, marks in zip(flow, lm)])
    np.testing.assert_array_equal(_bits(out), _bits(expected))
    np.testing.assert_array_equal(mdmo_reference(flow[1], lm[1], COMPAT), out[1])


def test_torch_input_gives_the_same_numbers():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(4)
    flow, lm = _flows(rng, 3, 0.05, 0.6), _face_landmarks(rng, 3)
    out = mdmo(torch.from_numpy(flow), torch.from_numpy(lm), COMPAT)
    np.testing.assert_array_equal(_bits(out.numpy()), _bits(mdmo(flow, lm, COMPAT)))


@pytest.mark.slow
def test_compat_store_holds_the_reference_numbers(tmp_path, monkeypatch):
    """Extraction with compat of a near-still video: the stored MDMO is the restatement's on
    the flow and landmarks the extraction used."""
    import zarr

    import flowcore.flow
    from flowcore.batch import run_extraction
    from flowcore.extract import ExtractParams, RunOptions
    from flowcore.faces import FaceParams
    from flowcore.sources import open_source
    from mespot.testing import face_frames, write_frames

    flows = []
    compute = flowcore.flow.compute_flow
    monkeypatch.setattr(flowcore.flow, "compute_flow",
                        lambda *a, **k: flows.append(compute(*a, **k)) or flows[-1])
    write_frames(tmp_path / "take1", face_frames(5, drift=(0.15, 0.1)), "img{:03d}.jpg")
    params = ExtractParams(tvl1=flowcore.flow.TVL1Params(n_scales=2, n_warps=1,
                                                         outer_iterations=2),
                           faces=FaceParams(resize=48), mdmo=COMPAT)
    report = run_extraction(open_source(tmp_path / "take1"), tmp_path / "f.zarr", params,
                            RunOptions(batch_size=2), workers=1)
    assert report.count("complete") == 1, report.summary()
    (_, video), = zarr.open_group(str(tmp_path / "f.zarr"), mode="r")["videos"].groups()
    stored, landmarks = video["mdmo"][...], video["landmarks"][...]
    flow = np.concatenate([np.asarray(f) for f in flows])
    assert flow.shape[0] == stored.shape[0] == 4 and len(flows) > 1  # several batches
    assert np.abs(flow).max() < 1.0  # near-still
    expected = np.stack([ref_frame(f, marks) for f, marks in zip(flow, landmarks[1:])])
    np.testing.assert_array_equal(_bits(stored), _bits(expected))
