"""Schemathesis hooks for flashtix: a refused request changes nothing.

Before each request that may write (anything but GET), the sale's state is
fingerprinted: every table of the namespace's Postgres schema and every
Redis key of the namespace. When the answer is a refusal (4xx or 5xx), the
state must be as it was. Run alone with --self-test, it changes the state
behind a refused request's back and fails unless the check catches it.

Needs FLASHTIX_DATABASE_URL, FLASHTIX_REDIS_URL and FLASHTIX_NAMESPACE, and
one worker: requests must not overlap.
"""

import hashlib
import os
import subprocess
import sys

import redis
import schemathesis

NAMESPACE = os.environ["FLASHTIX_NAMESPACE"]
DATABASE_URL = os.environ["FLASHTIX_DATABASE_URL"]
REDIS = redis.Redis.from_url(os.environ["FLASHTIX_REDIS_URL"])


def sql(query):
    return subprocess.run(
        ["psql", DATABASE_URL, "-v", "ON_ERROR_STOP=1", "-Atc", query],
        check=True, capture_output=True, text=True,
    ).stdout.splitlines()


def fingerprint():
    """Each table's rows and each Redis key's value, hashed, by name."""
    tables = sql(
        "SELECT table_name FROM information_schema.tables "
        f"WHERE table_schema = '{NAMESPACE}' AND table_type = 'BASE TABLE' ORDER BY 1"
    )
    state = {}
    if tables:
        hashes = " UNION ALL ".join(
            f"SELECT '{table}', md5(coalesce(string_agg(t::text, '|' ORDER BY t::text), '')) "
            f'FROM "{NAMESPACE}"."{table}" t'
            for table in tables
        )
        for line in sql(hashes):
            table, digest = line.split("|")
            state[f"table {table}"] = digest
    for key in sorted(REDIS.scan_iter(match=f"{NAMESPACE}:*", count=1000)):
        value = REDIS.dump(key)
        if value is not None:
            state[f"redis {key.decode()}"] = hashlib.sha256(value).hexdigest()
    return state


# The request in flight and the state before it (one worker: one at a time).
BEFORE = {"case": None, "state": None}


@schemathesis.hook
def before_call(context, case, kwargs):
    BEFORE["case"] = case
    BEFORE["state"] = fingerprint() if case.method.upper() != "GET" else None


@schemathesis.check
def refused_requests_change_nothing(ctx, response, case):
    before = BEFORE["state"] if BEFORE["case"] is case else None
    if before is None or response.status_code < 400:
        return None
    after = fingerprint()
    changed = sorted(name for name in before.keys() | after.keys() if before.get(name) != after.get(name))
    if changed:
        raise AssertionError(
            f"{case.method} {case.formatted_path} was refused ({response.status_code}) "
            f"but changed {', '.join(changed)}"
        )
    return None


def self_test():
    class Case:
        method = "POST"
        formatted_path = "/orders"

    class Refused:
        status_code = 409

    for what, change, undo in [
        ("a Redis key", lambda: REDIS.set(f"{NAMESPACE}:self-test", 1), lambda: REDIS.delete(f"{NAMESPACE}:self-test")),
        ("a row", lambda: sql(f'UPDATE "{NAMESPACE}".events SET name = name || \'!\' WHERE id = (SELECT min(id) FROM "{NAMESPACE}".events)'),
         lambda: sql(f'UPDATE "{NAMESPACE}".events SET name = rtrim(name, \'!\')')),
    ]:
        case = Case()
        before_call(None, case, {})
        change()
        try:
            refused_requests_change_nothing(None, Refused(), case)
        except AssertionError as caught:
            print(f"self-test: {what} changed behind a refusal: caught ({caught})")
        else:
            print(f"self-test: {what} changed behind a refusal was not caught", file=sys.stderr)
            return 1
        finally:
            undo()
        case = Case()
        before_call(None, case, {})
        refused_requests_change_nothing(None, Refused(), case)
    print("self-test: nothing changed, nothing caught")
    # A snapshot is its own request's: another request is not judged by it.
    before_call(None, Case(), {})
    REDIS.set(f"{NAMESPACE}:self-test", 1)
    try:
        if refused_requests_change_nothing(None, Refused(), Case()) is not None:
            return 1
    finally:
        REDIS.delete(f"{NAMESPACE}:self-test")
    print("self-test: another request's snapshot is not used")
    return 0


if __name__ == "__main__" and "--self-test" in sys.argv:
    sys.exit(self_test())
