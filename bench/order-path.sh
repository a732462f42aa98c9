#!/usr/bin/env bash
# Measures the order path on this machine, in one run:
#   1. accepted durable orders/s (every request a new buyer, stock never runs out),
#      at CONNECTIONS and at BIG_CONNECTIONS;
#   2. sold-out answers/s, against GET /health with the same connections.
# Uses its own namespace (bench_orders) on the local Postgres and Redis.
#   bench/order-path.sh   # DURATION=10s CONNECTIONS=64 BIG_CONNECTIONS=256 PORT=18090
# FLASHTIX=path measures that binary instead of building this tree's (to
# compare two builds on the same stretch of the machine).
set -euo pipefail
[ -n "${FLASHTIX:-}" ] && FLASHTIX=$(realpath -m "$FLASHTIX")
cd "$(dirname "$0")/.."

. bench/common.sh
bench_setup bench_orders 18090
if [ -n "${FLASHTIX:-}" ]; then
  [ -x "$FLASHTIX" ] || { echo "FLASHTIX=$FLASHTIX is not an executable" >&2; exit 2; }
  flashtix=$FLASHTIX
else
  release_build
fi

$flashtix reset --tickets 100000000 --max-per-user 4 --json /tmp/flashtix-bench-events.json >/dev/null
big_event=$(python3 -c 'import json; print(json.load(open("/tmp/flashtix-bench-events.json"))[0]["id"])')
# The sold-out event: one seat, seeded beside the big one (a sale without
# tokens takes no organizer's POST /events).
small_event=$(psql -h 127.0.0.1 -U postgres -d postgres -Atc "SET search_path = $FLASHTIX_NAMESPACE;
  INSERT INTO events (name, total_tickets, available_tickets, price_cents, max_per_user, hold_seconds)
  VALUES ('one seat', 1, 1, 100, 4, 300) RETURNING id" | tail -n 1)

$flashtix serve --bind "127.0.0.1:$port" &
server=$!
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null' EXIT
for _ in $(seq 100); do curl -fs "$target/health" >/dev/null && break; sleep 0.1; done

curl -fs -X POST "$target/orders" -H 'Content-Type: application/json' -H 'Idempotency-Key: first' \
  -d "{\"event_id\":$small_event,\"user_id\":\"first-buyer\",\"quantity\":1}" >/dev/null

for c in $connections ${BIG_CONNECTIONS:-256}; do
  echo "== accepted orders: event $big_event, wrk -t1 -c$c -d$duration"
  EVENT_ID=$big_event wrk -t1 -c"$c" -d"$duration" -s bench/orders.lua "$target"
done
echo "== sold-out answers: event $small_event (sold out), same settings"
EVENT_ID=$small_event wrk -t1 -c"$connections" -d"$duration" -s bench/orders.lua "$target"
echo "== GET /health, same settings and the same script overhead"
wrk -t1 -c"$connections" -d"$duration" -s bench/health.lua "$target"
echo "== GET /health, plain wrk (no script), same settings"
wrk -t1 -c"$connections" -d"$duration" "$target/health"
curl -fs "$target/metrics" | grep -E '^flashtix_(orders_total|order_batch_orders_total|order_batch_seconds_count|sold_out_from_memory_total|messages_total)' 
