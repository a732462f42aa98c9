#!/usr/bin/env bash
# What `flashtix watch` costs the sale, in one run on this machine: the whole
# sale (`flashtix serve`, every role) under wrk buying as new buyers at full
# speed (bench/orders.lua), three times:
#   1. nobody watching;
#   2. `flashtix watch` at its default pace (--every 1s), drawing its screen
#      (--print after the run: the same feeds as on a terminal);
#   3. the same at ten times the pace (--every 100ms);
# each time the accepted orders/s, its ratio to the first, and the CPU of
# every component (the watcher's is counted as flashtix's). Uses its own
# namespace (bench_watch).
#   bench/watch.sh     # DURATION=10s CONNECTIONS=64 PORT=18096
set -euo pipefail
cd "$(dirname "$0")/.."

. bench/common.sh
bench_setup bench_watch 18096
release_build
work=$(mktemp -d)
server=
watcher=
trap '[ -n "$server" ] && kill $server 2>/dev/null; [ -n "$watcher" ] && kill $watcher 2>/dev/null; wait; rm -rf "$work"' EXIT

sql() { psql -h 127.0.0.1 -U postgres -d postgres -Atc "SET search_path = bench_watch; $1" | tail -n 1; }

# `run LABEL [EVERY]`: a fresh sale, every role, a watcher at EVERY (none
# without), wrk; prints what it saw and leaves the rate in $rate.
run() {
  local label=$1 every=${2:-}
  $flashtix reset --tickets 100000000 --max-per-user 4 --json "$work/events.json" >/dev/null
  local event
  event=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[0]["id"])' "$work/events.json")
  $flashtix serve --bind "127.0.0.1:$port" >/dev/null &
  server=$!
  for _ in $(seq 100); do curl -fs "$target/ready" >/dev/null && break; sleep 0.1; done
  if [ -n "$every" ]; then
    local watch_for
    watch_for=$(python3 -c '
import re, sys
n, unit = re.fullmatch(r"(\d+)([sm]?)", sys.argv[1]).groups()
print(int(n) * (60 if unit == "m" else 1) + 1)' "$duration")
    $flashtix watch --server "$target" --every "$every" --print "$work/screen" --after "${watch_for}s" &
    watcher=$!
  fi
  wrk_orders "$event"
  echo "== $label: $orders accepted durable orders in ${seconds}s = $rate/s"
  python3 bench/cpu.py since "$work/cpu" "$orders" "$wrk_cpu"
  if [ -n "$watcher" ]; then
    wait $watcher
    watcher=
    grep -E 'Orders/s|Order path|Saga' "$work/screen"
  fi
  kill $server
  wait $server 2>/dev/null || true
  server=
}

run "nobody watching"
alone=$rate
run "flashtix watch --every 1s" 1s
paced=$rate
run "flashtix watch --every 100ms" 100ms
fast=$rate
python3 -c "print(f'watched at 1 s / alone: {$paced / $alone:.2f}; at 100 ms / alone: {$fast / $alone:.2f}')"
