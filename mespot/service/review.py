"""Review of spotted intervals: for a predict or evaluate job, each video's intervals (and, for
an evaluation, its ground truth) with a strip of frames at each one; a person accepts, rejects
or corrects onset, apex and offset; the reviewed intervals export as mespot's annotation CSV
(what `mespot train -a` reads) and as Label Studio's video timeline JSON, which imports back.

The review of job ID is kept in HOME/jobs/ID/review.json, made from the job's intervals.csv the
first time it is asked for.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from flowcore.locations import location
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from mespot.service.roots import PathRefused

STRIP_FRAMES = 7  # frames in an interval's strip (onset, apex, offset and between)
STRIP_HEIGHT = 96  # px of each frame in a strip
MARGIN = 6  # frames shown before the onset and after the offset
ANNOTATION_COLUMNS = ("subject", "video", "onset", "apex", "offset", "type", "au")


class Interval(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["me", "mae"]
    onset: int = Field(..., ge=0)
    apex: int = Field(..., ge=0)
    offset: int = Field(..., ge=0)
    status: Literal["pending", "accepted", "rejected"] = "pending"
    score: float | None = None
    origin: Literal["spotted", "added", "imported"] = "spotted"

    @model_validator(mode="after")
    def ordered(self):
        if not self.onset <= self.apex <= self.offset:
            raise ValueError(f"onset {self.onset} <= apex {self.apex} <= offset {self.offset} "
                             f"does not hold")
        return self


class VideoReview(BaseModel):
    model_config = ConfigDict(extra="forbid")
    subject: str = Field(..., min_length=1, max_length=100)
    intervals: list[Interval] = Field(default_factory=list, max_length=5000)


class Review(BaseModel):
    model_config = ConfigDict(extra="forbid")
    videos: dict[str, VideoReview]


def intervals_file(job) -> Path | None:
    """The job's intervals.csv: a prediction's, or its first evaluation's."""
    if job.kind == "predict":
        return Path(job.files["intervals.csv"]) if "intervals.csv" in job.files else None
    if job.kind == "evaluate":
        for name in sorted(job.files):
            if name.endswith("/intervals.csv"):
                return Path(job.files[name])
    return None


def start(job, more: dict[str, str] | None = None) -> dict:
    """A first review from the job's intervals: every interval pending; `more` (video ->
    subject): videos to review though nothing was spotted in them (an evaluation's)."""
    path = intervals_file(job)
    if job.state != "done" or path is None or not path.is_file():
        raise PathRefused(409, f"job {job.id} has no spotted intervals to review (only done "
                               f"predict and evaluate jobs have)")
    videos: dict[str, dict] = {}
    with open(path, newline="") as handle:
        for row in csv.DictReader(handle):
            video = videos.setdefault(row["video"], {"subject": row.get("subject") or
                                                     row["video"], "intervals": []})
            video["intervals"].append({"type": row["type"], "onset": int(float(row["onset"])),
                                       "apex": int(float(row["apex"])),
                                       "offset": int(float(row["offset"])),
                                       "score": float(row["score"]) if row.get("score") else None})
    for video, subject in {**_predicted(job), **(more or {})}.items():
        videos.setdefault(video, {"subject": subject, "intervals": []})
    return Review(videos=videos).model_dump()


def _predicted(job) -> dict[str, str]:
    """A prediction's videos (those in which nothing was spotted too) -> the video as subject."""
    path = Path(job.files.get("prediction.json", "")) if job.kind == "predict" else None
    if path is None or not path.is_file():
        return {}
    return {v: v for v in json.loads(path.read_text()).get("videos", [])}


def load(folder: Path, job, more: dict[str, str] | None = None) -> dict:
    path = folder / "review.json"
    if path.is_file():
        return json.loads(path.read_text())
    return start(job, more)


def save(folder: Path, review: dict) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    part = folder / "review.json.part"
    part.write_text(json.dumps(review, indent=1))
    part.replace(folder / "review.json")


def annotations_csv(review: dict, include_pending: bool = False) -> str:
    """mespot's annotation CSV of the accepted intervals (corrections included)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(ANNOTATION_COLUMNS)
    keep = ("accepted", "pending") if include_pending else ("accepted",)
    for video, reviewed in sorted(review["videos"].items()):
        for i in sorted(reviewed["intervals"], key=lambda i: i["onset"]):
            if i["status"] in keep:
                writer.writerow([reviewed["subject"], video, i["onset"], i["apex"], i["offset"],
                                 i["type"], ""])
    return out.getvalue()


def label_studio(review: dict, video_urls: dict[str, str]) -> list[dict]:
    """Label Studio tasks (one per video) whose annotation is a video timeline: a range per
    accepted interval labelled me or mae, and a one-frame range labelled apex at its apex."""
    tasks = []
    for video, reviewed in sorted(review["videos"].items()):
        result = []
        for k, i in enumerate(i for i in reviewed["intervals"] if i["status"] == "accepted"):
            for label, start, end in ((i["type"], i["onset"], i["offset"]),
                                      ("apex", i["apex"], i["apex"])):
                result.append({"id": f"{video}-{k}-{label}", "type": "timelinelabels",
                               "from_name": "videoLabels", "to_name": "video",
                               "origin": "manual",
                               "value": {"ranges": [{"start": start, "end": end}],
                                         "timelinelabels": [label]}})
        tasks.append({"data": {"video": video_urls.get(video, video), "video_id": video,
                               "subject": reviewed["subject"]},
                      "annotations": [{"result": result}]})
    return tasks


def from_label_studio(tasks, review: dict) -> dict:
    """`review` with the intervals of every video a Label Studio export names replaced by its
    ranges (accepted, origin "imported"); apex: the apex point inside a range, else its middle."""
    if not isinstance(tasks, list):
        raise PathRefused(422, "a Label Studio export is a JSON list of tasks")
    out = json.loads(json.dumps(review))
    for k, task in enumerate(tasks):
        data = task.get("data", {}) if isinstance(task, dict) else {}
        video = data.get("video_id") or Path(str(data.get("video", ""))).stem
        if video not in out["videos"]:
            raise PathRefused(422, f"task {k}: video {video!r} is not in this review")
        ranges, apexes = [], []
        for annotation in task.get("annotations", [])[-1:]:  # the latest annotation
            for r in annotation.get("result", []):
                value = r.get("value", {})
                for label in value.get("timelinelabels", []):
                    for span in value.get("ranges", []):
                        pair = (int(span["start"]), int(span["end"]))
                        (apexes if label == "apex" else ranges).append((label, *pair))
        intervals = []
        for label, start, end in ranges:
            if label not in ("me", "mae"):
                raise PathRefused(422, f"task {k}: label {label!r} (expected me, mae or apex)")
            inside = [a for _, a, _ in apexes if start <= a <= end]
            apex = inside[0] if inside else (start + end) // 2
            intervals.append({"type": label, "onset": start, "apex": apex, "offset": end,
                              "status": "accepted", "origin": "imported", "score": None})
        out["videos"][video]["intervals"] = intervals
    return Review(**out).model_dump()


def frame_strip(spec, frames: list[int]) -> bytes:
    """A JPEG of `frames` of a video side by side (gray, STRIP_HEIGHT px high); a frame past the
    video's end is left black."""
    import cv2

    from flowcore.video import FrameStream

    wanted, found = set(frames), {}
    for number, image in FrameStream(spec):
        if number in wanted:
            scale = STRIP_HEIGHT / image.shape[0]
            found[number] = cv2.resize(image, (max(1, int(image.shape[1] * scale)),
                                               STRIP_HEIGHT))
        if number >= max(frames):
            break
    width = next(iter(found.values())).shape[1] if found else STRIP_HEIGHT
    tiles = [found.get(f, np.zeros((STRIP_HEIGHT, width), np.uint8)) for f in frames]
    ok, jpeg = cv2.imencode(".jpg", np.hstack(tiles), [cv2.IMWRITE_JPEG_QUALITY, 80])
    return jpeg.tobytes()


def strip_frames(onset: int, apex: int, offset: int) -> list[int]:
    """STRIP_FRAMES frame numbers from MARGIN before the onset to MARGIN after the offset, with
    the onset, apex and offset among them."""
    first, last = max(0, onset - MARGIN), offset + MARGIN
    spread = np.linspace(first, last, STRIP_FRAMES - 3).round().astype(int).tolist()
    return sorted(set(spread) | {onset, apex, offset})


# ---- where the frames and the truth are ----------------------------------------------------------

def video_spec(job, video: str, roots, uploads: Path):
    """The VideoSpec of `video` of a predict job's input or an evaluated run's store."""
    from flowcore.sources import SourceError, open_source
    from mespot.service.tasks import upload_path

    if job.kind == "predict":
        path = (upload_path(uploads, job.params["upload"]) if job.params.get("upload")
                else roots.data_path(job.params["video"]))
    else:
        config = json.loads((roots.store_path(job.params["run"]) / "config.json").read_text())
        meta = location(config["store"]) / "videos" / video / "zarr.json"
        try:
            path = location(json.loads(meta.read_text())["attributes"]["source"])
        except (OSError, ValueError, KeyError):
            raise PathRefused(404, f"video {video}: its store records no source") from None
    try:
        specs = open_source(path).videos
    except SourceError as err:
        raise PathRefused(404, f"video {video}: {err}") from None
    spec = next((s for s in specs if s.video_id == video), specs[0] if len(specs) == 1 else None)
    if spec is None:
        raise PathRefused(404, f"video {video}: not in {path.name}")
    return spec


def truth(job, roots) -> dict[str, dict]:
    """An evaluated run's ground truth: video -> subject and intervals (none for a
    prediction)."""
    if job.kind != "evaluate":
        return {}
    from spotting.annotations import read_annotations

    config = json.loads((roots.store_path(job.params["run"]) / "config.json").read_text())
    frame = read_annotations(config["annotations"]).frame
    out: dict[str, dict] = {}
    for row in frame.itertuples():
        video = out.setdefault(str(row.video_id), {"subject": str(row.subject), "intervals": []})
        video["intervals"].append({"type": str(row.type), "onset": int(row.onset),
                                   "apex": int(row.apex), "offset": int(row.offset)})
    return out


def curve_file(job, video: str) -> str | None:
    """The job's score-curve picture of `video`, if it has one."""
    pictures = [n for n in job.files if n.endswith(".png") and "curves" in n]
    return next((n for n in pictures if video in n), pictures[0] if len(pictures) == 1 else None)
