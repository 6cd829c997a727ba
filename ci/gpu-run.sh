#!/usr/bin/env bash
# Runs the GPU checks packed by ci/gpu-kit.sh, on a machine with a CUDA GPU
# and no Rust toolchain: the device tests with WEFT_REQUIRE_CUDA=1 (a test
# that finds no GPU fails instead of skipping), the kernel and transfer
# benches next to CuPy and the device-to-device copy, and compute-sanitizer
# over the kernel tests. Steps run most telling first, each under a time
# limit, and the run stops starting new ones once its budget is spent.
#
#   bash gpu-kit/gpu-run.sh [STEP ...]    (default: every step)
#
# Steps: info tests-core bench sanitizer tests-runtime tests-frame.
# Environment: OUT (logs; default ./gpu-out), WEFT_REQUIRE_CUDA (default
# 1; 0 for a dry run without a GPU), GPU_RUN_BUDGET (seconds,
# default 480), GPU_STEP_LIMIT (seconds per test binary, default 240).
# What comes back: $OUT/run.log (everything), $OUT/bench.jsonl (one JSON
# line per bench figure), $OUT/summary.txt (a line per step).
set -uo pipefail
KIT="$(cd "$(dirname "$0")" && pwd)"
OUT="${OUT:-$PWD/gpu-out}"
BUDGET="${GPU_RUN_BUDGET:-480}"
LIMIT="${GPU_STEP_LIMIT:-240}"
STEPS=("$@")
[ ${#STEPS[@]} -gt 0 ] || STEPS=(info tests-core bench sanitizer tests-runtime tests-frame)
mkdir -p "$OUT"
LOG="$OUT/run.log"
SUMMARY="$OUT/summary.txt"
: >"$SUMMARY"
START=$SECONDS

BIN=/tmp/weft-gpu-kit
rm -rf "$BIN" && mkdir -p "$BIN"
for f in "$KIT"/bin/*.xz; do
    b="$BIN/$(basename "${f%.xz}")"
    if command -v xz >/dev/null; then
        xz -dc "$f" >"$b"
    else
        python3 -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], "wb"))' "$f" "$b"
    fi
    chmod +x "$b"
done
export WEFT_REQUIRE_CUDA="${WEFT_REQUIRE_CUDA:-1}" WEFT_CUBIN_DIR="$KIT/cubins" RUST_BACKTRACE=1
export PATH="$BIN:$PATH:/usr/local/cuda/bin"
cd "$BIN"

left() { echo $((BUDGET - (SECONDS - START))); }

# step NAME COMMAND...: runs COMMAND under the step limit (or what is left
# of the budget), noting its outcome and time in the summary.
step() {
    local name="$1"
    shift
    local limit
    limit=$(left)
    [ "$limit" -gt "$LIMIT" ] && limit=$LIMIT
    if [ "$limit" -lt 20 ]; then
        echo "$name: not run (budget spent)" | tee -a "$SUMMARY"
        return
    fi
    echo "=== $name (limit ${limit}s): $*"
    local t0=$SECONDS
    timeout "$limit" "$@"
    local rc=$?
    local outcome=ok
    [ $rc -eq 124 ] && outcome="TIMED OUT"
    [ $rc -ne 0 ] && [ $rc -ne 124 ] && outcome="FAILED (rc $rc)"
    echo "$name: $outcome in $((SECONDS - t0))s" | tee -a "$SUMMARY"
}

tests() { # tests BINARY...
    for t in "$@"; do
        step "$t" "./$t" --test-threads=4
    done
}

# The steps, in order, then the summary; fails if a step did.
run() {
    for s in "${STEPS[@]}"; do
        case "$s" in
        info)
            echo "kit built from $(cat "$KIT/COMMIT" 2>/dev/null || echo "an unknown commit")"
            nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv || true
            python3 -c 'import cupy; print("cupy", cupy.__version__)' || echo "no cupy"
            ;;
        tests-core)
            tests weft-gpu-gpu weft-gpu-ipc weft-gpu-stream_order weft-kernels-devices weft-kernels-frame_kernels weft-kernels-arrow
            ;;
        bench)
            step "bench kernels" bash -o pipefail -c "./weft bench kernels --json --device cuda --rows 33554432 --parts 64 --copy-mib 1024 | tee -a '$OUT/bench.jsonl'"
            step "bench transfer" bash -o pipefail -c "./weft bench transfer --json --device cuda --mib 256 | tee -a '$OUT/bench.jsonl'"
            ;;
        sanitizer)
            if command -v compute-sanitizer >/dev/null; then
                step "compute-sanitizer memcheck" compute-sanitizer --tool memcheck --error-exitcode 1 ./weft-kernels-devices --test-threads=1
            else
                echo "compute-sanitizer: not found" | tee -a "$SUMMARY"
            fi
            ;;
        tests-runtime)
            tests weft-runtime-gpu weft-transport-round_trip
            ;;
        tests-frame)
            tests weft-frame-gpu weft-array-gpu
            ;;
        *)
            echo "unknown step $s (info tests-core bench sanitizer tests-runtime tests-frame)" >&2
            exit 2
            ;;
        esac
    done
    echo "--- summary ($((SECONDS - START))s)"
    cat "$SUMMARY"
    ! grep -qE "FAILED|TIMED OUT" "$SUMMARY"
}

# Everything into the log too; the log is whole when the script returns.
run 2>&1 | tee -a "$LOG"
exit "${PIPESTATUS[0]}"
