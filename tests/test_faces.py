"""Face boxes, the face choice, crops, the face score, landmarks and their repair."""

import numpy as np
import pytest

from flowcore.faces import (DLIB, FaceBackend, FaceParams, choose_face, crop_for, face_backend,
                            fit_frame, flag_bad_fits, repair_landmarks)
from flowcore.landmarks import face_score
from mespot.testing import face_frames


@pytest.fixture(scope="module")
def frames():
    return face_frames(4)


def test_box_is_square_with_margin_and_inside_frame():
    # frame 100 px high, 200 wide; face 50 x 60 px centred on (35, 50)
    crop = crop_for((10, 20, 60, 80), (100, 200), FaceParams(margin=0.1))
    assert crop.box == (0, 14, 72, 86)  # side 60 grown by 2 x 10 %; x shifted from -1 to 0
    assert crop.size == (72, 72) and crop.detected == (10, 20, 60, 80)
    near_edge = crop_for((0, 0, 50, 50), (100, 200), FaceParams(margin=0.2))
    assert near_edge.box == (0, 0, 70, 70)  # shifted inside, not clipped
    resized = crop_for((10, 20, 60, 80), (100, 200), FaceParams(margin=0.1, resize=36))
    assert resized.size == (36, 36) and resized.face == (5, 3, 30, 33)  # (10, 6, 60, 66) / 2
    later = crop_for((10, 20, 60, 80), (100, 200), FaceParams(margin=0.1), size=36)
    assert later.size == (36, 36) and later.face == resized.face  # a later segment: one grid


def test_face_choice_rules():
    boxes = [(100, 0, 200, 100), (0, 0, 60, 60), (240, 40, 290, 90)]  # largest first
    shape = (100, 300)  # frame centre (150, 50)
    assert choose_face(boxes, shape, "largest") == (100, 0, 200, 100)
    assert choose_face(boxes[1:], shape, "center") == (240, 40, 290, 90)  # 116 px vs 122 px
    assert choose_face(boxes, shape, "0") == (0, 0, 60, 60)  # counted from the left
    assert choose_face(boxes, shape, "2") == (240, 40, 290, 90)
    assert choose_face(boxes, shape, "3") is None and choose_face([], shape, "largest") is None
    with pytest.raises(ValueError, match="largest, center or a face index"):
        FaceParams(choose="biggest")
    assert FaceParams(choose=1).choose == "1"


def test_params_of_a_store_from_before_tracking_still_load():
    old = {**FaceParams().to_dict(), "search_frames": 10}
    del old["keep_score"]
    assert FaceParams.from_dict(old) == FaceParams()


def test_crop_and_landmarks_on_a_real_face(frames):
    boxes = DLIB.detect(frames[0])
    assert len(boxes) == 1
    crop = crop_for(boxes[0], frames[0].shape, FaceParams(resize=96))
    patch = crop.crop(frames[0])
    assert patch.shape == (96, 96) and patch.dtype == np.uint8
    lm = fit_frame(patch, crop)
    assert lm.shape == (68, 2) and lm.dtype == np.float32
    assert (lm > 0).all() and (lm < 96).all()
    assert lm[45, 0] > lm[36, 0]  # outer eye corners in image order (subject's right first)


def test_face_score_is_high_on_the_face_and_nan_elsewhere(frames):
    box = DLIB.detect(frames[0])[0]
    assert face_score(frames[0], box) > 0.5
    flat = np.full_like(frames[0], 128)
    assert np.isnan(face_score(flat, box))
    assert np.isnan(face_score(frames[0], (0, 0, 20, 20)))  # no face there
    off = (box[0] + 300, box[1], box[2] + 300, box[3])
    assert np.isnan(face_score(frames[0], off))  # the box has left the image


def _track(n=12):
    """A steady face of landmarks moving 0.2 px per frame; eye corners 40 px apart."""
    rng = np.random.default_rng(0)
    base = rng.uniform(20, 80, size=(68, 2)).astype(np.float32)
    base[36], base[45] = (30, 40), (70, 40)
    return np.stack([base + 0.2 * k for k in range(n)])


def test_jumps_and_failed_fits_are_flagged_and_interpolated():
    truth = _track()
    raw = truth.copy()
    raw[4] += 15.0  # a jump of 15 px > 0.15 x 40 px
    raw[7, 3] = np.nan  # a failed fit
    raw[9, :, 0] = 500.0  # far outside a 100 px crop
    bad = flag_bad_fits(raw, (100, 100), 0.15)
    assert np.flatnonzero(bad).tolist() == [4, 7, 9]
    fixed = repair_landmarks(raw, bad)
    np.testing.assert_allclose(fixed, truth, atol=1e-4)  # linear motion: exact interpolation


def test_expression_motion_is_not_a_jump():
    raw = _track()
    raw[5:8, 48:68] += 3.0  # the mouth moves 3 px for three frames
    assert not flag_bad_fits(raw, (100, 100), 0.15).any()


def test_ends_copy_the_nearest_good_frame_and_all_bad_fails():
    raw = _track(5)
    bad = np.array([True, False, False, False, True])
    fixed = repair_landmarks(raw, bad)
    np.testing.assert_array_equal(fixed[0], raw[1])
    np.testing.assert_array_equal(fixed[4], raw[3])
    with pytest.raises(ValueError, match="every frame"):
        repair_landmarks(raw, np.ones(5, bool))


# a user's own detector and landmark fitter, found by "module:object" name
FIXED = FaceBackend("fixed", lambda image: (40, 40, 140, 140),
                    lambda image, box: np.full((68, 2), box[0] + 1.5, np.float32), lambda: None)


def test_plugged_in_face_backend(frames):
    params = FaceParams(backend="test_faces:FIXED")
    backend = face_backend(params.backend)
    assert backend.detect(frames[0]) == [(40, 40, 140, 140)]
    crop = crop_for(backend.detect(frames[0])[0], frames[0].shape, params, backend=params.backend)
    assert crop.box == (30, 30, 150, 150) and crop.backend == "test_faces:FIXED"
    np.testing.assert_array_equal(fit_frame(crop.crop(frames[0]), crop), 11.5)
    # without a face_score of its own, a detection on the whole frame stands in for it
    assert backend.score(frames[0], (45, 45, 140, 140)) == 1.0
    assert np.isnan(backend.score(frames[0], (0, 0, 30, 30)))
    with pytest.raises(ValueError, match="not a flowcore.faces.FaceBackend"):
        face_backend("test_faces:frames")
    with pytest.raises(ValueError, match="unknown face backend 'retina'"):
        face_backend("retina")
