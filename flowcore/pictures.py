"""One picture per extracted video, to check what the extraction saw.

Three panels side by side, each 256 px high: the frame with the face box; the face crop with the
68 landmarks (green) and the 12 ROI squares (red, numbered in node order); the flow of the same
pair of frames as colour (hue = direction, brightness = magnitude, full brightness at the pair's
99th-percentile magnitude, at least 0.25 px; the value is printed on the panel). The frame
shown is the first of the pair whose MDMO features move most (largest summed ROI magnitude);
its flow is read from the store when it holds dense flow, recomputed with the store's parameters
otherwise.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from flowcore.locations import location
from flowcore.rois import ROI_LANDMARKS, ROI_RADIUS
from flowcore.store import VIDEOS

PANEL = 256  # px, height of each panel
MIN_SATURATION_PX = 0.25


def flow_saturation(flow: np.ndarray) -> float:
    """Magnitude (px) shown at full brightness: the 99th percentile, at least 0.25 px."""
    magnitude = np.hypot(flow[0].astype(np.float32), flow[1].astype(np.float32))
    return max(float(np.percentile(magnitude, 99)), MIN_SATURATION_PX)


def flow_to_colour(flow: np.ndarray, saturation: float) -> np.ndarray:
    """(2, H, W) float flow (dx, dy) px -> (H, W, 3) uint8 BGR: hue = angle, value = magnitude."""
    import cv2

    dx, dy = flow[0].astype(np.float32), flow[1].astype(np.float32)
    magnitude, angle = cv2.cartToPolar(dx, dy, angleInDegrees=True)
    hsv = np.zeros(dx.shape + (3,), np.uint8)
    hsv[..., 0] = (angle / 2).astype(np.uint8)  # OpenCV hue runs 0..180
    hsv[..., 1] = 255
    hsv[..., 2] = np.clip(magnitude / saturation * 255, 0, 255).astype(np.uint8)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)


def _fit_height(image: np.ndarray, height: int = PANEL) -> np.ndarray:
    import cv2

    scale = height / image.shape[0]
    return cv2.resize(image, (max(1, round(image.shape[1] * scale)), height),
                      interpolation=cv2.INTER_NEAREST if scale > 1 else cv2.INTER_AREA)


def video_picture(frame: np.ndarray, box, landmarks: np.ndarray, crop: np.ndarray,
                  flow: np.ndarray, title: str = "") -> np.ndarray:
    """Compose the three panels: frame (H, W) uint8 gray, box (4,) frame px, landmarks (68, 2)
    in crop px, crop (h, w) uint8, flow (2, h, w) px -> (256, W', 3) uint8 BGR."""
    import cv2

    full = cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)
    left, top, right, bottom = (int(v) for v in box)
    thick = max(1, frame.shape[0] // 150)
    cv2.rectangle(full, (left, top), (right - 1, bottom - 1), (0, 255, 255), thick)
    full = _fit_height(full)

    scale = PANEL / crop.shape[0]
    face = _fit_height(cv2.cvtColor(crop, cv2.COLOR_GRAY2BGR))
    for x, y in landmarks:
        cv2.circle(face, (int(round(x * scale)), int(round(y * scale))), 2, (0, 255, 0), -1)
    for node, index in enumerate(ROI_LANDMARKS):
        x, y = np.floor(landmarks[index] + 0.5)
        p0 = (int((x - ROI_RADIUS) * scale), int((y - ROI_RADIUS) * scale))
        p1 = (int((x + ROI_RADIUS + 1) * scale) - 1, int((y + ROI_RADIUS + 1) * scale) - 1)
        cv2.rectangle(face, p0, p1, (0, 0, 255), 1)
        cv2.putText(face, str(node), (p0[0], p0[1] - 2), cv2.FONT_HERSHEY_SIMPLEX, 0.3,
                    (0, 0, 255), 1)
    saturation = flow_saturation(flow)
    colour = _fit_height(flow_to_colour(flow, saturation))
    cv2.putText(colour, f"flow, full at {saturation:.2f} px", (4, PANEL - 6),
                cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1)
    picture = np.concatenate([full, face, colour], axis=1)
    if title:
        cv2.putText(picture, title, (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1)
    return picture


def write_pictures(store_path: str | Path, out: str | Path, source, video_ids) -> list[Path]:
    """Write `<out>/<video_id>.png` for each listed complete video of the store; returns paths."""
    import cv2
    import zarr

    from flowcore.video import FrameStream

    root = zarr.open_group(str(store_path), mode="r")
    params = dict(root.attrs)["params"]
    specs = {v.video_id: v for v in source.videos}
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for video_id in video_ids:
        group = root[f"{VIDEOS}/{video_id}"]
        numbers = group["frame_numbers"][...]
        features = group["mdmo"][...]
        k = int(np.argmax(np.hypot(features[..., 0], features[..., 1]).sum(axis=1)))
        landmarks = group["landmarks"][...]
        crop = stored_crop(group, k + 1)
        box = crop.box
        frames = {}
        for number, frame in FrameStream(specs[video_id]):
            if number in (numbers[k], numbers[k + 1]):
                frames[number] = frame
            if len(frames) == 2:
                break
        first, second = frames[numbers[k]], frames[numbers[k + 1]]
        if "flow" in group:
            flow = group["flow"][k].astype(np.float32)
        else:
            from flowcore.flow import TVL1Params, compute_flow

            tvl1 = TVL1Params(**params["tvl1"])
            flow = compute_flow(crop.crop(first)[None], crop.crop(second)[None], params=tvl1,
                                backend=params["flow_backend"])[0]
        picture = video_picture(first, box, landmarks[k + 1], crop.crop(second), flow,
                                f"{video_id} frames {numbers[k]}->{numbers[k + 1]}")
        path = out / f"{video_id}.png"
        cv2.imwrite(str(path), picture)
        written.append(path)
    return written


def stored_crop(group, k: int):
    """The FaceCrop of kept frame `k` of a stored video's group: its `crop_box` (the first
    run's `face_box` in a store from before faces were tracked, or for a frame without the
    face), resized to the video's `crop_size`."""
    from flowcore.faces import FaceCrop

    box = tuple(int(v) for v in group["face_box"][...])
    if "crop_box" in group and group["crop_box"][k][0] >= 0:
        box = tuple(int(v) for v in group["crop_box"][k])
    size = tuple(dict(group.attrs).get("crop_size", (box[2] - box[0], box[3] - box[1])))
    return FaceCrop(box, box, size, box)


def face_crops(store_path: str | Path, video_id: str, frame_numbers) -> dict[int, np.ndarray]:
    """Face crops (h, w) uint8 gray of the given ORIGINAL 1-based frame numbers of one stored
    video, cut and resized exactly as the extraction did (frames re-read from its `source`).
    Frame numbers that were not kept are answered with the nearest kept frame before them."""
    import zarr

    from flowcore.video import FrameStream, VideoSpec

    group = zarr.open_group(str(store_path), mode="r")[f"{VIDEOS}/{video_id}"]
    attrs = dict(group.attrs)
    kept = group["frame_numbers"][...]
    wanted = {int(f): int(kept[max(np.searchsorted(kept, f, side="right") - 1, 0)])
              for f in frame_numbers}
    spec = VideoSpec(
        video_id,
        attrs["subject"],
        location(attrs["source"]),  # a URL (s3://...) when extracted from object storage
        float(attrs["fps"]) * attrs["subsample"],
        int(attrs["subsample"]),
    )
    found: dict[int, np.ndarray] = {}
    needed = set(wanted.values())
    index = {int(n): k for k, n in enumerate(kept)}
    for number, frame in FrameStream(spec):
        if number in needed:
            found[number] = stored_crop(group, index[number]).crop(frame)
            if len(found) == len(needed):
                break
    return {f: found[k] for f, k in wanted.items() if k in found}
