#!/usr/bin/env bash
# Transport figures next to their peers, in one run: installs iperf3 from
# Debian if missing, and, when UCX is installed (ci/setup.sh installs
# libucx-dev), ucx-utils for ucx_perftest; then prints the report (with
# ucx:// next to ucx_perftest when UCX is there) and, with --criterion,
# runs the criterion bench too.
set -euo pipefail
cd "$(dirname "$0")/.."
sudo=()
if [ "$(id -u)" -ne 0 ]; then
  sudo=(sudo)
fi
install() {
  echo "installing $* ..." >&2
  ("${sudo[@]}" apt-get update -qq && "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@") >&2
}
command -v iperf3 >/dev/null || install iperf3
features=()
if pkg-config --exists ucx 2>/dev/null; then
  command -v ucx_perftest >/dev/null || install ucx-utils
  features=(--features ucx)
fi
cargo run --release -q -p weft-benches "${features[@]}" --bin transport-report
if [ "${1:-}" = "--criterion" ]; then
  cargo bench -p weft-benches --bench transport
fi
