#!/usr/bin/env bash
# The wasmgate demo, in one command: builds the plugins, the gateway and the
# example services, starts the services on 127.0.0.1:9001-9003 and the
# gateway on 127.0.0.1:8080 (examples/quickstart/gateway.toml), prints curl
# lines to try, and runs until Ctrl-C.
#
#   ./examples/demo.sh                 release builds (slow the first time)
#   PROFILE=debug ./examples/demo.sh   debug builds (faster to build)
#   DEMO_SMOKE=1 ./examples/demo.sh    run the curl lines, check their status
#                                     codes, exit 0 only if all match (CI)
#   DEMO_BUILD=workspace               build every workspace target, as
#                                     `cargo test --workspace` does, so a test
#                                     build's dependencies are reused (CI)
#
# Needs rustup's stable toolchain and curl. Logs go to target/demo/*.log.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

profile=${PROFILE:-release}
smoke=${DEMO_SMOKE:-0}
startup_timeout=${DEMO_TIMEOUT:-60} # seconds to wait for the gateway
config=examples/quickstart/gateway.toml
gateway=http://127.0.0.1:8080
logs=target/demo

die() {
  echo "demo: error: $*" >&2
  exit 1
}

for tool in cargo rustup curl; do
  command -v "$tool" >/dev/null || die "\`$tool\` is not installed (the demo needs rustup's stable toolchain and curl)"
done

case $profile in
  release) build_flags=(--release) ;;
  debug) build_flags=() ;;
  *) die "PROFILE must be \`release\` or \`debug\`, not \`$profile\`" ;;
esac
bin=${CARGO_TARGET_DIR:-target}/$profile

# Building only the gateway and the services resolves dependency features
# differently from a whole-workspace build, so right after `cargo test
# --workspace` it would compile wasmtime and most dependencies again.
case ${DEMO_BUILD:-demo} in
  demo) build_targets=(-p wasmgate -p wasmgate-examples) ;;
  workspace) build_targets=(--workspace --all-targets) ;;
  *) die "DEMO_BUILD must be \`demo\` or \`workspace\`, not \`$DEMO_BUILD\`" ;;
esac

# The ports the demo listens on, and who uses them.
ports=(9001 9002 9003 8080)
port_owner() {
  case $1 in
    9001) echo "the users service" ;;
    9002) echo "the orders service" ;;
    9003) echo "the cart service" ;;
    8080) echo "the gateway" ;;
  esac
}

# True when something accepts connections on 127.0.0.1:$1 (bash's /dev/tcp,
# so no extra tool is needed).
port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

check_ports() {
  local port
  for port in "${ports[@]}"; do
    if port_in_use "$port"; then
      die "port $port (for $(port_owner "$port")) is already in use; stop what listens there (\`ss -ltnp 'sport = :$port'\` shows it), perhaps an earlier demo"
    fi
  done
}

# Checked before building (fail fast) and again before starting (builds are slow).
check_ports

echo "==> building the plugins (wasm32-wasip2) into target/plugins"
./plugins/build.sh

echo "==> building the gateway and the example services ($profile)"
cargo build "${build_flags[@]}" "${build_targets[@]}"

# --- start --------------------------------------------------------------------

pids=() tmp=
cleanup() {
  local status=$?
  trap - EXIT INT TERM
  if [[ -n $tmp ]]; then rm -rf "$tmp"; fi
  if ((${#pids[@]})); then
    kill "${pids[@]}" 2>/dev/null || true
    # Give them a few seconds to drain, then insist.
    local _ pid alive
    for _ in {1..50}; do
      alive=0
      for pid in "${pids[@]}"; do
        if kill -0 "$pid" 2>/dev/null; then alive=1; fi
      done
      ((alive)) || break
      sleep 0.1
    done
    kill -KILL "${pids[@]}" 2>/dev/null || true
    wait 2>/dev/null || true
  fi
  exit "$status"
}
trap cleanup EXIT
trap 'echo; echo "==> stopping"; exit 130' INT
trap 'exit 143' TERM

show_log() {
  echo "--- last lines of $1 ---" >&2
  tail -n 20 "$1" >&2 || true
}

check_ports
mkdir -p "$logs"

echo "==> starting the example services (log: $logs/services.log)"
"$bin/example-services" --users 127.0.0.1:9001 --orders 127.0.0.1:9002 --cart 127.0.0.1:9003 \
  >"$logs/services.log" 2>&1 &
services_pid=$!
pids+=("$services_pid")

echo "==> starting the gateway with $config (log: $logs/gateway.log)"
# NO_COLOR: plain text in the log file.
NO_COLOR=1 "$bin/wasmgate" run -c "$config" >"$logs/gateway.log" 2>&1 &
gateway_pid=$!
pids+=("$gateway_pid")

# Polls until `$2` (a URL) answers with any HTTP status, or `$1` (a pid)
# dies, or the time runs out.
wait_for() {
  local pid=$1 url=$2 name=$3 log=$4 deadline=$((SECONDS + startup_timeout))
  until [[ $(curl -s -o /dev/null --max-time 2 -w '%{http_code}' "$url" || true) =~ ^[1-5][0-9][0-9]$ ]]; do
    if ! kill -0 "$pid" 2>/dev/null; then
      show_log "$log"
      die "$name exited during startup (full log: $log)"
    fi
    if ((SECONDS >= deadline)); then
      show_log "$log"
      die "$name did not answer at $url within ${startup_timeout}s (full log: $log; DEMO_TIMEOUT=SECONDS waits longer)"
    fi
    sleep 0.2
  done
}
for port in 9001 9002 9003; do
  wait_for "$services_pid" "http://127.0.0.1:$port/health" "$(port_owner "$port")" "$logs/services.log"
done
wait_for "$gateway_pid" "$gateway/api/users" "the gateway" "$logs/gateway.log"
echo "==> the gateway is up on $gateway"

# --- try it -------------------------------------------------------------------

# Each entry: expected status | header the response must carry (or empty) |
# what it shows | the curl line.
examples=(
  "200|x-powered-by: wasmgate|list users (-i shows the header the add-header plugin adds)|curl -i $gateway/api/users"
  "200||one user|curl $gateway/api/users/1"
  "201|x-powered-by: wasmgate|create a user|curl -i $gateway/api/users -H 'content-type: application/json' -d '{\"name\":\"Barbara Liskov\",\"email\":\"barbara@example.com\"}'"
  "400||an invalid user is refused by the service|curl -i $gateway/api/users -H 'content-type: application/json' -d '{\"name\":\"no email\"}'"
  "200|ratelimit-limit: 10|user 1's three most recent orders (-i shows the rate-limit plugin's RateLimit-* headers)|curl -i '$gateway/api/orders?user=1&limit=3'"
  "200||one order|curl $gateway/api/orders/1003"
  "200||user 1's cart, with its total (rewritten to /carts/1)|curl $gateway/api/carts/1"
  "200||the mobile home screen: user, recent orders and cart from three calls in parallel (compose plugin)|curl $gateway/api/mobile/home/1"
  "404||the home screen of an unknown user: the users service's 404, passed on|curl -i $gateway/api/mobile/home/999"
  "204|access-control-allow-origin: https://app.example.com|a browser's CORS preflight from app.example.com, answered by the cors plugin|curl -i -X OPTIONS $gateway/api/users -H 'origin: https://app.example.com' -H 'access-control-request-method: POST'"
  "403|x-powered-by: wasmgate|an admin path, denied by the deny plugin|curl -i $gateway/api/users/admin/settings"
  "403||any request with an x-debug header, denied too|curl -i -H 'x-debug: 1' $gateway/api/users"
  "404||a path no route matches: the gateway answers|curl -i $gateway/api/nothing-here"
  "404||an unknown user: the users service answers|curl -i $gateway/api/users/999"
)

echo
echo "Try these (the gateway on $gateway fronts users :9001, orders :9002, cart :9003):"
echo
for entry in "${examples[@]}"; do
  IFS='|' read -r status header what line <<<"$entry"
  echo "  # $what -> $status"
  echo "  $line"
  echo
done
echo "Logs: $logs/gateway.log and $logs/services.log"

if [[ $smoke != 1 ]]; then
  echo "Press Ctrl-C to stop."
  # Ctrl-C ends this through the INT trap; the loop itself ends only if a
  # process dies on its own. (Polling, not `wait`: the children exit cleanly
  # on the terminal's SIGINT too, and `wait` would report that as a death.)
  while kill -0 "$services_pid" 2>/dev/null && kill -0 "$gateway_pid" 2>/dev/null; do
    sleep 1
  done
  if kill -0 "$gateway_pid" 2>/dev/null; then log=$logs/services.log; else log=$logs/gateway.log; fi
  show_log "$log"
  die "a demo process exited unexpectedly (full log: $log)"
fi

# --- smoke mode: run every line above and check its status ---------------------

echo
echo "==> smoke test: running each line"
tmp=$(mktemp -d)
passed=0 failed=0
for entry in "${examples[@]}"; do
  IFS='|' read -r status header what line <<<"$entry"
  rm -f "$tmp/out" "$tmp/headers"
  got=$(bash -c "$line -s --max-time 10 -o '$tmp/out' -D '$tmp/headers' -w '%{http_code}'" || true)
  problem=
  if [[ $got != "$status" ]]; then
    problem="expected $status, got ${got:-no response}"
  elif [[ -n $header ]] && ! tr -d '\r' <"$tmp/headers" | grep -qix "$header"; then
    problem="status $got, but no \`$header\` header"
  fi
  if [[ -z $problem ]]; then
    passed=$((passed + 1))
    printf '  ok    %s  %s\n' "$got" "$line"
  else
    failed=$((failed + 1))
    printf '  FAIL  %s: %s\n' "$line" "$problem"
    awk '{ print "        | " $0 }' "$tmp/out" 2>/dev/null | head -n 15 || true
  fi
done
echo
echo "smoke: $passed passed, $failed failed (of ${#examples[@]})"
if ((failed)); then
  show_log "$logs/gateway.log"
  show_log "$logs/services.log"
  exit 1
fi
