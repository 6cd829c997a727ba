#!/usr/bin/env bash
# The transport tests with the `ucx` feature, so every socket test also
# runs over ucx://, under two UCX transport selections:
#   UCX_TLS=tcp              TCP only;
#   UCX_TLS=sm,self,tcp      shared memory (posix/sysv with cma for large
#                            messages), plus TCP, which the sockaddr
#                            connection setup of UCX 1.13 needs.
# Before the shared-memory run, checks that UCX really picks shared memory
# for our endpoints (UCX_LOG_LEVEL=info prints each endpoint's lanes), so a
# silent fall-back to TCP fails CI instead of passing unnoticed.
set -euo pipefail
cd "$(dirname "$0")/.."
export UCX_WARN_UNUSED_ENV_VARS=n
UCX_TLS=tcp cargo test -p weft-transport --features ucx

shm=sm,self,tcp
lanes=$(UCX_TLS=$shm UCX_LOG_LEVEL=info cargo test -q -p weft-transport --features ucx \
  --test round_trip -- --exact socket_round_trip::ucx 2>&1 | grep -o 'ep_cfg\[[0-9]*\]: tag([^)]*)' | sort -u || true)
echo "UCX lanes with UCX_TLS=$shm:" >&2
echo "$lanes" >&2
if ! grep -qE 'tag\((posix|sysv)/' <<<"$lanes"; then
  echo "ucx-check: UCX_TLS=$shm did not put endpoints on shared memory" >&2
  exit 1
fi
UCX_TLS=$shm cargo test -p weft-transport --features ucx
