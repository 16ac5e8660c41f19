#!/usr/bin/env python3
"""The resilience layer, measured: one of three backends misbehaves for FAULT seconds under a
steady load, seen through Weir in four configurations. Usage: resilience.py RELEASE_DIR.

  (a) retries as APISIX does them by default: `retries: 2` (node count - 1), on connection
      failures and timeouts only, so a node's 503 reaches the client;
  (b) (a) + APISIX passive health checks (503 counts, 3 in a row mark the node down) with the
      active checks Weir requires to bring it back (GET /healthz every 1 s, 2 successes);
  (c) (a) + outlier detection: 3 consecutive 5xx, or 3 consecutive failures without a
      response, eject the node for EJECT seconds (base = max ejection time);
  (d) (c) + `retry_on_status: [503]` under a retry budget (20 %, min_concurrency 3): a 503 is
      retried on another node while the budget allows.

Variants: `503`: the faulty node answers 503 to half its requests (health probes too); `stall`:
it answers nothing until the fault ends. Every configuration has a 1 s connect/send/read
timeout (APISIX's default is 60 s, which would hold a stalled request for the whole stall).

The load is open-loop: RATE requests/s per configuration on a fixed schedule, each on an idle
keep-alive connection or a new one, latency measured from the scheduled send time (so a stall
is not hidden by a client that waits). Each request's outcome is recorded: status, latency and
which node answered (the backend's body). By default the four Weir processes (one worker
each) run side by side against the same three backends and the same fault, so the four see
the same seconds of the same machine; SERIAL=1 runs them one after the other instead.

Phases: BEFORE seconds of normal traffic, FAULT seconds of fault, AFTER seconds after the node
heals. Recovery is the time from the heal to the first request the healed node answers with a
200 that starts a second in which it answers at least 80 % of its fair third.

Env: RATE (200), BEFORE (5), FAULT (20), AFTER (10, or 2 x EJECT), EJECT (5), VARIANTS ("503,stall"),
SERIAL (0), KEEP (keep the work directory). About 80 s with the defaults (SERIAL=1: about 5 min)."""
import asyncio, collections, os, random, re, shutil, signal, socket, subprocess, sys, tempfile, time, urllib.request

RATE = float(os.environ.get("RATE", 200))
BEFORE = float(os.environ.get("BEFORE", 5))
FAULT = float(os.environ.get("FAULT", 20))
EJECT = float(os.environ.get("EJECT", 5))
AFTER = float(os.environ.get("AFTER", max(10, 2 * EJECT)))  # room to see the node return
VARIANTS = [v for v in os.environ.get("VARIANTS", "503,stall").split(",") if v]
SERIAL = os.environ.get("SERIAL", "0") not in ("", "0")
# Distinct loopback addresses, so Weir's per-node metrics (labelled by IP) tell them apart.
IPS = {"a": "127.0.0.11", "b": "127.0.0.12", "c": "127.0.0.13"}
FAULTY = "c"


# ---------------------------------------------------------------------------------------------
# The backends (a subprocess: `resilience.py --backend a=IP:PORT ...`), driven by lines on
# stdin: `503`, `stall`, `heal`.

def backend_main(specs):
    rng = random.Random(1)
    state = {"mode": None, "healed": None}

    def response(status, body):
        reason = {200: "OK", 503: "Service Unavailable"}[status]
        return (f"HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain\r\nContent-Length: {len(body)}\r\n\r\n"
                f"{body}").encode()

    async def serve(name, reader, writer):
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                low = head.lower()
                m = re.search(rb"\r\ncontent-length:\s*(\d+)", low)
                if m:
                    await reader.readexactly(int(m.group(1)))
                status = 200
                if name == FAULTY and state["mode"] == "stall":
                    await state["healed"].wait()
                    if writer.is_closing() or reader.at_eof():
                        break  # the proxy gave up on this request (and closed the connection)
                elif name == FAULTY and state["mode"] == "503" and rng.random() < 0.5:
                    status = 503
                writer.write(response(status, name))
                await writer.drain()
                if b"\r\nconnection: close" in low:
                    break
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()

    async def main():
        loop = asyncio.get_running_loop()
        for spec in specs:
            name, addr = spec.split("=")
            host, port = addr.rsplit(":", 1)
            await asyncio.start_server(lambda r, w, n=name: serve(n, r, w), host, int(port), backlog=1024)
        while True:
            line = (await loop.run_in_executor(None, sys.stdin.readline)).strip()
            if line in ("", "quit"):
                return
            if line == "heal":
                state["mode"] = None
                if state["healed"]:
                    state["healed"].set()
            else:
                state["healed"] = asyncio.Event()
                state["mode"] = line

    asyncio.run(main())


# ---------------------------------------------------------------------------------------------
# The configurations.

def configs(eject):
    # Timeouts and retries are the same in all four: only the resilience differs.
    base = "    timeout: {connect: 1, send: 1, read: 1}\n    retries: 2\n"
    checks = """    checks:
      active:
        type: http
        http_path: /healthz
        timeout: 1
        healthy: {interval: 1, successes: 2}
        unhealthy: {interval: 1, http_failures: 2, timeouts: 2}
      passive:
        unhealthy: {http_statuses: [503], http_failures: 3, timeouts: 3}
"""
    outlier = (f"    outlier_detection: {{consecutive_5xx: 3, consecutive_local_origin_failure: 3, "
               f"base_ejection_time: {eject:g}, max_ejection_time: {eject:g}}}\n")
    budget = "    retry_on_status: [503]\n    limits: {retry_budget: {percent: 20, min_concurrency: 3}}\n"
    return [
        ("a", "(a) retries (APISIX default)", base),
        ("b", "(b) passive+active checks", base + checks),
        ("c", "(c) outlier detection", base + outlier),
        ("d", "(d) outlier + retry budget", base + outlier + budget),
    ]


def free_port(ip="127.0.0.1"):
    s = socket.socket()
    s.bind((ip, 0))
    p = s.getsockname()[1]
    s.close()
    return p


def wait_port(port, ip="127.0.0.1", timeout=20):
    end = time.time() + timeout
    while time.time() < end:
        try:
            socket.create_connection((ip, port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listening on {ip}:{port}")


OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def scrape(port):
    """Weir's /metrics as [(name, {label: value}, value)]."""
    with OPENER.open(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    out = []
    for name, labels, value in re.findall(r"^([A-Za-z_:][\w:]*)(?:\{([^}]*)\})? (\S+)$", text, re.M):
        out.append((name, dict(re.findall(r'(\w+)="([^"]*)"', labels)), float(value)))
    return out


def total(samples, name, **want):
    return sum(v for n, l, v in samples if n == name and all(l.get(k) == x for k, x in want.items()))


# ---------------------------------------------------------------------------------------------
# The load generator.

class Stream:
    """RATE requests/s to one proxy on a fixed schedule; every outcome is kept."""

    def __init__(self, port):
        self.port = port
        self.idle = []
        self.results = []  # (scheduled send, status (0: no answer), latency s, node, overflow)

    async def request(self, at):
        loop = asyncio.get_running_loop()
        status, node, overflow = 0, "", ""
        for _ in range(2):
            # A pooled connection the proxy has closed fails before any byte of an answer:
            # that one is repeated on a new connection, as HTTP clients do.
            reused = bool(self.idle)
            try:
                status, node, overflow = await self.exchange(self.idle.pop() if reused else None)
                break
            except asyncio.IncompleteReadError as e:
                if not (reused and not e.partial):
                    break
            except asyncio.TimeoutError:
                break
            except (OSError, asyncio.LimitOverrunError, ValueError, IndexError):
                if not reused:
                    break
        self.results.append((at, status, loop.time() - at, node, overflow))

    async def exchange(self, conn):
        """One GET on `conn` (a new connection when None): (status, node, overflow)."""
        conn = conn or await asyncio.open_connection("127.0.0.1", self.port)
        reader, writer = conn
        keep = False
        try:
            writer.write(b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n")
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
            status = int(head.split(b" ", 2)[1])
            low = head.lower()
            m = re.search(rb"\r\ncontent-length:\s*(\d+)", low)
            if m:
                body = await reader.readexactly(int(m.group(1)))
            elif b"\r\ntransfer-encoding: chunked" in low:
                body = b""
                while True:
                    size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
                    body += (await reader.readexactly(size + 2))[:size]
                    if size == 0:
                        break
            else:
                body = await reader.read()
            node = body.decode(errors="replace").strip() if len(body) <= 2 else ""
            o = re.search(rb"\r\nx-weir-overflow:\s*(\w+)", low)
            keep = b"\r\nconnection: close" not in low and (m or b"chunked" in low)
            return status, node, o.group(1).decode() if o else ""
        finally:
            if keep:
                self.idle.append(conn)
            else:
                writer.close()

    async def run(self, t0, length):
        loop = asyncio.get_running_loop()
        tasks, i, step = set(), 0, 1.0 / RATE
        while True:
            at = t0 + i * step
            if at >= t0 + length:
                break
            delay = at - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            t = asyncio.create_task(self.request(at))
            tasks.add(t)
            t.add_done_callback(tasks.discard)
            i += 1
        if tasks:
            await asyncio.wait(tasks, timeout=35)
        for _, w in self.idle:
            w.close()
        self.idle.clear()


def pctl(xs, q):
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q / 100 * len(xs)))]


def analyse(results, t0):
    fault0, heal = t0 + BEFORE, t0 + BEFORE + FAULT
    phases = {"before": (t0, fault0), "fault": (fault0, heal), "after": (heal, heal + AFTER)}
    out = {}
    for ph, (lo, hi) in phases.items():
        rs = [r for r in results if lo <= r[0] < hi]
        lat = [r[2] * 1000 for r in rs]
        errs = sum(1 for r in rs if not 200 <= r[1] < 300)
        kinds = collections.Counter((f"{r[1]}" + (f" {r[4]}" if r[4] else "")) if r[1] else "no answer"
                                    for r in rs if not 200 <= r[1] < 300)
        out[ph] = dict(n=len(rs), errs=errs, kinds=kinds, err=errs / max(len(rs), 1) * 100, p50=pctl(lat, 50),
                       p99=pctl(lat, 99), slow=sum(1 for x in lat if x >= 250) / max(len(lat), 1) * 100)
    # Recovery: the first 200 from the healed node after the heal that starts a second in
    # which it answers at least 80 % of a third of the requests.
    after = sorted(r for r in results if heal <= r[0] < heal + AFTER)
    recovery = None
    for i, r in enumerate(after):
        if r[3] == FAULTY and r[1] == 200:
            window = [x for x in after[i:] if x[0] < r[0] + 1]
            if r[0] + 1 <= heal + AFTER and sum(1 for x in window if x[3] == FAULTY and x[1] == 200) \
                    >= 0.8 * len(window) / 3:
                recovery = r[0] - heal
                break
    out["recovery"] = recovery
    return out


# ---------------------------------------------------------------------------------------------

def run_group(rel, work, variant, group, log):
    """Backends, the Weir processes of `group`, one fault of `variant`; their figures."""
    procs = []
    try:
        addrs = {n: (ip, free_port(ip)) for n, ip in IPS.items()}
        specs = [f"{n}={ip}:{p}" for n, (ip, p) in addrs.items()]
        backend = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--backend", *specs],
                                   stdin=subprocess.PIPE, text=True, stderr=log)
        procs.append(backend)
        for ip, p in addrs.values():
            wait_port(p, ip)
        nodes = "".join(f"      - {{host: {ip}, port: {p}, weight: 1}}\n" for ip, p in addrs.values())
        weirs = {}
        for key, label, extra in group:
            port, control = free_port(), free_port()
            conf = os.path.join(work, f"{variant}-{key}.yaml")
            with open(conf, "w") as f:
                f.write(f"""server:
  listen: ["127.0.0.1:{port}"]
  threads: 1
  pid_file: {work}/{variant}-{key}.pid
  upgrade_sock: {work}/{variant}-{key}.sock
control: {{listen: "127.0.0.1:{control}"}}
routes:
  - {{id: r, uri: /*, upstream_id: u}}
upstreams:
  - id: u
    nodes:
{nodes}{extra}""")
            check = subprocess.run([f"{rel}/weir", "-t", "-c", conf], capture_output=True, text=True)
            if check.returncode != 0:
                raise SystemExit(f"{conf} does not validate:\n{check.stdout}{check.stderr}")
            p = subprocess.Popen([f"{rel}/weir", "-c", conf], stdout=subprocess.DEVNULL, stderr=log,
                                 env=dict(os.environ, RUST_LOG="warn"))
            procs.append(p)
            weirs[key] = (label, port, control)
        for _, port, control in weirs.values():
            wait_port(port)
            wait_port(control)

        async def drive():
            loop = asyncio.get_running_loop()
            streams = {k: Stream(port) for k, (_, port, _) in weirs.items()}
            # A short warm-up (connections, pools, first health probes), not recorded.
            warm = loop.time() + 0.1
            await asyncio.gather(*(s.run(warm, 1.5) for s in streams.values()))
            for s in streams.values():
                s.results.clear()
            t0 = loop.time() + 0.2

            async def switch():
                await asyncio.sleep(t0 + BEFORE - loop.time())
                backend.stdin.write(f"{variant}\n")
                backend.stdin.flush()
                await asyncio.sleep(t0 + BEFORE + FAULT - loop.time())
                backend.stdin.write("heal\n")
                backend.stdin.flush()

            await asyncio.gather(switch(), *(s.run(t0, BEFORE + FAULT + AFTER) for s in streams.values()))
            return {k: analyse(s.results, t0) for k, s in streams.items()}

        figures = asyncio.run(drive())
        for key, (label, _, control) in weirs.items():
            m = scrape(control)
            figures[key].update(
                label=label,
                ejections=total(m, "weir_upstream_ejections_total", node=IPS[FAULTY]),
                retries=total(m, "weir_upstream_retries_total"),
                refused=total(m, "weir_upstream_overflow_total", limit="retry_budget")
                + total(m, "weir_upstream_overflow_total", limit="max_retries"),
            )
        return figures
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait()


def main(rel):
    work = tempfile.mkdtemp(prefix="weir-resilience-")
    log = open(os.path.join(work, "log"), "a")
    try:
        load = os.getloadavg()[0]
        mode = "one after the other" if SERIAL else "side by side"
        print(f"\nresilience: 3 backends, node {FAULTY} faulty from {BEFORE:g} s for {FAULT:g} s, then "
              f"{AFTER:g} s healed; {RATE:g} req/s open-loop per configuration; 4 Weir processes "
              f"(1 worker each) {mode} on {os.cpu_count()} cores (load average {load:.1f} at start: "
              f"other processes may share them)")
        goals = []
        for variant in VARIANTS:
            what = {"503": "answers 503 to half its requests", "stall": "answers nothing"}[variant]
            groups = [[c] for c in configs(EJECT)] if SERIAL else [configs(EJECT)]
            figures = {}
            for g in groups:
                figures.update(run_group(rel, work, variant, g, log))
            print(f"\nvariant {variant}: node {FAULTY} {what} for {FAULT:g} s (requests to >=250ms %: during "
                  f"the fault)\n")
            print(f"{'configuration':31}{'requests':>9}{'errors':>8}{'err %':>8}{'p50 ms':>8}{'p99 ms':>8}"
                  f"{'>=250ms %':>10}{'after err %':>12}{'recovery s':>11}{'ejections':>10}{'retries':>8}"
                  f"{'refused':>8}")
            for k, f in figures.items():
                d, a = f["fault"], f["after"]
                rec = "never" if f["recovery"] is None else f"{f['recovery']:.2f}"
                print(f"{f['label']:31}{d['n']:9d}{d['errs']:8d}{d['err']:8.2f}{d['p50']:8.1f}{d['p99']:8.1f}"
                      f"{d['slow']:10.2f}{a['err']:12.2f}{rec:>11}{f['ejections']:10.0f}{f['retries']:8.0f}"
                      f"{f['refused']:8.0f}")
            kinds = lambda c: ", ".join(f"{s}: {n}" for s, n in sorted(c.items(), key=str)) or "none"
            print("errors by status during the fault: " + "; ".join(
                f"({k}) {kinds(f['fault']['kinds'])}" for k, f in figures.items()))
            print("before the fault: " + "; ".join(
                f"({k}) {f['before']['n']} requests, {f['before']['errs']} errors {kinds(f['before']['kinds'])}, "
                f"p99 {f['before']['p99']:.1f} ms" for k, f in figures.items()))
            if variant == "503":
                base = figures["a"]["fault"]["errs"]
                for k in ("c", "d"):
                    f = figures[k]
                    errs, rec = f["fault"]["errs"], f["recovery"]
                    cut = base / errs if errs else float("inf")
                    ok_cut, ok_rec = cut >= 10, rec is not None and rec <= EJECT
                    goals.append((f["label"], base, errs, cut, ok_cut, rec, ok_rec))
        if goals:
            print(f"\ngoal (variant 503): errors during the fault cut >= 10x against (a), and the healed "
                  f"node back within one ejection time ({EJECT:g} s)")
            for label, base, errs, cut, ok_cut, rec, ok_rec in goals:
                rec_s = "never" if rec is None else f"{rec:.2f} s"
                cut_s = f"{cut:.1f}x" if errs else "none left"
                print(f"  {label:31} errors {base} -> {errs} ({cut_s}): {'holds' if ok_cut else 'FAILS'}; "
                      f"recovery {rec_s}: {'holds' if ok_rec else 'FAILS'}")
    finally:
        log.close()
        if os.environ.get("KEEP"):
            print(f"kept {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--backend":
        backend_main(sys.argv[2:])
    elif len(sys.argv) == 2:
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # so that `finally` cleans up
        main(sys.argv[1])
    else:
        raise SystemExit(__doc__)
