"""Accuracy of every flow backend on face image pairs with known flow.

Classes (flowcore.flow.synthetic.make_cases): translation (0.05-5 px), rotation_zoom, micro_deform
(0.1-1.5 px), macro_deform (2-8 px), noise_brightness. Per class: mean end-point error (EPE, px)
over the image minus a border margin (where content enters or leaves the frame the truth is
unknowable) and EPE over the 12 AUW-GCN ROIs; each backend's relative difference to `opencv`, and
`cuda`'s (the CUDA kernels) to `torch`, its tensor twin on the same device.

    python benchmarks/flow_accuracy.py [--size 256] [--per-class 4] [--threads 2]

Writes benchmarks/results/flow_accuracy.json and prints a table.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from _flow_env import default_backends, environment, set_threads, write_json

from flowcore.flow import TVL1Params, compute_flow
from flowcore.flow.synthetic import (
    CASE_CLASSES,
    end_point_error,
    face_landmarks,
    make_cases,
    roi_mask,
)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256, help="face crop side, px")
    parser.add_argument("--per-class", type=int, default=4, help="pairs per case class")
    parser.add_argument("--margin", type=int, default=8, help="border excluded from mean EPE, px")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--backends", nargs="*", default=None, help="default: all available")
    parser.add_argument("--device", default="cpu", help="device of the torch backend")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="JSON path (default benchmarks/results/)")
    args = parser.parse_args(argv)

    set_threads(args.threads)
    params = TVL1Params()
    backends = args.backends or default_backends(args.device)
    landmarks = face_landmarks(args.size)
    cases = make_cases(args.size, landmarks, per_class=args.per_class, seed=args.seed)
    rois = roi_mask(landmarks, (args.size, args.size))
    interior = np.zeros_like(rois)
    interior[args.margin : -args.margin, args.margin : -args.margin] = True
    first = np.stack([c.first for c in cases])
    second = np.stack([c.second for c in cases])

    per_case = [{"name": c.name, "kind": c.kind} for c in cases]
    seconds = {}
    for backend in backends:
        start = time.perf_counter()
        flows = compute_flow(first, second, params=params, backend=backend,
                             device="cpu" if backend == "opencv" else args.device)
        seconds[backend] = time.perf_counter() - start
        for row, case, flow in zip(per_case, cases, flows):
            row[backend] = {
                "epe": end_point_error(flow, case.flow, interior),
                "roi_epe": end_point_error(flow, case.flow, rois),
                "epe_full_frame": end_point_error(flow, case.flow),
            }

    summary = {}
    for kind in CASE_CLASSES:
        rows = [r for r in per_case if r["kind"] == kind]
        summary[kind] = {}
        for backend in backends:
            epe = float(np.mean([r[backend]["epe"] for r in rows]))
            roi = float(np.mean([r[backend]["roi_epe"] for r in rows]))
            entry = {"epe": epe, "roi_epe": roi}
            for ref_name in ("opencv", "torch"):  # +0.05 = 5 % worse than the reference
                if ref_name in backends and backend != ref_name and ref_name in summary[kind]:
                    ref = summary[kind][ref_name]
                    entry[f"epe_vs_{ref_name}"] = epe / ref["epe"] - 1
                    entry[f"roi_epe_vs_{ref_name}"] = roi / ref["roi_epe"] - 1
            summary[kind][backend] = entry

    print(f"EPE in px ({args.size}x{args.size}, {args.per_class} pairs per class, "
          f"{args.margin} px border excluded; ROI = the 12 AUW-GCN ROIs)")
    header = f"{'class':<18}" + "".join(f"{b + ' EPE':>14}{b + ' ROI':>14}" for b in backends)
    others = [b for b in backends if b != "opencv" and "opencv" in backends]
    header += "".join(f"{b + ' vs cv':>14}{'ROI vs cv':>11}" for b in others)
    print(header)
    for kind, entry in summary.items():
        line = f"{kind:<18}"
        line += "".join(f"{entry[b]['epe']:>14.4f}{entry[b]['roi_epe']:>14.4f}" for b in backends)
        line += "".join(
            f"{entry[b]['epe_vs_opencv']:>+13.1%} {entry[b]['roi_epe_vs_opencv']:>+10.1%}"
            for b in others
        )
        print(line)
    if "cuda" in backends and "torch" in backends:
        print("cuda vs torch EPE: " + ", ".join(
            f"{kind} {entry['cuda']['epe_vs_torch']:+.2%}" for kind, entry in summary.items()))
    print("seconds for all pairs: " + ", ".join(f"{b} {s:.1f}" for b, s in seconds.items()))

    payload = {
        "benchmark": "flow_accuracy",
        **environment(args.threads),
        "params": params.to_dict(),
        "settings": {"size": args.size, "per_class": args.per_class, "margin_px": args.margin,
                     "seed": args.seed, "backends": backends, "torch_device": args.device},
        "summary": summary,
        "cases": per_case,
        "seconds_total": seconds,
    }
    print(f"wrote {write_json('flow_accuracy.json', payload, args.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
