"""`mespot predict`: a new video (file or frame folder) -> features -> network -> intervals."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import torch

from mespot.cli import main
from flowcore.errors import UserError
from mespot.synth import SMALL, generate_dataset
from spotting.predict import predict_video


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict:
    """A 2-subject synthetic set (2 s videos), extracted at 64 px and trained for 2 epochs."""
    from flowcore import ExtractParams, extract_source
    from flowcore.faces import FaceParams
    from spotting.config import RunConfig, TrainParams
    from spotting.loso import train_loso

    base = tmp_path_factory.mktemp("predict")
    data = generate_dataset(
        SMALL.replace(subjects=2, videos_per_subject=1, seconds=2.0), base / "data", preview=False
    ).root
    params = ExtractParams(faces=FaceParams(resize=64))
    report = extract_source(data, base / "features.zarr", params)
    assert not report.failed
    config = RunConfig(
        store=str(base / "features.zarr"),
        annotations=str(data / "ground_truth.csv"),
        train=TrainParams(epochs=2, batch_size=2),
    )
    train_loso(config, base / "run", tensorboard=False)
    return {"base": base, "data": data, "run": base / "run"}


@pytest.fixture(scope="module")
def trained_windows(trained) -> Path:
    """The same store trained with windows of 16 rows and 3 rows of context (defaults 256, 7)."""
    from spotting.config import RunConfig, TrainParams
    from spotting.loso import train_loso
    from spotting.windows import WindowParams

    run = trained["base"] / "run-windows"
    config = RunConfig(
        store=str(trained["base"] / "features.zarr"),
        annotations=str(trained["data"] / "ground_truth.csv"),
        train=TrainParams(epochs=2, batch_size=2),
        windows=WindowParams(length=16, context=3),
    )
    train_loso(config, run, tensorboard=False)
    return run


def _as_mp4(folder: Path, path: Path, fps: float = 30.0) -> Path:
    frames = sorted(folder.glob("*.jpg"), key=lambda p: int(p.stem[3:]))
    first = cv2.imread(str(frames[0]))
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, first.shape[1::-1])
    for frame in frames:
        writer.write(cv2.imread(str(frame)))
    writer.release()
    return path


@pytest.mark.slow
def test_predict_a_frame_folder_with_every_fold(trained, tmp_path):
    folder = trained["data"] / "rawpic" / "s16" / "16_0101disgustingteeth"
    result = predict_video(folder, trained["run"], tmp_path / "out")
    assert result.video_id == "16_0101disgustingteeth"
    table = pd.read_csv(tmp_path / "out" / "intervals.csv")
    assert list(table.columns) == ["video", "type", "onset", "offset", "apex", "score",
                                   "precision", "precision_n"]
    assert table["onset"].between(1, 60).all() and (table["offset"] >= table["onset"]).all()
    assert result.curves.shape == (59, 8) and result.frames[0] == 1
    meta = json.loads((tmp_path / "out" / "prediction.json").read_text())
    # a run never evaluated has no precision map: every interval listed, and said why
    assert table["precision"].isna().all() and meta["min_precision"] == 0
    assert meta["precision"].startswith("no score -> precision map") and result.left_out == 0
    assert meta["models"] == ["s15", "s16"] and meta["combination"].startswith("mean")
    assert meta["proposals"] == "mespot"  # a run on mespot's own features
    assert meta["flip"] is True and meta["combination"].endswith("the face and its mirror")
    image = cv2.imread(str(tmp_path / "out" / "curves.png"))
    assert image is not None and image.std() > 5
    # the features were extracted with the training store's parameters
    import zarr

    trained_params = dict(zarr.open_group(str(trained["base"] / "features.zarr"), mode="r").attrs)[
        "params"
    ]
    new_params = dict(zarr.open_group(str(tmp_path / "out" / "features.zarr"), mode="r").attrs)[
        "params"
    ]
    assert new_params == trained_params


@pytest.mark.slow
def test_predict_a_video_file_with_one_fold_from_the_command_line(trained, tmp_path, capsys):
    video = _as_mp4(
        trained["data"] / "rawpic" / "s15" / "15_0101disgustingteeth", tmp_path / "clip.mp4"
    )
    out = tmp_path / "clip"
    assert (
        main(
            [
                "predict",
                str(video),
                "--model",
                str(trained["run"]),
                "--fold",
                "s15",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert "spotted" in capsys.readouterr().out
    assert json.loads((out / "prediction.json").read_text())["models"] == ["s15"]


@pytest.mark.slow
def test_predict_with_a_reference_checkpoint(trained, tmp_path):
    from spotting.model import AUWGCN

    torch.manual_seed(0)
    network = AUWGCN(np.eye(12, dtype=np.float32))
    checkpoint = tmp_path / "checkpoint_epoch_042.pth.tar"
    torch.save({"epoch": 42, "state_dict": network.state_dict()}, checkpoint)
    folder = trained["data"] / "rawpic" / "s15" / "15_0101disgustingteeth"
    result = predict_video(folder, checkpoint, tmp_path / "ref")
    import zarr

    params = dict(zarr.open_group(str(tmp_path / "ref" / "features.zarr"), mode="r").attrs)[
        "params"
    ]
    assert params["compat"] is True  # the reference's 8-bit feature scale
    meta = json.loads((tmp_path / "ref" / "prediction.json").read_text())
    assert meta["proposals"] == "reference"  # and the reference's proposal arithmetic
    assert meta["flip"] is False  # and its one view of the face
    assert result.curves.shape[1] == 8


@pytest.mark.slow
def test_predict_a_folder_of_videos_spots_each_and_reports_a_broken_one(trained, tmp_path, capsys):
    videos = tmp_path / "lab"
    videos.mkdir()
    for subject in ("s15", "s16"):
        folder = next((trained["data"] / "rawpic" / subject).iterdir())
        _as_mp4(folder, videos / f"{subject}_clip.mp4")
    (videos / "broken.mp4").write_bytes(b"not a video")
    out = tmp_path / "spotted"
    code = main(["predict", str(videos), "--model", str(trained["run"]), "--out", str(out), "-q"])
    assert code == 1  # one video failed; the others are spotted
    captured = capsys.readouterr()
    assert "broken: not spotted, feature extraction failed" in captured.err
    assert "s15_clip: " in captured.out and "s16_clip: " in captured.out
    meta = json.loads((out / "prediction.json").read_text())
    assert meta["videos"] == ["s15_clip", "s16_clip"]
    assert [f["video"] for f in meta["failed"]] == ["broken"]
    assert all((out / "curves" / f"{v}.png").is_file() for v in meta["videos"])
    table = pd.read_csv(out / "intervals.csv")
    assert list(table.columns) == ["video", "type", "onset", "offset", "apex", "score",
                                   "precision", "precision_n"]
    assert set(table["video"]) <= {"s15_clip", "s16_clip"}


@pytest.mark.slow
def test_predict_refuses_videos_that_need_different_subsampling(trained, tmp_path):
    from spotting.predict import predict_videos

    videos = tmp_path / "mixed"
    videos.mkdir()
    folder = next((trained["data"] / "rawpic" / "s15").iterdir())
    _as_mp4(folder, videos / "normal.mp4", fps=30.0)
    _as_mp4(folder, videos / "fast.mp4", fps=120.0)
    with pytest.raises(UserError, match="need different subsampling.*every 4. frame for fast"):
        predict_videos(videos, trained["run"], tmp_path / "out")
    assert not (tmp_path / "out").exists()  # refused before any work


def test_bad_inputs(tmp_path):
    with pytest.raises(UserError, match="no such video"):
        predict_video(tmp_path / "missing.mp4", tmp_path, tmp_path / "out")
    (tmp_path / "clip.mp4").write_bytes(b"")
    with pytest.raises(UserError, match="no such run folder"):
        predict_video(tmp_path / "clip.mp4", tmp_path / "nothing", tmp_path / "out")


@pytest.mark.slow
def test_report_with_face_strips_from_the_real_frames(trained):
    from PIL import Image

    from flowcore.pictures import face_crops
    from spotting.evaluate import evaluate_run
    from spotting.report import build_report, face_strip_events

    evaluation = evaluate_run(trained["run"], "last")
    video = "15_0101disgustingteeth"
    events = face_strip_events(evaluation.matches[evaluation.matches["video"] == video])
    assert events and all(e["kind"] in ("truth TP", "truth FN", "spotted FP") for e in events)
    crops = face_crops(trained["base"] / "features.zarr", video, [1, 30])
    assert set(crops) == {1, 30} and crops[1].shape == (64, 64)  # cut and resized as extracted
    page = build_report(trained["run"], faces=[video], face_crops=face_crops).read_text()
    strip = trained["run"] / "report" / f"faces_{video}.png"
    assert strip.is_file() and "Faces at onset, apex and offset" in page
    with Image.open(strip) as image:
        assert np.asarray(image.convert("L"), dtype=np.float32).std() > 5
    with pytest.raises(UserError, match="no evaluated video"):
        build_report(trained["run"], faces=["nope"], face_crops=face_crops)


def test_flip_averages_the_logits_of_the_face_and_its_mirror():
    from spotting.augment import mirror_features
    from flowcore.store import VideoFeatures
    from spotting.model import AUWGCN
    from spotting.spot import Model, mean_logits
    from spotting.windows import WindowParams

    rng = np.random.default_rng(0)
    mdmo = rng.normal(0, 1, (300, 12, 2)).astype(np.float32)
    video = VideoFeatures("v", "s", 30.0, mdmo, np.arange(1, 302))
    torch.manual_seed(0)
    network = AUWGCN(np.eye(12, dtype=np.float32)).eval()
    model = Model("m", network, [0.1, -0.1], [1.5, 0.8], WindowParams())  # 256 + 2 x 7 rows

    def logits_of(x):
        # two windows of 256 rows + 7 context rows each side
        windows = np.zeros((2, 270, 12, 2), np.float32)
        padded = np.zeros((512 + 14, 12, 2), np.float32)
        padded[7:307] = x
        valid = np.zeros(526, bool)
        valid[7:307] = True
        for i in range(2):
            windows[i] = padded[i * 256: i * 256 + 270] * valid[i * 256: i * 256 + 270, None, None]
        norm = (windows - np.float32([0.1, -0.1])) / np.float32([1.5, 0.8])
        norm *= np.stack([valid[i * 256: i * 256 + 270] for i in range(2)])[:, :, None, None]
        with torch.no_grad():
            out = network(torch.from_numpy(norm))[:, :, 7:263].numpy()
        return out.transpose(0, 2, 1).reshape(-1, 10)[:300]

    both = (logits_of(mdmo) + logits_of(mirror_features(mdmo))) / 2
    flipped = mean_logits([model], video, "cpu", flip=True)
    plain = mean_logits([model], video, "cpu", flip=False)
    np.testing.assert_allclose(flipped, both, atol=1e-5)
    np.testing.assert_allclose(plain, logits_of(mdmo), atol=1e-5)
    assert not np.allclose(flipped, plain, atol=1e-3)
    # two models: the mean of their logits
    np.testing.assert_array_equal(mean_logits([model, model], video, "cpu", flip=True), flipped)


@pytest.mark.slow
def test_predict_command_flip_flag(trained, tmp_path):
    folder = trained["data"] / "rawpic" / "s16" / "16_0101disgustingteeth"
    assert main(["predict", str(folder), "--model", str(trained["run"]), "--out",
                 str(tmp_path / "out"), "--flip", "-q"]) == 0
    meta = json.loads((tmp_path / "out" / "prediction.json").read_text())
    assert meta["combination"].endswith("each on the face and its mirror")


def _default_window_curves(store: Path, video_id: str, weights: Path) -> np.ndarray:
    """What the fold's network gives on the video cut into the default windows (256 + 2 x 7)."""
    from flowcore.store import load_features
    from spotting.data import window_tensors
    from spotting.inference import predict_logits, probability_curves, video_logits
    from spotting.run_folder import load_weights
    from spotting.windows import WindowParams, build_windows, video_targets

    video = load_features(store).videos[video_id]
    windows = WindowParams()
    ws = build_windows([video], {video_id: video_targets(video.n_rows, [], windows)}, windows)
    network, meta = load_weights(weights)
    mask = np.ones(len(ws), bool)
    x = window_tensors(
        ws, mask, meta["normalisation"]["mean"], meta["normalisation"]["std"], "cpu"
    )["x"]
    return probability_curves(
        video_logits(predict_logits(network, x, windows.context).numpy(), ws, mask)[video_id]
    )


@pytest.mark.slow
def test_predict_cuts_windows_as_the_run_was_trained(trained, trained_windows, tmp_path):
    from spotting.evaluate import SpotOptions, evaluate_run

    video = "15_0101disgustingteeth"
    # the proposal rules of predict are the fixed ones; both flip by default
    evaluation = evaluate_run(trained_windows, "last", options=SpotOptions(calibrate=False))
    assert evaluation.options.flip
    expected_curves = np.load(evaluation.out / "curves.npz")[video]
    result = predict_video(  # every interval, as evaluate lists them (the MEGC listing)
        trained["data"] / "rawpic" / "s15" / video, trained_windows, tmp_path / "out", fold="s15",
        min_precision=0,
    )
    np.testing.assert_allclose(result.curves, expected_curves, rtol=0, atol=1e-6)
    columns = ["type", "onset", "offset", "apex"]
    expected = evaluation.intervals[evaluation.intervals["video"] == video].sort_values(columns)
    got = result.intervals.sort_values(columns)
    assert got[columns].astype(int).values.tolist() == expected[columns].astype(int).values.tolist()
    np.testing.assert_allclose(
        got["score"].astype(float), expected["score"].astype(float), rtol=0, atol=1e-6
    )
    assert json.loads((tmp_path / "out" / "prediction.json").read_text())["windows"]["length"] == 16
    # the default windows would have given other outputs: the run's windows matter here
    weights = trained_windows / "folds" / "s15" / "weights_epoch_002.safetensors"
    defaults = _default_window_curves(trained["base"] / "features.zarr", video, weights)
    assert np.abs(defaults - expected_curves).max() > 1e-3


def test_a_flow_backend_that_cannot_run_here_is_one_clear_line(trained, tmp_path, capsys):
    frames = trained["data"] / "rawpic" / "s15" / "15_0101disgustingteeth"
    code = main(["predict", str(frames), "--model", str(trained["run"]), "--out",
                 str(tmp_path / "p"), "--backend", "nope", "-q"])
    assert code == 2 and "unknown flow backend 'nope'" in capsys.readouterr().err


def _with_faceless_frames(source: Path, out: Path, faceless) -> Path:
    """A copy of the frame folder `source` whose frames `faceless` (1-based) show no face."""
    out.mkdir(parents=True)
    for path in sorted(source.glob("*.jpg")):
        image = cv2.imread(str(path))
        if int(path.stem[3:]) in faceless:
            image = cv2.GaussianBlur(image, (0, 0), 25)  # the face blurred beyond recognition
        cv2.imwrite(str(out / path.name), image)
    return out


@pytest.mark.slow
def test_predict_says_where_the_face_was_missing_and_spots_nothing_there(
        trained, trained_windows, tmp_path, capsys):
    source = trained["data"] / "rawpic" / "s16" / "16_0101disgustingteeth"
    clip = _with_faceless_frames(source, tmp_path / "clip" / "16_0101gap",
                                 set(range(1, 6)) | set(range(21, 36)))
    assert main(["predict", str(clip), "--model", str(trained_windows), "--out",
                 str(tmp_path / "out"), "-q"]) == 0
    out = capsys.readouterr().out
    assert "16_0101gap: no face in frames 1-5, 21-35 (nothing spotted there)" in out
    meta = json.loads((tmp_path / "out" / "prediction.json").read_text())
    assert meta["no_face"] == {"16_0101gap": [[1, 5], [21, 35]]}
    table = pd.read_csv(tmp_path / "out" / "intervals.csv")
    assert ((table["offset"] < 21) | (table["onset"] > 35)).all()  # none spans the gap
    result = predict_video(clip, trained_windows, tmp_path / "out")  # its features resumed
    assert result.frames[0] == 6  # the video starts where the face first is
    gap = (result.frames >= 20) & (result.frames <= 35)  # rows touching frames 21..35
    assert np.isnan(result.curves[gap]).all() and np.isfinite(result.curves[~gap]).all()


@pytest.mark.slow
def test_predict_a_clip_without_a_face_says_so(trained, tmp_path, capsys):
    source = trained["data"] / "rawpic" / "s16" / "16_0101disgustingteeth"
    clip = _with_faceless_frames(source, tmp_path / "nobody", set(range(1, 61)))
    assert main(["predict", str(clip), "--model", str(trained["run"]), "--out",
                 str(tmp_path / "out"), "-q"]) == 2
    err = capsys.readouterr().err
    assert "no face found in nobody (searched 9 frames of its 60" in err


@pytest.mark.slow
def test_predict_states_which_face_and_face_chooses(trained, tmp_path, capsys):
    import zarr

    source = trained["data"] / "rawpic" / "s16" / "16_0101disgustingteeth"
    clip = tmp_path / "two" / "16_0101two"
    clip.mkdir(parents=True)
    for path in sorted(source.glob("*.jpg"))[:20]:
        image = cv2.imread(str(path))
        side = image.shape[0]
        wide = np.full((side, 2 * side, 3), 128, np.uint8)
        wide[:, :side] = image  # the subject on the left, a smaller second face on the right
        small = cv2.resize(image, (side * 3 // 4, side * 3 // 4))
        top, left = side // 8, side + side // 8
        wide[top : top + small.shape[0], left : left + small.shape[1]] = small
        cv2.imwrite(str(clip / path.name), wide)
    assert main(["predict", str(clip), "--model", str(trained["run"]), "--out",
                 str(tmp_path / "out"), "-q", "--face", "1"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "warning: 16_0101two: 2 faces in frame 1; face 1 from the left was taken" in out
    box = zarr.open_group(str(tmp_path / "out" / "features.zarr"), mode="r")[
        "videos/16_0101two/face_box"][...]
    assert box[0] >= side  # the right-hand face
