#!/usr/bin/env bash
# Installs what the build needs that cargo cannot fetch: a C compiler (ring
# builds C), pkg-config and UCX's headers and libraries (libucx-dev, for
# the `ucx` feature of weft-transport), headless Chromium and Prometheus
# (the dashboard's browser and scrape tests), iproute2 and nftables (the
# many-hosts tests in network namespaces), and the toolchain components
# the test command uses.
# Safe to run again; does nothing when all is there.
set -euo pipefail
sudo=()
if [ "$(id -u)" -ne 0 ]; then
  sudo=(sudo)
fi
missing=()
command -v cc >/dev/null || missing+=(gcc)
command -v pkg-config >/dev/null || missing+=(pkg-config)
dpkg -s libucx-dev >/dev/null 2>&1 || missing+=(libucx-dev)
# headless Chromium for the dashboard's browser test (weft-dashboard/tests/browser.rs)
command -v chromium >/dev/null || missing+=(chromium)
# a real Prometheus for the dashboard's scrape test (weft-dashboard/tests/prometheus.rs)
command -v prometheus >/dev/null || missing+=(prometheus)
# network namespaces, veth links and packet loss for the many-hosts tests (cli/tests/hosts.rs)
command -v ip >/dev/null || missing+=(iproute2)
command -v nft >/dev/null || missing+=(nftables)
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing ${missing[*]} ..." >&2
  "${sudo[@]}" apt-get update -qq
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
fi
for component in rustfmt clippy; do
  if ! rustup component list --installed 2>/dev/null | grep -q "^$component"; then
    rustup component add "$component"
  fi
done
