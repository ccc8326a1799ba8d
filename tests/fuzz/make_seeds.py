#!/usr/bin/env python3
"""Writes the hand-made seed inputs of tests/fuzz/corpus/<target>/seed-*.

Run from anywhere: python3 tests/fuzz/make_seeds.py. The formats are described at the top of
each *_fuzzer.cc. Crash reproducers added to the corpus (crash-*) are not touched.
"""
import base64
import hashlib
import hmac
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))


def msg(kind, body=b""):
    return kind + struct.pack(">I", len(body) + 4) + body


def cstr(s):
    return (s.encode() if isinstance(s, str) else s) + b"\0"


def startup(params):
    body = struct.pack(">I", 196608) + b"".join(cstr(k) + cstr(v) for k, v in params) + b"\0"
    return struct.pack(">I", len(body) + 4) + body


def records(*items):
    return b"".join(struct.pack(">H", len(i)) + i for i in items)


def write(target, name, data):
    directory = os.path.join(HERE, "corpus", target)
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, "seed-" + name), "wb") as f:
        f.write(data)


# ---- protocol: mode byte, chunking seed byte, stream.
ssl_request = struct.pack(">II", 8, 80877103)
gss_request = struct.pack(">II", 8, 80877104)
cancel = struct.pack(">IIII", 16, 80877102, 4242, 0x12345678)
login = startup([("user", "alice"), ("database", "appdb"), ("application_name", "psql"),
                 ("client_encoding", "UTF8")])
password = msg(b"p", cstr("secret"))
sasl_initial = msg(b"p", cstr("SCRAM-SHA-256") + struct.pack(">i", 32) +
                   b"n,,n=,r=rOprNGfwEbeRWgbNEkqO1234")
query = msg(b"Q", cstr("SELECT 1"))
parse = msg(b"P", cstr("s1") + cstr("SELECT $1::int") + struct.pack(">hI", 1, 23))
bind = msg(b"B", cstr("") + cstr("s1") + struct.pack(">hh", 1, 0) + struct.pack(">hi", 1, 1) +
           b"7" + struct.pack(">hh", 1, 0))
describe = msg(b"D", b"P" + cstr(""))
execute = msg(b"E", cstr("") + struct.pack(">i", 0))
sync = msg(b"S")
copy_data = msg(b"d", b"1\tone\n2\ttwo\n") + msg(b"c")
terminate = msg(b"X")
write("protocol", "client-simple", b"\x00\x07" + login + password + query + terminate)
write("protocol", "client-ssl-first", b"\x00\x21" + ssl_request + gss_request + login + password +
      query)
write("protocol", "client-cancel", b"\x00\x03" + cancel)
write("protocol", "client-extended", b"\x00\x05" + login + sasl_initial + parse + bind +
      describe + execute + sync + copy_data + terminate)
write("protocol", "client-large-query", b"\x00\x09" + login + password +
      msg(b"Q", cstr("SELECT '" + "x" * 300 + "'")) + sync)

auth_ok = msg(b"R", struct.pack(">i", 0))
server_login = (msg(b"R", struct.pack(">i", 10) + cstr("SCRAM-SHA-256") + b"\0") +
                msg(b"R", struct.pack(">i", 11) + b"r=abc,s=c2FsdA==,i=4096") +
                msg(b"R", struct.pack(">i", 12) + b"v=dmVyaWZpZXI=") + auth_ok)
params = (msg(b"S", cstr("server_version") + cstr("15.4")) +
          msg(b"S", cstr("client_encoding") + cstr("UTF8")) +
          msg(b"K", struct.pack(">ii", 1234, 5678)))
ready = msg(b"Z", b"I")
row_desc = msg(b"T", struct.pack(">h", 1) + cstr("x") + struct.pack(">ihihih", 0, 0, 23, 4, -1, 0))
data_row = msg(b"D", struct.pack(">hi", 1, 1) + b"1")
complete = msg(b"C", cstr("SELECT 1"))
error = msg(b"E", b"SERROR\0VERROR\0C42P01\0Mrelation \"x\" does not exist\0P15\0\0")
notice = msg(b"N", b"SNOTICE\0C00000\0Mhello\0\0")
notify = msg(b"A", struct.pack(">i", 99) + cstr("chan") + cstr("payload"))
write("protocol", "server-login", b"\x01\x11" + server_login + params + ready + row_desc +
      data_row + complete + ready)
write("protocol", "server-md5", b"\x01\x02" + msg(b"R", struct.pack(">i", 5) + b"\x01\x02\x03\x04") +
      auth_ok + params + notice + ready + msg(b"1") + msg(b"2") + error + ready)
write("protocol", "server-login-error", b"\x01\x00" + error)
write("protocol", "server-transaction", b"\x01\x33" + auth_ok + ready + msg(b"C", cstr("BEGIN")) +
      msg(b"Z", b"T") + notify + msg(b"S", cstr("TimeZone") + cstr("UTC")) +
      msg(b"G", b"\0\0\0") + msg(b"Z", b"E"))
write("protocol", "roundtrip", b"\x02\x00" + b"user\0alice\0database\0appdb")
write("protocol", "roundtrip-error", b"\x02\x00" + b"FATAL\x0028P01\0password authentication "
      b"failed for user \"it's\"")
write("protocol", "raw-startup", b"\x03\x00" + login)
write("protocol", "raw-messages", b"\x03\x00" + query + parse + bind)

# ---- auth: mode byte, records.
client_first = b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO"
combined = "rOprNGfwEbeRWgbNEkqO3rfcNHYJY1ZVvWVs7j"
client_final = ("c=biws,r=" + combined + ",p=" + base64.b64encode(b"\1" * 32).decode()).encode()
write("auth", "server-scram", b"\x00" + records(cstr("SCRAM-SHA-256") +
      struct.pack(">i", len(client_first)) + client_first, client_final))
write("auth", "server-scram-bare", b"\x01" + records(client_first, client_final))
write("auth", "server-scram-ext", b"\x01" + records(b"y,,n=,r=abc,x=ext",
      b"c=eSws,r=abc3rfcNHYJY1ZVvWVs7j,x=1,p=" + base64.b64encode(b"\0" * 32)))
write("auth", "server-password", b"\x02" + records(cstr("pencil")))
write("auth", "server-md5", b"\x02" + records(cstr("md5" + "0" * 32)))
client_nonce = "rOprNGfwEbeRWgbNEkqO"
write("auth", "client-scram", b"\x03" + records(
    struct.pack(">i", 10) + cstr("SCRAM-SHA-256") + b"\0",
    struct.pack(">i", 11) + ("r=" + client_nonce + "xyz,s=" +
                             base64.b64encode(b"fuzzsalt").decode() + ",i=16").encode(),
    struct.pack(">i", 12) + b"v=" + base64.b64encode(b"\0" * 32),
    struct.pack(">i", 0)))
write("auth", "client-md5", b"\x03" + records(struct.pack(">i", 5) + b"\xaa\xbb\xcc\xdd",
                                              struct.pack(">i", 0)))
write("auth", "client-error", b"\x03" + records(struct.pack(">i", 12) + b"e=invalid-proof"))
write("auth", "genuine", b"\x04" + records(b"pencil", b"user", b"QSXCR+Q6sek8bf92", b"") + b"\x0f")
write("auth", "genuine-escapes", b"\x04" + records(b"p\xc3\xa4ss", b"a=b,c", b"s",
                                                   b"fixednonce") + b"\x00")


def scram_secret(password, salt, iterations):
    salted = hashlib.pbkdf2_hmac("sha256", password, salt, iterations)
    client_key = hmac.new(salted, b"Client Key", "sha256").digest()
    stored = hashlib.sha256(client_key).digest()
    server = hmac.new(salted, b"Server Key", "sha256").digest()
    return "SCRAM-SHA-256$%d:%s$%s:%s" % (iterations, base64.b64encode(salt).decode(),
                                          base64.b64encode(stored).decode(),
                                          base64.b64encode(server).decode())


secret = scram_secret(b"pencil", b"\x41\x25\xc2\x47\xe4\x3a\xb1\xe9\x3c\x6d\xff\x76", 4096)
write("auth", "secret", b"\x05" + records(secret.encode()))

# ---- config: mode byte, text.
ini = ''';; a typical pgbouncer.ini
[databases]
appdb = host=127.0.0.1 port=5432 dbname=app pool_size=20 reserve_pool=5
"quoted ""name""" = host=/var/run/postgresql dbname='my '' db' connect_query='SELECT 1'
* = host=db.internal auth_user=pgbouncer

[users]
alice = pool_mode=transaction max_user_connections=10

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = 6432
unix_socket_dir =
auth_type = scram-sha-256
auth_file = userlist.txt
admin_users = admin, ops
stats_users = stats
pool_mode = session
default_pool_size = 20
server_reset_query = DISCARD ALL
server_lifetime = 1h
server_idle_timeout = 600
query_wait_timeout = 0.5
client_tls_sslmode = disable
ignore_startup_parameters = extra_float_digits,search_path
log_connections = yes
'''
write("config", "pgbouncer-ini", b"\x00" + ini.encode())
write("config", "include", b"\x00" + b"[pgbouncer]\r\n%include databases.ini\n%include a.ini\n")
write("config", "include-nested", b"\x00" + b"%include pgbouncer.ini\n[users]\nbob = pool_mode=statement\n")
write("config", "peers", b"\x00" + b"[pgbouncer]\n[peers]\n1 = host=x\n[databases]\nx = port=99999\n")
write("config", "auth-file", b"\x01" + ('"alice" "secret"\n"bob" "md5%s"\n; comment\n'
                                        '"it""s" "%s" trailing\n' %
                                        (hashlib.md5(b"secretbob").hexdigest(), secret)).encode())
write("config", "set", b"\x02" + b"default_pool_size = 50")
write("config", "set-duration", b"\x02" + b"query_timeout=1.5min")
write("config", "set-list", b"\x02" + b"admin_users = a,b , c")

# ---- console: the query text.
for name, text in [
    ("show-pools", "SHOW POOLS;"),
    ("show-quoted", 'show "Pools"'),
    ("pause", "PAUSE appdb"),
    ("pause-for", "pause appdb for 15m"),
    ("pause-all-for", "PAUSE FOR 90"),
    ("resume", "RESUME;"),
    ("set", "SET default_pool_size = 30;"),
    ("set-quoted", "set server_reset_query = 'DISCARD ''ALL'''"),
    ("kill-client", "KILL_CLIENT 0x1f"),
    ("kill-client-dec", "kill_client 42"),
    ("shutdown", "SHUTDOWN WAIT_FOR_CLIENTS"),
    ("wait-close", "WAIT_CLOSE appdb"),
    ("empty", ";;"),
]:
    write("console", name, text.encode() + (b"\0" if name == "resume" else b""))
