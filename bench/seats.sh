#!/usr/bin/env bash
# A seated sale against the API alone, in one run on this machine:
#   1. accepted seat orders/s: every request a new buyer asking for the best
#      seat left in a zone of 100,000 (`bench/orders.lua`, ZONE);
#   2. `409 seat_taken` answers/s: every buyer asks for the same seat;
#   3. `GET /health` with the same script overhead (`bench/health.lua`);
# 2 and 3 alternate ROUNDS times, so a change in the machine's speed touches
# both sides of a ratio alike; each round's ratio, then their median. Uses its
# own namespace (bench_seats) on the local Postgres, Redis and RabbitMQ.
#   bench/seats.sh     # DURATION=10s CONNECTIONS=64 ROUNDS=3 PORT=18093
set -euo pipefail
cd "$(dirname "$0")/.."

. bench/common.sh
bench_setup bench_seats 18093
release_build
work=$(mktemp -d)
server=
trap '[ -n "$server" ] && kill $server 2>/dev/null; wait; rm -rf "$work"' EXIT

$flashtix reset --seating 'A:400x250@5000' --max-per-user 6 --json "$work/events.json" >/dev/null
event=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[0]["id"])' "$work/events.json")
$flashtix serve --bind "127.0.0.1:$port" --role api >/dev/null &
server=$!
for _ in $(seq 100); do curl -fs "$target/ready" >/dev/null && break; sleep 0.1; done

rate() { sed -n "s/^status $1: [0-9]* answers, \([0-9]*\)\/s$/\1/p" "$2"; }
EVENT_ID=$event ZONE=A wrk -t1 -c"$connections" -d"$duration" -s bench/orders.lua "$target" >"$work/best"
echo "seat orders accepted (best available, 1 seat): $(rate 202 "$work/best")/s"
ratios=()
for round in $(seq "${ROUNDS:-3}"); do
  EVENT_ID=$event SEATS='["A-1-1"]' wrk -t1 -c"$connections" -d"$duration" -s bench/orders.lua "$target" >"$work/taken"
  wrk -t1 -c"$connections" -d"$duration" -s bench/health.lua "$target/health" >"$work/health"
  taken=$(rate 409 "$work/taken")
  health=$(rate 200 "$work/health")
  ratios+=("$(python3 -c "import sys; print(round(100 * int(sys.argv[1]) / int(sys.argv[2])))" "$taken" "$health")")
  echo "round $round: seat_taken $taken/s, GET /health $health/s: ${ratios[-1]}%"
done
python3 -c "import statistics, sys; print(f'seat_taken at {statistics.median(map(int, sys.argv[1:])):.0f}% of GET /health (median of {len(sys.argv) - 1} rounds)')" "${ratios[@]}"
