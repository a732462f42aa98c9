# Sourced by the bench scripts, from the checkout's root.
#
# `bench_setup NAMESPACE PORT`: the run's settings from DURATION (10s),
# CONNECTIONS (64) and PORT (the script's own), the sale's environment (its
# own namespace on the local services, quiet logs, no tokens: wrk's buyers
# are named in the body, as the numbers these scripts recorded before tokens
# were; bench/tokens.sh measures what tokens cost), and an early stop if wrk
# is missing.
bench_setup() {
  duration=${DURATION:-10s}
  connections=${CONNECTIONS:-64}
  port=${PORT:-$2}
  target="http://127.0.0.1:$port"
  export FLASHTIX_NAMESPACE=$1 FLASHTIX_NO_TOKENS=true RUST_LOG=warn
  unset FLASHTIX_TOKEN_KEYS FLASHTIX_TOKEN_SECRET_FILE
  command -v wrk >/dev/null || { echo "wrk is needed: apt-get install wrk" >&2; exit 2; }
}

# `release_build`: builds this tree's release binary and points $flashtix at it.
release_build() {
  cargo build --release -q -p flashtix
  flashtix=target/release/flashtix
}

# `wrk_orders EVENT`: new buyers at EVENT with bench/orders.lua (TOKENS, if
# set, reaches it), the CPU of every component measured from the start;
# leaves wrk's report in $work/wrk and sets $wrk_cpu (seconds), $orders (in
# the database: the caller's `sql`), $seconds and $rate (orders a second).
wrk_orders() {
  python3 bench/cpu.py snapshot "$work/cpu"
  # wrk has exited by the time /proc is read again: its CPU comes from the
  # subshell's own account of its children.
  (
    EVENT_ID=$1 wrk -t1 -c"$connections" -d"$duration" -s bench/orders.lua "$target" >"$work/wrk"
    times >"$work/wrk-times"
  )
  wrk_cpu=$(python3 -c '
import re, sys
m = [float(a or 0) * 60 + float(b) for a, b in re.findall(r"(?:(\d+)m)?([\d.]+)s", sys.argv[1])]
print(m[0] + m[1])' "$(tail -n 1 "$work/wrk-times")")
  orders=$(sql "SELECT count(*) FROM orders")
  seconds=$(sed -n 's/.*requests in \([0-9.]*\)s.*/\1/p' "$work/wrk")
  rate=$(python3 -c "print(round($orders / $seconds))")
}
