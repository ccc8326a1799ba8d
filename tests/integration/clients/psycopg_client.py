#!/usr/bin/env python3
"""psycopg 3 through the agent in transaction mode: the same parameterised queries, run
often enough that psycopg prepares them (prepare_threshold, default 5), in autocommit and in
explicit transactions. Prints "OK <checked> pids=<pid,...>"; exits non-zero on any mismatch.

Usage: psycopg_client.py CONNINFO ITERATIONS
"""
import sys

import psycopg


def main() -> int:
    conninfo, iterations = sys.argv[1], int(sys.argv[2])
    pids = set()
    checked = 0
    with psycopg.connect(conninfo, autocommit=True) as conn:
        assert conn.prepare_threshold == 5, conn.prepare_threshold
        for i in range(iterations):
            value, pid = conn.execute(
                "select %s::int * 3, pg_backend_pid()", (i,)).fetchone()
            if value != i * 3:
                print(f"wrong result {value} for {i}", file=sys.stderr)
                return 1
            pids.add(pid)
            checked += 1
        # Transactions of several statements, with a second prepared query.
        conn.autocommit = False
        for i in range(iterations // 2):
            with conn.transaction():
                conn.execute("create temp table if not exists t (v int) on commit drop")
                conn.execute("insert into t values (%s)", (i,))
                (count,) = conn.execute(
                    "select count(*) from t where v = %s", (i,)).fetchone()
                if count != 1:
                    print(f"wrong count {count} for {i}", file=sys.stderr)
                    return 1
                checked += 1
        # prepare=True prepares at once, also under a name psycopg already used elsewhere.
        (text,) = conn.execute("select %s::text || 'x'", ("a",), prepare=True).fetchone()
        conn.commit()
        if text != "ax":
            print(f"wrong text {text!r}", file=sys.stderr)
            return 1
        with conn.cursor() as cur:
            cur.execute("select count(*) from pg_prepared_statements where name like 'pgf\\_%%'")
            (on_server,) = cur.fetchone()
        conn.commit()
        if on_server < 1:
            print("no pgf_ statement on the server: nothing was prepared", file=sys.stderr)
            return 1
    print(f"OK {checked} pids={','.join(str(p) for p in sorted(pids))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
