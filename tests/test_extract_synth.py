"""The synthetic generator's output, in both layouts, extracts into stores plain zarr reads."""

import numpy as np
import pytest
import zarr

from flowcore.batch import run_extraction
from flowcore.extract import ExtractParams
from flowcore.faces import FaceParams
from flowcore.flow import TVL1Params
from flowcore.sources import open_source
from spotting.annotations import read_source_annotations

QUICK = ExtractParams(tvl1=TVL1Params(n_scales=2, n_warps=1, outer_iterations=2),
                      faces=FaceParams(resize=48))


@pytest.mark.slow
@pytest.mark.parametrize("layout, fps, kept", [("casme2", 30.0, 30), ("samm", 200.0, 25)])
def test_synthetic_layouts_extract(tmp_path, layout, fps, kept):
    from mespot.synth.config import SMALL
    from mespot.synth.generate import generate_dataset

    config = SMALL.replace(subjects=1, videos_per_subject=1, seconds=1.0, fps=fps, layout=layout,
                           expressions_per_minute=60.0)
    generate_dataset(config, tmp_path / "synth", preview=False)
    source = open_source(tmp_path / "synth")
    assert source.name == f"synth-{layout}"
    report = run_extraction(source, tmp_path / "f.zarr", QUICK, workers=1)
    assert report.count("complete") == 1, report.summary()
    store = zarr.open(str(tmp_path / "f.zarr"), mode="r")  # plain zarr, no mespot code
    (video_id, group), = store["videos"].groups()
    assert group["mdmo"].shape == (kept - 1, 12, 2)
    assert group["landmarks"].shape == (kept, 68, 2)
    numbers = group["frame_numbers"][...]
    step = 8 if layout == "samm" else 1
    assert numbers.tolist() == list(range(1, 1 + step * kept, step))
    assert group.attrs["fps"] == fps / step
    assert np.isfinite(group["mdmo"][...]).all()
    table = read_source_annotations(source)  # spotting's reader, the workbook the source found
    assert set(table.frame["video_id"]) <= {video_id}
