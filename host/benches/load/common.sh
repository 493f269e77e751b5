# Shared by the load scripts (sourced, not run): what they install, the
# loopback ports they take, and the nginx they start.

# Installs the Debian `packages` when one of `commands` is missing.
#   install_missing "nginx wrk curl ss" "nginx wrk curl iproute2"
install_missing() {  # commands, packages
  local c missing=()
  for c in $1; do command -v "$c" >/dev/null || missing+=("$c"); done
  (( ${#missing[@]} )) || return 0
  echo "installing: $2 (missing: ${missing[*]})" >&2
  local sudo_cmd=(); [[ $(id -u) -eq 0 ]] || sudo_cmd=(sudo)
  "${sudo_cmd[@]}" apt-get update -qq
  # shellcheck disable=SC2086 # a list of package names
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq $2 >/dev/null
}

# Exits unless every loopback port given is free.
ports_free() {  # port...
  local port
  for port in "$@"; do
    if ss -Htln "sport = :$port" | grep -q .; then echo "port $port is in use: stop what holds it" >&2; exit 1; fi
  done
}

# A one-worker nginx config in `dir` (made) around `block`, access log
# off, keep-alive as the benchmark peers run it; prints `dir`. `master`:
# on, or off for one process whose PID is the one that works.
nginx_conf() {  # dir, master, block
  local d=$1
  mkdir -p "$d"/{body,proxy,fastcgi,uwsgi,scgi}
  cat >"$d/nginx.conf" <<CONF
worker_processes 1;
daemon off;
master_process $2;
pid $d/nginx.pid;
error_log $d/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $d/body; proxy_temp_path $d/proxy;
  fastcgi_temp_path $d/fastcgi; uwsgi_temp_path $d/uwsgi; scgi_temp_path $d/scgi;
  keepalive_requests 1000000;
  keepalive_timeout 75s;
  $3
}
CONF
  echo "$d"
}

# The gateway binary to measure: $GATEWAY (another build, to compare with
# this one; e.g. target/pgo/release/wasmgate from pgo.sh) or this tree's
# release build, built now. Prints its path.
gateway_binary() {
  if [[ -n ${GATEWAY:-} ]]; then
    echo "$GATEWAY"
  else
    cargo build --release --locked -q -p wasmgate || return
    echo "$root/target/release/wasmgate"
  fi
}

# The benchmarks' upstream: nginx answering `200 ok` on 127.0.0.1:18080,
# as ../shared/bench/peers.sh runs it (the server block for nginx_conf).
UPSTREAM_SERVER='server { listen 127.0.0.1:18080; location / { default_type text/plain; return 200 "ok"; } }'

# nginx as the reverse proxy in front of it on 127.0.0.1:18081, as peers.sh
# runs it (keep-alive to the upstream); the blocks for nginx_conf. Any
# argument is more directives for its location.
proxy_server() {  # [directives]
  echo "upstream backend { server 127.0.0.1:18080; keepalive 128; keepalive_requests 1000000; }
  server { listen 127.0.0.1:18081; location / { proxy_pass http://backend; proxy_http_version 1.1; proxy_set_header Connection \"\"; ${1:-} } }"
}

# Waits (up to a minute: under valgrind a start is slow) until something
# answers on 127.0.0.1:PORT at all (the chain answers 401 without a token);
# fails, saying so, if nothing does.
answering() {  # port
  for _ in $(seq 300); do curl -s -o /dev/null "http://127.0.0.1:$1/" && return; sleep 0.2; done
  echo "nothing answers on :$1" >&2
  return 1
}
