#!/usr/bin/env bash
# What the storm's live dashboard costs the storm, in one run on this
# machine: `flashtix serve --role api` with stock to spare, and the same open
# storm twice, without and with `--dashboard` (a client, curl, following its
# event stream the whole time); each time the accepted orders a second, the
# p99 from the intended send and the storm's own CPU per attempt (from its
# --json). Uses its own namespace (bench_dashboard).
#   bench/dashboard.sh     # RATE=4000 DURATION=10s PORT=18097
set -euo pipefail
cd "$(dirname "$0")/.."

. bench/common.sh
bench_setup bench_dashboard 18097
rate=${RATE:-4000}
release_build
work=$(mktemp -d)
server=
follower=
trap '[ -n "$server" ] && kill $server 2>/dev/null; [ -n "$follower" ] && kill $follower 2>/dev/null; wait; rm -rf "$work"' EXIT

# `run LABEL [STORM FLAGS…]`: a fresh sale, the API, one storm; prints its figures.
run() {
  local label=$1
  shift
  $flashtix reset --tickets 100000000 --max-per-user 4 >/dev/null
  $flashtix serve --bind "127.0.0.1:$port" --role api >/dev/null &
  server=$!
  for _ in $(seq 100); do curl -fs "$target/ready" >/dev/null && break; sleep 0.1; done
  $flashtix storm --target "$target" --rate "$rate" --duration "$duration" \
    --buyers $((rate * 20)) --no-check --json "$work/storm.json" "$@" >/dev/null 2>"$work/storm.err" &
  local storm=$!
  if [ $# -gt 0 ]; then
    for _ in $(seq 100); do curl -fs "http://127.0.0.1:$((port + 1))/" >/dev/null && break; sleep 0.1; done
    curl -sN "http://127.0.0.1:$((port + 1))/events" >"$work/events" &
    follower=$!
  fi
  wait $storm
  python3 -c '
import json, sys
d = json.load(open(sys.argv[1]))
cpu = d["generator_cpu_seconds"] * 1e6 / d["attempts"]
accepted, sent = d["rates"]["accepted"], d["rates"]["sent"]
p99 = d["latency_from_intended_all_ms"]["p99"]
print(f"== {sys.argv[2]}: accepted {accepted:.0f}/s of {sent:.0f} sent/s, "
      f"p99 from the intended send {p99:.2f} ms, storm CPU {cpu:.1f} µs an attempt")' "$work/storm.json" "$label"
  if [ -n "$follower" ]; then
    kill $follower 2>/dev/null || true
    wait $follower 2>/dev/null || true
    follower=
    echo "   the follower read $(grep -c '^event: tick' "$work/events") ticks, $(grep -c '^event: stock' "$work/events") stock messages"
  fi
  kill $server
  wait $server 2>/dev/null || true
  server=
}

run "no dashboard"
run "--dashboard, one page following" --dashboard "127.0.0.1:$((port + 1))"
