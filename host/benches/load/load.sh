#!/usr/bin/env bash
# The load run of docs/performance.md: the gateway without plugins and with one
# no-op plugin, beside a direct hit on the upstream, nginx and HAProxy, in one
# run of ../shared/bench/peers.sh (which pins the load generator and the system
# under test to separate cores and reports CPU µs per request).
#
#   host/benches/load/load.sh                 # 3 × 10 s, wrk, 64 connections
#   host/benches/load/load.sh -d 5 -r 2       # any peers.sh option passes through
#   host/benches/load/load.sh -l oha -q 20000 # fixed rate, for latency
#   GATEWAY=/path/to/wasmgate host/benches/load/load.sh   # another build
#
# Installs nginx, haproxy and wrk (Debian packages) when missing; builds the
# gateway in release and the plugins. Loopback only; bounded in time.
set -euo pipefail
root=$(cd "$(dirname "$0")/../../.." && pwd)
cd "$root"
peers=${PEERS_SH:-$root/../shared/bench/peers.sh}
[[ -x $peers ]] || { echo "peers.sh not found at $peers (set PEERS_SH)" >&2; exit 1; }

# shellcheck source=common.sh
. host/benches/load/common.sh
install_missing "nginx haproxy wrk taskset curl ss" "nginx haproxy wrk util-linux curl iproute2"

./plugins/build.sh
gw=$(gateway_binary)
# Checked first, so a config error is reported here rather than as a timeout.
"$gw" check -c host/benches/load/passthrough.toml >/dev/null
"$gw" check -c host/benches/load/noop.toml >/dev/null

# One command starts both gateways on the system-under-test core; the no-op
# one first, so both answer by the time peers.sh checks the first.
export WASMGATE_LOG=warn
exec "$peers" "$@" \
  -x "$gw run -c $root/host/benches/load/noop.toml & sleep 1; exec $gw run -c $root/host/benches/load/passthrough.toml" \
  gateway=127.0.0.1:18090 gateway+noop=127.0.0.1:18091
