#!/usr/bin/env python3
"""Idle keep-alive client connections: what each costs a proxy in memory. Usage:
idle.py RELEASE_DIR. Env: IDLE_CONNS (10000), IDLE_PROXIES (all: weir pingora pingora-l4read0
nginx haproxy).

Each proxy (one worker) is started alone and warmed up (200 requests on 10 connections, so
its upstream pool exists); then IDLE_CONNS client connections each send one keep-alive GET
and read the answer and stay open, idle. Printed: the proxy's RSS before and after (2 s
later), the difference per connection, and how many of a sample of 100 connections still
answer a second request (a proxy that closed them would look cheap). The open-file limit is
raised to the hard limit (the script and the proxies it starts need IDLE_CONNS + some)."""
import os, resource, socket, sys, time
from common import (Work, free_port, haproxy_proxy, nginx_conf, nginx_proxy, record, rss_kib,
                    weir_proxy, which)

N = int(os.environ.get("IDLE_CONNS", 10000))
REQ = b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n"


def answer(s):
    """Read one small response (Content-Length framing); True if it is a 200."""
    data = b""
    while b"\r\n\r\n" not in data:
        d = s.recv(4096)
        if not d:
            return False
        data += d
    head, rest = data.split(b"\r\n\r\n", 1)
    n = 0
    for line in head.split(b"\r\n")[1:]:
        k, _, v = line.partition(b":")
        if k.strip().lower() == b"content-length":
            n = int(v)
    while len(rest) < n:
        d = s.recv(4096)
        if not d:
            return False
        rest += d
    return head.startswith(b"HTTP/1.1 200")


def measure(work, name, cmd, port):
    p = work.start(cmd, port)
    warm = [socket.create_connection(("127.0.0.1", port)) for _ in range(10)]
    for _ in range(20):
        for s in warm:
            s.sendall(REQ)
            assert answer(s), f"{name}: warm-up request failed"
    for s in warm:
        s.close()
    time.sleep(1)
    before = rss_kib(p.pid)
    conns, t0 = [], time.time()
    for i in range(N):
        s = socket.create_connection(("127.0.0.1", port), timeout=30)
        s.sendall(REQ)
        if not answer(s):
            raise SystemExit(f"{name}: connection {i} got no 200")
        conns.append(s)
    opened = time.time() - t0
    time.sleep(2)
    after = rss_kib(p.pid)
    sample = conns[:: max(1, N // 100)]
    alive = 0
    for s in sample:
        try:
            s.sendall(REQ)
            alive += answer(s)
        except OSError:
            pass
    for s in conns:
        s.close()
    time.sleep(1)
    closed = rss_kib(p.pid)
    work.stop(p)
    per = (after - before) / N
    print(f"idle {name:8}: RSS {before / 1024:.1f} MiB -> {after / 1024:.1f} MiB with {N} idle connections "
          f"({per:.1f} KiB each; opened in {opened:.1f} s), {closed / 1024:.1f} MiB after closing them; "
          f"{alive}/{len(sample)} sampled connections still served", file=sys.stderr)
    record("idle", proxy=name, conns=N, before_kib=before, after_kib=after, per_conn_kib=per,
           closed_kib=closed, alive=alive, sampled=len(sample))
    return before, after, per, closed, alive, len(sample)


def main(rel, work):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = N * 2 + 1000
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, want), hard))
    if min(hard, want) < N + 500:
        raise SystemExit(f"open-file hard limit {hard} is too low for {N} connections")
    backends = [free_port() for _ in range(3)]
    servers = "".join(f"server {{ listen 127.0.0.1:{p}; keepalive_requests 1000000; location / {{ return 200 'node {p}'; }} }}\n"
                      for p in backends)
    work.start([which("nginx"), "-p", work.dir, "-c", work.write("backends.conf", nginx_conf(work, servers))],
               backends[-1])
    addrs = [f"127.0.0.1:{p}" for p in backends]
    proxies = {}
    port = free_port()
    proxies["weir"] = (weir_proxy(rel, work, "weir", port, addrs), port)
    # Bare Pingora as it comes (a 64 KiB read buffer per client connection) and without
    # that buffer (`--l4-read 0`): how much of Weir's figure is Pingora's.
    port = free_port()
    proxies["pingora"] = ([f"{rel}/pingora-rr", f"127.0.0.1:{port}", *addrs], port)
    port = free_port()
    proxies["pingora-l4read0"] = ([f"{rel}/pingora-rr", "--l4-read", "0", f"127.0.0.1:{port}", *addrs], port)
    port = free_port()
    proxies["nginx"] = (nginx_proxy(work, port, addrs, conns=N + 1000), port)
    # haproxy reserves two descriptors per connection (maxconn), more than the hard limit of
    # open files allows here for 10,000: it runs when that limit permits.
    if 2 * (N + 100) + 100 <= resource.getrlimit(resource.RLIMIT_NOFILE)[1]:
        port = free_port()
        proxies["haproxy"] = (haproxy_proxy(work, port, addrs, maxconn=N + 100), port)
    else:
        print(f"idle: haproxy skipped (needs {2 * (N + 100) + 100} open files; the hard limit is "
              f"{resource.getrlimit(resource.RLIMIT_NOFILE)[1]})", file=sys.stderr)
    only = os.environ.get("IDLE_PROXIES", "").split()
    rows = {n: measure(work, n, cmd, port) for n, (cmd, port) in proxies.items() if not only or n in only}
    print(f"\nidle keep-alive client connections: {N}, each after one request, one proxy worker each\n")
    print(f"{'proxy':16}{'RSS before MiB':>15}{'RSS after MiB':>15}{'KiB/conn':>10}{'after close MiB':>17}{'still served':>14}")
    for n, (before, after, per, closed, alive, sampled) in rows.items():
        print(f"{n:16}{before / 1024:15.1f}{after / 1024:15.1f}{per:10.1f}{closed / 1024:17.1f}{f'{alive}/{sampled}':>14}")


if __name__ == "__main__":
    w = Work("weir-idle-")
    try:
        main(sys.argv[1], w)
    finally:
        w.close()
