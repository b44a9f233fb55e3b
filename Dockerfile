# mespot on a CUDA machine: `docker build -t mespot .` then
# `docker run --gpus all -v /data:/data mespot extract /data/CASME2 --out /data/casme2.zarr`
# The service (docs/service.md): `docker run --gpus all -p 127.0.0.1:8750:8750 -v /data:/data
#   -v /srv/mespot:/srv/mespot mespot serve --host 0.0.0.0 --device cuda --data-root /data
#   --store-root /srv/mespot/stores --home /srv/mespot/server`
FROM nvidia/cuda:12.6.3-cudnn-runtime-ubuntu24.04

ENV DEBIAN_FRONTEND=noninteractive PIP_NO_CACHE_DIR=1 PIP_BREAK_SYSTEM_PACKAGES=1
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-pip libgl1 libglib2.0-0 \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/mespot
COPY . .
# PyPI's Linux torch wheel is a CUDA 12 build; the `gpu` extra adds CuPy for CUDA 12, `serve`
# the HTTP service.
RUN python3 -m pip install ".[gpu,serve]"
EXPOSE 8750

ENTRYPOINT ["mespot"]
CMD ["--help"]
