"""What tracking the face costs per frame, against the fixed box it replaced.

On frames the size of an ordinary clip (640 x 360, the astronaut's face about 200 px wide,
mespot.testing.scene_frames), in memory (no decoding), one thread:
  fixed box:  the face detected once on the first frame, then per frame: crop + 68 landmarks
              (what extraction did before faces were tracked);
  tracked:    flowcore.tracking.track_face (per frame: quality score + crop + landmarks, and the
              searches of the whole frame: every 30 frames while tracked, 1 frame in 8 while
              lost).
Scenes: the face in view throughout; the face gone for the middle third; no face at all.

    python benchmarks/track_cost.py [--frames 240] [--out PATH]

Writes benchmarks/results/track_cost_cpu.json and prints a table (ms per frame).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _flow_env import environment, set_threads, write_json  # noqa: E402

from flowcore.extract import _Timer  # noqa: E402
from flowcore.faces import DLIB, FaceParams, crop_for, fit_frame  # noqa: E402
from flowcore.tracking import track_face  # noqa: E402
from mespot.testing import scene_frames  # noqa: E402

SIZE = (640, 360)
FACE = (220, 40, 2.3)  # the patch at 2.3x: a face box of 200 px


def scenes(n: int) -> dict[str, list]:
    third = n // 3
    return {"face throughout": [[FACE]] * n,
            "face gone for the middle third": [[FACE]] * third + [[]] * third
            + [[FACE]] * (n - 2 * third),
            "no face": [[]] * n}


def fixed_box(frames, params: FaceParams) -> float:
    """Seconds: detect once, then crop and fit every frame (the extraction before tracking)."""
    start = time.perf_counter()
    boxes = DLIB.detect(frames[0])
    if boxes:
        crop = crop_for(boxes[0], frames[0].shape, params)
        for frame in frames:
            fit_frame(crop.crop(frame), crop)
    return time.perf_counter() - start


def tracked(frames, params: FaceParams) -> tuple[float, dict]:
    timer = _Timer()
    start = time.perf_counter()
    track = track_face(list(enumerate(frames, 1)), params, timer, cache_bytes=2**30)
    seconds = time.perf_counter() - start
    return seconds, {"searched_whole": track.searched,
                     "stage_seconds": {k: round(v, 3) for k, v in timer.seconds.items() if v}}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=240)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    set_threads(1)
    DLIB.load()
    params = FaceParams()
    rows = []
    for name, placements in scenes(args.frames).items():
        frames, _ = scene_frames(placements, size=SIZE)
        before = fixed_box(frames, params)
        after, detail = tracked(frames, params)
        row = {"scene": name, "frames": len(frames),
               "fixed_box_ms_per_frame": round(1000 * before / len(frames), 2),
               "tracked_ms_per_frame": round(1000 * after / len(frames), 2), **detail}
        rows.append(row)
        print(f"{name:32s} fixed box {row['fixed_box_ms_per_frame']:6.2f} ms/frame   tracked "
              f"{row['tracked_ms_per_frame']:6.2f} ms/frame   ({detail['searched_whole']} "
              f"frames searched whole)")
    path = write_json("track_cost_cpu.json", {
        "benchmark": "track_cost", **environment(threads=1),
        "settings": {"frame_size": list(SIZE), "face_px": 200, "face_params": params.to_dict(),
                     "note": "frames in memory (no decoding); the fixed box finds no face in "
                             "the scene without one after its first frame: it fails there"},
        "results": rows}, args.out)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
