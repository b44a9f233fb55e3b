"""What `predict` does before the first frame (issue 26, item 4): it checks the whole run folder
without torch, and builds the networks once, when the video's features are there
(benchmarks/predict_speed.py measures the time this saves; no timing is asserted here)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _python(code: str) -> dict:
    """Run `code` in a fresh interpreter (this source tree first on the path); its last line
    of output, as JSON."""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_loading_a_run_to_spot_reads_it_all_without_torch(tiny_run):
    """load_trained (what predict and Spotter.load do first) checks every file and reads the
    rules and normalisations with torch not imported; the networks are built on first use."""
    found = _python(f"""
import json, sys
from spotting.trained import load_trained
trained = load_trained({str(tiny_run['run'])!r})
before = 'torch' in sys.modules
files = [(f.name, len(f.mean)) for f in trained.files]
models = trained.models
print(json.dumps({{"torch_before": before, "files": files, "torch_after": 'torch' in sys.modules,
                  "built": [type(m.network).__name__ for m in models],
                  "kept": trained.models is models}}))
""")
    assert found["torch_before"] is False
    assert found["files"] == [["s15", 2], ["s16", 2]]
    assert found["torch_after"] is True and found["built"] == ["AUWGCN", "AUWGCN"]
    assert found["kept"] is True  # built once


def test_the_predict_command_imports_torch_only_after_the_extraction(tiny_run, tmp_path):
    """`mespot predict`: torch is not imported until the face pass of the video is done (the
    networks run on the extracted features)."""
    video = tiny_run["data"] / "rawpic" / "s15" / "15_0101a"
    found = _python(f"""
import json, sys
import flowcore.extract as extract
seen = []
original = extract.track_face
def track_face(*args):
    seen.append('torch' in sys.modules)
    return original(*args)
extract.track_face = track_face
from mespot.cli import main
code = main(["predict", {str(video)!r}, "--model", {str(tiny_run['run'])!r}, "--out",
             {str(tmp_path / 'p')!r}, "-q"])
print(json.dumps({{"code": code, "torch_at_first_frame": seen,
                  "torch_at_end": 'torch' in sys.modules}}))
""")
    assert found["code"] == 0
    assert found["torch_at_first_frame"] == [False] and found["torch_at_end"] is True
    assert (tmp_path / "p" / "intervals.csv").is_file()
