#!/usr/bin/env python3
"""Weir's throughput benchmark: see bench/run.sh. Usage: bench.py RELEASE_DIR [proxy ...]

Besides plain Weir it runs "weir+metrics" (the same configuration plus a `control` listener,
which turns metrics on) and "weir+metrics+log" (plus `server.access_log` to a file) and prints
what each costs in CPU per request."""
import os, re, shutil, signal, socket, statistics, subprocess, sys, tempfile, time, urllib.request

ROUNDS = int(os.environ.get("ROUNDS", 3))
DURATION = int(os.environ.get("DURATION", 8))
CONNS = int(os.environ.get("CONNS", 50))
TICK = os.sysconf("SC_CLK_TCK")
REL = sys.argv[1]
ONLY = sys.argv[2:]
WORK = tempfile.mkdtemp(prefix="weir-bench-")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def wait_port(port, timeout=15):
    end = time.time() + timeout
    while time.time() < end:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listening on {port}")


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def which(name):
    return shutil.which(name) or f"/usr/sbin/{name}"


def write(name, text):
    path = os.path.join(WORK, name)
    with open(path, "w") as f:
        f.write(text)
    return path


procs = []


def start(cmd, port, **kw):
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=open(os.path.join(WORK, "log"), "a"), **kw)
    procs.append(p)
    wait_port(port)
    return p


def cleanup(*_):
    for p in procs:
        p.kill()
    if os.environ.get("KEEP"):
        print(f"kept {WORK}", file=sys.stderr)
    else:
        shutil.rmtree(WORK, ignore_errors=True)


def wrk_requests(out):
    m = re.search(r"(\d+) requests in", out)
    return int(m.group(1)) if m else 0


# Not through any http_proxy of the environment: the control listener is on loopback.
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def scrape(port):
    """The control listener's /metrics, as {name: value} for the unlabelled samples."""
    with OPENER.open(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    return {m[0]: float(m[1]) for m in re.findall(r"^([A-Za-z_:][\w:]*) (\S+)$", text, re.M)}


def pct(a, b):
    return (a / b - 1) * 100


def nginx_conf(body):
    return f"""daemon off; master_process off; worker_processes 1; pid {WORK}/nginx-{time.time_ns()}.pid;
error_log /dev/null crit; events {{ worker_connections 4096; }}
http {{ access_log off; {body} }}"""


def main():
    backends = [free_port() for _ in range(3)]
    servers = "".join(f"server {{ listen 127.0.0.1:{p}; keepalive_requests 100000; location / {{ return 200 'node {p}'; }} }}\n" for p in backends)
    start([which("nginx"), "-p", WORK, "-c", write("backends.conf", nginx_conf(servers))], backends[-1])
    addrs = [f"127.0.0.1:{p}" for p in backends]

    proxies = {}
    port = free_port()
    up = "".join(f"server {a};" for a in addrs)
    conf = nginx_conf(f"upstream b {{ {up} keepalive 64; }} server {{ listen 127.0.0.1:{port}; keepalive_requests 100000; "
                      "location / { proxy_pass http://b; proxy_http_version 1.1; proxy_set_header Connection \"\"; } }")
    proxies["nginx"] = ([which("nginx"), "-p", WORK, "-c", write("nginx.conf", conf)], port)

    port = free_port()
    srv = "\n".join(f"  server s{i} {a}" for i, a in enumerate(addrs))
    hconf = f"""global
  nbthread 1
  maxconn 4000
defaults
  mode http
  timeout connect 5s
  timeout client 30s
  timeout server 30s
  http-reuse always
frontend f
  bind 127.0.0.1:{port}
  default_backend b
backend b
  balance roundrobin
{srv}
"""
    proxies["haproxy"] = ([which("haproxy"), "-db", "-f", write("haproxy.cfg", hconf)], port)

    port = free_port()
    proxies["pingora"] = ([f"{REL}/pingora-rr", f"127.0.0.1:{port}", *addrs], port)

    nodes = "".join(f"      - {{host: 127.0.0.1, port: {p}, weight: 1}}\n" for p in backends)

    def weir(name, server="", extra=""):
        port, file = free_port(), name.replace("+", "-")
        wconf = f"""server:
  listen: ["127.0.0.1:{port}"]
  threads: 1
  pid_file: {WORK}/{file}.pid
  upgrade_sock: {WORK}/{file}.sock
{server}routes:
  - {{id: r, uri: /*, upstream_id: u}}
upstreams:
  - id: u
    nodes:
{nodes}{extra}"""
        proxies[name] = ([f"{REL}/weir", "-c", write(f"{file}.yaml", wconf)], port)

    # The same Weir three times: as it is, with metrics on (a `control` listener, which
    # /metrics is scraped from after each round) and with metrics and an access log file.
    weir("weir")
    controls, logs = {}, {}
    controls["weir+metrics"] = free_port()
    weir("weir+metrics", extra=f'control: {{listen: "127.0.0.1:{controls["weir+metrics"]}"}}\n')
    controls["weir+metrics+log"] = free_port()
    logs["weir+metrics+log"] = os.path.join(WORK, "access.log")
    weir("weir+metrics+log", server=f"  access_log: {{path: {logs['weir+metrics+log']}, format: default}}\n",
         extra=f'control: {{listen: "127.0.0.1:{controls["weir+metrics+log"]}"}}\n')
    if ONLY:
        proxies = {k: v for k, v in proxies.items() if k in ONLY}

    running = {}
    for name, (cmd, port) in proxies.items():
        env = dict(os.environ, RUST_LOG="error")
        running[name] = (start(cmd, port, env=env), port)

    results = {name: [] for name in proxies}
    counted = {name: 0 for name in controls}  # weir_http_requests_total at the last scrape
    dropped, warnings, checked, shown = {}, [], 0, 0
    width = max([8, *map(len, proxies)])
    for rnd in range(ROUNDS):
        for name, (p, port) in running.items():
            url = f"http://127.0.0.1:{port}/"
            warm = subprocess.run(["wrk", "-t1", "-c", str(CONNS), "-d1s", url],  # warm-up
                                  capture_output=True, text=True).stdout
            c0 = cpu_seconds(p.pid)
            out = subprocess.run(["wrk", "-t1", "-c", str(CONNS), f"-d{DURATION}s", "--latency", url],
                                 capture_output=True, text=True).stdout
            cpu = cpu_seconds(p.pid) - c0
            rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
            total = int(re.search(r"(\d+) requests in", out).group(1))
            non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
            lat = {q: to_us(v) for q, v in re.findall(r"^\s+(50|99)%\s+([\d.]+\w+)", out, re.M)}
            results[name].append((rps, lat.get("50"), lat.get("99"), cpu / max(total, 1) * 1e6,
                                  int(non2xx.group(1)) if non2xx else 0))
            note = ""
            if name in controls:
                # Every request wrk saw answered (warm-up and run) must have been counted.
                sent = wrk_requests(warm) + total
                m = scrape(controls[name])
                now = int(m.get("weir_http_requests_total", 0))
                seen, counted[name] = now - counted[name], now
                note = f"  weir_http_requests_total +{seen}, wrk {sent}"
                if seen < sent:
                    warnings.append(f"WARNING: round {rnd + 1} {name}: weir_http_requests_total rose by {seen} "
                                    f"but wrk reported {sent} requests: the metrics undercount")
                else:
                    checked += 1
                lost = int(m.get("weir_access_log_dropped_total", 0))
                if lost > dropped.get(name, 0):
                    warnings.append(f"WARNING: round {rnd + 1} {name}: the access log dropped "
                                    f"{lost - dropped.get(name, 0)} lines: its cost is understated")
                dropped[name] = lost
            if name in logs and os.path.exists(logs[name]):
                # Delete the log after each round; SIGUSR1 makes Weir reopen (recreate) it before
                # its next line, so the deleted file's space is freed too.
                with open(logs[name], "rb") as f:
                    lines = sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))
                os.unlink(logs[name])
                p.send_signal(signal.SIGUSR1)
                note += f", access.log {lines} lines"
            print(f"round {rnd + 1} {name:{width}} {rps:10.0f} req/s{note}", file=sys.stderr)
            for w in warnings[shown:]:
                print(w, file=sys.stderr)
            shown = len(warnings)

    med = {n: [statistics.median(x[i] for x in r) for i in range(5)] for n, r in results.items() if r}
    print(f"\n{len(backends)} nginx backends, 1 proxy worker, wrk -t1 -c{CONNS} -d{DURATION}s, "
          f"median of {ROUNDS} interleaved rounds on {os.cpu_count()} cores\n")
    width = max([10, *(len(n) + 2 for n in med)])
    print(f"{'proxy':{width}}{'req/s':>10}{'p50 us':>9}{'p99 us':>9}{'CPU us/req':>12}{'errors':>8}{'vs nginx':>10}{'vs pingora':>12}")
    for n, (rps, p50, p99, cpu, errs) in med.items():
        vn = rps / med["nginx"][0] if "nginx" in med else float("nan")
        vp = rps / med["pingora"][0] if "pingora" in med else float("nan")
        print(f"{n:{width}}{rps:10.0f}{p50:9.0f}{p99:9.0f}{cpu:12.1f}{int(errs):8d}{vn:10.2f}{vp:12.2f}")

    def cost(what, a, b, target=""):
        if a in med and b in med:
            rounds = " ".join(f"{pct(x[3], y[3]):+.1f}%" for x, y in zip(results[a], results[b]))
            print(f"{what} cost: CPU per request {pct(med[a][3], med[b][3]):+.1f}% ({a} vs {b}){target}"
                  f"\n  CPU per request round by round: {rounds}; median req/s {pct(med[a][0], med[b][0]):+.1f}%")

    if controls.keys() & med.keys():
        print()
    cost("metrics", "weir+metrics", "weir", ", target <= 5%")
    cost("access log", "weir+metrics+log", "weir+metrics")
    if controls.keys() & med.keys():
        print("\n".join(warnings) if warnings else
              f"metrics check: weir_http_requests_total >= wrk's requests in all {checked} scrapes")


def to_us(v):
    m = re.match(r"([\d.]+)(us|ms|s)", v)
    n, unit = float(m.group(1)), m.group(2)
    return n * {"us": 1, "ms": 1e3, "s": 1e6}[unit]


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, cleanup)
    try:
        main()
    finally:
        cleanup()
