#!/usr/bin/env bash
# The README's test command: formatting, lints, every test of the workspace,
# and every CUDA kernel compiled for sm_80 and sm_90 without a GPU (NVRTC and
# ptxas from PyPI). CI (.ci/run) calls exactly this after ci/setup.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
cargo test --workspace
bash ci/cuda-check.sh
