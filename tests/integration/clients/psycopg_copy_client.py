#!/usr/bin/env python3
"""psycopg 3's cursor.copy() through the agent (transaction mode, ONE server): COPY FROM
STDIN, COPY TO STDOUT, a COPY that fails on a bad row, and one the client aborts. After each,
a second connection's query must run within 10 s (the only server must have been released)
and the first connection's prepared statement must still work. Prints "OK"; exits non-zero
on any failure.

Usage: psycopg_copy_client.py CONNINFO
"""
import sys
import threading

import psycopg


def other_client_runs(conninfo: str, context: str) -> None:
    result = {}

    def run() -> None:
        try:
            with psycopg.connect(conninfo, autocommit=True) as other:
                result["value"] = other.execute("select 40 + 2").fetchone()[0]
        except Exception as error:  # reported below
            result["error"] = error

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(10)
    if thread.is_alive():
        raise AssertionError(f"{context}: another client's query did not run within 10 s "
                             "(the only server is still held)")
    if result.get("value") != 42:
        raise AssertionError(f"{context}: another client's query failed: {result}")


def prepared_works(conn: psycopg.Connection, context: str) -> None:
    (value,) = conn.execute("select %s::int + 1", (41,), prepare=True).fetchone()
    if value != 42:
        raise AssertionError(f"{context}: prepared statement returned {value}")


def main() -> int:
    conninfo = sys.argv[1]
    with psycopg.connect(conninfo, autocommit=True) as conn:
        cur = conn.cursor()
        with cur.copy("COPY copy_t (i) FROM STDIN") as copy:
            for i in range(100):
                copy.write_row((i,))
        other_client_runs(conninfo, "after COPY FROM STDIN")
        prepared_works(conn, "after COPY FROM STDIN")

        total = 0
        with cur.copy("COPY copy_t (i) TO STDOUT") as copy:
            for (value,) in copy.rows():
                total += int(value)
        if total != sum(range(100)):
            raise AssertionError(f"COPY TO STDOUT summed to {total}")
        other_client_runs(conninfo, "after COPY TO STDOUT")
        prepared_works(conn, "after COPY TO STDOUT")

        try:
            with cur.copy("COPY copy_t (i) FROM STDIN") as copy:
                copy.write(b"1\nnot a number\n3\n")
            raise AssertionError("a bad row was accepted")
        except psycopg.errors.InvalidTextRepresentation:
            pass
        other_client_runs(conninfo, "after a bad row")
        prepared_works(conn, "after a bad row")

        class Abort(Exception):
            pass

        try:
            with cur.copy("COPY copy_t (i) FROM STDIN") as copy:
                copy.write_row((1,))
                raise Abort()
        except (Abort, psycopg.errors.QueryCanceled):
            pass  # psycopg sends CopyFail; versions differ in which error they raise
        other_client_runs(conninfo, "after an aborted COPY")
        prepared_works(conn, "after an aborted COPY")

        (count,) = conn.execute("select count(*) from copy_t").fetchone()
        if count != 100:
            raise AssertionError(f"copy_t has {count} rows, expected 100")
    print("OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
