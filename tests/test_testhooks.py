"""The test hook flowcore.testhooks and its test side (tests/waiting.py): off unless the suite
sets it, a held point waits until a pass or the opened gate, and a forgotten hold gives up."""

import os
import threading

import pytest
from waiting import DEADLINE

from flowcore import testhooks
from flowcore.testhooks import ENVIRONMENT, gate


def test_a_gate_is_open_unless_the_suite_holds_its_point(tmp_path, monkeypatch):
    monkeypatch.delenv(ENVIRONMENT, raising=False)
    gate("extract-a")  # off: returns at once
    monkeypatch.setenv(ENVIRONMENT, str(tmp_path))
    (tmp_path / "train-*.hold").touch()
    gate("extract-a")  # on, but nothing holds this point
    assert [p.name for p in tmp_path.iterdir()] == ["train-*.hold"]


def _held_in_a_thread(point: str, passed: list) -> threading.Thread:
    thread = threading.Thread(target=lambda: (gate(point), passed.append(point)), daemon=True)
    thread.start()
    return thread


def test_a_held_point_waits_for_a_pass_then_for_the_gate_to_open(gates, monkeypatch):
    monkeypatch.setenv(ENVIRONMENT, str(gates.folder))
    gates.hold("extract-*")
    passed = []
    thread = _held_in_a_thread("extract-a/b", passed)
    assert gates.arrival("extract-*") == ("extract-a_b", os.getpid())  # '/': a file name
    assert passed == []  # held: only a pass or an open gate lets it go
    gates.let_through("extract-a_b")
    thread.join(DEADLINE)
    assert passed == ["extract-a/b"] and gates.waiting() == {}

    thread = _held_in_a_thread("extract-a/b", passed)  # the pass was used up: held again
    gates.arrival("extract-*")
    assert passed == ["extract-a/b"]
    gates.open_all()
    thread.join(DEADLINE)
    assert passed == ["extract-a/b"] * 2 and not thread.is_alive()


def test_a_forgotten_hold_gives_up_with_the_point_named(gates, monkeypatch):
    monkeypatch.setenv(ENVIRONMENT, str(gates.folder))
    monkeypatch.setattr(testhooks, "HOLD_SECONDS", 0.1)
    gates.hold("job-*")
    with pytest.raises(TimeoutError, match="test gate 'job-7' held for 0.1 s"):
        gate("job-7")
