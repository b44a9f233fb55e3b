"""Face tracking: which frames of a video show the face, where, and how surely.

Every frame of a tracked face is
  1. scored: its *quality* is the face backend's score of the face at its segment's detected
     box (dlib: the frontal detector's SVM margin on that box's neighbourhood rescaled to an
     84 px face, flowcore.landmarks.face_score, about 1.5 ms a frame; > 0 is a detection at
     dlib's own threshold; NaN when no face-like box overlaps the tracked one by IoU >= 0.5,
     which is also how a face that moved is noticed);
  2. cropped with its segment's box and its 68 landmarks fitted (flowcore.faces);
  3. kept when quality >= FaceParams.keep_score and its inner-face landmarks (17-67: brows,
     eyes, nose, mouth, where the ROIs lie) are inside the crop; otherwise the face is partly
     out of the frame, out of its box, turned away or gone.
A frame that fails is searched whole at once (the re-detection): the face that
FaceParams.choose picks there starts a new segment when it passes the same check; otherwise the
frame has no face and the track is lost. While lost, every frame is checked where the face was
last (cheap; a face that comes back there keeps its crop), and the whole frame is searched every
`search_every` frames; when a face is found elsewhere, the frames skipped since the previous
search are checked backwards with its crop, so a face's first frame is found exactly, not to
the search step. While tracked, the whole frame is also searched every `redetect_every` frames,
to count the faces in view (a face that joins later is said).

A *segment* is a run of frames with the face cropped by one box. A single frame without the
face between two frames of the same segment (a garbage frame, a detector miss) is a glitch, not
a gap: it is repaired like an outlier frame (its crop and landmarks from its neighbours).

Thresholds, on dlib's scale, measured on mespot.synth's subjects (128 and 200 px faces with
expressions, blinks, head moves and noise) and the astronaut photo: a face in view scored -0.11
to 1.6 (one synthetic identity sits near 0: dlib's own threshold would lose it in a third of its
frames, hence keep_score -0.5); patches of background -0.8 to -1.2; a face with a fifth of its
box out of the frame -0.1 to -0.9, with 40 % out -0.5 to -1.4 (its ROIs then leave the crop).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from flowcore.faces import FaceCrop, FaceParams, choose_face, crop_for, face_backend
from flowcore.video import frame_signature

INNER_FACE = slice(17, 68)  # brows, eyes, nose, mouth: the landmarks the ROIs are built on


@dataclass
class Track:
    """Per frame of the stream (T frames): `numbers` (T,) original frame numbers; `segment` (T,)
    int32 index into `segments`, -1 where the frame has no face; `quality` (T,) float32 (NaN:
    not scored, or nothing face-like there); `landmarks` (T, 68, 2) float32 fits in the crop's
    grid, NaN without a face; `crops` the (h, w) uint8 face crops (None without a face), or None
    when they outgrew the cache; `signatures` (T, 256) float64 (flowcore.video.frame_signature
    of each crop, 0 without one). `searched`: frames searched whole; `glitches`: indices of
    single frames without the face inside a segment (see the module docstring)."""

    numbers: list[int] = field(default_factory=list)
    segment: list[int] = field(default_factory=list)
    quality: list[float] = field(default_factory=list)
    landmarks: list = field(default_factory=list)
    crops: list | None = field(default_factory=list)
    signatures: list = field(default_factory=list)
    segments: list[FaceCrop] = field(default_factory=list)
    segment_faces: list[int] = field(default_factory=list)  # faces in the frame it started in
    segment_first: list[int] = field(default_factory=list)  # index of its first frame
    searched: int = 0
    search_every: int = 1  # frames between whole-frame searches while lost
    faces_in_view: int = 0  # the most faces seen in one frame
    warnings: list[str] = field(default_factory=list)
    glitches: list[int] = field(default_factory=list)

    def arrays(self):
        """(segment (T,) int32, quality (T,) float32, landmarks (T, 68, 2) float32)."""
        nan = np.full((68, 2), np.nan, np.float32)
        landmarks = np.stack([nan if lm is None else lm for lm in self.landmarks]) \
            if self.landmarks else np.zeros((0, 68, 2), np.float32)
        return (np.asarray(self.segment, np.int32), np.asarray(self.quality, np.float32),
                landmarks.astype(np.float32))


class _Tracker:
    """The state of one video's track while its frames stream past (see the module docstring)."""

    def __init__(self, params: FaceParams, timer, cache_bytes: int):
        self.params, self.timer, self.cache_bytes = params, timer, cache_bytes
        self.backend = face_backend(params.backend)
        self.track = Track(search_every=params.search_every)
        self.current: int | None = None  # the segment being tracked
        self.previous: int | None = None  # the segment tracked last, while lost
        self.last_search = -(10**9)  # index of the last frame searched whole
        self.skipped: list[tuple[int, np.ndarray]] = []  # lost frames not searched since
        self.cached = 0

    def step(self, index: int, number: int, frame: np.ndarray) -> None:
        t = self.track
        t.numbers.append(number)
        t.segment.append(-1)
        t.quality.append(float("nan"))
        t.landmarks.append(None)
        t.signatures.append(None)
        if t.crops is not None:
            t.crops.append(None)
        if self.current is not None:
            if self._look(index, frame, self.current):
                first = t.segment_first[self.current]
                if (index - first) % self.params.redetect_every == 0 and index != first:
                    self._count_faces(index, frame)
                return
            self.previous, self.current = self.current, None
        elif self.previous is not None and self._look(index, frame, self.previous):
            self.current, self.skipped = self.previous, []  # back where it was
            return
        elif index - self.last_search < self.params.search_every:
            self.skipped.append((index, frame))
            return
        self._search(index, frame)

    def finish(self) -> Track:
        """The track, once the last frame is in: frames after the last search are searched."""
        if self.current is None and self.skipped:
            index, frame = self.skipped.pop()
            self._search(index, frame)
        self._mark_glitches()
        return self.track

    def _search(self, index: int, frame: np.ndarray) -> None:
        """Search the whole frame; a face found starts a segment here, and the frames skipped
        since the previous search are checked backwards with its crop."""
        skipped, self.skipped = self.skipped, []
        self.current = self._acquire(index, frame)
        if self.current is None:
            return
        for back, earlier in reversed(skipped):
            if not self._look(back, earlier, self.current):
                break

    def _acquire(self, index: int, frame: np.ndarray) -> int | None:
        """The face `choose` picks in the whole frame, as a new segment when it passes."""
        t, p = self.track, self.params
        self.last_search = index
        t.searched += 1
        with self.timer("face"):
            boxes = self.backend.detect(frame)
        t.faces_in_view = max(t.faces_in_view, len(boxes))
        box = choose_face(boxes, frame.shape, p.choose)
        if box is None:
            return None
        size = t.segments[0].size[0] if t.segments else None  # one pixel grid per video
        crop = crop_for(box, frame.shape, p, size, p.backend)
        if not self._look(index, frame, len(t.segments), crop):
            return None
        t.segments.append(crop)
        t.segment_faces.append(len(boxes))
        self._say_choice(index, boxes, crop)
        return len(t.segments) - 1

    def _look(self, index: int, frame: np.ndarray, segment: int,
              crop: FaceCrop | None = None) -> bool:
        """Score, crop and fit frame `index` with `segment`'s crop (or `crop`, a segment not yet
        recorded); record it as showing the face when it passes."""
        t, p = self.track, self.params
        crop = crop or t.segments[segment]
        with self.timer("face"):
            quality = self.backend.score(frame, crop.detected)
        t.quality[index] = quality
        if not quality >= p.keep_score:  # NaN fails too
            return False
        with self.timer("decode"):
            face = crop.crop(frame)
        with self.timer("landmarks"):
            landmarks = self.backend.fit_landmarks(face, crop.face)
        inner = landmarks[INNER_FACE]
        width, height = crop.size
        if not ((inner >= 0).all() and (inner[:, 0] <= width - 1).all()
                and (inner[:, 1] <= height - 1).all()):
            return False
        t.segment[index], t.landmarks[index] = segment, landmarks
        if segment == len(t.segment_first):
            t.segment_first.append(index)
        t.segment_first[segment] = min(t.segment_first[segment], index)
        with self.timer("decode"):
            t.signatures[index] = frame_signature(face)
        if t.crops is not None:
            t.crops[index] = face
            self.cached += face.nbytes
            if self.cached > self.cache_bytes:
                t.crops = None  # too long a video to keep: pass 2 decodes it again
        return True

    def _count_faces(self, index: int, frame: np.ndarray) -> None:
        t = self.track
        t.searched += 1
        with self.timer("face"):
            n = len(self.backend.detect(frame))
        if n > max(t.faces_in_view, 1):
            chosen = t.numbers[t.segment_first[t.segment[index]]]
            t.warnings.append(f"{n} faces in view in frame {t.numbers[index]} (tracking the one "
                              f"chosen in frame {chosen}; --face largest|center|N chooses)")
        t.faces_in_view = max(t.faces_in_view, n)

    def _say_choice(self, index: int, boxes, box: FaceCrop) -> None:
        if len(boxes) < 2:
            return
        rule = {"largest": "the largest", "center": "the one nearest the centre"}.get(
            self.params.choose, f"face {self.params.choose} from the left")
        self.track.warnings.append(
            f"{len(boxes)} faces in frame {self.track.numbers[index]}; {rule} was taken (box "
            f"{list(box.box)}); --face largest|center|N chooses another (N counts from the left)")

    def _mark_glitches(self) -> None:
        """Single frames without the face between two frames of one segment: glitches."""
        seg = self.track.segment
        self.track.glitches = [k for k in range(1, len(seg) - 1)
                               if seg[k] == -1 and seg[k - 1] == seg[k + 1] != -1]


def track_face(stream, params: FaceParams, timer, cache_bytes: int, report=None) -> Track:
    """Track the face through `stream` (yields (frame number, (H, W) uint8 gray)); `timer` a
    flowcore.extract timer (stages face, decode, landmarks); `report(done)` every 32 frames."""
    tracker = _Tracker(params, timer, cache_bytes)
    for index, (number, frame) in enumerate(timer.frames(stream)):
        tracker.step(index, number, frame)
        if report is not None and (index + 1) % 32 == 0:
            report(index + 1)
    return tracker.finish()


@dataclass
class FaceFrames:
    """The tracked face over the frames a video keeps: from the face's first frame to its last
    (T frames; `offset` is the first one's index in the stream).

    numbers (T,) int: original frame numbers; run (T,) int32: index of the run of consecutive
    frames showing the face in one segment (-1: no face), glitches counted in their run;
    segment (T,) int32 (-1: no face); quality (T,) float32; landmarks (T, 68, 2) float32,
    repaired inside each run, NaN without a face; bad (T,) bool: fits flagged and
    interpolated; replaced: indices whose crop is a neighbour's (outlier frames, glitches);
    outliers: indices of the outlier frames among them (flowcore.video.outlier_frames, per
    run); crops: (h, w) uint8 per frame (None without a face) or None when not cached;
    no_face: (first, last) original frame numbers of each stretch without the face, those
    before and after the kept frames included."""

    numbers: np.ndarray
    run: np.ndarray
    segment: np.ndarray
    quality: np.ndarray
    landmarks: np.ndarray
    bad: np.ndarray
    replaced: list[int]
    outliers: list[int]
    crops: list | None
    segments: list[FaceCrop]
    offset: int
    no_face: list[tuple[int, int]]

    @property
    def present(self) -> np.ndarray:
        """(T,) bool: the frame shows the face."""
        return self.run >= 0

    @property
    def row_valid(self) -> np.ndarray:
        """(T-1,) bool: feature row k (frame k -> k + 1) lies inside one run."""
        return (self.run[:-1] == self.run[1:]) & (self.run[:-1] >= 0)

    def runs(self) -> list[tuple[int, int]]:
        """(first, last) indices, inclusive, of each run."""
        return run_bounds(self.run)

    def crop_boxes(self) -> np.ndarray:
        """(T, 4) int32 crop box of each frame in frame px, -1 without a face."""
        boxes = np.full((len(self.numbers), 4), -1, np.int32)
        for k, s in enumerate(self.segment):
            if s >= 0:
                boxes[k] = self.segments[s].box
        return boxes

    def notes(self) -> list[str]:
        """One line per stretch without the face, in frame numbers."""
        first, last = int(self.numbers[0]), int(self.numbers[-1])
        lines = []
        for a, b in self.no_face:
            if b < first:
                lines.append(f"no face in frames {a}-{b}: the video starts at frame {first}, "
                             f"where the face first is")
            elif a > last:
                lines.append(f"no face in frames {a}-{b}: the video ends at frame {last}, where "
                             f"the face last is")
            else:
                lines.append(f"no face in frames {a}-{b}: no features there")
        return lines


def face_frames(track: Track, video: str, jump_tolerance: float) -> FaceFrames:
    """The track trimmed to the face's first..last frame, its glitches and outlier frames
    repaired and its landmarks repaired run by run (`repair_runs`). Raises FaceNotFoundError
    when no frame shows the face, ValueError when fewer than 2 do."""
    from flowcore.landmarks import FaceNotFoundError

    segment, quality, raw = track.arrays()
    total = len(segment)
    if not (segment >= 0).any():
        how = (f" of its {total}, one in every {track.search_every} and the last"
               if track.searched < total else "")
        raise FaceNotFoundError(f"no face found in {video} (searched {track.searched} "
                                f"frames{how})")
    for g in track.glitches:  # a glitch belongs to the run around it
        segment[g] = segment[g - 1]
    landmarks, bad, outliers = repair_runs(track, segment, raw, jump_tolerance)
    numbers = np.asarray(track.numbers, np.int64)
    shown = np.flatnonzero(segment >= 0)
    if len(shown) < 2:
        raise ValueError(f"{video}: the face is in {len(shown)} frame(s); at least 2 are needed")
    first, last = int(shown[0]), int(shown[-1])
    keep = slice(first, last + 1)
    run = _runs(segment[keep])
    replaced = [k - first for k in sorted(outliers + track.glitches)
                if first <= k <= last and segment[k] >= 0]
    crops = None
    if track.crops is not None:
        crops = replace_frames(track.crops[keep], replaced, run)
    return FaceFrames(numbers[keep], run, segment[keep], quality[keep], landmarks[keep],
                      bad[keep], replaced, [k - first for k in sorted(outliers)], crops,
                      track.segments, first, _stretches(segment, numbers))


def repair_runs(track: Track, segment: np.ndarray, raw: np.ndarray, jump_tolerance: float):
    """Per run of `segment` (T,) (glitches already given their run's segment): the outlier
    frames (flowcore.video.outlier_frames on the crops' signatures) and the glitches flagged,
    the fits flagged by flowcore.faces.flag_bad_fits, all of them interpolated from the run's
    good fits. A run without one good fit is dropped: its frames get segment -1 (in place).
    Returns (landmarks (T, 68, 2) float32, NaN outside the runs; bad (T,) bool; outlier
    frame indices)."""
    from flowcore.faces import flag_bad_fits, repair_landmarks
    from flowcore.video import outlier_frames

    glitches = set(track.glitches)
    landmarks = np.full_like(raw, np.nan)
    bad = np.zeros(len(segment), bool)
    outliers: list[int] = []
    for a, b in run_bounds(_runs(segment)):
        inside = [k for k in range(a, b + 1) if k not in glitches]
        found = [inside[i] for i in
                 outlier_frames(np.stack([track.signatures[k] for k in inside]))]
        flagged = np.zeros(b - a + 1, bool)
        flagged[[k - a for k in found + [g for g in glitches if a <= g <= b]]] = True
        raw_run = raw[a : b + 1]  # NaN at glitches: flagged, never a neighbour
        flagged |= flag_bad_fits(raw_run, track.segments[segment[a]].size, jump_tolerance)
        if flagged.all():  # no fit to repair from: no face there after all
            segment[a : b + 1] = -1
            continue
        outliers += found
        bad[a : b + 1] = flagged
        landmarks[a : b + 1] = repair_landmarks(raw_run, flagged)
    return landmarks, bad, outliers


def replace_frames(crops: list, replaced, run: np.ndarray) -> list:
    """`crops` with each frame of `replaced` taken from the frame before it in its run (after
    it, at the run's start)."""
    crops = list(crops)
    for k in sorted(replaced):
        crops[k] = crops[k - 1] if k > 0 and run[k - 1] == run[k] else crops[k + 1]
    return crops


def run_bounds(run: np.ndarray) -> list[tuple[int, int]]:
    """(first, last) indices, inclusive, of each run of equal values >= 0 of `run` (T,)."""
    run = np.asarray(run)
    edges = np.flatnonzero(np.diff(np.concatenate([[-2], run, [-2]])) != 0)
    return [(int(a), int(b) - 1) for a, b in zip(edges[:-1], edges[1:]) if run[a] >= 0]


def _runs(segment: np.ndarray) -> np.ndarray:
    """(T,) run index of each frame: consecutive frames of one segment, -1 without a face."""
    run = np.full(len(segment), -1, np.int32)
    count = -1
    for k, s in enumerate(segment):
        if s >= 0:
            if k == 0 or segment[k - 1] != s:
                count += 1
            run[k] = count
    return run


def _stretches(segment: np.ndarray, numbers: np.ndarray) -> list[tuple[int, int]]:
    """(first, last) frame numbers of each stretch of frames without the face."""
    missing = (segment < 0).astype(int) - 1  # 0 without the face: runs of 0 are the stretches
    return [(int(numbers[a]), int(numbers[b])) for a, b in run_bounds(missing)]
