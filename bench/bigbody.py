#!/usr/bin/env python3
"""Big bodies: a BIG_MIB (1024) MiB download and upload streamed through each proxy, one at a
time; prints throughput, the proxy's CPU time per GiB and its peak RSS during the transfer
(VmHWM, reset before each transfer) against its RSS before it. Usage: bigbody.py RELEASE_DIR.
Env: BIG_MIB (1024), ROUNDS (2; figures are medians, peak RSS the maximum).

The backend is a small threaded Python server (GET: Content-Length BIG bytes of zeros; POST:
reads the body, answers how many bytes it got); the client is Python too, reading and
writing 1 MiB at a time. nginx runs with proxy_buffering and proxy_request_buffering off
(else it spools to temporary files), haproxy as configured by default (it streams)."""
import os, socket, statistics, sys, threading, time
from common import (Work, cpu_seconds, free_port, haproxy_proxy, nginx_proxy, record,
                    reset_peak, rss_kib, status_kib, wait_port, weir_proxy)

MIB = 1 << 20
BIG = int(os.environ.get("BIG_MIB", 1024)) * MIB
ROUNDS = int(os.environ.get("ROUNDS", 2))
CHUNK = memoryview(bytes(MIB))


def read_head(sock, buf):
    """Read up to the end of an HTTP head; returns (head lines, bytes after the head)."""
    while b"\r\n\r\n" not in buf:
        d = sock.recv(65536)
        if not d:
            raise ConnectionError("closed in the head")
        buf += d
    head, rest = buf.split(b"\r\n\r\n", 1)
    return head.decode("latin-1").split("\r\n"), rest


def header(lines, name):
    for line in lines[1:]:
        k, _, v = line.partition(":")
        if k.strip().lower() == name:
            return v.strip()
    return None


def drain_body(sock, lines, rest):
    """Read (and discard) a body of Content-Length or chunked framing; returns its length."""
    buf = bytearray(MIB)
    n = header(lines, "content-length")
    if n is not None:
        left, got = int(n) - len(rest), len(rest)
        while left > 0:
            k = sock.recv_into(buf, min(left, MIB))
            if k == 0:
                raise ConnectionError(f"closed with {left} bytes of the body left")
            left -= k
            got += k
        return got
    if (header(lines, "transfer-encoding") or "").lower() != "chunked":
        return len(rest)
    pending, got = bytearray(rest), 0

    def line():
        nonlocal pending
        while b"\r\n" not in pending:
            d = sock.recv(65536)
            if not d:
                raise ConnectionError("closed in a chunk head")
            pending += d
        i = pending.index(b"\r\n")
        out, pending = bytes(pending[:i]), pending[i + 2:]
        return out

    def skip(k):
        nonlocal pending
        take = min(k, len(pending))
        del pending[:take]
        k -= take
        while k > 0:
            r = sock.recv_into(buf, min(k, MIB))
            if r == 0:
                raise ConnectionError("closed in a chunk")
            k -= r

    while True:
        size = int(line().split(b";")[0], 16)
        if size == 0:
            while line():  # trailers, then the empty line
                pass
            return got
        skip(size)
        got += size
        line()


def backend(port):
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", port))
    srv.listen(64)

    def serve(c):
        try:
            while True:
                lines, rest = read_head(c, b"")
                if lines[0].startswith("GET"):
                    c.sendall(f"HTTP/1.1 200 OK\r\nContent-Length: {BIG}\r\n\r\n".encode())
                    for _ in range(BIG // MIB):
                        c.sendall(CHUNK)
                else:
                    got = drain_body(c, lines, rest)
                    body = str(got).encode()
                    c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        except (OSError, ConnectionError):
            pass
        finally:
            c.close()

    while True:
        c, _ = srv.accept()
        threading.Thread(target=serve, args=(c,), daemon=True).start()


def transfer(port, direction):
    """One transfer through 127.0.0.1:port; returns the seconds it took."""
    s = socket.create_connection(("127.0.0.1", port))
    t0 = time.time()
    if direction == "download":
        s.sendall(b"GET /big HTTP/1.1\r\nHost: bench\r\n\r\n")
        lines, rest = read_head(s, b"")
        got = drain_body(s, lines, rest)
    else:
        s.sendall(f"POST /big HTTP/1.1\r\nHost: bench\r\nContent-Length: {BIG}\r\n\r\n".encode())
        for _ in range(BIG // MIB):
            s.sendall(CHUNK)
        lines, rest = read_head(s, b"")
        n = int(header(lines, "content-length") or 0)
        while len(rest) < n:
            rest += s.recv(65536)
        got = int(rest[:n] or 0)
    dt = time.time() - t0
    s.close()
    if not lines[0].split()[1] == "200" or got != BIG:
        raise SystemExit(f"{direction} through {port}: {lines[0]!r}, {got} of {BIG} bytes")
    return dt


def main(rel, work):
    bport = free_port()
    threading.Thread(target=backend, args=(bport,), daemon=True).start()
    wait_port(bport)
    addrs = [f"127.0.0.1:{bport}"]
    proxies = {}
    port = free_port()
    proxies["weir"] = (weir_proxy(rel, work, "weir", port, addrs), port)
    port = free_port()
    proxies["nginx"] = (nginx_proxy(work, port, addrs, extra="client_max_body_size 0; proxy_buffering off; "
                                                               "proxy_request_buffering off; "), port)
    port = free_port()
    proxies["haproxy"] = (haproxy_proxy(work, port, addrs), port)
    running = {n: (work.start(cmd, port), port) for n, (cmd, port) in proxies.items()}
    res = {(n, d): [] for n in ["direct", *running] for d in ["download", "upload"]}
    for rnd in range(ROUNDS):
        for d in ["download", "upload"]:
            res[("direct", d)].append((transfer(bport, d), 0, 0, 0))
            for n, (p, port) in running.items():
                before = rss_kib(p.pid)
                reset_peak(p.pid)
                c0 = cpu_seconds(p.pid)
                dt = transfer(port, d)
                cpu = cpu_seconds(p.pid) - c0
                peak = status_kib(p.pid, "VmHWM")
                res[(n, d)].append((dt, cpu, before, peak))
                print(f"bigbody round {rnd + 1} {n:8} {d:8} {BIG / MIB / dt:7.0f} MiB/s, RSS {before / 1024:.1f} MiB "
                      f"before, peak {peak / 1024:.1f} MiB", file=sys.stderr)
    print(f"\nbig bodies: {BIG // MIB} MiB streamed through one proxy worker each (one backend, Python "
          f"client and backend; 'direct' = no proxy); median of {ROUNDS}; peak RSS = VmHWM during the "
          f"transfer, the maximum over rounds\n")
    print(f"{'proxy':10}{'direction':>10}{'MiB/s':>8}{'CPU s/GiB':>11}{'RSS before MiB':>16}{'peak RSS MiB':>14}")
    for (n, d), r in res.items():
        dt = statistics.median(x[0] for x in r)
        cpu = statistics.median(x[1] for x in r) / (BIG / (1 << 30))
        before = statistics.median(x[2] for x in r) / 1024
        peak = max(x[3] for x in r) / 1024
        if n == "direct":
            print(f"{n:10}{d:>10}{BIG / MIB / dt:8.0f}{'-':>11}{'-':>16}{'-':>14}")
        else:
            print(f"{n:10}{d:>10}{BIG / MIB / dt:8.0f}{cpu:11.2f}{before:16.1f}{peak:14.1f}")
        record("bigbody", proxy=n, direction=d, mib=BIG // MIB, mib_s=BIG / MIB / dt, cpu_s_per_gib=cpu,
               rss_before_mib=before, peak_rss_mib=peak)


if __name__ == "__main__":
    w = Work("weir-bigbody-")
    try:
        main(sys.argv[1], w)
    finally:
        w.close()
