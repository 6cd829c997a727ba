#!/usr/bin/env bash
# Packs every check that needs a CUDA GPU into one folder that a GPU
# machine without a Rust toolchain runs (`bash gpu-kit/gpu-run.sh`): the
# release test binaries of the crates with device tests, `weft` and
# `weft-kernel-bench`, the sm_80/sm_90 cubins from ci/cuda-check.sh, and
# ci/gpu-run.sh. Binaries lose their debug info and are xz-compressed so
# the kit stays well under the device tool's 64 MiB; the folder is added
# to .git/info/exclude (it is a build output, never committed).
#
#   bash ci/gpu-kit.sh [FOLDER]      (default: gpu-kit, in the repo root)
set -euo pipefail
cd "$(dirname "$0")/.."
KIT="${1:-gpu-kit}"

# (package, integration test) pairs whose tests run on a CUDA GPU when one
# is present (and on an emulated GPU always).
TESTS=(
    "weft-gpu gpu"
    "weft-gpu ipc"
    "weft-gpu stream_order"
    "weft-kernels devices"
    "weft-kernels frame_kernels"
    "weft-kernels arrow"
    "weft-runtime gpu"
    "weft-transport round_trip"
    "weft-frame gpu"
    "weft-array gpu"
)

bash ci/cuda-check.sh
rm -rf "$KIT"
mkdir -p "$KIT/bin" "$KIT/cubins"
cp target/cuda-check/*.cubin "$KIT/cubins/"
cp ci/gpu-run.sh "$KIT/"
echo "$(git rev-parse HEAD)$(git diff --quiet HEAD || echo " (with uncommitted changes)")" >"$KIT/COMMIT"

# The path of the executable cargo reports for a build (its JSON messages).
executables() {
    python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable"):
        print(m["executable"])'
}

pack() { # pack BINARY NAME
    objcopy --strip-debug "$1" "$KIT/bin/$2"
    xz -T0 -6 "$KIT/bin/$2"
}

cargo build --release -p weft-cli --bin weft -p weft-kernels --bin weft-kernel-bench
pack target/release/weft weft
pack target/release/weft-kernel-bench weft-kernel-bench
for spec in "${TESTS[@]}"; do
    read -r package test <<<"$spec"
    exe="$(cargo test --release --no-run -p "$package" --test "$test" --message-format=json | executables | tail -1)"
    [ -x "$exe" ] || { echo "no test binary for $package --test $test" >&2; exit 1; }
    pack "$exe" "$package-$test"
done

grep -qxF "/$KIT/" .git/info/exclude 2>/dev/null || echo "/$KIT/" >>.git/info/exclude
du -sh "$KIT"
echo "run it on a GPU machine: bash $KIT/gpu-run.sh (carry: $KIT)"
