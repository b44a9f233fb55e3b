"""The README's Python API example runs as written, and gives what it says."""

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_example() -> str:
    section = README.read_text().split("## Python API", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


@pytest.mark.slow  # ~1 min: renders, extracts, trains and spots two 2-second videos
def test_readme_api_example_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    names: dict = {}
    exec(compile(readme_example(), "README.md", "exec"), names)
    printed = capsys.readouterr().out
    assert not names["report"].failed and len(names["features"].videos) == 2
    assert "('pair', 'roi', 'xy') 30.0" in printed
    video = names["video"]
    assert video["mdmo"].shape == (59, 12, 2) and video["frame_numbers"].values[0] == 1
    assert [f.subject for f in names["folds"]] == ["s15", "s16"]
    assert list(names["evaluation"].metrics["type"]) == ["me", "mae", "overall"]
    spotted = names["spotted"]
    assert list(spotted.intervals.columns) == ["video", "type", "onset", "offset", "apex", "score",
                                               "precision", "precision_n"]
    # evaluated just before: the run's map gives each interval its expected precision
    assert spotted.precision_note.startswith("expected precision from last+")
    assert spotted.min_precision == 0.5 and spotted.left_out >= 0
    assert spotted.curves.shape == (59, 8) and spotted.curves.index[0] == 1
    assert spotted.curves.to_numpy().min() >= 0 and spotted.curves.to_numpy().max() <= 1
    assert (spotted.out / "intervals.csv").is_file()


def test_api_errors_are_one_line_user_errors(tmp_path):
    import mespot
    from flowcore.errors import UserError

    with pytest.raises(UserError, match="no such file or folder"):
        mespot.extract(tmp_path / "missing", tmp_path / "f.zarr")
    with pytest.raises(UserError, match="no such run folder"):
        mespot.Spotter.load(tmp_path / "no-run")
    with pytest.raises(UserError, match="feature store not found"):
        mespot.open_store(tmp_path / "none.zarr")


def test_train_calls_on_epoch_end_after_every_epoch_and_stops_where_it_raises(tmp_path):
    import mespot
    from mespot.testing import write_tiny_store

    tiny = write_tiny_store(tmp_path)
    heard = []

    def on_epoch_end(fold: str, epoch: int) -> None:
        heard.append((fold, epoch))
        if (fold, epoch) == ("s2", 1):
            raise KeyboardInterrupt  # as a cancelled service job stops between epochs

    with pytest.raises(KeyboardInterrupt):
        mespot.train(tiny / "store.zarr", tiny / "gt.csv", tmp_path / "run", epochs=2,
                     batch_size=2, subjects=["s1", "s2"], tensorboard=False,
                     on_epoch_end=on_epoch_end)
    assert heard == [("s1", 1), ("s1", 2), ("s2", 1)]
    folds = mespot.train(tiny / "store.zarr", tiny / "gt.csv", tmp_path / "run", epochs=2,
                         batch_size=2, subjects=["s1", "s2"], tensorboard=False,
                         on_epoch_end=lambda fold, epoch: heard.append((fold, epoch)))
    assert [f.subject for f in folds] == ["s1", "s2"]
    assert heard[3:] == [("s2", 2)]  # s1 complete, s2 resumed from its first epoch
