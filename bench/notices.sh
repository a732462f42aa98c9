#!/usr/bin/env bash
# What telling every buyer costs, in one run on this machine:
#   1. the whole sale (`flashtix serve`, every role) with notifications off
#      (no mail server): accepted durable orders/s (wrk, every request a new
#      buyer), then the wait until every order settled;
#   2. the same with every buyer mailed through a local mail server
#      (scripts/mail_sink.py, a Maildir): the rate, the wait until every
#      order's mail was taken, and from each order's end to its mail taken,
#      p50 and p99 (the database's clock on both ends);
#   3. the notifications role alone against a backlog: every order of a
#      storm ended with nobody told, then `--role notifications` started:
#      mails taken a second;
#   4. a storm the mail server keeps up with (RATE, 150 buyers a second, for
#      10 s): from each order's end to its mail recorded sent, p50 and p99.
# Uses its own namespace (bench_notices) on the local Postgres, Redis and
# RabbitMQ, and Debian's python3-aiosmtpd for the mail server.
#   bench/notices.sh     # DURATION=5s CONNECTIONS=64 PORT=18099 RATE=150
#   STAGES=4 bench/notices.sh      # the latency stage alone
# FLASHTIX=path measures that binary instead of building this tree's.
set -euo pipefail
[ -n "${FLASHTIX:-}" ] && FLASHTIX=$(realpath -m "$FLASHTIX")
cd "$(dirname "$0")/.."

. bench/common.sh
DURATION=${DURATION:-5s}
bench_setup bench_notices 18099
work=$(mktemp -d)
if [ -n "${FLASHTIX:-}" ]; then flashtix=$FLASHTIX; else release_build; fi
server=
sink=
trap '[ -n "$server" ] && kill $server 2>/dev/null; [ -n "$sink" ] && kill $sink 2>/dev/null; wait; rm -rf "$work"' EXIT

sql() { psql -h 127.0.0.1 -U postgres -d postgres -Atc "SET search_path = bench_notices; $1" | tail -n 1; }

# The mail server, on a free port, delivering to $work/Maildir.
smtp_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
/usr/bin/python3 scripts/mail_sink.py --listen "127.0.0.1:$smtp_port" --maildir "$work/Maildir" >/dev/null &
sink=$!
for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$smtp_port") 2>/dev/null && break; sleep 0.1; done
smtp="smtp://127.0.0.1:$smtp_port"

# `until_zero SQL WHAT`: waits (up to 600 s) until SQL counts nothing.
until_zero() {
  local start=$SECONDS
  until [ "$(sql "$1")" = 0 ]; do
    [ $((SECONDS - start)) -gt 600 ] && { echo "$2 not within 600 s" >&2; exit 1; }
    sleep 0.2
  done
}
unmailed="SELECT count(*) FROM orders o WHERE o.status = 'PENDING' OR NOT EXISTS (
            SELECT 1 FROM notices n WHERE n.order_id = o.id AND n.ending = o.status)"

# `sale ROLES FLAGS…`: a fresh sale of endless stock served by ROLES.
sale() {
  local roles=$1
  shift
  $flashtix reset --tickets 100000000 --max-per-user 4 --json "$work/events.json" >/dev/null
  event=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[0]["id"])' "$work/events.json")
  $flashtix serve --bind "127.0.0.1:$port" --role "$roles" "$@" >/dev/null &
  server=$!
  for _ in $(seq 100); do curl -fs "$target/ready" >/dev/null && break; sleep 0.1; done
}

stop() {
  kill $server
  wait $server 2>/dev/null || true
  server=
}

latency_ms="SELECT format('p50 %s ms, p99 %s ms, max %s ms',
    round(percentile_cont(0.5) WITHIN GROUP (ORDER BY ms)), round(percentile_cont(0.99) WITHIN GROUP (ORDER BY ms)), round(max(ms)))
  FROM (SELECT extract(epoch FROM n.mailed_at - o.updated_at) * 1000 AS ms
        FROM notices n JOIN orders o ON o.id = n.order_id AND n.ending = o.status) t"
stages=${STAGES:-1234}

if [[ $stages == *1* ]]; then
sale all
wrk_orders "$event"
off=$rate
start=$SECONDS
until_zero "SELECT count(*) FROM orders WHERE status = 'PENDING'" "settling"
echo "== notifications off: $orders accepted durable orders in ${seconds}s = $off/s; settled $((SECONDS - start)) s after wrk"
python3 bench/cpu.py since "$work/cpu" "$orders" "$wrk_cpu"
stop

sale all --smtp "$smtp"
wrk_orders "$event"
on=$rate
start=$SECONDS
until_zero "$unmailed" "every mail"
echo "== every buyer mailed: $orders accepted durable orders in ${seconds}s = $on/s; every mail taken $((SECONDS - start)) s after wrk"
python3 bench/cpu.py since "$work/cpu" "$orders" "$wrk_cpu"
echo "   mails recorded sent: $(sql "SELECT format('%s in %s s = %s/s', count(*),
         round(extract(epoch FROM max(mailed_at) - min(mailed_at))::numeric, 1),
         round(count(*) / extract(epoch FROM max(mailed_at) - min(mailed_at))))
       FROM notices")"
echo "   order's end to its mail recorded sent: $(sql "$latency_ms")"
echo "   mailed against off: $(python3 -c "print(f'{$on / $off:.2f}x')")"
stop
fi

if [[ $stages == *3* ]]; then
sale api,sweeper,relay,payments,orders
wrk_orders "$event"
until_zero "SELECT count(*) FROM orders WHERE status = 'PENDING'" "settling"
until_zero "SELECT count(*) FROM outbox WHERE published_at IS NULL" "publishing"
stop
backlog=$(sql "SELECT count(*) FROM orders")
# The notifications role alone, on the ended orders (no reset).
$flashtix serve --bind "127.0.0.1:$port" --role notifications --smtp "$smtp" >/dev/null &
server=$!
until_zero "$unmailed" "every mail of the backlog"
stop
echo "== a backlog of $backlog endings, the notifications role alone: $(sql "SELECT format('%s mails taken in %s s = %s/s', count(*),
         round(extract(epoch FROM max(mailed_at) - min(mailed_at))::numeric, 1),
         round(count(*) / extract(epoch FROM max(mailed_at) - min(mailed_at))))
       FROM notices")"
fi

if [[ $stages == *4* ]]; then
sale all --smtp "$smtp"
$flashtix storm --target "$target" --event "$event" --rate "${RATE:-150}" --duration 10s \
  --buyers 100000 --no-check >/dev/null 2>&1
until_zero "$unmailed" "every mail"
stop
echo "== a storm of ${RATE:-150} buyers a second for 10 s, every buyer mailed ($(sql "SELECT count(*) FROM notices") mails): order's end to its mail recorded sent: $(sql "$latency_ms")"
fi
