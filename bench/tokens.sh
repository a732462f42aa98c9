#!/usr/bin/env bash
# What buyer tokens cost the order path, in one run on this machine:
# `flashtix serve --role api` four times, wrk driving new buyers at it the same way
# (bench/orders.lua), accepted durable orders/s and the server's CPU per
# order each time:
#   1. without tokens (--no-tokens: the body's user_id names the buyer);
#   2. with HS256 tokens (a shared secret), each request a new buyer's token
#      (signed before wrk starts, `flashtix token --count`), so every order
#      pays one signature check; no per-buyer rate limit;
#   3. the same with EdDSA tokens (the key pair of `flashtix keys init`);
#   4. HS256 with the per-buyer rate limit (the default, 10/s): every
#      request a bucket of a new buyer;
# and the ratios to the first. Uses its own namespace (bench_tokens).
#   bench/tokens.sh     # DURATION=10s CONNECTIONS=64 PORT=18094
set -euo pipefail
cd "$(dirname "$0")/.."

. bench/common.sh
bench_setup bench_tokens 18094
release_build
work=$(mktemp -d)
server=
trap '[ -n "$server" ] && kill $server 2>/dev/null; wait; rm -rf "$work"' EXIT

sql() { psql -h 127.0.0.1 -U postgres -d postgres -Atc "SET search_path = bench_tokens; $1" | tail -n 1; }

$flashtix keys init --dir "$work/keys" >/dev/null
head -c 32 /dev/urandom | base64 >"$work/secret"
# More tokens than wrk sends in DURATION at this machine's rate.
count=${TOKENS_COUNT:-400000}
for kind in eddsa hs256; do
  if [ $kind = eddsa ]; then key=(--signing-key "$work/keys/signing-key.pem"); else key=(--token-secret-file "$work/secret"); fi
  started=$SECONDS
  env -u FLASHTIX_SIGNING_KEY -u FLASHTIX_TOKEN_SECRET_FILE \
    $flashtix token "${key[@]}" --sub "bench-$kind" --count "$count" --ttl 2h >"$work/$kind.tokens"
  echo "signed $count $kind tokens in $((SECONDS - started)) s (before wrk starts)"
done

# `run LABEL FLAGS...`: a fresh sale, `serve --role api FLAGS`, wrk; prints
# one line and leaves the rate in $rate.
run() {
  local label=$1
  shift
  $flashtix reset --tickets 100000000 --max-per-user 4 --json "$work/events.json" >/dev/null
  local event
  event=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[0]["id"])' "$work/events.json")
  env -u FLASHTIX_NO_TOKENS $flashtix serve --bind "127.0.0.1:$port" --role api "$@" >/dev/null &
  server=$!
  for _ in $(seq 100); do curl -fs "$target/ready" >/dev/null && break; sleep 0.1; done
  wrk_orders "$event"
  echo "== $label: $orders accepted durable orders in ${seconds}s = $rate/s"
  grep '^status' "$work/wrk"
  python3 bench/cpu.py since "$work/cpu" "$orders" "$wrk_cpu"
  kill $server
  wait $server 2>/dev/null || true
  server=
}

run "tokens off" --no-tokens
off=$rate
TOKENS=$work/hs256.tokens run "HS256 tokens, no rate limit" --token-secret-file "$work/secret" \
  --buyer-rate 0
hs256=$rate
TOKENS=$work/eddsa.tokens run "EdDSA tokens, no rate limit" --token-keys "$work/keys/jwks.json" \
  --buyer-rate 0
eddsa=$rate
TOKENS=$work/hs256.tokens run "HS256 tokens, rate limit 10/s a buyer" \
  --token-secret-file "$work/secret"
limited=$rate
python3 -c "print(f'against tokens off: HS256 {$hs256 / $off:.2f}, EdDSA {$eddsa / $off:.2f}, HS256 with the rate limit {$limited / $off:.2f}')"
