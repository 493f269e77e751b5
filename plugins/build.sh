#!/usr/bin/env bash
# Builds every plugin (plugins/*) and test guest (tests/guests/*) for
# wasm32-wasip2 and copies the components to target/plugins/ and
# target/test-guests/, named after their crates (add-header.wasm, ...).
#
# The demo, the benchmarks and the tests crate's build script all use this,
# so there is one way plugins get built. Installs the wasm32-wasip2 target
# when it is missing.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

if ! rustup target list --installed | grep -qx wasm32-wasip2; then
  echo "installing the wasm32-wasip2 target" >&2
  rustup target add wasm32-wasip2 >&2
fi

crate_name() { sed -n 's/^name = "\(.*\)"$/\1/p' "$1/Cargo.toml" | head -n 1; }

plugins=() guests=() args=()
for d in plugins/*/; do [ -f "$d/Cargo.toml" ] && plugins+=("$(crate_name "$d")"); done
for d in tests/guests/*/; do [ -f "$d/Cargo.toml" ] && guests+=("$(crate_name "$d")"); done
for p in "${plugins[@]}" "${guests[@]}"; do args+=(-p "$p"); done

# A target dir of its own: this may run inside another cargo's build script,
# which holds the lock on target/debug.
cargo build --quiet --target wasm32-wasip2 --profile plugin --target-dir target/wasm "${args[@]}"

copy() {
  local out=$1; shift
  mkdir -p "$out"
  for p in "$@"; do
    local src="target/wasm/wasm32-wasip2/plugin/${p//-/_}.wasm"
    # Copy only what changed, so unchanged plugins keep their mtime (the
    # gateway's watcher and cargo's rerun checks both look at it).
    if ! cmp -s "$src" "$out/$p.wasm"; then
      cp -f "$src" "$out/$p.wasm.tmp"
      mv -f "$out/$p.wasm.tmp" "$out/$p.wasm"
    fi
  done
}
copy target/plugins "${plugins[@]}"
copy target/test-guests "${guests[@]}"
