#!/usr/bin/env bash
# The GPU checks the issues leave for a session that is lent a GPU machine, as one call of the
# device tool (/work/.library/device/README.md): expected 4-5 minutes on an H100 or H200,
# 9 at most (each step has its own limit).
#   1. the CUDA tests: training on CUDA deterministic and close to the CPU (issue 6), MDMO and
#      extraction pieces on CUDA, the torch TV-L1 on CUDA against the CPU (issue 3), the fused
#      TV-L1 iteration kernel (kernels/tvl1_iteration.cu) against the torch step (issue 4)
#   2. LOSO training of a CAS(ME)^2-sized store on the GPU (issue 6's target: under 60 s), one
#      fold at a time and 4 side by side (--workers), timed in one call so the ratio is measured
#      on the same card
#   3. TV-L1 on the GPU, `torch` and the fused kernel (`cuda`, issue 4): pairs per second by
#      image size and batch, and the accuracy benchmark (EPE per class of known flow)
#   4. `mespot bench --device cuda`: the quick check a researcher runs, for comparison
# Every step has its own time limit, so one that hangs cannot eat the session's device time.
#
# Here, once per session (needs the package registry, which that machine cannot reach):
#   grep -qx '/.whl/' .git/info/exclude || echo /.whl/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
#     -d .whl -r benchmarks/device_wheels.txt
# Then, with the device tool: run(command="bash benchmarks/device_check.sh", carry=[".whl"], timeout_s=600)
# What comes back ($OUT: the JSON files, each naming the GPU, and check.log) belongs in
# benchmarks/results/ (file names say "cuda"); quote only numbers that came back.
# A dry run of the plumbing on a machine without a GPU (minutes, numbers meaningless):
#   DEVICE=cpu QUICK=1 WHEELS=none bash benchmarks/device_check.sh
set -u
OUT=${OUT:-/tmp/device_check}
DEVICE=${DEVICE:-cuda}
WHEELS=${WHEELS:-.whl}
QUICK=${QUICK:-}
mkdir -p "$OUT"
exec > >(tee "$OUT/check.log") 2>&1
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" MPLBACKEND=Agg
if ls "$WHEELS"/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$WHEELS"/*.whl \
        || { echo "installing the carried wheels failed"; exit 1; }
    export PYTHONPATH="$PYTHONPATH:/tmp/site"
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.is_available()
      and torch.cuda.get_device_name(0))"
SHORT=()
[ -n "$QUICK" ] && SHORT=(--epochs 1 --folds 2)

step() {  # step SECONDS NAME COMMAND...: run with a limit, report how it ended
    local limit=$1 name=$2; shift 2
    echo "=== $name (limit ${limit} s)"
    local t0=$SECONDS
    timeout "$limit" "$@"
    echo "=== $name: exit $? after $((SECONDS - t0)) s"
}

step 110 "CUDA tests" python3 -m pytest -q -p no:cacheprovider -k "cuda or gpu" \
    tests/test_train.py tests/test_mdmo.py tests/test_flow.py tests/test_kernels_host.py
step 240 "LOSO training, CAS(ME)^2-sized, on the GPU" python3 benchmarks/train_speed.py \
    --preset casme2 --device "$DEVICE" --threads "$(nproc)" --workers 1 4 --out "$OUT" "${SHORT[@]}"
# torch, and the fused kernel (backend `cuda`) where CuPy is there: both in one run
step 90 "TV-L1 speed on the GPU" python3 benchmarks/flow_speed.py --device "$DEVICE" \
    --batches 1 8 32 --max-pixels-per-call 1e8 --repeats 3 --out "$OUT/flow_speed_$DEVICE.json" \
    ${QUICK:+--sizes 0 --batches 1}
step 80 "TV-L1 accuracy on the GPU" python3 benchmarks/flow_accuracy.py --device "$DEVICE" \
    --out "$OUT/flow_accuracy_$DEVICE.json" ${QUICK:+--per-class 1 --size 64}
step 60 "mespot bench" python3 -m mespot bench --device "$DEVICE" --out "$OUT/bench_$DEVICE.json"
ls -l "$OUT"
