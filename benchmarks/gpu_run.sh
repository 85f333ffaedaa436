#!/usr/bin/env bash
# The GPU figures (issue 11) from a lent GPU, in one call of at most 9 minutes (see docs/benchmarks.md, "How to run
# the GPU measurements"). Prepare here with `bash scripts/device_wheels.sh`, then run there with carry [".whl"]:
#
#   bash benchmarks/gpu_run.sh core
#       cuda_tests: tests/test_cuda.py (repeatable, parallel = sequential, stacked = alone, device-smote = smote)
#       vs_seed_loop: the seed-style loop, octbench at batch 64/512/2048, and 1/5/15/45 cells stacked at batch 64
#       stack_dispatch: operators (and profiled seconds) per stacked step for 1 and 45 members
#       suite_wall: the full-size ablation (45 cells, about 40 million training images) with the executor's own
#           choice (executor: {stack: auto, parallel: auto}); the target is under 120 s
#   bash benchmarks/gpu_run.sh extra    # if device time is left: processes and CUDA graphs, pytest benchmarks
#   bash benchmarks/gpu_run.sh resolution   # issue 23: per-cell cost at 28/64/128 px, seed CNN and ResNet-18
#
# Every step has its own time limit, so one that overruns still leaves the others' results; an interrupted
# suite_wall still prints how many cells it finished and what that projects. Everything goes to $OUT/run.log, plus
# $OUT/bench.json (pytest-benchmark) and $OUT/results.jsonl (one JSON line per step).
# SMALL=1 shrinks every size so the script itself can be checked on a CPU in a few minutes.
set -uo pipefail
part=${1:-quick}
OUT=${OUT:-$PWD/gpu-out}
mkdir -p "$OUT"
log=$OUT/run.log
export PYTHONUNBUFFERED=1 NO_ALBUMENTATIONS_UPDATE=1 OCTBENCH_CACHE_DIR=${OCTBENCH_CACHE_DIR:-/tmp/octbench-cache}
py=${PYTHON:-python3}

# installed, not merely importable from this folder (the checkout's octbench/ is, without its dependencies)
if [ -d .whl ] && ! $py -c "import importlib.metadata as m; m.version('octbench'); import pydantic, imblearn" 2>/dev/null
then
    $py -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        && PYTHONPATH=/tmp/site $py -m pip install -q --no-index --no-deps --no-build-isolation --no-cache-dir \
            --target /tmp/site . \
        || { echo "installing the carried wheels or octbench failed" | tee -a "$log"; exit 1; }
    export PYTHONPATH=/tmp/site
fi

if [ "${SMALL:-0}" = 1 ]; then
    device=cpu seed="--steps 40 --workers 2 --batch 64 512 --stack 1 4 --epoch-images 3000"
    concurrent="--cells 2 --batch 64 --images 3000" graphs="--cells 1 --batch 64 --images 1000" scale=0.1
    wall="--scale 0.02 --epochs 1 --folds 2 --threads 1" dispatch="--sizes 1 4 --batch 16 --steps 2"
    resolution="--images 128 --batch 64"
else
    device=cuda seed="--steps 600 --workers 8 --batch 64 512 2048 --stack 1 5 15 45 --epoch-images 97477"
    concurrent="--cells 4 --batch 64 256 --images 30000" graphs="--cells 4 --batch 64 --images 30000" scale=1
    wall="--threads 2" dispatch="--sizes 1 45 --batch 64 --steps 8"
    resolution="--images 20000 --batch 128"
fi

step() {  # step NAME SECONDS COMMAND...: run with a limit, log it, keep its last JSON line
    local name=$1 limit=$2
    shift 2
    echo "=== $name ($(date -u +%H:%M:%S), limit ${limit}s): $*" | tee -a "$log"
    local start=$SECONDS
    timeout -k 60 "$limit" "$@" 2>&1 | tee -a "$log" "$OUT/.last"
    local rc=${PIPESTATUS[0]}
    echo "=== $name: exit $rc after $((SECONDS - start)) s" | tee -a "$log"
    grep '^{' "$OUT/.last" | tail -n 1 | sed "s/^{/{\"step\": \"$name\", /" >> "$OUT/results.jsonl"
    rm -f "$OUT/.last"
}

{ date -u; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null; nproc
  $py -c "import torch, sys; print(sys.version.split()[0], 'torch', torch.__version__)"; } | tee -a "$log"

case $part in
core)
    # CUDA-only checks (repeatability, parallel = sequential, stacked = alone, device-smote = smote); skip on a CPU
    step cuda_tests 90 $py -m pytest tests/test_cuda.py -q -rs -p no:cacheprovider -W default
    step vs_seed_loop 150 $py benchmarks/vs_seed_loop.py --device $device $seed
    # operators per stacked step at 1 and 45 members (issue 19: the same count whatever the stack's size)
    step stack_dispatch 40 $py benchmarks/stack_dispatch.py --device $device $dispatch
    step suite_wall 240 $py benchmarks/suite_wall.py --device $device $wall
    ;;
extra)
    step concurrent_cells 100 $py benchmarks/concurrent_cells.py --device $device $concurrent \
        --ways sequential processes threads
    # graphs exist on CUDA only; on a CPU (SMALL=1) the step times the sequential way alone
    step concurrent_graphs 100 $py benchmarks/concurrent_cells.py --device $device $graphs --ways sequential graphs
    OCTBENCH_BENCH_SCALE=$scale step pytest_benchmarks 80 $py -m pytest benchmarks/ --benchmark-only -q \
        -p no:cacheprovider -W default --benchmark-json "$OUT/bench.json"
    ;;
resolution)
    step resolution_cost 300 $py benchmarks/resolution_cost.py --device $device $resolution
    ;;
*)
    echo "usage: gpu_run.sh core|extra|resolution" >&2
    exit 2
    ;;
esac
