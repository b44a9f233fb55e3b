"""The built wheel carries the CUDA sources; every kernel compiles with nvcc where it exists."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
KERNELS = sorted((ROOT / "kernels").glob("*.cu"))


def test_there_are_kernels():
    assert KERNELS, "kernels/ holds no .cu file"


@pytest.mark.slow
def test_wheel_contains_the_cuda_sources(tmp_path):
    source = tmp_path / "src"
    shutil.copytree(
        ROOT,
        source,
        ignore=shutil.ignore_patterns(
            ".git",
            ".venv",
            "data",
            "runs",
            "build",
            "dist",
            "*.egg-info",
            "__pycache__",
            "benchmarks",
            "tests",
        ),
    )
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "--quiet",
            "-w",
            str(tmp_path / "dist"),
            str(source),
        ],
        check=True,
    )
    wheel = next((tmp_path / "dist").glob("mespot-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    for kernel in KERNELS + sorted(
        (ROOT / "kernels").glob("*.cuh")
    ):  # the headers they include too
        assert f"flowcore/kernels/{kernel.name}" in names
    assert "mespot/cli.py" in names and "flowcore/landmarks.py" in names
    # the service's page needs its script and style sheet from inside the package
    assert {"mespot/service/static/app.js", "mespot/service/static/style.css"} <= set(names)
    # `mespot train`'s default start, --init pretrained
    assert "spotting/weights/pretrained_synth.safetensors" in names
    entry_points = zipfile.ZipFile(wheel).read(
        next(n for n in names if n.endswith("entry_points.txt"))
    )
    assert b"mespot = mespot.cli:main" in entry_points


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc (CUDA toolkit) is not installed")
@pytest.mark.parametrize("kernel", KERNELS, ids=[k.name for k in KERNELS])
def test_kernel_compiles_with_nvcc(kernel, tmp_path):
    result = subprocess.run(
        ["nvcc", "-ptx", "-arch=compute_80", str(kernel), "-o", str(tmp_path / "k.ptx")],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert ".entry" in (tmp_path / "k.ptx").read_text()
