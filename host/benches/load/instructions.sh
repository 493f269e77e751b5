#!/usr/bin/env bash
# User-space instructions per proxied request, counted by valgrind's
# cachegrind: nginx as a reverse proxy (1 worker, upstream keep-alive), the
# gateway without plugins, and the gateway with one pooled no-op plugin, each
# in front of the same nginx upstream. Unlike the CPU time of load.sh, the
# count does not move with the machine's other tenants (within ~1% between
# runs here), so it can tell a change of a few percent from noise; it leaves
# out the kernel (about half of the CPU time, the same four syscalls per
# request for all three) and what a cache miss costs.
#
#   host/benches/load/instructions.sh          # 3 000 requests per target
#   host/benches/load/instructions.sh -n 10000
#   GATEWAY=/path/to/wasmgate host/benches/load/instructions.sh   # another build
#   host/benches/load/instructions.sh -c       # also the five-policy chain (chain.toml)
#   host/benches/load/instructions.sh -p DIR   # callgrind, profiles kept in DIR
#   host/benches/load/instructions.sh -a       # also atomic RMWs per request (atomics.py)
#   CALLGRIND_OPTS="--cache-sim=yes --branch-sim=yes" host/benches/load/instructions.sh -p DIR
#                                              # ... profiles with simulated cache misses and mispredictions
#
# Each target runs twice under cachegrind, for N/10 and N/10 + N sequential
# requests on one keep-alive connection (curl); the difference over N is the
# figure, so start-up and shutdown cancel out. With -p, each target runs
# once under callgrind instead: its counters are zeroed after N/10 warm-up
# requests and dumped after N more, and the profile stays in DIR as
# TARGET.callgrind (read it with `callgrind_annotate --tree=calling`).
# With -a, the profiles (in DIR, or a temporary one) record each
# instruction's count, and atomics.py counts the atomic read-modify-write
# instructions among them: each costs ~20 cycles, which a count of
# instructions does not show.
# Installs valgrind, nginx and curl (Debian packages) when missing; builds
# the gateway in release and the plugins. Loopback only (ports 18080, 18081, 18090, 18091 and with -c 18092,
# checked free first); stops only what it started. With -c, the chain's
# plugins are compiled once under valgrind into target/valgrind-plugin-cache
# (~1 min): valgrind reports other CPU features, so the engine's fingerprint
# differs and the normal cache would miss, compiling every plugin at start.
set -euo pipefail
root=$(cd "$(dirname "$0")/../../.." && pwd)
cd "$root"

N=3000 CHAIN=0 PROFILES= ATOMICS=0
while getopts "n:cp:ah" opt; do
  case $opt in
    n) N=$OPTARG ;;
    c) CHAIN=1 ;;
    p) PROFILES=$(mkdir -p "$OPTARG" && cd "$OPTARG" && pwd) ;;
    a) ATOMICS=1 ;;
    *) sed -n '2,33p' "$0"; exit 2 ;;
  esac
done
(( N >= 100 )) || { echo "-n: at least 100 requests" >&2; exit 2; }
warm=$(( N / 10 ))

# shellcheck source=common.sh
. host/benches/load/common.sh
install_missing "valgrind nginx curl ss" "valgrind nginx curl iproute2"
(( ATOMICS )) && install_missing "objdump python3" "binutils python3"
ports_free 18080 18081 18090 18091 18092

./plugins/build.sh
gw=$(gateway_binary)

work=$(mktemp -d "${TMPDIR:-/tmp}/wasmgate-instructions.XXXXXX")
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
if (( ATOMICS )) && [[ -z $PROFILES ]]; then
  PROFILES=$work/profiles
  mkdir -p "$PROFILES"
fi

# The gateway's configs: those of load.sh, but with room for a few plugin
# instances only — valgrind cannot reserve the pooling allocator's default
# address space (1 000 instances × several GiB).
gateway_conf() {  # name, port, route plugins
  cat >"$work/$1.toml" <<EOF
[server]
listen = "127.0.0.1:$2"
workers = 1
watch = false
access_log = false

[plugins]
dir = "$root/target/plugins"
cache_dir = "$root/target/bench-plugin-cache"
max_instances = 2

[upstreams.bench]
endpoints = ["127.0.0.1:18080"]

[[routes]]
upstream = "bench"
plugins = [$3]
EOF
  "$gw" check -c "$work/$1.toml" >/dev/null
  echo "$work/$1.toml"
}

up=$(nginx_conf "$work/upstream" on "$UPSTREAM_SERVER")
nginx -p "$up" -c "$up/nginx.conf" & pids+=($!)
px=$(nginx_conf "$work/proxy" off "$(proxy_server)")
plain=$(gateway_conf plain 18090 '')
noop=$(gateway_conf noop 18091 '{ use = "noop" }')

# The chain: chain.toml with absolute paths, few instances (as above) and a
# plugin cache of valgrind's own, filled once under valgrind.
headers=()
if (( CHAIN )); then
  sed -e "s#^dir = .*#dir = \"$root/target/plugins\"#" \
      -e "s#^cache_dir = .*#cache_dir = \"$root/target/valgrind-plugin-cache\"\nmax_instances = 8#" \
      -e "s#jwks = \"bench-jwks.json\"#jwks = \"$root/host/benches/load/bench-jwks.json\"#" \
      host/benches/load/chain.toml >"$work/chain.toml"
  valgrind --tool=none -q "$gw" check -c "$work/chain.toml" >/dev/null
  headers=(-H "authorization: Bearer $(host/benches/load/bench-token.sh)" -H "origin: https://app.example.com")
fi

# `n` requests on one connection: curl reuses it for every URL of a config file.
requests() {  # port, n, curl options...
  local list=$work/urls ok port=$1 n=$2
  shift 2
  for _ in $(seq "$n"); do printf 'url = "http://127.0.0.1:%s/"\noutput = "/dev/null"\n' "$port"; done >"$list"
  ok=$(curl -s -K "$list" "$@" -w '%{http_code}\n' | grep -c '^200$' || true)
  [[ $ok == "$n" ]] || { echo "only $ok of $n requests to :$port answered 200" >&2; exit 1; }
}

# Instructions the process spent over `n` requests (start to exit).
count() {  # name, port, stop signal, n, command...
  local name=$1 port=$2 signal=$3 n=$4; shift 4
  local out=$work/$name.$n.cg
  WASMGATE_LOG=warn valgrind --tool=cachegrind --cache-sim=no --cachegrind-out-file="$out" "$@" \
    >"$work/$name.$n.log" 2>&1 &
  local pid=$!
  answering "$port"
  requests "$port" "$n" "${req_headers[@]}"
  kill "-$signal" "$pid"
  wait "$pid" || true
  awk '/^summary:/ { print $2; exit }' "$out"
}

# Instructions over `n` requests after `warm` (counters zeroed between),
# with the profile kept.
profile() {  # name, port, stop signal, warm, n, command...
  local name=$1 port=$2 signal=$3 warm=$4 n=$5; shift 5
  local out=$PROFILES/$name.callgrind
  rm -f "$out"*
  local instr=()
  (( ATOMICS )) && instr=(--dump-instr=yes)
  # shellcheck disable=SC2206 # more callgrind options, split on spaces
  instr+=(${CALLGRIND_OPTS:-})
  WASMGATE_LOG=warn valgrind --tool=callgrind "${instr[@]}" --callgrind-out-file="$out" "$@" >"$work/$name.log" 2>&1 &
  local pid=$!
  answering "$port"
  requests "$port" "$warm" "${req_headers[@]}"
  callgrind_control -z "$pid" >/dev/null 2>&1
  requests "$port" "$n" "${req_headers[@]}"
  callgrind_control -d "$pid" >/dev/null 2>&1
  kill "-$signal" "$pid"
  wait "$pid" || true
  # The dump holds the requests; the file written at exit only shutdown.
  local dump
  dump=$(ls "$out".* | head -1)
  mv "$dump" "$out"
  rm -f "$out".*
  callgrind_annotate --auto=no "$out" | awk '/PROGRAM TOTALS/ { gsub(",", "", $1); print $1 }'
}

# The no-op plugin compiled once under valgrind, as the chain's above, so
# neither counted run compiles it: valgrind reports other CPU features, so
# an artifact compiled natively has another fingerprint and would not be used.
valgrind --tool=none -q "$gw" check -c "$noop" >/dev/null

targets=(nginx gateway gateway+noop)
(( CHAIN )) && targets+=(gateway+chain)
if (( ATOMICS )); then
  printf '%-24s %14s %14s\n' target "instructions/req" "atomic RMW/req"
else
  printf '%-24s %14s\n' target "instructions/req"
fi
for target in "${targets[@]}"; do
  req_headers=()
  # nginx stops gracefully on QUIT, the gateway on INT; both write the counts.
  case $target in
    nginx) cmd=(nginx -p "$px" -c "$px/nginx.conf"); port=18081 signal=QUIT ;;
    gateway) cmd=("$gw" run -c "$plain"); port=18090 signal=INT ;;
    gateway+noop) cmd=("$gw" run -c "$noop"); port=18091 signal=INT ;;
    gateway+chain) cmd=("$gw" run -c "$work/chain.toml"); port=18092 signal=INT req_headers=("${headers[@]}") ;;
  esac
  if [[ -n $PROFILES ]]; then
    total=$(profile "$target" "$port" "$signal" "$warm" "$N" "${cmd[@]}")
    if (( ATOMICS )); then
      atomics=$(python3 host/benches/load/atomics.py "$PROFILES/$target.callgrind" "$N" 0 | awk '{ print $NF; exit }')
      printf '%-24s %14d %14s\n' "$target" $(( total / N )) "$atomics"
    else
      printf '%-24s %14d\n' "$target" $(( total / N ))
    fi
    continue
  fi
  a=$(count "$target" "$port" "$signal" "$warm" "${cmd[@]}")
  b=$(count "$target" "$port" "$signal" "$((warm + N))" "${cmd[@]}")
  printf '%-24s %14d\n' "$target" $(( (b - a) / N ))
done
