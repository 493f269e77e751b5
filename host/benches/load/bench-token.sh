#!/usr/bin/env bash
# Prints a bearer token the five-policy chain (chain.toml) accepts: RS256 with
# the shared test key (bench-jwks.json is its public half), valid for a day,
# role viewer (abac permits GET). Used by chain.sh and instructions.sh -c.
set -euo pipefail
root=$(cd "$(dirname "$0")/../../.." && pwd)
b64url() { openssl base64 -A | tr '+/' '-_' | tr -d '='; }
now=$(date +%s)
header=$(printf '{"alg":"RS256","typ":"JWT","kid":"bench"}' | b64url)
claims=$(printf '{"sub":"bench-user","role":"viewer","iss":"https://idp.bench","aud":"api","iat":%d,"exp":%d}' \
  "$now" $((now + 86400)) | b64url)
sig=$(printf '%s.%s' "$header" "$claims" | openssl dgst -sha256 -sign "$root/host/common/testdata/rsa-2048.pem" -binary | b64url)
printf '%s.%s.%s\n' "$header" "$claims" "$sig"
