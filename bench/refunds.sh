#!/usr/bin/env bash
# Late payments refunded: buyers whose payments take longer than their hold
# (the provider answers in LATENCY_MS, 2,500 ms; holds last 1 s and the
# sweeper passes every second), so their orders expire first and every
# capture must be given back. Prints how long from the storm's end until
# every expired order's refund is recorded. Uses its own namespace
# (bench_refunds) on the local services.
#   bench/refunds.sh     # LATENCY_MS=2500 BUYERS=60 PORT=18098
# FLASHTIX=path measures that binary instead of building this tree's (to
# compare two builds on the same stretch of the machine).
set -euo pipefail
[ -n "${FLASHTIX:-}" ] && FLASHTIX=$(realpath -m "$FLASHTIX")
cd "$(dirname "$0")/.."

. bench/common.sh
bench_setup bench_refunds 18098
latency=${LATENCY_MS:-2500}
buyers=${BUYERS:-60}
if [ -n "${FLASHTIX:-}" ]; then flashtix=$FLASHTIX; else release_build; fi
server=
trap '[ -n "$server" ] && kill $server 2>/dev/null; wait' EXIT

sql() { psql -h 127.0.0.1 -U postgres -d postgres -Atc "SET search_path = bench_refunds; $1" | tail -n 1; }

$flashtix reset --tickets "$buyers" --max-per-user 1 --hold-seconds 1 >/dev/null
$flashtix serve --bind "127.0.0.1:$port" --payment-latency-ms "$latency" >/dev/null &
server=$!
for _ in $(seq 100); do curl -fs "$target/ready" >/dev/null && break; sleep 0.1; done
$flashtix storm --target "$target" --rate 1000 --buyers "$buyers" --no-check >/dev/null 2>&1
start=$(date +%s.%N)
SECONDS=0
# Every order settled, and every one not confirmed (a payment that came in
# time for its hold is confirmed, not refunded) refunded.
owed="SELECT count(*) FROM orders WHERE status <> 'CONFIRMED'"
until [ "$(sql "SELECT count(*) FROM orders WHERE status = 'PENDING'")" = 0 ] &&
  [ "$(sql "SELECT count(*) FROM payments WHERE kind = 'REFUND'")" = "$(sql "$owed")" ]; do
  [ $SECONDS -gt 900 ] && { echo "not every refund within 900 s" >&2; exit 1; }
  sleep 0.2
done
end=$(date +%s.%N)
echo "$(sql "$owed") late payments at ${latency} ms refunded $(python3 -c "print(f'{$end - $start:.1f}')") s after the storm ($(sql "SELECT count(*) FROM orders WHERE status = 'CONFIRMED'") paid in time)"
