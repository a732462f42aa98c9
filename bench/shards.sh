#!/usr/bin/env bash
# One seeded storm against one sale (every role in one process), sent once
# by one process and once by two shard processes (`--shard 0/2`, `1/2`, one
# `--start-at`), the sale reset between; then `merge` of the two shards'
# documents and histories, and `check` with both histories. Prints each
# run's sent rate, lateness and outcomes, and the merge's.
#   bench/shards.sh    # RATE=8000 BUYERS=40000 TICKETS=20000 PORT=18094
set -euo pipefail
cd "$(dirname "$0")/.."

. bench/common.sh
bench_setup bench_shards 18094
release_build
rate=${RATE:-8000} buyers=${BUYERS:-40000} tickets=${TICKETS:-20000}
work=$(mktemp -d)
server=
trap '[ -n "$server" ] && kill $server 2>/dev/null; wait; [ -n "${KEEP:-}" ] || rm -rf "$work"' EXIT

$flashtix serve --bind "127.0.0.1:$port" --role all >/dev/null &
server=$!
for _ in $(seq 100); do curl -fs "$target/ready" >/dev/null && break; sleep 0.1; done
storm=(storm --target "$target" --rate "$rate" --buyers "$buyers" --seed 1 --settle 120s)
summary() {
  python3 - "$@" <<'PY'
import json, sys
for path in sys.argv[1:]:
    d = json.load(open(path))
    s, o = d["schedule"], d["outcomes"]
    print(f"  {path.rsplit('/', 1)[-1]}: sent {d['rates']['sent']:.0f}/s, "
          f"behind {s['behind_sends']} of {d['sends']} sends, "
          f"p99 from intended {d['latency_from_intended_all_ms']['p99']:.1f} ms, "
          f"accepted {o['accepted']}, sold_out {o['sold_out']}, errors {o['error'] + o['timeout'] + o['connect_error']}")
    shown = lambda value, spec: "-" if value is None else format(value, spec)
    for f in d.get("fairness", []):
        print(f"    event {f['event_id']}: {f['first_arrivals_won']} of the first {f['winners']} "
              f"arrivals won, rank correlation {shown(f['rank_correlation'], '+.2f')}, "
              f"sold out at {shown(f['sold_out_seconds'], '.2f')} s")
PY
}

$flashtix reset --tickets "$tickets" --max-per-user 4 >/dev/null
echo "one process: ${storm[*]:3}"
$flashtix "${storm[@]}" --json "$work/whole.json" >"$work/whole.log" 2>&1 ||
  { cat "$work/whole.log"; exit 1; }
grep -E "^(PASS|FAIL)" "$work/whole.log" || true
summary "$work/whole.json"

$flashtix reset --tickets "$tickets" --max-per-user 4 >/dev/null
start=$(date -u -d '+3 seconds' +%Y-%m-%dT%H:%M:%SZ)
echo "two shards, starting at $start"
for shard in 0 1; do
  $flashtix "${storm[@]}" --shard "$shard/2" --start-at "$start" \
    --history "$work/shard$shard.jsonl" --json "$work/shard$shard.json" >"$work/shard$shard.log" 2>&1 &
done
wait %2 %3
summary "$work/shard0.json" "$work/shard1.json"
echo "merged:"
$flashtix merge "$work/shard0.json" "$work/shard1.json" \
  --history "$work/shard0.jsonl" "$work/shard1.jsonl" --json "$work/merged.json" >"$work/merge.log"
summary "$work/merged.json"
for _ in $(seq 60); do
  $flashtix check --history "$work/shard0.jsonl" "$work/shard1.jsonl" >"$work/check.log" 2>&1 && break
  grep -q UNKNOWN "$work/check.log" || break
  sleep 1
done
grep -E "^(PASS|FAIL)" "$work/check.log"
