#!/usr/bin/env bash
# The five-policy chain of docs/performance.md against pass-through, in one run:
# the gateway with jwt (RS256) → abac → rate-limit → transform → cors
# (chain.toml) and the same gateway without plugins (passthrough.toml), both
# on one worker in front of the same nginx upstream, loaded in interleaved
# repetitions with the same request: a valid RS256 bearer token and an Origin.
#
#   host/benches/load/chain.sh             # 3 × 10 s, wrk, 64 connections
#   host/benches/load/chain.sh -d 5 -r 5   # duration, repetitions
#   GATEWAY=/path/to/wasmgate host/benches/load/chain.sh   # another build
#
# peers.sh cannot send headers, hence this script; it follows the same
# method: the load generator and the upstream on one core, the gateways on
# the other, keep-alive, and CPU µs per request read from /proc. Installs
# nginx, wrk and openssl (Debian packages) when missing. Loopback only,
# bounded in time; stops only what it started.
set -euo pipefail
root=$(cd "$(dirname "$0")/../../.." && pwd)
cd "$root"
here=host/benches/load

DURATION=10 REPS=3 CONNS=64
while getopts "d:r:c:h" opt; do
  case $opt in
    d) DURATION=$OPTARG ;; r) REPS=$OPTARG ;; c) CONNS=$OPTARG ;;
    *) sed -n '2,16p' "$0"; exit 2 ;;
  esac
done

# shellcheck source=common.sh
. host/benches/load/common.sh
install_missing "nginx wrk openssl taskset curl ss" "nginx wrk openssl util-linux curl iproute2"
ports_free 18080 18090 18092
cpus=$(nproc)
(( cpus >= 2 )) || { echo "needs 2 cores (load generator and gateway apart)" >&2; exit 1; }
LOAD_CPU=0 SUT_CPU=1

./plugins/build.sh
gw=$(gateway_binary)
"$gw" check -c "$here/passthrough.toml" >/dev/null
"$gw" check -c "$here/chain.toml" >/dev/null

work=$(mktemp -d "${TMPDIR:-/tmp}/wasmgate-chain.XXXXXX")
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

token=$("$here/bench-token.sh")   # one the chain accepts (role viewer, a day)

# The upstream: nginx, one worker, answering 200 "ok" (as peers.sh's).
mkdir -p "$work/nginx/logs"
cat >"$work/nginx/nginx.conf" <<EOF
worker_processes 1;
daemon off;
pid $work/nginx/nginx.pid;
error_log $work/nginx/logs/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  server {
    listen 127.0.0.1:18080 reuseport backlog=4096;
    keepalive_requests 1000000;
    location / { return 200 "ok\n"; }
  }
}
EOF
taskset -c "$LOAD_CPU" nginx -p "$work/nginx" -c "$work/nginx/nginx.conf" &
pids+=($!)
export WASMGATE_LOG=warn
taskset -c "$SUT_CPU" "$gw" run -c "$here/passthrough.toml" &
pids+=($!); pass_pid=$!
taskset -c "$SUT_CPU" "$gw" run -c "$here/chain.toml" &
pids+=($!); chain_pid=$!

headers=(-H "authorization: Bearer $token" -H "origin: https://app.example.com")
answering 18090
answering 18092
# The chain is really in the path: the token is required, and cors answers.
code=$(curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:18092/)
[[ $code == 401 ]] || { echo "chain without a token answered $code, not 401" >&2; exit 1; }
acao=$(curl -s -D - -o /dev/null "${headers[@]}" http://127.0.0.1:18092/ | tr -d '\r' |
  sed -n 's/^access-control-allow-origin: //Ip')
[[ $acao == https://app.example.com ]] || { echo "chain: no CORS header on an allowed request" >&2; exit 1; }

ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
hz=$(getconf CLK_TCK)
# One measured run: "req/s p99_ms cpu_us_per_req errors".
run() {
  local pid=$1 url=$2 out=$work/wrk.out
  local t0; t0=$(ticks "$pid")
  taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNS" -d"${DURATION}s" --latency "${headers[@]}" "$url" >"$out" 2>&1
  local t1; t1=$(ticks "$pid")
  awk -v dt=$((t1 - t0)) -v hz="$hz" '
    function ms(v) { if (v ~ /us$/) return v / 1000; if (v ~ /ms$/) return v + 0; if (v ~ /s$/) return v * 1000; return v }
    / 99%/ { p99 = ms($2) }
    /requests in/ { n = $1 }
    /Non-2xx/ { err += $NF }
    /Socket errors/ { for (i = 3; i <= NF; i++) if ($i ~ /^[0-9]+,?$/) err += $i + 0 }
    /Requests\/sec/ { rps = $2 }
    END { printf "%.0f %.2f %.1f %d\n", rps, p99, dt * 1e6 / hz / n, err }' "$out"
}

echo "warm-up…" >&2
for url in http://127.0.0.1:18090/ http://127.0.0.1:18092/; do
  taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNS" -d2s "${headers[@]}" "$url" >/dev/null
done
: >"$work/pass" ; : >"$work/chain"
for r in $(seq "$REPS"); do
  run "$pass_pid" http://127.0.0.1:18090/ >>"$work/pass"
  run "$chain_pid" http://127.0.0.1:18092/ >>"$work/chain"
  echo "rep $r/$REPS: pass-through $(tail -1 "$work/pass") | chain $(tail -1 "$work/chain")  (req/s p99_ms cpu_us/req errors)" >&2
done

median() { sort -n | awk '{v[NR] = $1} END { print v[int((NR + 1) / 2)] }'; }
col() { awk -v c="$2" '{print $c}' "$work/$1" | median; }
printf '%-14s %10s %10s %14s %8s\n' target "req/s" "p99 ms" "CPU µs/req" errors
for t in pass chain; do
  name=$([[ $t == pass ]] && echo pass-through || echo five-policy)
  printf '%-14s %10s %10s %14s %8s\n' "$name" "$(col $t 1)" "$(col $t 2)" "$(col $t 3)" "$(awk '{s += $4} END {print s}' "$work/$t")"
done
awk -v a="$(col chain 1)" -v b="$(col pass 1)" 'BEGIN { printf "chain / pass-through throughput: %.2f×\n", a / b }'
