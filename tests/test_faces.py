"""Face box from the first frame, crop, landmarks and their repair."""

import numpy as np
import pytest

from flowcore.faces import (FaceBackend, FaceParams, _crop_for, face_backend, face_crop,
                            fit_frame, flag_bad_fits, repair_landmarks)
from flowcore.landmarks import FaceNotFoundError
from mespot.testing import face_frames


@pytest.fixture(scope="module")
def frames():
    return face_frames(4)


def test_box_is_square_with_margin_and_inside_frame():
    # frame 100 px high, 200 wide; face 50 x 60 px centred on (35, 50)
    crop = _crop_for((10, 20, 60, 80), (100, 200), FaceParams(margin=0.1), 0)
    assert crop.box == (0, 14, 72, 86)  # side 60 grown by 2 x 10 %; x shifted from -1 to 0
    assert crop.size == (72, 72)
    near_edge = _crop_for((0, 0, 50, 50), (100, 200), FaceParams(margin=0.2), 0)
    assert near_edge.box == (0, 0, 70, 70)  # shifted inside, not clipped
    resized = _crop_for((10, 20, 60, 80), (100, 200), FaceParams(margin=0.1, resize=36), 0)
    assert resized.size == (36, 36) and resized.face == (5, 3, 30, 33)  # (10, 6, 60, 66) / 2


def test_face_crop_and_landmarks_on_a_real_face(frames):
    crop = face_crop(frames, FaceParams(resize=96), "astronaut")
    assert crop.found_in_frame == 0
    patch = crop.crop(frames[0])
    assert patch.shape == (96, 96) and patch.dtype == np.uint8
    lm = fit_frame(patch, crop)
    assert lm.shape == (68, 2) and lm.dtype == np.float32
    assert (lm > 0).all() and (lm < 96).all()
    assert lm[45, 0] > lm[36, 0]  # outer eye corners in image order (subject's right first)


def test_no_face_fails_naming_the_video():
    with pytest.raises(FaceNotFoundError, match="video7: no face found in the first 2 frame"):
        face_crop(face_frames(5, face=False), FaceParams(search_frames=2), "video7")


def test_face_found_in_a_later_frame(frames):
    blank = np.full_like(frames[0], 128)
    crop = face_crop([blank, frames[1]], FaceParams(), "v")
    assert crop.found_in_frame == 1


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
    crop = face_crop(frames, params, "v")
    assert crop.box == (30, 30, 150, 150) and crop.backend == "test_faces:FIXED"
    np.testing.assert_array_equal(fit_frame(crop.crop(frames[0]), crop), 11.5)
    with pytest.raises(ValueError, match="not a flowcore.faces.FaceBackend"):
        face_backend("test_faces:frames")
    with pytest.raises(ValueError, match="unknown face backend 'retina'"):
        face_backend("retina")
