#!/usr/bin/env bash
# Measures the whole saga on this machine: a 10,000-ticket sale bought out by
# wrk (every request a new buyer), then settled by the payment and order
# workers. Reports, from the orders' own timestamps:
#   - settle throughput: orders settled per second, first order to last settled;
#   - settle lag: last order accepted to last order settled.
# Uses its own namespace (bench_settle) on the local Postgres, Redis, RabbitMQ.
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
event=$($flashtix reset --tickets "$tickets" --max-per-user 4 --print-ids)

$flashtix serve --bind "127.0.0.1:$port" >/dev/null &
server=$!
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null' EXIT
for _ in $(seq 100); do curl -fs "$target/ready" >/dev/null && break; sleep 0.1; done

echo "== buying out $tickets tickets: wrk -t1 -c$connections"
EVENT_ID=$event wrk -t1 -c"$connections" -d"${BUY_SECONDS:-5}s" -s bench/orders.lua "$target" | grep -E '^status'

sql() { psql -h 127.0.0.1 -U postgres -d postgres -Atc "SET search_path = bench_settle; $1" | tail -n 1; }
for _ in $(seq 600); do
  [ "$(sql "SELECT count(*) FROM orders WHERE status = 'PENDING'")" = 0 ] && break
  sleep 0.1
done
echo "== settled"
sql "SELECT format('orders %s: confirmed %s, cancelled %s, expired %s',
        count(*), count(*) FILTER (WHERE status = 'CONFIRMED'),
        count(*) FILTER (WHERE status = 'CANCELLED'), count(*) FILTER (WHERE status = 'EXPIRED'))
     FROM orders"
sql "SELECT format('settle throughput: %s orders/s (%s s from first order to last settled)',
        round(count(*) / extract(epoch FROM max(updated_at) - min(created_at)))::int,
        round(extract(epoch FROM max(updated_at) - min(created_at))::numeric, 2))
     FROM orders"
sql "SELECT format('settle lag: %s s from the last order accepted to the last settled',
        round(extract(epoch FROM max(updated_at) - max(created_at))::numeric, 2))
     FROM orders"
$flashtix check | tail -n 1
