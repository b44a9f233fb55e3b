"""Faces that come and go (flowcore/tracking.py): which frames are marked as having no face, on
synthetic scenes where the truth is known (mespot.testing.scene_frames): the masked frames must
be those with the face missing or partly outside the frame, to within a few frames."""

import numpy as np
import pytest

from flowcore.extract import _Timer
from flowcore.faces import FaceParams
from flowcore.landmarks import FaceNotFoundError
from flowcore.tracking import face_frames, track_face
from mespot.testing import SCENE, outside_fraction, scene_frames

STEADY = (100, 30, 1.0)  # the face patch's placement when the subject sits still
TOLERANCE = 2  # frames: a mask's edge may lie this far from the truth's


def _track(placements, **params):
    frames, boxes = scene_frames(placements)
    stream = list(enumerate(frames, start=1))  # (frame number, frame), as FrameStream yields
    track = track_face(stream, FaceParams(resize=48, **params), _Timer(), cache_bytes=2**30)
    return track, boxes


def _masked(track) -> list[int]:
    """1-based frame numbers without the face."""
    segment, _, _ = track.arrays()
    return [int(n) for n, s in zip(track.numbers, segment) if s < 0]


def _assert_close(masked: list[int], truth: list[int]):
    """Every truly faceless frame is masked, and the masked frames are the truth's give or take
    TOLERANCE frames at each edge of each masked stretch."""
    assert set(truth) <= set(masked) or _near(set(truth) - set(masked), set(masked))
    extra = set(masked) - set(truth)
    assert _near(extra, set(truth)), f"masked {sorted(extra)} with the face in view"


def _near(frames: set, others: set) -> bool:
    return all(any(abs(f - o) <= TOLERANCE for o in others) for f in frames)


def _slide(start: int, stop: int, step: int) -> list[int]:
    return list(range(start, stop, step))


def test_late_onset_starts_the_video_at_the_face_first_frame():
    track, _ = _track([[]] * 10 + [[STEADY]] * 14)
    assert _masked(track) == list(range(1, 11))  # exact, though searched one frame in 8
    faces = face_frames(track, "late", 0.15)
    assert faces.numbers[0] == 11 and len(faces.numbers) == 14 and faces.present.all()
    assert faces.no_face == [(1, 10)]
    assert faces.notes() == ["no face in frames 1-10: the video starts at frame 11, where the "
                             "face first is"]
    assert track.searched < 10  # the empty frames were not all searched whole


def test_leaving_and_coming_back_masks_the_frames_in_between():
    xs = [100] * 6 + _slide(100, 340, 12) + [400] * 6 + _slide(330, 90, -12) + [100] * 6
    track, boxes = _track([[(x, 30, 1.0)] for x in xs])
    truth = [k + 1 for k, b in enumerate(boxes) if outside_fraction(b[0]) > 0]
    _assert_close(_masked(track), truth)
    faces = face_frames(track, "back", 0.15)
    assert faces.numbers[0] == 1 and faces.numbers[-1] == len(xs)  # face at both ends
    assert len(faces.no_face) == 1
    first, last = faces.no_face[0]
    assert abs(first - truth[0]) <= TOLERANCE and abs(last - truth[-1]) <= TOLERANCE
    rows = faces.row_valid  # no feature row spans the gap
    assert not rows[first - 2 : last].any()
    assert faces.notes() == [f"no face in frames {first}-{last}: no features there"]


def test_leaving_for_good_ends_the_video_at_the_face_last_frame():
    xs = [100] * 8 + _slide(100, 340, 15) + [400] * 8
    track, boxes = _track([[(x, 30, 1.0)] for x in xs])
    truth = [k + 1 for k, b in enumerate(boxes) if outside_fraction(b[0]) > 0]
    _assert_close(_masked(track), truth)
    faces = face_frames(track, "gone", 0.15)
    assert faces.no_face[-1][1] == len(xs)
    assert faces.numbers[-1] == faces.no_face[-1][0] - 1
    assert abs(faces.numbers[-1] + 1 - truth[0]) <= TOLERANCE
    assert faces.present.all()  # the kept frames all show it
    assert "the video ends at frame" in faces.notes()[-1]


def test_partly_out_of_frame_is_masked_while_the_face_is_cut():
    xs = [100] * 6 + _slide(100, 230, 10) + [230] * 4 + _slide(230, 100, -10) + [100] * 6
    track, boxes = _track([[(x, 30, 1.0)] for x in xs])
    cut = [outside_fraction(b[0]) for b in boxes]
    assert max(cut) == pytest.approx(0.3, abs=0.05)  # never gone, at most 30 % out
    truth = [k + 1 for k, c in enumerate(cut) if c > 0]
    _assert_close(_masked(track), truth)
    faces = face_frames(track, "cut", 0.15)
    assert len(faces.no_face) == 1 and faces.present[:6].all() and faces.present[-6:].all()


def test_two_faces_the_choice_is_stated_and_flag_chooses():
    small, large = (20, 40, 0.8), (160, 20, 1.1)  # left face smaller
    placements = [[small, large]] * 8
    track, boxes = _track(placements)
    assert "2 faces in frame 1; the largest was taken" in track.warnings[0]
    assert "--face largest|center|N" in track.warnings[0]
    chosen = track.segments[0].detected
    assert chosen[0] > 140  # the large face, on the right
    left, _ = _track(placements, choose="0")
    assert left.segments[0].detected[2] < 120 and "face 0 from the left" in left.warnings[0]
    centre, _ = _track(placements, choose="center")
    width = SCENE[0]
    got = centre.segments[0].detected
    nearest = min(boxes[0], key=lambda b: abs((b[0] + b[2]) / 2 - width / 2)
                  + abs((b[1] + b[3]) / 2 - SCENE[1] / 2))
    assert abs(got[0] - nearest[0]) < 15
    assert not _masked(track) and not _masked(left)


def test_a_second_face_joining_later_is_said():
    placements = [[STEADY]] * 12 + [[STEADY, (230, 60, 0.8)]] * 20
    track, _ = _track(placements, redetect_every=10)
    assert any(w.startswith("2 faces in view in frame") for w in track.warnings)
    assert not _masked(track) and len(track.segments) == 1


def test_no_face_anywhere_names_the_video_and_the_frames_searched():
    track, _ = _track([[]] * 9)
    with pytest.raises(FaceNotFoundError, match=r"no face found in clip7 \(searched 2 frames "
                                                r"of its 9, one in every 8 and the last\)"):
        face_frames(track, "clip7", 0.15)
    every, _ = _track([[]] * 3, search_every=1)
    with pytest.raises(FaceNotFoundError, match=r"no face found in c \(searched 3 frames\)"):
        face_frames(every, "c", 0.15)


def test_a_single_garbage_frame_is_a_glitch_repaired_not_a_gap():
    frames, _ = scene_frames([[STEADY]] * 10)
    frames[5] = np.random.default_rng(0).integers(0, 256, frames[5].shape, dtype=np.uint8)
    track = track_face(list(enumerate(frames, start=1)), FaceParams(resize=48), _Timer(), 2**30)
    assert track.glitches == [5]
    faces = face_frames(track, "g", 0.15)
    assert faces.present.all() and faces.row_valid.all() and faces.no_face == []
    assert 5 in faces.replaced and faces.bad[5]
    np.testing.assert_array_equal(faces.crops[5], faces.crops[4])
    assert np.isfinite(faces.landmarks).all()


def test_repairs_stay_inside_a_run_and_a_run_without_one_good_fit_is_dropped():
    from flowcore.faces import crop_for
    from flowcore.tracking import Track

    crop = crop_for((40, 40, 120, 120), (200, 320), FaceParams(resize=48))
    steady = np.tile(np.linspace(10, 38, 68, dtype=np.float32)[:, None], (1, 2))
    rng = np.random.default_rng(0)
    fits = [steady + k for k in range(12)]  # drifting 1 px a frame
    fits[7] = np.full((68, 2), np.nan, np.float32)  # the second run: frames 6-8, none fit
    fits[6], fits[8] = fits[7], fits[7]
    segment = [0, 0, 0, 0, -1, -1, 0, 0, 0, -1, 0, 0]
    track = Track(numbers=list(range(1, 13)), segment=segment, quality=[1.0] * 12,
                  landmarks=[None if s < 0 else f for s, f in zip(segment, fits)], crops=None,
                  signatures=[None if s < 0 else rng.normal(size=256) for s in segment],
                  segments=[crop], segment_faces=[1], segment_first=[0])
    faces = face_frames(track, "v", 0.15)
    assert faces.no_face == [(5, 10)]  # the gaps and the dropped run between them
    assert faces.present.tolist() == [True] * 4 + [False] * 6 + [True] * 2
    assert np.isnan(faces.landmarks[4:10]).all()
    np.testing.assert_array_equal(faces.landmarks[10:], np.stack(fits[10:]))
