#!/usr/bin/env bash
# The whole test suite, as CI runs it (.ci/run calls this). Installs what a
# fresh machine lacks, then: formatting, lints (host and wasm32-wasip2),
# every test in the workspace (unit, end-to-end with real plugins and real
# sockets), and a smoke run of the demo.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

step() { printf '\n==> %s\n' "$*"; }

step "toolchain: wasm32-wasip2 target, rustfmt, clippy"
installed=$(rustup target list --installed)
grep -qx wasm32-wasip2 <<<"$installed" || rustup target add wasm32-wasip2
rustup component list --installed | grep -q '^rustfmt' || rustup component add rustfmt
rustup component list --installed | grep -q '^clippy' || rustup component add clippy

step "system packages: redis-server, docker-registry (the store's Redis backend and plugin pulls are tested against real ones)"
missing=()
command -v redis-server >/dev/null || missing+=(redis-server)
command -v docker-registry >/dev/null || missing+=(docker-registry)
if [ "${#missing[@]}" -gt 0 ]; then
  sudo_cmd=(); [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
  "${sudo_cmd[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq "${missing[@]}" >/dev/null
fi

step "formatting"
cargo fmt --all -- --check

step "plugins (wasm32-wasip2)"
./plugins/build.sh

step "clippy (host)"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "clippy (wasm32-wasip2: sdk, plugins, test guests)"
wasm_pkgs=(-p wasmgate-sdk)
for d in plugins/*/ tests/guests/*/; do
  wasm_pkgs+=(-p "$(sed -n 's/^name = "\(.*\)"$/\1/p' "$d/Cargo.toml" | head -n 1)")
done
cargo clippy --target wasm32-wasip2 --locked "${wasm_pkgs[@]}" -- -D warnings

step "tests"
cargo test --workspace --locked

step "docs"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --locked --quiet

step "demo smoke run"
DEMO_SMOKE=1 PROFILE=debug DEMO_BUILD=workspace ./examples/demo.sh

step "all passed"
