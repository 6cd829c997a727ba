#!/usr/bin/env bash
# Compile every kernels/cuda/*.cu for real GPU architectures without a GPU:
# NVRTC (from PyPI) turns each source into PTX for compute_80 and compute_90
# (and, as a GPU node does at run time, into cubins), then ptxas (from PyPI)
# assembles that PTX into cubins for sm_80 and sm_90.
# A kernel that fails either step fails this script. Idempotent: the venv is
# created once under the user's cache dir and reused.
set -euo pipefail

cd "$(dirname "$0")/.."
CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/weft"
VENV="$CACHE/cuda-venv"
NVRTC_VERSION="${WEFT_NVRTC_VERSION:-12.9.86}"
NVCC_VERSION="${WEFT_NVCC_VERSION:-12.9.86}"

if [ ! -x "$VENV/bin/python" ]; then
    if ! python3 -m venv "$VENV" 2>/dev/null; then
        # Debian splits venv out of python3.
        apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null
        python3 -m venv "$VENV"
    fi
fi
want="nvidia-cuda-nvrtc-cu12==$NVRTC_VERSION nvidia-cuda-nvcc-cu12==$NVCC_VERSION"
if ! "$VENV/bin/python" -m pip show nvidia-cuda-nvrtc-cu12 nvidia-cuda-nvcc-cu12 2>/dev/null \
    | grep -q "^Version: $NVRTC_VERSION"; then
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check $want
fi

SITE="$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
NVRTC_LIB="$SITE/nvidia/cuda_nvrtc/lib"
PTXAS="$SITE/nvidia/cuda_nvcc/bin/ptxas"
[ -f "$NVRTC_LIB/libnvrtc.so.12" ] || { echo "libnvrtc.so.12 not found under $NVRTC_LIB" >&2; exit 1; }
[ -x "$PTXAS" ] || { echo "ptxas not found at $PTXAS" >&2; exit 1; }

OUT="${WEFT_CUDA_OUT:-target/cuda-check}"
mkdir -p "$OUT"
# Only this source's builds (their names carry its hash).
rm -f "$OUT"/*.ptx "$OUT"/*.cubin
export LD_LIBRARY_PATH="$NVRTC_LIB${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

# NVRTC step: the same compile path and options the runtime uses.
cargo run --quiet -p weft-kernels --bin weft-nvrtc-check -- --out "$OUT" --arch 80 --arch 90

# Generated array kernels compile to machine code too (the test fails,
# rather than skips, when NVRTC is not found).
WEFT_REQUIRE_CUDA=1 cargo test --quiet -p weft-array --test gpu generated_sources_compile_with_nvrtc

fail=0
for ptx in "$OUT"/*.compute_*.ptx; do
    base="${ptx%.ptx}"
    arch="${base##*.compute_}"
    stem="${base%.compute_*}"
    # <stem>-<source hash>.sm_<arch>.cubin is what WEFT_CUBIN_DIR serves at run time.
    if "$PTXAS" -arch="sm_$arch" -O3 -o "$stem.sm_$arch.cubin" "$ptx"; then
        echo "ptxas ok    sm_$arch $(basename "$ptx")"
    else
        echo "ptxas FAIL  sm_$arch $(basename "$ptx")" >&2
        fail=1
    fi
done
if [ "$fail" = 0 ]; then
    echo "all kernels compile for sm_80 and sm_90; cubins in $OUT"
fi
exit "$fail"
