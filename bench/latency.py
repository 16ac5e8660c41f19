#!/usr/bin/env python3
"""Latency by algorithm: three backends, one adding 50 ms; p50/p99 through Weir with
roundrobin, least_conn and ewma under the same wrk load, interleaved rounds.
Usage: latency.py RELEASE_DIR. Env: ROUNDS (3), DURATION (8), CONNS (20), WARMUP (25 s)."""
import os, re, socket, statistics, subprocess, sys, tempfile, time, shutil

REL = sys.argv[1]
ROUNDS = int(os.environ.get("ROUNDS", 3))
DURATION = int(os.environ.get("DURATION", 8))
CONNS = int(os.environ.get("CONNS", 20))
# Peak EWMA decays with tau = 10 s from a 30 ms default, however many samples arrive, so a
# cold proxy needs tens of seconds before its estimates reflect the nodes: warm up first.
WARMUP = int(os.environ.get("WARMUP", 25))
WORK = tempfile.mkdtemp(prefix="weir-latency-")
procs = []


def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p


def wait_port(port):
    for _ in range(300):
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close(); return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listening on {port}")


def to_ms(v):
    n, unit = re.match(r"([\d.]+)(us|ms|s)", v).groups()
    return float(n) * {"us": 1e-3, "ms": 1, "s": 1e3}[unit]


try:
    ports = [free_port() for _ in range(3)]
    slow = os.environ.get("SLOW_MS", "50")
    procs.append(subprocess.Popen([f"{REL}/weir-demo-backend", str(ports[0]), str(ports[1]), f"{ports[2]}:{slow}"],
                                  stderr=subprocess.DEVNULL))
    wait_port(ports[2])
    proxies = {}
    for alg in ["roundrobin", "least_conn", "ewma"]:
        port = free_port()
        nodes = "".join(f"      - {{host: 127.0.0.1, port: {p}, weight: 1}}\n" for p in ports)
        conf = os.path.join(WORK, f"{alg}.yaml")
        with open(conf, "w") as f:
            f.write(f"server: {{listen: [\"127.0.0.1:{port}\"], threads: 1, pid_file: {WORK}/{alg}.pid, "
                    f"upgrade_sock: {WORK}/{alg}.sock}}\nroutes: [{{id: r, uri: /*, upstream_id: u}}]\n"
                    f"upstreams:\n  - id: u\n    type: {alg}\n    nodes:\n{nodes}")
        procs.append(subprocess.Popen([f"{REL}/weir", "-c", conf], stderr=subprocess.DEVNULL,
                                      env=dict(os.environ, RUST_LOG="error")))
        wait_port(port)
        proxies[alg] = port
    for port in proxies.values():
        subprocess.run(["wrk", "-t1", "-c", str(CONNS), f"-d{WARMUP}s", f"http://127.0.0.1:{port}/"],
                       capture_output=True)
    res = {a: [] for a in proxies}
    for _ in range(ROUNDS):
        for alg, port in proxies.items():
            out = subprocess.run(["wrk", "-t1", "-c", str(CONNS), f"-d{DURATION}s", "--latency",
                                  f"http://127.0.0.1:{port}/"], capture_output=True, text=True).stdout
            lat = dict(re.findall(r"^\s+(50|99)%\s+([\d.]+\w+)", out, re.M))
            rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
            res[alg].append((to_ms(lat["50"]), to_ms(lat["99"]), rps))
    print(f"\n3 backends, one +50 ms; Weir 1 worker; wrk -t1 -c{CONNS} -d{DURATION}s after {WARMUP} s warm-up; "
          f"median of {ROUNDS} rounds\n")
    print(f"{'type':12}{'p50 ms':>9}{'p99 ms':>9}{'req/s':>9}{'p99 vs roundrobin':>20}")
    med = {a: [statistics.median(x[i] for x in r) for i in range(3)] for a, r in res.items()}
    for a, (p50, p99, rps) in med.items():
        print(f"{a:12}{p50:9.2f}{p99:9.2f}{rps:9.0f}{p99 / med['roundrobin'][1]:20.2f}")
finally:
    for p in procs:
        p.kill()
    shutil.rmtree(WORK, ignore_errors=True)
