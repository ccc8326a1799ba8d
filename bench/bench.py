#!/usr/bin/env python3
"""Helpers for bench/run.sh (Python 3 standard library only).

Subcommands:
  parse FILE            parse one pgbench output; prints "tps<TAB>lat_ms<TAB>failed<TAB>txns"
                        ("nan"/"-1" for whatever is missing)
  memory ...            RSS of a pooler idle and with N idle authenticated clients (one JSON line)
  report ...            render the result tables from the raw TSV files

The memory test speaks the PostgreSQL v3 protocol itself, including the client side of
SCRAM-SHA-256 (RFC 5802/7677 as PostgreSQL uses it), so no libpq or pip package is needed.
"""

import argparse
import base64
import errno
import hashlib
import hmac
import json
import math
import os
import re
import resource
import selectors
import socket
import statistics
import struct
import sys
import time

# --------------------------------------------------------------------------------------------
# pgbench output parsing


def parse_pgbench(text):
    def grab(pattern, conv, default):
        m = re.search(pattern, text, re.MULTILINE)
        return conv(m.group(1)) if m else default

    # Without -C pgbench reports "(without initial connection time)"; with -C every
    # transaction opens its own connection and it reports "(including reconnection times)".
    tps = grab(r"^tps = ([0-9.]+) \((?:without initial connection time|including reconnection "
               r"times)\)", float, math.nan)
    lat = grab(r"^latency average = ([0-9.]+) ms", float, math.nan)
    failed = grab(r"^number of failed transactions: (\d+)", int, -1)
    txns = grab(r"^number of transactions actually processed: (\d+)", int, -1)
    return tps, lat, failed, txns


def cmd_parse(args):
    with open(args.file, encoding="utf-8", errors="replace") as f:
        tps, lat, failed, txns = parse_pgbench(f.read())
    print(f"{tps}\t{lat}\t{failed}\t{txns}")


# --------------------------------------------------------------------------------------------
# Minimal PostgreSQL client: startup + SCRAM-SHA-256 / md5 / cleartext, non-blocking.


def msg(kind, payload):
    return kind + struct.pack("!I", len(payload) + 4) + payload


def startup_packet(user, database):
    body = struct.pack("!I", 196608)
    for k, v in (("user", user), ("database", database), ("application_name", "bench-idle")):
        body += k.encode() + b"\0" + v.encode() + b"\0"
    body += b"\0"
    return struct.pack("!I", len(body) + 4) + body


_salted_cache = {}


def salted_password(password, salt, iterations):
    key = (salt, iterations)
    if key not in _salted_cache:
        _salted_cache[key] = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    return _salted_cache[key]


class Conn:
    """One client connection walking through startup/auth until ReadyForQuery."""

    def __init__(self, host, port, user, password, database):
        self.user, self.password, self.database = user, password, database
        self.buf = b""
        self.state = "connecting"
        self.error = None
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setblocking(False)
        rc = self.sock.connect_ex((host, port))
        if rc not in (0, errno.EINPROGRESS):
            raise OSError(rc, os.strerror(rc))

    def send(self, data):
        # Messages here are tiny; a fresh socket's send buffer always takes them whole.
        n = self.sock.send(data)
        if n != len(data):
            raise OSError("short send")

    def on_writable(self):
        err = self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            raise OSError(err, os.strerror(err))
        self.send(startup_packet(self.user, self.database))
        self.state = "auth"

    def on_readable(self):
        data = self.sock.recv(65536)
        if not data:
            raise OSError("server closed the connection during login")
        self.buf += data
        while len(self.buf) >= 5:
            kind = self.buf[:1]
            length = struct.unpack("!I", self.buf[1:5])[0]
            if len(self.buf) < 1 + length:
                break
            body = self.buf[5 : 1 + length]
            self.buf = self.buf[1 + length :]
            self.handle(kind, body)
            if self.state == "ready":
                return

    def handle(self, kind, body):
        if kind == b"E":
            fields = {}
            for part in body.split(b"\0"):
                if part:
                    fields[part[:1]] = part[1:].decode(errors="replace")
            raise OSError(f"server error: {fields.get(b'M', '?')}")
        if kind == b"R":
            code = struct.unpack("!I", body[:4])[0]
            rest = body[4:]
            if code == 0:
                self.state = "authenticated"
            elif code == 3:  # cleartext
                self.send(msg(b"p", self.password.encode() + b"\0"))
            elif code == 5:  # md5
                inner = hashlib.md5((self.password + self.user).encode()).hexdigest()
                outer = hashlib.md5(inner.encode() + rest[:4]).hexdigest()
                self.send(msg(b"p", b"md5" + outer.encode() + b"\0"))
            elif code == 10:  # SASL: mechanisms list
                mechs = [m.decode() for m in rest.split(b"\0") if m]
                if "SCRAM-SHA-256" not in mechs:
                    raise OSError(f"no SCRAM-SHA-256 among {mechs}")
                self.nonce = base64.b64encode(os.urandom(18)).decode()
                self.client_first_bare = "n=,r=" + self.nonce
                first = ("n,," + self.client_first_bare).encode()
                self.send(msg(b"p", b"SCRAM-SHA-256\0" + struct.pack("!i", len(first)) + first))
            elif code == 11:  # SASLContinue: server-first-message
                server_first = rest.decode()
                attrs = dict(kv.split("=", 1) for kv in server_first.split(","))
                if not attrs["r"].startswith(self.nonce):
                    raise OSError("SCRAM: server nonce does not extend ours")
                salt = base64.b64decode(attrs["s"])
                iterations = int(attrs["i"])
                salted = salted_password(self.password, salt, iterations)
                client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
                stored_key = hashlib.sha256(client_key).digest()
                without_proof = "c=biws,r=" + attrs["r"]
                auth_message = ",".join((self.client_first_bare, server_first, without_proof))
                signature = hmac.new(stored_key, auth_message.encode(), hashlib.sha256).digest()
                proof = bytes(a ^ b for a, b in zip(client_key, signature))
                server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()
                self.expected_server_sig = hmac.new(
                    server_key, auth_message.encode(), hashlib.sha256).digest()
                final = without_proof + ",p=" + base64.b64encode(proof).decode()
                self.send(msg(b"p", final.encode()))
            elif code == 12:  # SASLFinal
                attrs = dict(kv.split("=", 1) for kv in rest.decode().split(","))
                if base64.b64decode(attrs.get("v", "")) != self.expected_server_sig:
                    raise OSError("SCRAM: wrong server signature")
            else:
                raise OSError(f"unsupported authentication request {code}")
        elif kind == b"Z":
            self.state = "ready"
        # 'S' ParameterStatus, 'K' BackendKeyData, 'N' notices: nothing to do.

    def close(self):
        try:
            if self.state == "ready":
                self.sock.send(msg(b"X", b""))
        except OSError:
            pass
        self.sock.close()


def open_clients(host, port, user, password, database, n, window, deadline, stall_seconds=30.0):
    """Opens n authenticated idle connections. Returns (ready_list, errors list)."""
    sel = selectors.DefaultSelector()
    ready, errors = [], []
    in_flight = 0
    started = 0
    max_errors = 20

    def fail(conn, exc):
        nonlocal in_flight
        errors.append(str(exc))
        try:
            sel.unregister(conn.sock)
        except (KeyError, ValueError):
            pass
        conn.close()
        in_flight -= 1

    last_progress = time.monotonic()
    while len(ready) < n and len(errors) < max_errors:
        now = time.monotonic()
        if now > deadline:
            errors.append(f"timeout with {len(ready)} of {n} clients ready")
            break
        if now - last_progress > stall_seconds:
            errors.append(f"stalled: no login completed for {stall_seconds:.0f} s "
                          f"({len(ready)} of {n} ready, {in_flight} in progress)")
            break
        while in_flight < window and started < n and len(errors) < max_errors:
            try:
                c = Conn(host, port, user, password, database)
            except OSError as exc:
                errors.append(f"connect #{started + 1}: {exc}")
                started += 1
                continue
            started += 1
            in_flight += 1
            sel.register(c.sock, selectors.EVENT_WRITE, c)
        if in_flight == 0:
            break
        for key, _ in sel.select(timeout=1.0):
            c = key.data
            try:
                if c.state == "connecting":
                    c.on_writable()
                    sel.modify(c.sock, selectors.EVENT_READ, c)
                else:
                    c.on_readable()
                    if c.state == "ready":
                        last_progress = time.monotonic()
                        sel.unregister(c.sock)
                        in_flight -= 1
                        ready.append(c)
            except OSError as exc:
                fail(c, exc)
    for key in list(sel.get_map().values()):
        key.data.close()
    sel.close()
    return ready, errors


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise OSError(f"no VmRSS for pid {pid}")


def pooler_fd_limit(pid):
    try:
        with open(f"/proc/{pid}/limits") as f:
            for line in f:
                if line.startswith("Max open files"):
                    return line.split()[3]  # the soft limit
    except OSError:
        pass
    return None


def cmd_memory(args):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = args.n + 200
    try:
        if soft < want:
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(max(want, soft), hard), hard))
    except (ValueError, OSError):
        pass
    out = {"n": args.n, "opened": 0, "rss_idle_kb": None, "rss_kb": None, "error": None,
           "client_fd_limit": resource.getrlimit(resource.RLIMIT_NOFILE)[0],
           "pooler_fd_limit": pooler_fd_limit(args.pid)}
    deadline = time.monotonic() + args.timeout
    try:
        # Warm-up: one login creates the pool and its first server connection, so "idle"
        # already includes that and the per-client figure is only what each client adds.
        warm, errs = open_clients(args.host, args.port, args.user, args.password, args.db,
                                  1, 1, deadline)
        for c in warm:
            c.close()
        if errs:
            out["error"] = "warm-up login failed: " + errs[0]
            print(json.dumps(out))
            return
        time.sleep(args.settle)
        out["rss_idle_kb"] = rss_kb(args.pid)
        t0 = time.monotonic()
        clients, errs = open_clients(args.host, args.port, args.user, args.password, args.db,
                                     args.n, args.window, deadline)
        out["opened"] = len(clients)
        out["login_seconds"] = round(time.monotonic() - t0, 2)
        time.sleep(args.settle)
        try:
            out["rss_kb"] = rss_kb(args.pid)
        except OSError as exc:
            out["error"] = f"pooler gone: {exc}"
        if errs:
            more = f" (+{len(errs) - 1} more)" if len(errs) > 1 else ""
            msg_ = f"{len(clients)} of {args.n} clients opened; first error: {errs[0]}{more}"
            out["error"] = msg_ if out["error"] is None else out["error"] + "; " + msg_
        for c in clients:
            c.close()
    except Exception as exc:  # a report, never a crash
        out["error"] = f"{type(exc).__name__}: {exc}"
    print(json.dumps(out))


# --------------------------------------------------------------------------------------------
# Report

WORKLOADS = {
    "a": "select-only, simple protocol, 50 clients",
    "b": "select-only, extended protocol, 50 clients",
    "c": "select-only, new connection per transaction, 20 clients",
    "d": "TPC-B-like (default script), 20 clients",
    "e": "select-only, 1000 clients (> max_connections; poolers only)",
    "f": "select-only, 1 client (latency)",
}
TARGETS = ("direct", "pgbouncer", "agent")


def run_ok(r):
    return (r["rc"] == "0" and not math.isnan(float(r["tps"])) and int(r["txns"]) > 0
            and "died" not in r["note"])


def fmt(v, spec):
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, spec)


def median(values):
    values = [v for v in values if v is not None and not math.isnan(v)]
    return statistics.median(values) if values else None


def ratio(a, b):
    if a is None or b is None or b == 0:
        return "-"
    return f"{a / b:.2f}x"


def cmd_report(args):
    runs = {}  # (workload, target) -> list of dict
    incidents = []
    with open(args.raw) as f:
        header = f.readline().rstrip("\n").split("\t")
        for line in f:
            row = dict(zip(header, line.rstrip("\n").split("\t")))
            runs.setdefault((row["workload"], row["target"]), []).append(row)
    lines = []
    with open(args.meta) as f:
        lines.extend(l.rstrip("\n") for l in f)
    lines.append("")
    lines.append("Medians over rounds. TPS excludes initial connection time, except in (c) where "
                 "every transaction connects (pgbench -C).")
    lines.append("CPU us/txn = pooler process utime+stime (all threads), counted from the moment "
                 "all of the run's")
    lines.append("  clients are connected until pgbench exits, / transactions processed. In (c) "
                 "the whole run counts:")
    lines.append("  there every transaction is a new SCRAM login.")
    for w, title in WORKLOADS.items():
        if not any((w, t) in runs for t in TARGETS):
            continue
        cmd = ""
        for t in TARGETS:
            for r in runs.get((w, t), []):
                cmd = r.get("args", cmd)
        if w == "e":
            cmd = re.sub(r"-t \d+", "-t N", cmd)
        lines.append("")
        lines.append(f"({w}) {title}   [pgbench {cmd}]")
        lines.append(f"  {'target':<10} {'TPS':>10} {'lat avg ms':>11} {'CPU us/txn':>11} "
                     f"{'failed':>7} {'runs ok':>8}  TPS per run")
        med = {}
        for t in TARGETS:
            rs = runs.get((w, t))
            if not rs:
                continue
            ok = [r for r in rs if run_ok(r)]
            tps = median([float(r["tps"]) for r in ok])
            lat = median([float(r["lat_ms"]) for r in ok])
            cpu_vals = []
            for r in ok:
                ticks, txns = int(r["cpu_ticks"]), int(r["txns"])
                if ticks >= 0 and txns > 0:
                    cpu_vals.append(ticks / float(r["clk_tck"]) / txns * 1e6)
            cpu = median(cpu_vals) if t != "direct" else None
            failed = sum(max(int(r["failed"]), 0) for r in rs)
            med[t] = (tps, cpu)
            per_run = ", ".join(fmt(float(r["tps"]), ".0f") if run_ok(r) else "FAILED"
                                for r in rs)
            for r in rs:
                if not run_ok(r) or r["note"]:
                    incidents.append(f"  ({w}) round {r['round']} {t}: pgbench exit status "
                                     f"{r['rc']}; {r['note'] or 'no tps in output'}")
            lines.append(f"  {t:<10} {fmt(tps, '.1f'):>10} {fmt(lat, '.3f'):>11} "
                         f"{(fmt(cpu, '.1f') if t != 'direct' else 'n/a'):>11} "
                         f"{failed:>7} {len(ok):>4}/{len(rs):<3}  {per_run}")
        logins = []
        for t in ("pgbouncer", "agent"):
            vals = []
            for r in runs.get((w, t), []):
                m = re.search(r"-c (\d+)", r["args"])
                ticks = int(r.get("login_cpu_ticks", -1))
                if run_ok(r) and ticks >= 0 and m and int(m.group(1)) >= 100:
                    vals.append(ticks / float(r["clk_tck"]) / int(m.group(1)) * 1e6)
            if vals:
                logins.append(f"{t} {median(vals):.0f}")
        if logins:
            lines.append("  pooler CPU per client login (SCRAM) while pgbench connected its clients,"
                         f" us: {', '.join(logins)}")
        if "agent" in med and "pgbouncer" in med:
            lines.append(f"  agent/pgbouncer: TPS ratio {ratio(med['agent'][0], med['pgbouncer'][0])}"
                         f" (higher is better), CPU/txn ratio "
                         f"{ratio(med['agent'][1], med['pgbouncer'][1])} (lower is better)")
    if incidents:
        lines.append("")
        lines.append("Failed or incomplete runs (not in the medians):")
        lines.extend(incidents)
    lines.append("")
    lines.append("Memory: pooler RSS (VmRSS) idle (after one warm-up login) and with N idle "
                 "authenticated clients")
    lines.append(f"  {'target':<10} {'N':>6} {'opened':>7} {'RSS idle':>11} {'RSS with N':>11} "
                 f"{'bytes/client':>13} {'login s':>8}  note")
    if os.path.exists(args.memory):
        with open(args.memory) as f:
            for line in f:
                target, _, js = line.rstrip("\n").partition("\t")
                try:
                    m = json.loads(js)
                except ValueError:
                    lines.append(f"  {target:<10} memory test produced no result: {js[:200]}")
                    continue
                idle, with_n, n = m.get("rss_idle_kb"), m.get("rss_kb"), m.get("n")
                per = None
                if idle is not None and with_n is not None and m.get("opened"):
                    per = (with_n - idle) * 1024.0 / m["opened"]
                kb = lambda v: "-" if v is None else f"{v / 1024.0:.1f} MiB"
                lines.append(f"  {target:<10} {n:>6} {m.get('opened', 0):>7} {kb(idle):>11} "
                             f"{kb(with_n):>11} {fmt(per, '.0f'):>13} "
                             f"{fmt(m.get('login_seconds'), '.1f'):>8}  "
                             f"fd limit {m.get('pooler_fd_limit') or '?'}"
                             f"{'; ERROR: ' + m['error'] if m.get('error') else ''}")
    text = "\n".join(lines) + "\n"
    with open(args.out, "w") as f:
        f.write(text)
    sys.stdout.write(text)


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("parse")
    p.add_argument("file")
    p.set_defaults(fn=cmd_parse)
    m = sub.add_parser("memory")
    m.add_argument("--pid", type=int, required=True)
    m.add_argument("--host", default="127.0.0.1")
    m.add_argument("--port", type=int, required=True)
    m.add_argument("--user", required=True)
    m.add_argument("--password", required=True)
    m.add_argument("--db", required=True)
    m.add_argument("--n", type=int, required=True)
    m.add_argument("--window", type=int, default=64, help="logins in flight at once")
    m.add_argument("--settle", type=float, default=2.0, help="seconds before reading RSS")
    m.add_argument("--timeout", type=float, default=300.0)
    m.set_defaults(fn=cmd_memory)
    r = sub.add_parser("report")
    r.add_argument("--meta", required=True)
    r.add_argument("--raw", required=True)
    r.add_argument("--memory", required=True)
    r.add_argument("--out", required=True)
    r.set_defaults(fn=cmd_report)
    args = ap.parse_args()
    args.fn(args)


if __name__ == "__main__":
    main()
