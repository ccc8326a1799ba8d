# Measures what happens to connections queued on a listener that closes, for the two hand-over
# designs: SO_REUSEPORT overlap (old and new each own a socket; the old closes its own) versus
# one socket passed along (the old process closes its copy, the new keeps accepting from the
# same queue). A client opens N connections as fast as it can, each waiting for a 1-byte greeting.
import socket, threading, time, sys, errno

N = 4000
def run(mode):
    port_holder = {}
    def make():
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        s.bind(("127.0.0.1", port_holder.get("port", 0)))
        port_holder["port"] = s.getsockname()[1]
        s.listen(128)
        return s
    old = make()
    new = make() if mode == "reuseport" else socket.socket(fileno=__import__("os").dup(old.fileno()))
    stop = threading.Event()
    def serve(sock, slow):
        sock.settimeout(0.05)
        while not stop.is_set():
            try:
                c, _ = sock.accept()
            except (socket.timeout, OSError):
                if sock.fileno() == -1: return
                continue
            c.sendall(b"x"); c.close()
            if slow: time.sleep(0.0005)   # the old process is busy serving its clients
    old_t = threading.Thread(target=serve, args=(old, True)); old_t.start()
    new_t = threading.Thread(target=serve, args=(new, False)); new_t.start()
    counts = {"ok": 0, "failed": 0}
    lock = threading.Lock()
    def client(n):
        for i in range(n):
            try:
                c = socket.create_connection(("127.0.0.1", port_holder["port"]), timeout=2)
                data = c.recv(1)
                c.close()
                r = "ok" if data == b"x" else "failed"
            except OSError:
                r = "failed"
            with lock: counts[r] += 1
    clients = [threading.Thread(target=client, args=(N // 8,)) for _ in range(8)]
    for t in clients: t.start()
    while counts["ok"] + counts["failed"] < N // 2: time.sleep(0.001)
    old.close()                            # the old process stops accepting
    for t in clients: t.join()
    ok, failed = counts["ok"], counts["failed"]
    stop.set(); old_t.join(); new_t.join(); new.close()
    return ok, failed

for mode in ("reuseport", "passed-fd"):
    results = [run(mode) for _ in range(3)]
    print(mode, "ok/failed per run:", results)
