#!/usr/bin/env bash
# The README's test command: formatting, lints, every test of the workspace,
# the transport tests again over UCX (TCP, then shared memory), and every
# CUDA kernel compiled for sm_80 and sm_90 without a GPU (NVRTC and ptxas
# from PyPI). CI (.ci/run) calls exactly this after ci/setup.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
cargo clippy -p weft-transport -p ucx-sys --features weft-transport/ucx --all-targets -- -D warnings
cargo test --workspace
bash ci/ucx-check.sh
bash ci/cuda-check.sh
