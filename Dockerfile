# mespot on a CUDA machine: `docker build -t mespot .` then
# `docker run --gpus all -v /data:/data mespot extract /data/CASME2 --out /data/casme2.zarr`
FROM nvidia/cuda:12.6.3-cudnn-runtime-ubuntu24.04

ENV DEBIAN_FRONTEND=noninteractive PIP_NO_CACHE_DIR=1 PIP_BREAK_SYSTEM_PACKAGES=1
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-pip libgl1 libglib2.0-0 \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/mespot
COPY . .
# PyPI's Linux torch wheel is a CUDA 12 build; the `gpu` extra adds CuPy for CUDA 12.
RUN python3 -m pip install ".[gpu]"

ENTRYPOINT ["mespot"]
CMD ["--help"]
