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
