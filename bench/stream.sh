#!/usr/bin/env bash
# The live stock stream under a storm, in one run on this machine:
# `flashtix serve --role api` four times, wrk buying as new buyers at full
# speed (bench/orders.lua) each time:
#   1. nobody watching;
#   2. 1,000 clients holding GET /events/{id}/stream of the event being sold
#      (cli/examples/stream_watchers.rs, on the same machine and cores);
#   3. WATCHERS clients (10,000), with the default --stream-budget;
#   4. the same with no budget (--stream-budget 0: 10 messages a second each);
# each time with watchers: the server's memory and file descriptors before
# and after they joined, the changes each was told, the lag from each
# state's commit to its arrival (p50/p99), clients dropped for reading
# slowly, the watchers' own CPU; and the ratio of accepted orders/s to the
# first. Uses its own namespace (bench_stream).
#   bench/stream.sh     # DURATION=10s CONNECTIONS=64 PORT=18095 WATCHERS=10000
set -euo pipefail
cd "$(dirname "$0")/.."

. bench/common.sh
bench_setup bench_stream 18095
watchers=${WATCHERS:-10000}
# Two descriptors a watcher on this machine: the server's end and the client's.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
release_build
cargo build --release -q -p flashtix --example stream_watchers
work=$(mktemp -d)
server=
clients=
trap '[ -n "$server" ] && kill $server 2>/dev/null; [ -n "$clients" ] && kill $clients 2>/dev/null; wait; rm -rf "$work"' EXIT

sql() { psql -h 127.0.0.1 -U postgres -d postgres -Atc "SET search_path = bench_stream; $1" | tail -n 1; }
rss_mib() { awk '/^VmRSS/ { printf "%.1f", $2 / 1024 }' "/proc/$server/status"; }
fds() { find "/proc/$server/fd" -mindepth 1 | wc -l; }

# `run LABEL WATCHERS [SERVE FLAGS…]`: a fresh sale, `serve --role api`,
# the watchers (if any) joined before wrk starts; prints what it saw and
# leaves the rate in $rate.
run() {
  local label=$1 watching=$2
  shift 2
  $flashtix reset --tickets 100000000 --max-per-user 4 --json "$work/events.json" >/dev/null
  local event
  event=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[0]["id"])' "$work/events.json")
  $flashtix serve --bind "127.0.0.1:$port" --role api "$@" >/dev/null &
  server=$!
  for _ in $(seq 100); do curl -fs "$target/ready" >/dev/null && break; sleep 0.1; done
  echo "== $label"
  if [ "$watching" -gt 0 ]; then
    local before_rss before_fds
    before_rss=$(rss_mib)
    before_fds=$(fds)
    # Long enough to join and to outlast wrk.
    local hold
    hold=$(python3 -c '
import re, sys
n, unit = re.fullmatch(r"(\d+)([sm]?)", sys.argv[1]).groups()
print(int(n) * (60 if unit == "m" else 1) + 30)' "$duration")
    target/release/examples/stream_watchers "$target" "$event" "$watching" "$hold" >"$work/watchers" 2>&1 &
    clients=$!
    for _ in $(seq 600); do grep -q '^watchers:' "$work/watchers" && break; sleep 0.1; done
    cat "$work/watchers"
    python3 -c "
before, after = $before_rss, $(rss_mib)
print(f'server: RSS {before} MiB -> {after} MiB with $watching watchers: {(after - before) * 1024 / $watching:.1f} KiB a watcher; descriptors $before_fds -> $(fds)')"
  fi
  wrk_orders "$event"
  echo "$orders accepted durable orders in ${seconds}s = $rate/s"
  grep '^status' "$work/wrk" || true
  python3 bench/cpu.py since "$work/cpu" "$orders" "$wrk_cpu"
  if [ -n "$clients" ]; then
    # The watchers hang up on their own once their hold is over.
    wait $clients || true
    clients=
    sed 1d "$work/watchers"
    curl -fs "$target/metrics" | grep -E '^flashtix_stream_(messages_total|clients_dropped_total|interval_seconds)'
  fi
  kill $server
  wait $server 2>/dev/null || true
  server=
}

run "nobody watching" 0
alone=$rate
run "1000 watchers" 1000
thousand=$rate
run "$watchers watchers, the default budget" "$watchers"
budgeted=$rate
run "$watchers watchers, no budget" "$watchers" --stream-budget 0
unbounded=$rate
python3 -c "print(f'accepted orders/s against nobody watching: 1000 watchers {$thousand / $alone:.2f}, $watchers with the budget {$budgeted / $alone:.2f}, $watchers without {$unbounded / $alone:.2f}')"
