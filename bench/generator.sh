#!/usr/bin/env bash
# The storm generator against oha, side by side in one sitting, against one
# `flashtix serve --role api` (its /health; the sale seeded for the buying
# storm). For each run: the closed model (64 connections), the open model at
# two rates, and a buying storm (history and duplicates on), each with the
# generator's whole-process CPU (user + sys) per answer.
#   bench/generator.sh    # FLASHTIX=path (default: this tree's release build)
#                         # RUNS=2 DURATION=8s RATES="20000 40000" PORT=18310
set -euo pipefail
cd "$(dirname "$0")/.."

. bench/common.sh
bench_setup bench_generator 18310
command -v oha >/dev/null || { echo "oha is needed: cargo install oha --version 1.16.0" >&2; exit 2; }
if [ -n "${FLASHTIX:-}" ]; then flashtix=$FLASHTIX; else release_build; fi
runs=${RUNS:-2} rates=${RATES:-20000 40000}
work=$(mktemp -d)
server=
trap '[ -n "$server" ] && kill $server 2>/dev/null; wait; [ -n "${KEEP:-}" ] || rm -rf "$work"' EXIT

$flashtix reset --tickets 10000 --max-per-user 4 >/dev/null
$flashtix serve --bind "127.0.0.1:$port" --role api >/dev/null &
server=$!
for _ in $(seq 100); do curl -fs "$target/ready" >/dev/null && break; sleep 0.1; done
health="$target/health"

# `timed NAME COMMAND...`: runs it, its CPU seconds (user + sys) to $work/NAME.cpu.
timed() {
  local name=$1; shift
  /usr/bin/time -f "%U %S" -o "$work/$name.time" "$@" >"$work/$name.out" 2>"$work/$name.err" ||
    { cat "$work/$name.err" >&2; return 1; }
  awk '{ print $1 + $2 }' "$work/$name.time" >"$work/$name.cpu"
}

# `line NAME KIND`: one line of figures from oha's or the storm's JSON.
line() {
  python3 - "$work/$1" "$2" <<'PY'
import json, sys
stem, kind = sys.argv[1], sys.argv[2]
cpu = float(open(stem + ".cpu").read())
name = stem.rsplit("/", 1)[-1]
if kind == "oha":
    d = json.load(open(stem + ".out"))
    s = d["summary"]
    answers = sum(d["statusCodeDistribution"].values())
    p99 = d["latencyPercentiles"]["p99"] * 1000
    print(f"  {name:16} {s['requestsPerSec']:9,.0f} answers/s  {cpu / answers * 1e6:5.1f} µs CPU/answer"
          f"  p99 {p99:6.2f} ms  ({answers:,} answers, {cpu:.2f} s CPU)")
else:
    d = json.load(open(stem + ".json"))
    answers = d["attempts"]
    sched = d["schedule"]
    late = d["lateness_ms"]
    p99 = d["latency_from_intended_all_ms"]["p99"]
    extra = ""
    if d["rates"]["target"]:
        extra = (f"  asked {d['rates']['target']:,.0f}/s, sent {d['rates']['sent']:,.0f}/s, "
                 f"{sched['behind_sends']:,} of {d['sends']:,} sends 10 ms late "
                 f"({100 * sched['behind_sends'] / max(d['sends'], 1):.2f}%), lateness p99 {late['p99']:.2f} ms"
                 f" {'kept' if sched['kept'] else 'BEHIND'}")
    print(f"  {name:16} {d['rates']['completed']:9,.0f} answers/s  {cpu / answers * 1e6:5.1f} µs CPU/answer"
          f"  p99 {p99:6.2f} ms ({answers:,} answers, {cpu:.2f} s CPU){extra}")
PY
}

storm_raw=($flashtix storm --raw "$health" --no-check)
for run in $(seq "$runs"); do
  echo "run $run"
  timed "oha-closed-$run" oha -c 64 -z "$duration" --no-tui --output-format json "$health"
  line "oha-closed-$run" oha
  timed "storm-closed-$run" "${storm_raw[@]}" --concurrency 64 --duration "$duration" \
    --json "$work/storm-closed-$run.json"
  line "storm-closed-$run" storm
  for rate in $rates; do
    timed "oha-open-$rate-$run" oha -q "$rate" -z "$duration" --latency-correction --no-tui \
      --output-format json "$health"
    line "oha-open-$rate-$run" oha
    timed "storm-open-$rate-$run" "${storm_raw[@]}" --rate "$rate" --duration "$duration" \
      --json "$work/storm-open-$rate-$run.json"
    line "storm-open-$rate-$run" storm
  done
  # A buying storm: every answer read and classified, 5% double clicks, the
  # history written; tickets run out early, so most answers are sold_out.
  $flashtix reset --tickets 10000 --max-per-user 4 >/dev/null
  timed "storm-buying-$run" $flashtix storm --target "$target" --concurrency 64 \
    --duration "$duration" --buyers 10000000 --duplicates 0.05 --no-check \
    --history "$work/history-$run.jsonl" --json "$work/storm-buying-$run.json"
  line "storm-buying-$run" storm
  echo "    history: $(wc -l <"$work/history-$run.jsonl") lines, $(du -h "$work/history-$run.jsonl" | cut -f1)"
done
