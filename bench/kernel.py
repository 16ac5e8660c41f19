#!/usr/bin/env python3
"""System calls and context switches per request (perf stat on the proxy's process: the
kernel side that callgrind does not see), with the proxy's CPU time split into user and
system. Usage: kernel.py RELEASE_DIR [VARIANT ...]. Variants: pingora, pingora-nosteal,
weir-steal, weir-nosteal (default: all four). Env: THREADS ("1 2"), ROUNDS (3), DURATION (5),
CONNS (50). Counts move with load far less than CPU time does, but they are not
deterministic: under a heavier load more events wait per epoll_wait and per wake-up."""
import os, re, statistics, subprocess, sys
from common import TICK, Work, _stat, free_port, nginx_conf, tree, weir_proxy, which

THREADS = [int(t) for t in os.environ.get("THREADS", "1 2").split()]
ROUNDS = int(os.environ.get("ROUNDS", 3))
DURATION = int(os.environ.get("DURATION", 5))
CONNS = int(os.environ.get("CONNS", 50))


def user_sys(pid):
    u = s = 0
    for p in tree(pid):
        f = _stat(p)
        u, s = u + int(f[11]), s + int(f[12])
    return u / TICK, s / TICK


def main(rel, names):
    work = Work("weir-kernel-")
    try:
        backends = [free_port() for _ in range(3)]
        servers = "".join(f"server {{ listen 127.0.0.1:{p}; keepalive_requests 1000000; location / {{ return 200 'node {p}'; }} }}\n"
                          for p in backends)
        work.start([which("nginx"), "-p", work.dir, "-c", work.write("backends.conf", nginx_conf(work, servers))],
                   backends[-1])
        addrs = [f"127.0.0.1:{p}" for p in backends]
        for t in THREADS:
            cmds = {}
            for name in names or ["pingora", "pingora-nosteal", "weir-steal", "weir-nosteal"]:
                port = free_port()
                if name.startswith("pingora"):
                    cmds[name] = ([f"{rel}/pingora-rr", "-t", str(t), *(["--no-steal"] if "nosteal" in name else []),
                                   f"127.0.0.1:{port}", *addrs], port)
                else:
                    cmds[name] = (weir_proxy(rel, work, name, port, addrs, t, name == "weir-steal"), port)
            running = {n: (work.start(c, port), port) for n, (c, port) in cmds.items()}
            res = {n: [] for n in running}
            for rnd in range(ROUNDS):
                for n, (p, port) in running.items():
                    url = f"http://127.0.0.1:{port}/"
                    subprocess.run(["wrk", "-t1", f"-c{CONNS}", "-d1s", url], capture_output=True)
                    u0, s0 = user_sys(p.pid)
                    perf = subprocess.Popen(["perf", "stat", "-x,", "-e", "raw_syscalls:sys_enter,context-switches",
                                             "-p", str(p.pid)], stderr=subprocess.PIPE, text=True)
                    out = subprocess.run(["wrk", "-t1", f"-c{CONNS}", f"-d{DURATION}s", url],
                                         capture_output=True, text=True).stdout
                    perf.send_signal(2)
                    err = perf.communicate()[1]
                    u1, s1 = user_sys(p.pid)
                    total = int(re.search(r"(\d+) requests in", out).group(1))
                    ev = {m[1]: int(m[0]) for m in re.findall(r"^(\d+),[^,]*,([\w:-]+)", err, re.M)}
                    res[n].append((ev.get("raw_syscalls:sys_enter", 0) / total, ev.get("context-switches", 0) / total,
                                   (u1 - u0) / total * 1e6, (s1 - s0) / total * 1e6, total / DURATION))
            for p, _ in running.values():
                work.stop(p)
            print(f"\nkernel side, {t} worker(s), wrk -t1 -c{CONNS} -d{DURATION}s, median of {ROUNDS} interleaved rounds\n")
            print(f"{'proxy':16}{'syscalls/req':>13}{'ctx sw/req':>11}{'user us/req':>12}{'sys us/req':>11}{'req/s':>8}")
            for n, r in res.items():
                m = [statistics.median(x[i] for x in r) for i in range(5)]
                print(f"{n:16}{m[0]:13.2f}{m[1]:11.3f}{m[2]:12.1f}{m[3]:11.1f}{m[4]:8.0f}")
    finally:
        work.close()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
