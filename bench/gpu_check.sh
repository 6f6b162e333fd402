#!/usr/bin/env bash
# One-shot GPU check: build pixelfast for this machine's GPU, run the CUDA tests, run the GPU
# benchmarks, print one table. For a fresh Linux machine with one CUDA GPU, a CUDA toolkit, a
# preinstalled torch (any recent version, e.g. system-wide), numpy, tqdm, torchvision, pytest,
# pytest-benchmark and hypothesis, and no internet: nothing is downloaded.
#
#   bash bench/gpu_check.sh            (from anywhere; PYTHON=python3.12 to pick the interpreter)
#
# Every step has its own time limit inside an overall budget (GPU_CHECK_BUDGET seconds, default
# 505), so the whole check ends within 9 minutes, and a slow step leaves the others' results.
# Without a GPU it refuses at once: one line, exit status 2.
set -u

PY=${PYTHON:-python3}
BUDGET=${GPU_CHECK_BUDGET:-505}
cd "$(dirname "$0")/.." || exit 2
ROOT=$(pwd)
START=$(date +%s)
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

# Refuse clearly without a GPU (or without a torch that sees it).
if ! REASON=$("$PY" - 2>/dev/null <<'EOF'
import torch
if torch.version.cuda is None:
    print(f"torch {torch.__version__} is a CPU-only build")
elif not torch.cuda.is_available():
    print("no CUDA GPU visible (torch.cuda.is_available() is False)")
else:
    raise SystemExit(0)
raise SystemExit(1)
EOF
); then
    echo "gpu_check: refused: ${REASON:-$PY cannot import torch}; this check needs one CUDA GPU." >&2
    exit 2
fi

clean() { sed -e "s#$ROOT#.#g" -e "s#$WORK#<tmp>#g" -e "s#$HOME#~#g"; }
left() { echo $((BUDGET - ($(date +%s) - START))); }
# run_step NAME CAP_SECONDS LOG COMMAND...: runs within min(CAP, budget left); prints one status line.
run_step() {
    local name=$1 cap=$2 log=$3
    shift 3
    local limit
    limit=$(left)
    [ "$limit" -gt "$cap" ] && limit=$cap
    if [ "$limit" -lt 5 ]; then
        echo "== $name: skipped (time budget spent)"
        return 124
    fi
    local t0=$(date +%s)
    # SIGINT first, so that pytest still prints its summary.
    timeout -s INT -k 15 "$limit" "$@" >"$log" 2>&1
    local rc=$?
    local took=$(($(date +%s) - t0))
    case $rc in
        0) echo "== $name: ok (${took} s)" ;;
        124 | 130 | 137) echo "== $name: stopped at its time limit of ${limit} s (partial results below)" ;;
        *) echo "== $name: FAILED, exit status $rc (${took} s); last lines:"; tail -n 15 "$log" | clean ;;
    esac
    return $rc
}

INFO=$("$PY" -c "
import os, torch
major, minor = torch.cuda.get_device_capability()
print(f'{major}.{minor}')
print(f'{torch.cuda.get_device_name()}, compute capability {major}.{minor}, torch {torch.__version__}, CUDA {torch.version.cuda}, {os.cpu_count()} cores')
")
ARCH=$(echo "$INFO" | head -n 1)
echo "gpu_check: $(echo "$INFO" | tail -n 1)"
CORES=$(nproc 2>/dev/null || echo 4)

# 1. Build for this GPU's architecture only, nothing from the network. An editable install when pip
#    can do one here; otherwise (an externally managed system Python, say) an in-place build, which
#    the tests and benchmarks below import from the source tree.
export TORCH_CUDA_ARCH_LIST=$ARCH MAX_JOBS=$CORES PIXELFAST_CUDA=1 PIP_BREAK_SYSTEM_PACKAGES=1
"$PY" -c "import torch.utils.cpp_extension as c; raise SystemExit(0 if c.is_ninja_available() else 1)" 2>/dev/null ||
    echo "gpu_check: warning: ninja is not installed, so the build compiles one file at a time (slow)"
BUILD='"$0" -m pip install --no-deps --no-build-isolation --no-index -e . -q ||
    { echo "pip could not install; building in place"; "$0" setup.py build_ext --inplace; }'
run_step "build (arch $ARCH, $CORES jobs)" 200 "$WORK/build.log" bash -c "$BUILD" "$PY" || {
    echo "gpu_check: the build failed; nothing else can run."
    exit 1
}
export PYTHONPATH=$ROOT${PYTHONPATH:+:$PYTHONPATH}
"$PY" -c "import pixelfast.ops as o; assert o.LOADED and o.WITH_CUDA, 'pixelfast did not load as a CUDA build'" 2>&1 | clean |
    tail -n 3

# 2. The CUDA tests: every device-parametrized op, layer, model and engine test, on cuda (the CUDA
#    emulation tests run on the CPU in CI and are left out here to save time).
PYTEST=("$PY" -m pytest -p no:cacheprovider -q)
run_step "CUDA tests (pytest -k cuda)" 75 "$WORK/tests.log" "${PYTEST[@]}" tests -k cuda -rfEs \
    --ignore=tests/emulation --ignore-glob='tests/test_cuda_emulation*'
grep -E "^[0-9]+ (passed|failed)|passed|failed|error" "$WORK/tests.log" | tail -n 1 | clean
grep -E "^(FAILED|ERROR) " "$WORK/tests.log" | head -n 20 | clean

# 3. The benchmarks. Each appends every median to the results file the moment it is measured, so a
#    step stopped at its time limit loses only what it had not measured yet.
BENCH=("${PYTEST[@]}" --benchmark-columns=min,median,rounds --benchmark-sort=name)
export PIXELFAST_BENCH_DEVICE=cuda PIXELFAST_BENCH_RESULTS=$WORK/results.jsonl
PIXELFAST_BENCH_BATCHES=16,256 run_step "sampling: cached (fp32, bf16, tf32) vs naive vs one forward pass, batch 16 and 256" 120 \
    "$WORK/sampling.log" "${BENCH[@]}" bench/bench_sampling.py -k "(PixelCNN or shipped) and not scaling and not threads"
run_step "masked conv" 25 "$WORK/masked_conv.log" "${BENCH[@]}" bench/bench_masked_conv.py
run_step "LSTM scans" 35 "$WORK/lstm.log" "${BENCH[@]}" bench/bench_lstm.py -k "scan or state_products"
# The leads of docs/gpu_engine.md: cluster and grid barriers, L2 bandwidth (a small build of its own).
run_step "leads: barriers and L2" 35 "$WORK/leads.log" "$PY" bench/gpu_leads.py
PIXELFAST_BENCH_DEVICE=cpu PIXELFAST_BENCH_THREADS=${PIXELFAST_BENCH_THREADS:-1,2,4,8,16} \
    run_step "CPU engine threads" 15 "$WORK/threads.log" "${BENCH[@]}" bench/bench_sampling.py -k "threads"

echo
echo "gpu_check: results ($(($(date +%s) - START)) s in all)"
"$PY" bench/gpu_table.py "$WORK/results.jsonl" | clean
grep -E "^(lead|cluster|grid|L2)" "$WORK/leads.log" | clean
