"""Packaging for mespot: the `flowcore` and `spotting` packages, the `mespot` command line and
the CUDA sources of `kernels/`, which ship inside the wheel as `flowcore/kernels/`."""
import re
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent
VERSION = re.search(
    r'__version__ = "([^"]+)"', (HERE / "flowcore" / "version.py").read_text()
).group(1)

setup(
    name="mespot",
    version=VERSION,
    description="Spot facial macro- and micro-expressions in long face videos "
                "(AUW-GCN, end to end)",
    long_description=(HERE / "README.md").read_text(),
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">=3.10",
    packages=find_packages(include=["mespot*", "flowcore*", "spotting*"]) + ["flowcore.kernels"],
    # kernels/ sits at the top of the source tree; in the wheel it lives inside flowcore.
    package_dir={"flowcore.kernels": "kernels"},
    package_data={"flowcore.kernels": ["*.cu", "*.cuh"], "mespot.service": ["static/*"],
                  # `mespot train --init pretrained` (README: Synthetic pretraining)
                  "spotting": ["weights/*.safetensors"]},
    install_requires=[
        # CPU machines: install torch==2.13.0 first (see README); GPU machines: any CUDA build.
        "torch>=2.4",
        "numpy>=1.26",
        "zarr>=3.0",
        "opencv-contrib-python-headless>=4.8",
        "dlib-bin>=19.24",
        "face-recognition-models>=0.3",
        "numba>=0.59",
        "pandas>=2.0",
        "xarray>=2024.10",  # mespot.open_video: a store's video as an xarray.Dataset
        "openpyxl>=3.1",
        "matplotlib>=3.8",
        "rich>=13",
        "typer>=0.12",
        "pyyaml>=6",
        "safetensors>=0.4",
        "tensorboard>=2.15",
        "scikit-image>=0.22",  # ships the face photo the synthetic generator renders from
        # URLs wherever a path goes (flowcore/locations.py): s3:// needs the "s3" extra
        "fsspec>=2024.12",
        "universal-pathlib>=0.2",
    ],
    extras_require={
        "gpu": ["cupy-cuda12x>=13"],
        "gpu-cuda13": ["cupy-cuda13x>=13"],
        "ray": ["ray[default]>=2.9"],
        # s3:// (AWS S3, MinIO, Ceph, ...: docs/cluster.md); gs:// and az:// need gcsfs / adlfs
        "s3": ["s3fs>=2024.12"],
        # `mespot serve`: the HTTP service (the client commands need none of it)
        "serve": ["fastapi>=0.110", "uvicorn>=0.29", "prometheus-client>=0.20",
                  "fastapi-offline>=1.7"],  # /docs: Swagger UI served from the package
        # ray: tests of --engine ray; ruff and import-linter: `make test` checks style and layers;
        # fastapi ... playwright: the service and its page (driven in Debian's chromium);
        # httpx2: the client of starlette's TestClient (plain httpx is deprecated there);
        # s3fs and moto's server: object storage against a real S3-compatible server process;
        # the NVRTC of CUDA 12 and 13 (pip wheels: 90 + 58 MB to download, 227 + 149 MB on disk):
        # every kernel of kernels/ compiled for sm_80 and sm_90 without a GPU (tests/
        # test_kernels_build.py)
        "test": ["pytest>=8", "build>=1.0", "ray[default]>=2.9", "ruff>=0.6", "import-linter>=2.0",
                 "fastapi>=0.110", "uvicorn>=0.29", "prometheus-client>=0.20", "httpx2>=2.0",
                 "fastapi-offline>=1.7", "s3fs>=2024.12", "moto[server]>=5.0",
                 "playwright>=1.40", "nvidia-cuda-nvrtc-cu12>=12.4", "nvidia-cuda-nvrtc>=13.0"],
    },
    entry_points={"console_scripts": ["mespot = mespot.cli:main"]},
    classifiers=[
        "Programming Language :: Python :: 3",
        "Topic :: Scientific/Engineering :: Image Recognition",
    ],
)
