"""benchmarks/device_check.sh's dry run (DEVICE=cpu QUICK=1 WHEELS=none): the plumbing of the GPU
checks, proved without a GPU: every step runs to exit 0 and writes its JSON, which names the
device it ran on."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
STEPS = ("CUDA tests", "kernel resources (NVRTC of the image)", "where TV-L1 time goes, 32 px",
         "MDMO kernel", "TV-L1 speed", "TV-L1 accuracy", "mespot bench")
FILES = ("kernel_resources", "flow_profile", "mdmo_speed", "flow_speed", "flow_accuracy", "bench")


def _devices(record) -> dict:
    """Every value of a key that names a device (device, torch_device, cuda_device), anywhere."""
    found = {}
    if isinstance(record, dict):
        for key, value in record.items():
            if key in ("device", "torch_device", "cuda_device"):
                found.setdefault(key, set()).add(str(value))
            for k, v in _devices(value).items():
                found.setdefault(k, set()).update(v)
    elif isinstance(record, list):
        for item in record:
            for k, v in _devices(item).items():
                found.setdefault(k, set()).update(v)
    return found


@pytest.mark.slow
def test_dry_run_runs_every_step_and_each_names_its_device(tmp_path):
    if shutil.which("timeout") is None:
        pytest.skip("the script limits each step with coreutils' timeout")
    env = {**os.environ, "DEVICE": "cpu", "QUICK": "1", "WHEELS": "none", "OUT": str(tmp_path),
           "PYTHON": sys.executable}
    subprocess.run(["bash", "benchmarks/device_check.sh"], cwd=ROOT, env=env, check=True,
                   capture_output=True, timeout=600)
    log = (tmp_path / "check.log").read_text()
    for step in STEPS:
        assert f"=== {step}: exit 0 after" in log, log
    for name in FILES:
        record = json.loads((tmp_path / f"{name}_cpu.json").read_text())
        devices = _devices(record)
        assert devices.get("cuda_device") == {"None"}, (name, devices)  # no GPU here, and it says
        named = devices.get("device", set()) | devices.get("torch_device", set())
        assert named == ({"none (NVRTC)"} if name == "kernel_resources" else {"cpu"}), name
