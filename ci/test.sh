#!/usr/bin/env bash
# The README's test command: formatting, lints, and every test of the
# workspace. CI (.ci/run) calls exactly this after ci/setup.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
cargo test --workspace
