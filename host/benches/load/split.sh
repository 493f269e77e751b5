#!/usr/bin/env bash
# Where the CPU of a proxied request goes: user time and kernel (system)
# time per request, for nginx as a reverse proxy and for the gateway without
# plugins, in alternating windows of the same load. load.sh reports their
# sum; this splits it, from the processes' own counters (/proc/PID/stat),
# so a change can be told apart from the kernel's share, which the gateway
# and nginx pay alike for the same socket calls.
#
#   host/benches/load/split.sh               # 8 windows of 3 s each, per target
#   host/benches/load/split.sh -w 12 -d 5
#   GATEWAY=/path/to/wasmgate host/benches/load/split.sh   # another build
#   host/benches/load/split.sh -f            # nginx adds the gateway's forwarding fields too
#   host/benches/load/split.sh -n            # the gateway with one no-op plugin (noop.toml) instead of nginx
#
# Layout as ../shared/bench/peers.sh: the upstream (nginx, `return 200`) and
# the load generator (wrk, 64 keep-alive connections, one thread) on CPU 0,
# the system under test on CPU 1; nginx's proxy config is peers.sh's (one
# worker, upstream keep-alive), the gateway's is passthrough.toml. Installs
# nginx, wrk and curl (Debian packages) when missing; builds the gateway in
# release. Loopback only (ports 18080, 18081 (-n: 18091) and 18090, checked free first);
# bounded in time; stops only what it started. The counters tick at
# CLK_TCK (100 Hz): over a 3 s window that is ~0.3% of the figure.
# With -f, nginx does the proxy hygiene the gateway does by default (and
# peers.sh's nginx does not): X-Forwarded-For/-Proto/-Host, Forwarded, Via
# and a generated X-Request-Id to the upstream, Via and the request id on
# the response - the same work, for a like-for-like comparison. The id is
# $pid-$connection-$connection_requests (unique, cheap): nginx's own
# $request_id draws 16 random bytes from OpenSSL for each request, which
# cost it ~1.7 µs a request here; the gateway's ids are not cryptographic.
# With -n, the first target is the gateway with one pooled no-op plugin
# (noop.toml, port 18091) instead of nginx: what a plugin adds, split.
set -euo pipefail
root=$(cd "$(dirname "$0")/../../.." && pwd)
cd "$root"

WINDOWS=8 SECS=3 FIELDS= NOOP=0
while getopts "w:d:fnh" opt; do
  case $opt in
    w) WINDOWS=$OPTARG ;;
    d) SECS=$OPTARG ;;
    f) FIELDS='proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto $scheme; proxy_set_header X-Forwarded-Host $http_host;
      proxy_set_header Forwarded "for=$remote_addr;host=\"$http_host\";proto=$scheme";
      proxy_set_header X-Real-IP $remote_addr;
      proxy_set_header Via "1.1 nginx"; proxy_set_header X-Request-Id $pid-$connection-$connection_requests;
      add_header Via "1.1 nginx" always; add_header X-Request-Id $pid-$connection-$connection_requests always;' ;;
    n) NOOP=1 ;;
    *) sed -n '2,31p' "$0"; exit 2 ;;
  esac
done
(( WINDOWS >= 1 && SECS >= 1 )) || { echo "-w and -d: at least 1" >&2; exit 2; }

# shellcheck source=common.sh
. host/benches/load/common.sh
install_missing "nginx wrk taskset curl ss" "nginx wrk util-linux curl iproute2"
# The first target: nginx, or (-n) the gateway with a no-op plugin.
if (( NOOP )); then peer=gateway+noop peer_port=18091; else peer=nginx peer_port=18081; fi
ports_free 18080 "$peer_port" 18090

gw=$(gateway_binary)
"$gw" check -c host/benches/load/passthrough.toml >/dev/null
(( NOOP )) && { ./plugins/build.sh; "$gw" check -c host/benches/load/noop.toml >/dev/null; }

work=$(mktemp -d "${TMPDIR:-/tmp}/wasmgate-split.XXXXXX")
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

up=$(nginx_conf "$work/upstream" off "$UPSTREAM_SERVER")
taskset -c 0 nginx -p "$up" -c "$up/nginx.conf" & pids+=($!)
# One process each (no master): its PID is the one that works.
if (( NOOP )); then
  WASMGATE_LOG=warn taskset -c 1 "$gw" run -c host/benches/load/noop.toml >"$work/noop.log" 2>&1 &
else
  px=$(nginx_conf "$work/proxy" off "$(proxy_server "$FIELDS")")
  taskset -c 1 nginx -p "$px" -c "$px/nginx.conf" &
fi
peer_pid=$!; pids+=("$peer_pid")
WASMGATE_LOG=warn taskset -c 1 "$gw" run -c host/benches/load/passthrough.toml >"$work/gateway.log" 2>&1 &
gw_pid=$!; pids+=("$gw_pid")

for port in 18080 "$peer_port" 18090; do answering "$port"; done

tick=$(getconf CLK_TCK)
cpu() { awk '{ print $14, $15 }' "/proc/$1/stat"; }  # utime, stime (ticks, all threads)

printf '%-7s %-12s %9s %12s %12s %12s\n' window target 'req/s' 'user µs/req' 'sys µs/req' 'total'
for w in $(seq "$WINDOWS"); do
  for target in "$peer" gateway; do
    case $target in gateway) pid=$gw_pid port=18090 ;; *) pid=$peer_pid port=$peer_port ;; esac
    read -r u0 s0 < <(cpu "$pid")
    out=$(taskset -c 0 wrk -t1 -c64 -d"${SECS}s" "http://127.0.0.1:$port/" 2>&1)
    read -r u1 s1 < <(cpu "$pid")
    reqs=$(awk '/requests in/ { print $1 }' <<<"$out")
    [[ -n $reqs && $reqs -gt 0 ]] || { echo "wrk made no requests to :$port: $out" >&2; exit 1; }
    awk -v w="$w" -v t="$target" -v r="$reqs" -v s="$SECS" -v k="$tick" -v du=$((u1 - u0)) -v ds=$((s1 - s0)) 'BEGIN {
      user = du * 1e6 / k / r; sys = ds * 1e6 / k / r
      printf "%-7s %-12s %9d %12.2f %12.2f %12.2f\n", w, t, r / s, user, sys, user + sys
    }' | tee -a "$work/windows"
  done
done

echo
echo "medians over $WINDOWS windows of ${SECS} s (CPU µs per request):"
for target in "$peer" gateway; do
  for col in 4 5 6; do
    awk -v t="$target" -v c="$col" '$2 == t { print $c }' "$work/windows" | sort -n |
      awk '{ v[NR] = $1 } END { m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2; printf "%s ", m }'
  done | awk -v t="$target" '{ printf "%-12s user %6.2f  sys %6.2f  total %6.2f\n", t, $1, $2, $3 }'
done
