#!/usr/bin/env bash
# The GPU checks the issues leave for a session that is lent a GPU machine, as one call of the
# device tool (/work/.library/device/README.md): expected 3-4 minutes on an H100 or H200, 8 at
# most (each step has its own limit).
#   1. the CUDA tests: training on CUDA deterministic and close to the CPU (issue 6), MDMO and
#      extraction pieces on CUDA, the torch TV-L1 on CUDA against the CPU (issue 3), the kernels
#      of kernels/ (TV-L1 warp, median filter, iteration, the whole `cuda` level solver; the MDMO
#      kernel) against the torch path and flowcore's float MDMO (issue 28)
#   2. the kernels' registers, spills and occupancy by the image's NVRTC (kernel_resources.py)
#   3. where a GPU's TV-L1 time goes at 256 px, `torch` and `cuda` backends, batch 32 / 128 / 512
#      (flow_profile.py: pairs/s, iterations, GPU busy, host time per iteration launch)
#   4. the MDMO kernel against flowcore.mdmo on NumPy and torch (mdmo_speed.py)
#   5. TV-L1 on the GPU at 256 px by batch (flow_speed.py) and the accuracy benchmark (EPE per
#      class of known flow, `cuda` against `torch`)
#   6. `mespot bench --device cuda`: the quick check a researcher runs, for comparison
#   7. with TRAIN=1 only (2.5 more minutes): LOSO training of a CAS(ME)^2-sized store on the GPU
#      (issue 6's target: under 60 s), one fold at a time and 4 side by side
# Every step has its own time limit, so one that hangs cannot eat the session's device time.
#
# Here, once per session (needs the package registry, which that machine cannot reach):
#   grep -qx '/.whl/' .git/info/exclude || echo /.whl/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
#     -d .whl -r benchmarks/device_wheels.txt
# Then, with the device tool: run(command="bash benchmarks/device_check.sh", carry=[".whl"], timeout_s=600)
# What comes back ($OUT: the JSON files, each naming the GPU, and check.log; at most 8 files) belongs
# in benchmarks/results/ (file names say "cuda"); quote only numbers that came back.
# A dry run of the plumbing on a machine without a GPU (about a minute, numbers meaningless;
# tests/test_device_check.py runs it):
#   DEVICE=cpu QUICK=1 WHEELS=none bash benchmarks/device_check.sh
set -u
OUT=${OUT:-/tmp/device_check}
DEVICE=${DEVICE:-cuda}
WHEELS=${WHEELS:-.whl}
QUICK=${QUICK:-}
TRAIN=${TRAIN:-}
PYTHON=${PYTHON:-python3}
mkdir -p "$OUT"
exec > >(tee "$OUT/check.log") 2>&1
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" MPLBACKEND=Agg
if ls "$WHEELS"/*.whl >/dev/null 2>&1; then
    $PYTHON -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$WHEELS"/*.whl \
        || { echo "installing the carried wheels failed"; exit 1; }
    export PYTHONPATH="$PYTHONPATH:/tmp/site"
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || echo "no nvidia-smi"
$PYTHON -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.is_available()
      and torch.cuda.get_device_name(0))"
$PYTHON -c "import cupy; print('cupy', cupy.__version__)" 2>/dev/null || echo "no CuPy"

step() {  # step SECONDS NAME COMMAND...: run with a limit, report how it ended
    local limit=$1 name=$2; shift 2
    echo "=== $name (limit ${limit} s)"
    local t0=$SECONDS
    timeout "$limit" "$@"
    echo "=== $name: exit $? after $((SECONDS - t0)) s"
}

# the dry run: small inputs, so that every step runs within about a minute on 2 CPU cores
SIZE=256
PROFILE=(--batches 32 128 512)
MDMO=()
SPEED=(--sizes 1 --batches 1 8 32)
ACCURACY=(--size 256)
BENCH=()
if [ -n "$QUICK" ]; then
    SIZE=32
    PROFILE=(--batches 1 2 --repeats 1 --overhead-calls 3)
    MDMO=(--batches 4 --repeats 1)
    SPEED=(--sizes 0 --batches 1 --repeats 1)
    ACCURACY=(--size 64 --per-class 1)
    BENCH=(--size 32 --repeats 1)
fi

step 120 "CUDA tests" $PYTHON -m pytest -q -p no:cacheprovider -k "cuda or gpu" \
    tests/test_train.py tests/test_mdmo.py tests/test_flow.py tests/test_kernels_host.py \
    tests/test_mdmo_kernel.py
step 30 "kernel resources (NVRTC of the image)" $PYTHON benchmarks/kernel_resources.py --majors 13 \
    --out "$OUT/kernel_resources_$DEVICE.json"
step 120 "where TV-L1 time goes, $SIZE px" $PYTHON benchmarks/flow_profile.py --device "$DEVICE" \
    --size "$SIZE" "${PROFILE[@]}" --out "$OUT/flow_profile_$DEVICE.json"
step 40 "MDMO kernel" $PYTHON benchmarks/mdmo_speed.py --device "$DEVICE" --size "$SIZE" "${MDMO[@]}" \
    --out "$OUT/mdmo_speed_$DEVICE.json"
# torch, and the kernels (backend `cuda`) where CuPy is there: both in one run
step 60 "TV-L1 speed" $PYTHON benchmarks/flow_speed.py --device "$DEVICE" "${SPEED[@]}" \
    --max-pixels-per-call 1e8 --out "$OUT/flow_speed_$DEVICE.json"
step 60 "TV-L1 accuracy" $PYTHON benchmarks/flow_accuracy.py --device "$DEVICE" "${ACCURACY[@]}" \
    --out "$OUT/flow_accuracy_$DEVICE.json"
step 60 "mespot bench" $PYTHON -m mespot bench --device "$DEVICE" "${BENCH[@]}" \
    --out "$OUT/bench_$DEVICE.json"
if [ -n "$TRAIN" ]; then
    SHORT=()
    [ -n "$QUICK" ] && SHORT=(--epochs 1 --folds 2)
    step 240 "LOSO training, CAS(ME)^2-sized" $PYTHON benchmarks/train_speed.py --preset casme2 \
        --device "$DEVICE" --threads "$(nproc)" --workers 1 4 --out "$OUT" "${SHORT[@]}"
fi
ls -l "$OUT"
