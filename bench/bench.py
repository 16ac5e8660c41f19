#!/usr/bin/env python3
"""Weir's throughput benchmark (see bench/run.sh). Usage: bench.py RELEASE_DIR [proxy ...]

For each worker count in THREADS ("1 2"): nginx, haproxy, a bare Pingora proxy
(bench/pingora-rr, Pingora's default work-stealing runtime) and Weir with each runtime
(`weir-steal`: server.work_stealing: true; `weir-nosteal`: false) proxy round robin to the
same three nginx backends under the same wrk load, in interleaved rounds (the order rotates
each round). Per proxy and round: requests/s, p50/p99, the proxy's CPU time per request (its
whole process tree, /proc/<pid>/stat) and upstream connection reuse: 1 - connections the
backends accepted / requests they served from 1 s into the measured run to 1 s before its end
(nginx stub_status).

At one worker, "weir+metrics" (plus a `control` listener, which turns metrics on) and
"weir+metrics+log" (plus `server.access_log` to a file) run with the runtime METRICS_RUNTIME
("nosteal" or "steal") and print what each costs in CPU per request.

Env: ROUNDS (3), DURATION (8 s), CONNS (50), THREADS ("1 2"), METRICS_RUNTIME (nosteal),
WRK_THREADS (1). Proxy names given on the command line restrict the run to those."""
import os, re, signal, statistics, subprocess, sys, time, urllib.request
from common import (Work, cpu_seconds, free_port, haproxy_proxy, nginx_conf, nginx_proxy,
                    record, weir_proxy, which)

ROUNDS = int(os.environ.get("ROUNDS", 3))
DURATION = int(os.environ.get("DURATION", 8))
CONNS = int(os.environ.get("CONNS", 50))
THREADS = [int(t) for t in os.environ.get("THREADS", "1 2").split()]
METRICS_RUNTIME = os.environ.get("METRICS_RUNTIME", "nosteal")
WRK_THREADS = os.environ.get("WRK_THREADS", "1")
REL = sys.argv[1]
ONLY = sys.argv[2:]

# Not through any http_proxy of the environment: everything is on loopback.
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def get(port, path):
    with OPENER.open(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
        return r.read().decode()


def scrape(port):
    """The control listener's /metrics, as {name: value} for the unlabelled samples."""
    text = get(port, "/metrics")
    return {m[0]: float(m[1]) for m in re.findall(r"^([A-Za-z_:][\w:]*) (\S+)$", text, re.M)}


def backend_counts(port):
    """(connections accepted, requests served) by the backends' nginx so far."""
    m = re.search(r"\n\s*(\d+)\s+(\d+)\s+(\d+)", get(port, "/status"))
    return int(m.group(1)), int(m.group(3))


def wrk_requests(out):
    m = re.search(r"(\d+) requests in", out)
    return int(m.group(1)) if m else 0


def to_us(v):
    m = re.match(r"([\d.]+)(us|ms|s)", v)
    n, unit = float(m.group(1)), m.group(2)
    return n * {"us": 1, "ms": 1e3, "s": 1e6}[unit]


def pct(a, b):
    return (a / b - 1) * 100


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else float("nan")


def main(work):
    backends = [free_port() for _ in range(3)]
    status = free_port()
    servers = "".join(f"server {{ listen 127.0.0.1:{p}; keepalive_requests 1000000; location / {{ return 200 'node {p}'; }} }}\n"
                      for p in backends)
    servers += f"server {{ listen 127.0.0.1:{status}; location /status {{ stub_status; }} }}\n"
    work.start([which("nginx"), "-p", work.dir, "-c", work.write("backends.conf", nginx_conf(work, servers))], status)
    addrs = [f"127.0.0.1:{p}" for p in backends]
    runtimes = {"steal": True, "nosteal": False}
    print(f"bench: {len(backends)} nginx backends (one worker); wrk -t{WRK_THREADS} -c{CONNS} -d{DURATION}s after a 1 s "
          f"warm-up; {ROUNDS} interleaved rounds; proxy workers {THREADS}; {os.cpu_count()} cores; "
          f"load average {os.getloadavg()[0]:.1f}", file=sys.stderr)

    all_tables = []
    for threads in THREADS:
        proxies, controls, logs = {}, {}, {}
        port = free_port()
        proxies["nginx"] = (nginx_proxy(work, port, addrs, workers=threads), port)
        port = free_port()
        proxies["haproxy"] = (haproxy_proxy(work, port, addrs, threads), port)
        port = free_port()
        proxies["pingora"] = ([f"{REL}/pingora-rr", "-t", str(threads), f"127.0.0.1:{port}", *addrs], port)
        port = free_port()
        proxies["pingora-nosteal"] = ([f"{REL}/pingora-rr", "-t", str(threads), "--no-steal", f"127.0.0.1:{port}", *addrs], port)
        for rt, steal in runtimes.items():
            port = free_port()
            proxies[f"weir-{rt}"] = (weir_proxy(REL, work, f"weir-{rt}", port, addrs, threads, steal), port)
        if threads == 1:
            # The same Weir with metrics on (a `control` listener, scraped after each round)
            # and with metrics and an access log file.
            steal = runtimes[METRICS_RUNTIME]
            for name in ["weir+metrics", "weir+metrics+log"]:
                controls[name] = free_port()
                server = ""
                if name.endswith("log"):
                    logs[name] = work.path("access.log")
                    server = f"  access_log: {{path: {logs[name]}, format: default}}\n"
                port = free_port()
                proxies[name] = (weir_proxy(REL, work, name, port, addrs, threads, steal, server=server,
                                            extra=f'control: {{listen: "127.0.0.1:{controls[name]}"}}\n'), port)
        # pingora-nosteal only when asked for by name: it tells how much of the runtime's
        # difference is Pingora's own, at the cost of more time.
        wanted = ONLY or [n for n in proxies if n != "pingora-nosteal"]
        proxies = {k: v for k, v in proxies.items() if k in wanted}
        if not proxies:
            continue

        running = {name: (work.start(cmd, port), port) for name, (cmd, port) in proxies.items()}
        results = {name: [] for name in proxies}
        counted = {name: 0 for name in controls}
        dropped, warnings, checked, shown = {}, [], 0, 0
        width = max([8, *map(len, proxies)])
        names = list(running)
        for rnd in range(ROUNDS):
            order = names[rnd % len(names):] + names[:rnd % len(names)]
            for name in order:
                p, port = running[name]
                url = f"http://127.0.0.1:{port}/"
                warm = subprocess.run(["wrk", f"-t{WRK_THREADS}", "-c", str(CONNS), "-d1s", url],
                                      capture_output=True, text=True).stdout
                c0 = cpu_seconds(p.pid)
                t0 = time.time()
                run = subprocess.Popen(["wrk", f"-t{WRK_THREADS}", "-c", str(CONNS), f"-d{DURATION}s", "--latency", url],
                                       stdout=subprocess.PIPE, text=True)
                # Reuse is counted in the steady state, from 1 s into the run to 1 s before its
                # end: when wrk stops (after the warm-up too) it drops requests in flight, and
                # the proxy closes their upstream connections, which the next run replaces.
                time.sleep(max(0.0, t0 + 1 - time.time()))
                a0, r0 = backend_counts(status)
                time.sleep(max(0.0, t0 + DURATION - 1 - time.time()))
                a1, r1 = backend_counts(status)
                out = run.communicate()[0]
                cpu = cpu_seconds(p.pid) - c0
                # The second status request is one connection and one request of its own.
                conns, served = a1 - a0 - 1, r1 - r0 - 1
                reuse = 100 * (1 - conns / served) if served > 0 else None
                m = re.search(r"Requests/sec:\s+([\d.]+)", out)
                if not m:
                    raise SystemExit(f"wrk against {name} failed:\n{out}")
                rps = float(m.group(1))
                total = wrk_requests(out)
                non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
                sockerr = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
                errs = (int(non2xx.group(1)) if non2xx else 0) + (sum(map(int, sockerr.groups())) if sockerr else 0)
                lat = {q: to_us(v) for q, v in re.findall(r"^\s+(50|99)%\s+([\d.]+\w+)", out, re.M)}
                results[name].append(dict(rps=rps, p50=lat.get("50"), p99=lat.get("99"),
                                          cpu=cpu / max(total, 1) * 1e6, reuse=reuse, errors=errs))
                note = f"  reuse {reuse:.2f}% ({conns} new upstream connections)" if reuse is not None else ""
                if name in controls:
                    # Every request wrk saw answered (warm-up and run) must have been counted.
                    sent = wrk_requests(warm) + total
                    mm = scrape(controls[name])
                    now = int(mm.get("weir_http_requests_total", 0))
                    seen, counted[name] = now - counted[name], now
                    note += f"; weir_http_requests_total +{seen}, wrk {sent}"
                    if seen < sent:
                        warnings.append(f"WARNING: round {rnd + 1} {name}: weir_http_requests_total rose by {seen} "
                                        f"but wrk reported {sent} requests: the metrics undercount")
                    else:
                        checked += 1
                    lost = int(mm.get("weir_access_log_dropped_total", 0))
                    if lost > dropped.get(name, 0):
                        warnings.append(f"WARNING: round {rnd + 1} {name}: the access log dropped "
                                        f"{lost - dropped.get(name, 0)} lines: its cost is understated")
                    dropped[name] = lost
                if name in logs and os.path.exists(logs[name]):
                    # Delete the log after each round; SIGUSR1 makes Weir reopen (recreate) it.
                    with open(logs[name], "rb") as f:
                        lines = sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))
                    os.unlink(logs[name])
                    p.send_signal(signal.SIGUSR1)
                    note += f", access.log {lines} lines"
                print(f"threads {threads} round {rnd + 1} {name:{width}} {rps:8.0f} req/s "
                      f"{results[name][-1]['cpu']:6.1f} CPU us/req{note}", file=sys.stderr)
                for w in warnings[shown:]:
                    print(w, file=sys.stderr)
                shown = len(warnings)
        for p, _ in running.values():
            work.stop(p)

        medians = {n: {k: med(x[k] for x in r) for k in r[0]} for n, r in results.items() if r}
        table = [f"\nthroughput, {threads} proxy worker{'s' if threads > 1 else ''} (nginx: worker processes, haproxy: "
                 f"nbthread, Pingora/Weir: threads); wrk -t{WRK_THREADS} -c{CONNS} -d{DURATION}s; median of {ROUNDS} "
                 f"interleaved rounds; {os.cpu_count()} cores\n",
                 f"{'proxy':{width + 2}}{'req/s':>8}{'p50 us':>8}{'p99 us':>8}{'CPU us/req':>11}{'reuse %':>9}"
                 f"{'errors':>7}{'req/s vs pingora':>17}{'CPU vs pingora':>15}{'req/s vs nginx':>15}{'CPU vs nginx':>13}"]
        for n, m in medians.items():
            def ratio(k, base):
                return m[k] / medians[base][k] if base in medians else float("nan")
            reuse = f"{m['reuse']:9.2f}" if m["reuse"] == m["reuse"] else f"{'-':>9}"
            table.append(f"{n:{width + 2}}{m['rps']:8.0f}{m['p50']:8.0f}{m['p99']:8.0f}{m['cpu']:11.1f}{reuse}"
                         f"{int(m['errors']):7d}{ratio('rps', 'pingora'):17.2f}{ratio('cpu', 'pingora'):15.2f}"
                         f"{ratio('rps', 'nginx'):15.2f}{ratio('cpu', 'nginx'):13.2f}")
            record("throughput", threads=threads, proxy=n, rounds=ROUNDS, duration=DURATION, conns=CONNS, **m,
                   per_round=results[n])

        def paired(a, b, k):
            """Round-by-round ratios a/b of measure k (both ran in the same round)."""
            if a in results and b in results:
                return [x[k] / y[k] for x, y in zip(results[a], results[b])]
            return []

        lines = []
        for a, b in [("weir-nosteal", "weir-steal"), ("weir-nosteal", "pingora"), ("weir-steal", "pingora"),
                     ("pingora-nosteal", "pingora"), ("weir-nosteal", "nginx"), ("weir-steal", "nginx")]:
            cpu, rps = paired(a, b, "cpu"), paired(a, b, "rps")
            if cpu:
                lines.append(f"  {a} / {b}: CPU per request " + " ".join(f"{x:.2f}" for x in cpu) +
                             f" (median {med(cpu):.2f}); req/s " + " ".join(f"{x:.2f}" for x in rps) +
                             f" (median {med(rps):.2f})")
                record("paired", threads=threads, a=a, b=b, cpu=med(cpu), rps=med(rps), cpu_rounds=cpu, rps_rounds=rps)
        if lines:
            table.append("round-by-round ratios (same round, so the machine's drift cancels):")
            table += lines

        def cost(what, a, b, target=""):
            if a in medians and b in medians:
                rounds = " ".join(f"{pct(x['cpu'], y['cpu']):+.1f}%" for x, y in zip(results[a], results[b]))
                table.append(f"{what} cost: CPU per request {pct(medians[a]['cpu'], medians[b]['cpu']):+.1f}% ({a} vs {b}){target}"
                             f"\n  round by round: {rounds}; median req/s {pct(medians[a]['rps'], medians[b]['rps']):+.1f}%")
                record("cost", what=what, a=a, b=b, cpu_pct=pct(medians[a]['cpu'], medians[b]['cpu']))

        base = f"weir-{METRICS_RUNTIME}"
        cost("metrics", "weir+metrics", base, ", target <= 5%")
        cost("access log", "weir+metrics+log", "weir+metrics")
        if controls.keys() & medians.keys():
            table.append("\n".join(warnings) if warnings else
                         f"metrics check: weir_http_requests_total >= wrk's requests in all {checked} scrapes")
        print("\n".join(table), flush=True)
        all_tables.append(table)


if __name__ == "__main__":
    w = Work("weir-bench-")
    try:
        main(w)
    finally:
        w.close()
