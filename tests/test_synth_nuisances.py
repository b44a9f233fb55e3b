"""The synthetic generator's opt-in nuisances (mespot/synth/nuisances.py): talking, nods, turns,
lighting changes; and footage without expressions (--neutral)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mespot.cli import main
from mespot.synth import SMALL
from mespot.synth.config import EVERYDAY, NEUTRAL
from mespot.synth.faces import make_subject
from mespot.synth.nuisances import FOCAL_FACES, PIVOT_X, PIVOT_Y, Nuisances, undo_turn
from mespot.synth.render import render_frames
from mespot.synth.timeline import VideoPlan, plan_for

MINUTE = SMALL.replace(seconds=60.0)


def test_off_by_default_and_on_leaves_the_rest_of_the_plan_as_it_was():
    plain = plan_for(MINUTE, 1, 0)
    everyday = plan_for(MINUTE.replace(**EVERYDAY), 1, 0)
    assert plain.nuisances is None and everyday.nuisances is not None
    assert plain.expressions == everyday.expressions and plain.blinks == everyday.blinks
    assert plain.head_moves == everyday.head_moves
    np.testing.assert_array_equal(plain.drift, everyday.drift)
    np.testing.assert_array_equal(plain.gain, everyday.gain)


def test_everyday_nuisances_are_planned_at_their_rates():
    plans = [plan_for(MINUTE.replace(**EVERYDAY), s, 0) for s in range(4)]
    kinds = pd.Series([e["kind"] for p in plans for e in p.nuisances.events]).value_counts()
    assert {"talk", "nod", "turn", "light"} <= set(kinds.index)
    talking = np.mean([(p.nuisances.talk[:, 0] > 0).mean() for p in plans])
    assert 0.2 < talking < 0.6  # about talking_fraction = 0.4 of the time
    for p in plans:
        assert (p.nuisances.talk >= 0).all()
        assert np.abs(p.nuisances.turn[:, 0]).max() <= MINUTE.turn_degrees[1]
        assert np.abs(p.nuisances.turn[:, 1]).max() <= MINUTE.nod_degrees[1]
        level = p.nuisances.light[:, 0]
        assert (np.abs(level - 1) <= MINUTE.light_change[1] + 1e-6).all()


def test_neutral_footage_has_no_expression():
    plans = [plan_for(MINUTE.replace(**NEUTRAL, **EVERYDAY), s, 0) for s in range(4)]
    assert all(p.expressions == () for p in plans)
    assert sum(len(p.blinks) for p in plans) > 0


@pytest.mark.parametrize("yaw, pitch", [(0.0, 0.0), (20.0, 0.0), (-15.0, 8.0)])
def test_undo_turn_inverts_the_perspective_turn(yaw, pitch):
    size = 128.0
    f = FOCAL_FACES * size
    x, y = np.meshgrid(np.linspace(-40, 40, 9), np.linspace(-50, 50, 9))
    a, b = np.deg2rad(yaw), np.deg2rad(pitch)
    yawed = np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])
    pitched = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    q = np.einsum("ij,jn->in", pitched @ yawed, np.stack([x.ravel(), y.ravel(), 0 * x.ravel()]))
    seen_x = f * q[0] / (f + q[2]) + PIVOT_X * size * np.sin(a)
    seen_y = f * q[1] / (f + q[2]) + PIVOT_Y * size * np.sin(b)
    back_x, back_y = undo_turn(seen_x, seen_y, yaw, pitch, size)
    np.testing.assert_allclose(back_x, x.ravel(), atol=1e-6)
    np.testing.assert_allclose(back_y, y.ravel(), atol=1e-6)


def test_talking_moves_the_mouth_and_not_the_eyes():
    subject = make_subject(0, 128, seed=0)
    n = 30
    talk = np.zeros((n, 3), np.float32)
    talk[20, 0] = 4.0  # the jaw open by 4 px at frame 20
    extra = Nuisances(talk, np.zeros((n, 2), np.float32),
                      np.tile(np.array([1.0, 0.0], np.float32), (n, 1)), ())
    plan = VideoPlan(n, 30.0, (), (), (), np.zeros((n, 3), np.float32), np.ones(n, np.float32),
                     extra)
    frames = list(render_frames(subject, plan, 0.0, np.random.SeedSequence(0)))
    change = np.abs(frames[20].astype(float) - frames[0].astype(float)).mean(axis=-1)
    lm = subject.frame_landmarks.astype(int)

    def around(points):
        x0, y0 = lm[points].min(0) - 3
        x1, y1 = lm[points].max(0) + 3
        return change[y0:y1, x0:x1].mean()

    mouth, eyes = around(list(range(48, 68))), around(list(range(36, 48)))
    assert mouth > 3.0 and eyes < 0.5
    assert np.array_equal(frames[0], frames[10])  # nothing else moves


def test_command_line_flags_turn_them_on(tmp_path, capsys):
    out = tmp_path / "n"
    assert main(["synth", "--small", "--nuisances", "--neutral", "--subjects", "1",
                 "--videos-per-subject", "1", "--seconds", "12", "--seed", "5", "--out",
                 str(out), "--workers", "1"]) == 0
    assert pd.read_csv(out / "ground_truth.csv").empty
    events = pd.read_csv(out / "events.csv")
    assert {"talk"} <= set(events["kind"]) or {"nod", "turn", "light"} & set(events["kind"])
    assert not (out / "preview.png").exists()  # nothing to show without an expression
    assert "macro-expressions" in capsys.readouterr().out
