"""The fault corpus, part 3: frames that decode into garbage, frames of other kinds, a second face:
repaired and listed, or said; never silently turned into false expressions."""

import cv2
import numpy as np
import pytest
import zarr

from flowcore.extract import RunOptions
from mespot.testing import face_frames, write_casme2, write_frames
from flowcore.video import FrameStream, VideoSpec, frame_signature, outlier_frames
from mespot.cli import main


def _zero_middle(path, fraction=1 / 6):
    """Zero a run of bytes in the middle of a JPEG, its end marker intact: libjpeg decodes it into
    garbage with only a warning."""
    data = bytearray(path.read_bytes())
    n = len(data)
    data[n // 3 : n // 3 + int(n * fraction)] = bytes(int(n * fraction))
    path.write_bytes(bytes(data))


def _noise_frame(path, seed=0):
    """A valid JPEG of noise: no decoder complains, but it is not the video's picture."""
    noise = np.random.default_rng(seed).integers(0, 256, (192, 192), dtype=np.uint8)
    cv2.imwrite(str(path), noise)


def _video_attrs(store, video):
    return dict(zarr.open_group(str(store), mode="r")[f"videos/{video}"].attrs)


@pytest.fixture(scope="module")
def damaged(tmp_path_factory):
    """Two 12-frame videos: frame 5 of one a JPEG with zeroed middle bytes, frame 7 of the other a
    noise picture; extracted by the command (48 px crops)."""
    base = tmp_path_factory.mktemp("damaged")
    root = write_casme2(base / "data", {"15_0101a": 12, "16_0101b": 12})
    _zero_middle(root / "rawpic" / "s15" / "15_0101a" / "img005.jpg")
    _noise_frame(root / "rawpic" / "s16" / "16_0101b" / "img007.jpg")
    clean = write_casme2(base / "clean", {"15_0101a": 12, "16_0101b": 12})
    return {"root": root, "clean": clean, "base": base}


def _extract(source, store) -> int:
    """`mespot extract` of SOURCE into STORE at 48 px, one worker, in this process."""
    return main(
        ["extract", str(source), "--out", str(store), "--resize", "48", "--workers", "1", "-q"]
    )


def test_jpeg_with_zeroed_middle_bytes_is_a_corrupt_frame(damaged):
    spec = VideoSpec("15_0101a", "s15", damaged["root"] / "rawpic" / "s15" / "15_0101a", 30.0)
    stream = FrameStream(spec)
    frames = dict(stream)
    assert stream.repairs["corrupt"] == [5]
    np.testing.assert_array_equal(frames[5], frames[4])  # replaced by the previous good frame


@pytest.mark.slow
def test_garbage_frames_are_repaired_listed_and_make_no_motion(damaged, tmp_path, capsys):
    store = tmp_path / "damaged.zarr"
    assert _extract(damaged["root"], store) == 0
    out = capsys.readouterr().out
    assert "15_0101a: frames repaired (replaced by a neighbour): corrupt [5]" in out
    assert "16_0101b: frames repaired (replaced by a neighbour): outlier [7]" in out
    assert _video_attrs(store, "15_0101a")["frame_repairs"]["corrupt"] == [5]
    assert _video_attrs(store, "16_0101b")["frame_repairs"]["outlier"] == [7]
    clean = tmp_path / "clean.zarr"
    assert _extract(damaged["clean"], clean) == 0
    capsys.readouterr()
    for video in ("15_0101a", "16_0101b"):
        got = zarr.open_group(str(store), mode="r")[f"videos/{video}/mdmo"][...]
        want = zarr.open_group(str(clean), mode="r")[f"videos/{video}/mdmo"][...]
        # no row moves much more than the clean video's largest motion (garbage moved ~200x)
        assert np.abs(got).max() <= 2 * np.abs(want).max() + 0.5, video


def test_outlier_repair_is_the_same_with_and_without_the_frame_cache(damaged, tmp_path):
    from flowcore import ExtractParams, extract_source
    from flowcore.faces import FaceParams

    params = ExtractParams(faces=FaceParams(resize=48))
    stores = {}
    for cache in (512.0, 0.0):
        stores[cache] = tmp_path / f"cache{cache:g}.zarr"
        report = extract_source(
            damaged["root"], stores[cache], params, RunOptions(frame_cache_mb=cache), workers=1
        )
        assert not report.failed
    a = zarr.open_group(str(stores[512.0]), mode="r")["videos/16_0101b"]
    b = zarr.open_group(str(stores[0.0]), mode="r")["videos/16_0101b"]
    assert a.attrs["frame_repairs"]["outlier"] == b.attrs["frame_repairs"]["outlier"] == [7]
    assert a["mdmo"][...].tobytes() == b["mdmo"][...].tobytes()


def test_outlier_rule_spares_real_motion_and_finds_garbage_at_the_ends(synth_small):
    signatures = []
    folder = next((synth_small / "rawpic").glob("*/*"))  # blinks, head moves, flicker, noise
    files = sorted(folder.glob("*.jpg"), key=lambda p: int(p.stem[3:]))
    frames = [cv2.imread(str(f), cv2.IMREAD_GRAYSCALE)[64:192, 64:192] for f in files]
    signatures = np.stack([frame_signature(f) for f in frames])
    assert outlier_frames(signatures) == []
    noise = np.random.default_rng(1).integers(0, 256, frames[0].shape, dtype=np.uint8)
    for k in (0, 100, len(frames) - 1):
        broken = signatures.copy()
        broken[k] = frame_signature(noise)
        assert outlier_frames(broken) == [k]
    cut = np.concatenate([signatures[:50], signatures[::-1][:50]])  # a cut: one side agrees
    assert outlier_frames(cut) == []


def test_grey_16_bit_and_non_ascii_frames_still_extract(tmp_path, capsys):
    """Cases that pass today and must stay passing: 16-bit PNG and colour frames, a non-ASCII
    folder name."""
    root = tmp_path / "données vidéo"
    frames = face_frames(10)
    folder = root / "rawpic" / "s15" / "15_0101a"
    write_frames(folder, frames[:5], "img{:03d}.jpg")
    for k, frame in enumerate(frames[5:], start=6):  # the rest as 16-bit PNG, then colour JPEG
        if k < 8:
            cv2.imwrite(str(folder / f"img{k:03d}.png"), frame.astype(np.uint16) * 257)
        else:
            cv2.imwrite(str(folder / f"img{k:03d}.jpg"), cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR))
    store = tmp_path / "ñ.zarr"
    assert _extract(root, store) == 0
    attrs = _video_attrs(store, "15_0101a")
    assert attrs["status"] == "complete" and attrs["n_frames"] == 10
    assert not any(attrs["frame_repairs"].values())


@pytest.mark.slow
def test_two_faces_in_the_first_frame_are_said(tmp_path, capsys):
    frames = []
    for frame in face_frames(8):
        canvas = np.full((192, 360), 128, np.uint8)
        canvas[:, :192] = frame
        canvas[20:170, 200:350] = cv2.resize(frame, (150, 150))
        frames.append(canvas)
    root = tmp_path / "data"
    write_frames(root / "rawpic" / "s15" / "15_0101a", frames, "img{:03d}.jpg")
    store = tmp_path / "f.zarr"
    assert _extract(root, store) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "warning: 15_0101a: 2 faces in frame 1; the largest was taken (box [" in out
    attrs = _video_attrs(store, "15_0101a")
    assert attrs["faces_in_that_frame"] == 2 and attrs["status"] == "complete"
    assert attrs["warnings"][0].startswith("2 faces in frame 1")
    box = zarr.open_group(str(store), mode="r")["videos/15_0101a/face_box"][...]
    assert box[2] <= 200  # the larger face, on the left
