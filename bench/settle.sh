#!/usr/bin/env bash
# Measures the whole saga on this machine, for a 10,000-ticket sale, twice:
#
#   1. as a sale runs: one server with every role; wrk buys the sale out (every
#      request a new buyer) and stops at the sell-out, while the relay, payment
#      and order workers settle what is taken. Reports, from the orders' own
#      timestamps, orders settled per second from the first order to the last
#      settled, and the lag from the last order accepted to the last settled.
#   2. the saga alone: the API takes the whole sale with no workers running;
#      then the relay, payment and order workers start and settle the backlog.
#      Reports orders settled per second from the workers' start to the last
#      settled: what the saga itself sustains when it has the machine.
#
# In run 1 the load generator, the API, Postgres, Redis and RabbitMQ share the
# two cores, so intake and settling slow each other. Uses its own namespace
# (bench_settle) on the local Postgres, Redis and RabbitMQ.
#   bench/settle.sh        # TICKETS=10000 CONNECTIONS=256 PORT=18091
set -euo pipefail
cd "$(dirname "$0")/.."

tickets=${TICKETS:-10000}
connections=${CONNECTIONS:-256}
port=${PORT:-18091}
target="http://127.0.0.1:$port"
export FLASHTIX_NAMESPACE=bench_settle RUST_LOG=warn

command -v wrk >/dev/null || { echo "wrk is needed: apt-get install wrk" >&2; exit 2; }
cargo build --release -q -p flashtix
flashtix=target/release/flashtix
servers=()
trap 'kill "${servers[@]}" 2>/dev/null; wait' EXIT

sql() { psql -h 127.0.0.1 -U postgres -d postgres -Atc "SET search_path = bench_settle; $1" | tail -n 1; }

# Starts a server with the given roles on the given port; waits until it is ready.
serve() {
  $flashtix serve --bind "127.0.0.1:$2" --role "$1" >/dev/null &
  servers+=($!)
  for _ in $(seq 100); do curl -fs "http://127.0.0.1:$2/ready" >/dev/null && return; sleep 0.1; done
  echo "the $1 server did not become ready" >&2
  exit 4
}

# Buys the sale out with wrk, stopping it once no ticket is left.
buy_out() {
  echo "== buying out $tickets tickets: wrk -t1 -c$connections, stopped at the sell-out"
  EVENT_ID=$1 wrk -t1 -c"$connections" -d60s -s bench/orders.lua "$target" | grep -E '^status' &
  local load=$!
  until curl -fs "$target/events/$1" | grep -q '"available_tickets":0'; do sleep 0.05; done
  pkill -INT -x wrk
  wait $load
}

# Waits, in one database session, until no order is PENDING.
until_settled() {
  sql "DO \$\$ BEGIN
         FOR i IN 1..1200 LOOP
           EXIT WHEN NOT EXISTS (SELECT 1 FROM orders WHERE status = 'PENDING');
           PERFORM pg_sleep(0.05);
         END LOOP;
       END \$\$" >/dev/null
  sql "SELECT format('orders %s: confirmed %s, cancelled %s, expired %s, pending %s',
          count(*), count(*) FILTER (WHERE status = 'CONFIRMED'),
          count(*) FILTER (WHERE status = 'CANCELLED'),
          count(*) FILTER (WHERE status = 'EXPIRED'),
          count(*) FILTER (WHERE status = 'PENDING'))
       FROM orders"
}

echo "#### 1. as a sale runs: every role in one server"
event=$($flashtix reset --tickets "$tickets" --max-per-user 4 --print-ids)
serve all "$port"
buy_out "$event"
until_settled
sql "SELECT format('settle throughput: %s orders/s (%s s from the first order to the last settled)',
        round(count(*) / extract(epoch FROM max(updated_at) - min(created_at)))::int,
        round(extract(epoch FROM max(updated_at) - min(created_at))::numeric, 2))
     FROM orders"
sql "SELECT format('settle lag: %s s from the last order accepted to the last settled',
        round(extract(epoch FROM max(updated_at) - max(created_at))::numeric, 2))
     FROM orders"
$flashtix check --settle 30s | tail -n 1
kill "${servers[@]}"; wait "${servers[@]}" 2>/dev/null || true; servers=()

echo "#### 2. the saga alone: the sale taken first, then the workers start"
event=$($flashtix reset --tickets "$tickets" --max-per-user 4 --print-ids)
serve api "$port"
buy_out "$event"
echo "pending before the workers start: $(sql "SELECT count(*) FROM orders WHERE status = 'PENDING'")"
started=$(date +%s.%N)
serve relay,payments,orders,notifications $((port + 1))
until_settled
sql "SELECT format('saga throughput: %s orders/s (%s s from the workers starting to the last settled)',
        round(count(*) / extract(epoch FROM max(updated_at) - to_timestamp($started)))::int,
        round(extract(epoch FROM max(updated_at) - to_timestamp($started))::numeric, 2))
     FROM orders"
$flashtix check --settle 30s | tail -n 1
