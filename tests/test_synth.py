"""The synthetic dataset generator: layouts, workbooks, faces, rendered motion, bad input."""

from __future__ import annotations

import hashlib
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from openpyxl import load_workbook

from flowcore.landmarks import detect_faces, fit_landmarks
from mespot.cli import main
from mespot.synth import DEFAULT, SMALL, generate_dataset
from mespot.synth.actions import SUPPORTED_AUS, expression_field, parse_token
from mespot.synth.faces import make_subject
from mespot.synth.layouts import SAMM_HEADER, video_slot
from mespot.synth.render import render_frames, true_displacement
from mespot.synth.timeline import Expression, VideoPlan, plan_video

GT_COLUMNS = ["subject", "video", "onset", "apex", "offset", "type", "au"]


def _frames(folder: Path) -> list[Path]:
    return sorted(
        folder.glob("*.jpg"), key=lambda p: int("".join(filter(str.isdigit, p.stem.split("_")[-1])))
    )


# ---------------------------------------------------------------- layout and ground truth


def test_small_set_has_the_casme2_layout(synth_small):
    videos = pd.read_csv(synth_small / "videos.csv")
    assert len(videos) == SMALL.subjects * SMALL.videos_per_subject
    assert (synth_small / "rawpic" / "s15" / "15_0101disgustingteeth" / "img001.jpg").is_file()
    for row in videos.itertuples():
        frames = _frames(synth_small / row.folder)
        assert len(frames) == row.n_frames == SMALL.frames_per_video
        assert frames[0].name == "img001.jpg" and frames[-1].name == f"img{row.n_frames:03d}.jpg"
    for name in (
        "ground_truth.csv",
        "CAS(ME)^2code_final.xlsx",
        "events.csv",
        "synth.json",
        "preview.png",
    ):
        assert (synth_small / name).is_file(), name
    assert not list(synth_small.parent.glob(".small.partial-*"))


def test_ground_truth_is_consistent(synth_small):
    truth = pd.read_csv(synth_small / "ground_truth.csv")
    assert list(truth.columns[:7]) == GT_COLUMNS
    videos = pd.read_csv(synth_small / "videos.csv").set_index("video")
    assert set(truth["type"]) == {"me", "mae"}
    for row in truth.itertuples():
        assert 1 <= row.onset < row.apex < row.offset <= videos.loc[row.video, "n_frames"]
        seconds = (row.offset - row.onset + 1) / row.fps
        if row.type == "me":
            assert 0.2 - 1 / row.fps <= seconds <= 0.5 + 1 / row.fps
            assert 0.3 <= row.amplitude_px <= 1.5
        else:
            assert 0.5 - 1 / row.fps <= seconds <= SMALL.macro_seconds[1] + 1 / row.fps
            assert 2.0 <= row.amplitude_px <= 8.0
        for token in row.au.split("+"):
            parse_token(token)
    for _, group in truth.sort_values("onset").groupby("video"):
        assert (group["onset"].to_numpy()[1:] > group["offset"].to_numpy()[:-1]).all()


def test_casme2_workbook_round_trips(synth_small):
    truth = pd.read_csv(synth_small / "ground_truth.csv")
    sheets = pd.read_excel(synth_small / "CAS(ME)^2code_final.xlsx", sheet_name=None, header=None)
    codes, naming1, naming2 = list(sheets.values())
    assert codes.shape == (len(truth), 9)
    assert list(codes[2]) == list(truth["onset"]) and list(codes[4]) == list(truth["offset"])
    assert set(codes[7]) <= {"macro-expression", "micro-expression"}
    assert (codes[7] == "micro-expression").sum() == (truth["type"] == "me").sum()
    assert list(naming1.iloc[0]) == [15, "s15", 1] and list(naming1[2]) == [1, 2, 3]
    # sheet 3 as in the public MEGC copy: the code first, as a number, then the name
    assert naming2.shape == (9, 2) and list(naming2.iloc[0]) == [101, "disgust1"]
    labels = dict(zip(naming2[1], naming2[0]))
    for row, name in zip(truth.itertuples(), codes[1]):  # expression name <video label>_<n>
        label = name.rsplit("_", 1)[0]
        assert row.video.startswith(f"{row.subject[1:]}_{labels[label]:04d}")
    raw = load_workbook(synth_small / "CAS(ME)^2code_final.xlsx")
    sheet2, sheet3 = raw.worksheets[1], raw.worksheets[2]
    assert sheet3.cell(1, 1).value == 101 and sheet3.cell(1, 2).value == "disgust1"
    aus = [row[5].value for row in raw.worksheets[0].iter_rows()]
    assert all(isinstance(a, int) == str(a).isdigit() for a in aus)  # plain AUs are numbers
    assert sheet2.max_row == SMALL.subjects


def test_samm_layout_and_workbook(synth_small_samm):
    root = synth_small_samm
    frames = _frames(root / "SAMM_longvideos" / "006_1")
    assert frames[0].name == "006_1_0001.jpg" and len(frames) == 500
    assert (root / "SAMM_longvideos" / "007_1" / "007_1_0500.jpg").is_file()
    truth = pd.read_csv(root / "ground_truth.csv", dtype={"subject": str})
    table = pd.read_excel(
        root / "SAMM_LongVideos_V1_Release.xlsx",
        sheet_name="FACS_Movement_Only",
        header=9,
        dtype={"Subject": str},
    )
    assert tuple(table.columns) == SAMM_HEADER
    assert len(table) == len(truth)
    assert list(table["Onset"]) == list(truth["onset"]) and list(table["Apex"]) == list(
        truth["apex"]
    )
    assert list(table["Subject"]) == list(truth["subject"]) == sorted(truth["subject"])
    assert set(table["Type"]) == {"Macro", "Micro - 1/2"}
    assert all(
        name.startswith(video + "_") for name, video in zip(table["Filename"], truth["video"])
    )
    assert (table["Duration"] == table["Offset"] - table["Onset"] + 1).all()
    for raw, plain in zip(table["Action Units"], truth["au"]):  # intensity letters appended
        assert [t[:-1] for t in raw.split("+")] == plain.split("+") and raw[-1] in "ABCDE"


def test_samm_frame_names_grow_to_five_digits():
    slot = video_slot("samm", 0, 2)
    assert slot.video == "006_3" and slot.frame_pattern.format(10001) == "006_3_10001.jpg"
    assert video_slot("casme2", 0, 0).frame_pattern.format(1000) == "img1000.jpg"
    assert video_slot("casme2", 22, 0).subject == "s41"  # past the real subject ids


def test_same_seed_same_bytes_other_seed_other_data(tmp_path):
    config = SMALL.replace(subjects=1, videos_per_subject=1, seconds=2.0)

    def digest(root: Path) -> str:
        h = hashlib.sha256((root / "ground_truth.csv").read_bytes())
        for frame in _frames(root / video_slot("casme2", 0, 0).folder):
            h.update(frame.read_bytes())
        return h.hexdigest()

    a = generate_dataset(config, tmp_path / "a", preview=False).root
    b = generate_dataset(config, tmp_path / "b", preview=False).root
    c = generate_dataset(config.replace(seed=1), tmp_path / "c", preview=False).root
    assert digest(a) == digest(b) != digest(c)


# ---------------------------------------------------------------- faces


def test_face_and_68_landmarks_found_in_every_frame(synth_small):
    frames = _frames(synth_small / "rawpic" / "s16" / "16_0102eatingworms")
    for path in frames:
        image = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
        boxes = detect_faces(image)
        assert len(boxes) == 1, path.name
        landmarks = fit_landmarks(image, boxes[0])
        assert landmarks.shape == (68, 2)
        assert (landmarks >= 0).all() and (landmarks < image.shape[0]).all(), path.name


def test_subjects_differ_and_are_detected():
    subjects = [make_subject(i, 128, seed=0) for i in range(DEFAULT.subjects)]
    for s in subjects:
        x, y = s.offset
        frame = np.clip(s.canvas[y : y + s.frame_size, x : x + s.frame_size], 0, 255).astype(
            np.uint8
        )
        assert len(detect_faces(frame)) == 1
    means = np.array([s.canvas.reshape(-1, 3).mean(0) for s in subjects])
    assert np.ptp(means, axis=0).max() > 20  # skin tone and lighting really change
    shapes = np.array([s.frame_landmarks for s in subjects])
    assert np.abs(shapes - shapes.mean(0)).max() > 3  # so does the geometry


# ---------------------------------------------------------------- rendered motion


@pytest.fixture(scope="module")
def clean_subject():
    return make_subject(0, 128, seed=0)


def _render_pair(subject, expression=None, drift=(0.0, 0.0, 0.0)):
    """Frames 0 and 20 of a 40-frame clean video (no noise, flicker, blinks)."""
    n = 40
    pose = np.zeros((n, 3), np.float32)
    pose[20:] = drift
    plan = VideoPlan(
        n, 30.0, (expression,) if expression else (), (), (), pose, np.ones(n, np.float32)
    )
    frames = list(render_frames(subject, plan, 0.0, np.random.SeedSequence(0)))
    grey = [cv2.cvtColor(frames[t], cv2.COLOR_RGB2GRAY) for t in (0, 20)]
    return plan, grey


def _tvl1(first, second):
    cv2.setNumThreads(2)
    return cv2.optflow.DualTVL1OpticalFlow_create().calc(first, second, None)


def test_measuring_tool_recovers_a_known_flow(clean_subject):
    """A pure head shift of (0.6, -0.4) px: TV-L1 must read it on the face (checks the tool)."""
    _, (first, second) = _render_pair(clean_subject, drift=(0.6, -0.4, 0.0))
    flow = _tvl1(first, second)
    lm = clean_subject.frame_landmarks.astype(int)
    face = flow[lm[:, 1].min() : lm[:, 1].max(), lm[:, 0].min() : lm[:, 0].max()].reshape(-1, 2)
    assert np.allclose(np.median(face, axis=0), [0.6, -0.4], atol=0.06)


@pytest.mark.parametrize(
    "kind, aus, amplitude",
    [("me", "12", 0.8), ("me", "1+2", 1.2), ("mae", "4", 5.0), ("mae", "L12", 3.0)],
)
def test_rendered_displacement_matches_the_request(clean_subject, kind, aus, amplitude):
    expression = Expression(kind, 0, 20, 0, 39, aus, "test", amplitude)
    plan, (onset, apex) = _render_pair(clean_subject, expression)
    truth = true_displacement(clean_subject, plan, 20)
    magnitude = np.linalg.norm(truth, axis=-1)
    assert magnitude.max() == pytest.approx(amplitude, rel=1e-4)  # the field peaks at the request
    flow = _tvl1(onset, apex)
    y, x = np.unravel_index(magnitude.argmax(), magnitude.shape)
    patch = (slice(y - 5, y + 6), slice(x - 5, x + 6))  # one 11 x 11 ROI at the peak
    wanted = truth[patch].reshape(-1, 2).mean(0)
    measured = flow[patch].reshape(-1, 2).mean(0)
    assert np.linalg.norm(measured - wanted) <= 0.2 * np.linalg.norm(wanted) + 0.1
    still = magnitude < 0.01 * amplitude  # far from the action nothing moves
    assert np.abs(flow[still]).mean() < 0.05


def test_sided_action_moves_one_side_only(clean_subject):
    lm = clean_subject.landmarks
    left = expression_field(clean_subject.canvas.shape[:2], lm, ["L12"])
    corner_left, corner_right = (
        lm[54].astype(int),
        lm[48].astype(int),
    )  # image right = subject's left
    assert np.linalg.norm(left[corner_left[1], corner_left[0]]) > 0.5
    assert np.linalg.norm(left[corner_right[1], corner_right[0]]) < 0.05


# ---------------------------------------------------------------- statistics of the plan


def test_default_plan_statistics_resemble_casme2():
    plans = [plan_video(DEFAULT, np.random.SeedSequence([3, v])) for v in range(60)]
    expressions = [e for p in plans for e in p.expressions]
    macro = [e.length / DEFAULT.fps for e in expressions if e.kind == "mae"]
    micro = [e.length / DEFAULT.fps for e in expressions if e.kind == "me"]
    assert 0.15 < len(micro) / len(expressions) < 0.35
    assert 1.0 <= np.median(macro) <= 1.4 and min(macro) >= 0.5 - 1e-9 and max(macro) <= 4.0 + 1e-9
    assert min(micro) >= 0.2 - 1 / 30 and max(micro) <= 0.5 + 1 / 30
    tokens = pd.Series(
        [t.lstrip("LR") for e in expressions for t in e.aus.split("+")]
    ).value_counts()
    assert set(tokens.index[:2]) == {"12", "4"}
    assert {"1", "2", "4", "6", "7", "12", "14", "15", "24"} <= set(tokens.index)
    assert all(1 <= len(p.expressions) <= 15 for p in plans)
    assert np.mean([len(p.blinks) for p in plans]) > 5  # ~12 a minute
    assert set(SUPPORTED_AUS) >= {1, 2, 4, 6, 7, 12, 14, 15, 24}


# ---------------------------------------------------------------- command line and bad input


def test_help_lists_the_commands(capsys):
    assert main(["--help"]) == 0
    assert "synth" in capsys.readouterr().out


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--seconds", "-3"], "--seconds must be positive"),
        (["--fps", "0"], "--fps must be positive"),
        (["--face-size", "20"], "--face-size"),
    ],
)
def test_bad_parameters_give_one_clear_line(tmp_path, capsys, flags, message):
    out = tmp_path / "never"
    assert main(["synth", "--small", "--out", str(out), *flags]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0]
    assert not out.exists() and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("out", ["/sys/mespot-synth-test/out", "/etc/hostname/out"])
def test_unwritable_output_folder(capsys, out):
    assert main(["synth", "--small", "--out", out]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: cannot write the output folder")
    assert not Path(out).exists()


def test_refuses_to_overwrite_without_the_flag(tmp_path, capsys):
    (tmp_path / "keep.txt").write_text("precious")
    assert main(["synth", "--small", "--out", str(tmp_path)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert (tmp_path / "keep.txt").read_text() == "precious"


def test_a_failure_midway_leaves_nothing_behind(tmp_path, monkeypatch):
    import mespot.synth.generate as generate

    calls = []

    def flaky(config, s, v, root):
        calls.append((s, v))
        if len(calls) == 2:
            raise RuntimeError("disk full")
        return real(config, s, v, root)

    real = generate.render_video
    monkeypatch.setattr(generate, "render_video", flaky)
    config = SMALL.replace(subjects=1, seconds=2.0)
    with pytest.raises(RuntimeError, match="disk full"):
        generate_dataset(config, tmp_path / "parent" / "out", preview=False)
    assert list(tmp_path.iterdir()) == []  # not even the parent folder it created


@pytest.mark.slow
def test_command_line_small_run(tmp_path, capsys):
    out = tmp_path / "cli"
    png = tmp_path / "pictures" / "preview.png"
    assert (
        main(
            [
                "synth",
                "--small",
                "--subjects",
                "2",
                "--videos-per-subject",
                "1",
                "--seconds",
                "3",
                "--out",
                str(out),
                "--preview",
                str(png),
                "--workers",
                "2",
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "macro-expressions" in printed and "micro-expressions" in printed
    assert len(pd.read_csv(out / "videos.csv")) == 2
    image = cv2.imread(str(png))
    assert image is not None and image.std() > 10


def test_unknown_flag_is_a_usage_error(capsys):
    assert main(["synth", "--no-such-flag"]) == 2
    assert "No such option" in capsys.readouterr().err


def test_exit_codes_of_commands_reach_the_caller(monkeypatch):
    import typer

    from mespot import cli

    def failing(code: int = 3) -> None:
        raise typer.Exit(code)

    monkeypatch.setattr(cli.app, "registered_commands", list(cli.app.registered_commands))
    cli.app.command("fail-for-test")(failing)
    assert main(["fail-for-test"]) == 3


def test_config_file_sets_generator_parameters_and_flags_win(tmp_path):
    from mespot.commands.synth import config_from_file

    path = tmp_path / "set.yaml"
    path.write_text("expressions_per_minute: 7\nmicro_fraction: 0.3\nmicro_seconds: [0.25, 0.4]\n"
                    "seed: 9001\nlayout: samm\n")
    config, given = config_from_file(SMALL, path)
    assert (config.expressions_per_minute, config.micro_fraction) == (7.0, 0.3)
    assert config.micro_seconds == (0.25, 0.4) and config.seed == 9001 and config.layout == "samm"
    assert config.subjects == SMALL.subjects  # the preset's value where the file is silent
    assert given == {"expressions_per_minute", "micro_fraction", "micro_seconds", "seed", "layout"}


@pytest.mark.parametrize("text, message", [
    ("no_such_parameter: 3\n", "unknown key 'no_such_parameter'"),
    ("micro_seconds: 0.3\n", "'micro_seconds' must be a list of 2 numbers"),
    ("- a list\n", "expected a mapping"),
])
def test_bad_config_file_gives_one_clear_line(tmp_path, capsys, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    assert main(["synth", "--small", "--config", str(path), "--out", str(tmp_path / "never")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ")
    assert message in err[0] and str(path) in err[0]
    assert not (tmp_path / "never").exists()


def test_config_file_seed_and_layout_are_used_unless_typed(tmp_path, monkeypatch):
    import mespot.synth.generate as generator  # `mespot synth` imports it when it runs

    made = []
    monkeypatch.setattr(generator, "generate_dataset", lambda config, out, **kw:
                        made.append(config) or (_ for _ in ()).throw(SystemExit(0)))
    path = tmp_path / "set.yaml"
    path.write_text("seed: 9001\nlayout: samm\n")
    for flags in ([], ["--seed", "5"]):
        with pytest.raises(SystemExit):
            main(["synth", "--small", "--config", str(path), "--out", str(tmp_path / "o"), *flags])
    assert (made[0].seed, made[0].layout, made[0].fps) == (9001, "samm", 200.0)  # SAMM's rate
    assert made[1].seed == 5


def test_benchmark_seeds_are_refused_for_training_sets():
    from flowcore.errors import UserError
    from mespot.synth.seeds import BENCHMARK_SEEDS, DEV_SEEDS, PRETRAIN_SEEDS, check_not_benchmark

    assert not set(BENCHMARK_SEEDS) & set(PRETRAIN_SEEDS) and not set(DEV_SEEDS) & (
        set(PRETRAIN_SEEDS) | set(BENCHMARK_SEEDS))
    assert check_not_benchmark(PRETRAIN_SEEDS.start) == PRETRAIN_SEEDS.start
    with pytest.raises(UserError, match="reserved for benchmark"):
        check_not_benchmark(BENCHMARK_SEEDS.stop - 1)
    with pytest.raises(UserError, match="reserved for development"):
        check_not_benchmark(DEV_SEEDS.start)
