#!/usr/bin/env bash
# Installs what the build needs that cargo cannot fetch: a C compiler (ring
# builds C) and the toolchain components the test command uses. Safe to run
# again; does nothing when all is there.
set -euo pipefail
missing=()
command -v cc >/dev/null || missing+=(gcc)
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing ${missing[*]} ..." >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
fi
for component in rustfmt clippy; do
  if ! rustup component list --installed 2>/dev/null | grep -q "^$component"; then
    rustup component add "$component"
  fi
done
