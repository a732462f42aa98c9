"""CPU time of the sale's components, read from /proc: `cpu.py snapshot FILE`
writes each component's CPU seconds so far; `cpu.py since FILE ORDERS WRK`
prints what each used since the snapshot, in total and per order (WRK: the
load generator's CPU seconds, measured by its parent, as it has exited by then).

Components are told apart by process name: the flashtix server, Postgres (every
backend), RabbitMQ (its Erlang VM and helpers), Redis, and a mail server in
Python. The shared services'
other work (idle, here) is counted with them."""
import json
import os
import sys

COMPONENTS = {
    "flashtix": ("flashtix",),
    "postgres": ("postgres",),
    "rabbitmq": ("beam.smp", "erl_child_setup", "epmd", "inet_gethost"),
    "redis": ("redis-server",),
    # The mail server of bench/notices.sh (scripts/mail_sink.py).
    "mail server": ("python3",),
}
TICKS = os.sysconf("SC_CLK_TCK")


def seconds():
    used = {name: 0.0 for name in COMPONENTS}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        comm = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        # utime and stime are fields 14 and 15 of stat, 12 and 13 after comm.
        cpu = (int(fields[11]) + int(fields[12])) / TICKS
        for name, comms in COMPONENTS.items():
            if comm in comms:
                used[name] += cpu
    return used


if sys.argv[1] == "snapshot":
    with open(sys.argv[2], "w") as f:
        json.dump(seconds(), f)
else:
    before = json.load(open(sys.argv[2]))
    orders = int(sys.argv[3])
    now = seconds()
    spent = {name: now[name] - before[name] for name in COMPONENTS}
    spent["wrk"] = float(sys.argv[4])
    total = sum(spent.values())
    parts = ", ".join(
        f"{name} {1e6 * spent[name] / max(orders, 1):.0f}" for name in spent
    )
    print(f"CPU per order (µs): {parts}; all {1e6 * total / max(orders, 1):.0f} "
          f"({total:.1f} CPU-s for {orders} orders)")
