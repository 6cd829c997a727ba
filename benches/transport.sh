#!/usr/bin/env bash
# Transport figures next to their peers, in one run: installs iperf3 from
# Debian if missing, then prints the report (and, with --criterion, runs
# the criterion bench too).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v iperf3 >/dev/null; then
  echo "installing iperf3 ..." >&2
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iperf3) >&2
fi
cargo run --release -q -p weft-benches --bin transport-report
if [ "${1:-}" = "--criterion" ]; then
  cargo bench -p weft-benches --bench transport
fi
