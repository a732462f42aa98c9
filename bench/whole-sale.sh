#!/usr/bin/env bash
# The whole sale against the order path alone, in one run on this machine:
#   1. `flashtix serve --role api`: accepted durable orders/s (wrk, every
#      request a new buyer, stock never runs out);
#   2. `flashtix serve` (every role, as `demo` runs it): the same, then the
#      wait until every accepted order has settled;
# and for each, the CPU every component spent per order (from /proc), and the
# ratio of the two rates. Uses its own namespace (bench_sale) on the local
# Postgres, Redis and RabbitMQ.
#   bench/whole-sale.sh     # DURATION=10s CONNECTIONS=64 PORT=18092
# FLASHTIX=path measures that binary instead of building this tree's (to
# compare two builds on the same stretch of the machine).
set -euo pipefail
[ -n "${FLASHTIX:-}" ] && FLASHTIX=$(realpath -m "$FLASHTIX")
cd "$(dirname "$0")/.."

. bench/common.sh
bench_setup bench_sale 18092
work=$(mktemp -d)
if [ -n "${FLASHTIX:-}" ]; then
  [ -x "$FLASHTIX" ] || { echo "FLASHTIX=$FLASHTIX is not an executable" >&2; exit 2; }
  # Under the name bench/cpu.py counts as flashtix's.
  ln -s "$FLASHTIX" "$work/flashtix"
  flashtix=$work/flashtix
else
  release_build
fi
server=
trap '[ -n "$server" ] && kill $server 2>/dev/null; wait; rm -rf "$work"' EXIT

sql() { psql -h 127.0.0.1 -U postgres -d postgres -Atc "SET search_path = bench_sale; $1" | tail -n 1; }

# `run ROLES`: a fresh sale, a server with ROLES, wrk, the settle wait; prints
# one line of results and leaves the rate in $rate.
run() {
  local roles=$1
  $flashtix reset --tickets 100000000 --max-per-user 4 --json "$work/events.json" >/dev/null
  local event
  event=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[0]["id"])' "$work/events.json")
  $flashtix serve --bind "127.0.0.1:$port" --role "$roles" >/dev/null &
  server=$!
  for _ in $(seq 100); do curl -fs "$target/ready" >/dev/null && break; sleep 0.1; done
  wrk_orders "$event"
  local settled="-"
  if [ "$roles" != api ]; then
    local start=$SECONDS
    until [ "$(sql "SELECT count(*) FROM orders WHERE status = 'PENDING'")" = 0 ]; do
      [ $((SECONDS - start)) -gt 120 ] && { settled="not within 120 s"; break; }
      sleep 0.2
    done
    [ "$settled" = "-" ] && settled="$((SECONDS - start)) s after wrk"
  fi
  echo "== --role $roles: $orders accepted durable orders in ${seconds}s = $rate/s; settled: $settled"
  python3 bench/cpu.py since "$work/cpu" "$orders" "$wrk_cpu"
  kill $server
  wait $server 2>/dev/null || true
  server=
  # With every role the sale must also prove itself (the API alone leaves its
  # orders for a saga that is not running).
  if [ "$roles" != api ]; then
    $flashtix check --settle 30s --event "$event" >"$work/check" 2>&1 ||
      { cat "$work/check"; echo "check failed" >&2; exit 1; }
    echo "check: PASS"
  fi
}

run api
api=$rate
run all
all=$rate
python3 -c "print(f'every role / the API alone: {$all / $api:.2f}')"
