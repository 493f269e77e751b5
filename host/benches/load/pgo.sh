#!/usr/bin/env bash
# A profile-guided (PGO) release build of the gateway: an instrumented
# build serves the load benchmarks' traffic for a while (pass-through, one
# no-op plugin, the five-policy chain; wrk on loopback in front of an nginx
# upstream), and the counts it wrote guide a second build, which lays out
# and inlines the code the way that traffic runs it. The binary lands in
# target/pgo/release/wasmgate (the script prints its path).
#
#   host/benches/load/pgo.sh          # 8 s of traffic per config
#   host/benches/load/pgo.sh -d 20
#   GATEWAY=target/pgo/release/wasmgate host/benches/load/split.sh   # measure it
#
# The profile is only as good as the traffic: this one is the benchmarks'
# own (small GET requests, one upstream), so a gain measured on those
# benchmarks is partly the training's; train a production build on
# traffic like production's. Two release builds (~8 min each on 2 cores).
# Installs rustup's llvm-tools (for llvm-profdata), and nginx, wrk and curl
# (Debian packages) when missing. Loopback only (ports 18080, 18090–18092,
# checked free first); bounded in time; stops only what it started.
set -euo pipefail
root=$(cd "$(dirname "$0")/../../.." && pwd)
cd "$root"
here=host/benches/load

SECS=8
while getopts "d:h" opt; do
  case $opt in
    d) SECS=$OPTARG ;;
    *) sed -n '2,19p' "$0"; exit 2 ;;
  esac
done
(( SECS >= 1 )) || { echo "-d: at least 1" >&2; exit 2; }

# shellcheck source=common.sh
. host/benches/load/common.sh
install_missing "nginx wrk openssl taskset curl ss" "nginx wrk openssl util-linux curl iproute2"
ports_free 18080 18090 18091 18092
rustup component list --installed | grep -q '^llvm-tools' || rustup component add llvm-tools
profdata=$(find "$(rustc --print sysroot)/lib/rustlib" -name llvm-profdata -type f | head -n 1)
[[ -x $profdata ]] || { echo "llvm-profdata not found under $(rustc --print sysroot)" >&2; exit 1; }
# An explicit target keeps RUSTFLAGS off build scripts and proc macros:
# only the gateway's own code is instrumented, then optimised.
triple=$(rustc -vV | sed -n 's/^host: //p')
out=$root/target/pgo
profiles=$out/profiles
rm -rf "$profiles"
mkdir -p "$profiles"

./plugins/build.sh
echo "instrumented build…" >&2
RUSTFLAGS="-Cprofile-generate=$profiles" CARGO_TARGET_DIR="$out/instrumented" \
  cargo build --release --locked -q -p wasmgate --target "$triple"
gw=$out/instrumented/$triple/release/wasmgate

work=$(mktemp -d "${TMPDIR:-/tmp}/wasmgate-pgo.XXXXXX")
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

up=$(nginx_conf "$work/upstream" off "$UPSTREAM_SERVER")
nginx -p "$up" -c "$up/nginx.conf" & pids+=($!)
token=$("$here/bench-token.sh")
headers=(-H "authorization: Bearer $token" -H "origin: https://app.example.com")
export WASMGATE_LOG=warn
for target in passthrough:18090 noop:18091 chain:18092; do
  name=${target%%:*} port=${target##*:}
  "$gw" run -c "$here/$name.toml" >"$work/$name.log" 2>&1 &
  pid=$!
  answering "$port"
  echo "training: $name, ${SECS} s" >&2
  wrk -t1 -c64 -d"${SECS}s" "${headers[@]}" "http://127.0.0.1:$port/" >"$work/$name.wrk"
  # The counts are written as the process exits: stop it gracefully.
  kill -TERM "$pid"
  wait "$pid"
done
"$profdata" merge -o "$out/merged.profdata" "$profiles"

echo "optimised build…" >&2
RUSTFLAGS="-Cprofile-use=$out/merged.profdata" CARGO_TARGET_DIR="$out" \
  cargo build --release --locked -q -p wasmgate --target "$triple"
mkdir -p "$out/release"
cp "$out/$triple/release/wasmgate" "$out/release/wasmgate"
"$out/release/wasmgate" check -c "$here/passthrough.toml" >/dev/null
echo "$out/release/wasmgate"
