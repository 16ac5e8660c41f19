"""Helpers shared by the `make bench` scripts: ports, processes, CPU and memory of a process
tree, the nginx/haproxy/Weir configurations every script uses, and the results file that
bench/summary.py turns into the one table of the run."""
import json, os, re, resource, shutil, signal, socket, subprocess, sys, tempfile, time

TICK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def wait_port(port, timeout=20):
    end = time.time() + timeout
    while time.time() < end:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listening on {port}")


def which(name):
    return shutil.which(name) or f"/usr/sbin/{name}"


def tree(pid):
    """`pid` and its live descendants (nginx with a master process has its workers below)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for t in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{t}/children") as f:
                    todo.extend(int(c) for c in f.read().split())
        except OSError:
            pass
    return out


def _stat(pid):
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()


def cpu_seconds(pid):
    """User + system CPU time of `pid`'s process tree, in seconds."""
    total = 0
    for p in tree(pid):
        try:
            fields = _stat(p)
            total += int(fields[11]) + int(fields[12])
        except OSError:
            pass
    return total / TICK


def status_kib(pid, field):
    """A `VmRSS:`-style field of /proc/<pid>/status, in KiB, summed over the process tree."""
    total = 0
    for p in tree(pid):
        try:
            with open(f"/proc/{p}/status") as f:
                m = re.search(rf"^{field}:\s+(\d+) kB", f.read(), re.M)
            total += int(m.group(1)) if m else 0
        except OSError:
            pass
    return total


def rss_kib(pid):
    return status_kib(pid, "VmRSS")


def reset_peak(pid):
    """Reset VmHWM (peak RSS) of the tree: writing 5 to clear_refs (Linux >= 4.0)."""
    for p in tree(pid):
        try:
            with open(f"/proc/{p}/clear_refs", "w") as f:
                f.write("5")
        except OSError:
            pass


class Work:
    """A temporary directory and the processes started in it, cleaned up on exit/SIGTERM."""

    def __init__(self, prefix):
        self.dir = tempfile.mkdtemp(prefix=prefix)
        self.procs = []
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))

    def path(self, name):
        return os.path.join(self.dir, name)

    def write(self, name, text):
        with open(self.path(name), "w") as f:
            f.write(text)
        return self.path(name)

    def start(self, cmd, port, env=None, timeout=20):
        env = dict(os.environ, RUST_LOG="error", **(env or {}))
        p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=open(self.path("log"), "a"), env=env)
        self.procs.append(p)
        try:
            wait_port(port, timeout)
        except SystemExit:
            sys.stderr.write(open(self.path("log")).read()[-3000:])
            raise SystemExit(f"{cmd[0]} did not listen on {port} (log above)")
        return p

    @staticmethod
    def _kill(p):
        # The whole tree: SIGKILL to an nginx master leaves its workers running.
        for pid in reversed(tree(p.pid)):
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass

    def stop(self, p):
        self._kill(p)
        p.wait()
        self.procs.remove(p)

    def close(self):
        for p in self.procs:
            self._kill(p)
        for p in self.procs:
            p.wait()
        self.procs = []
        if os.environ.get("KEEP"):
            print(f"kept {self.dir}", file=sys.stderr)
        else:
            shutil.rmtree(self.dir, ignore_errors=True)


def nginx_conf(work, body, workers=1, conns=4096):
    """nginx in the foreground; one worker without a master process, else a master and
    `workers` workers."""
    master = "off" if workers == 1 else "on"
    return f"""daemon off; master_process {master}; worker_processes {workers}; pid {work.dir}/nginx-{time.time_ns()}.pid;
worker_rlimit_nofile {min(conns * 2 + 100, resource.getrlimit(resource.RLIMIT_NOFILE)[1])};
error_log /dev/null crit; events {{ worker_connections {conns}; }}
http {{ access_log off; {body} }}"""


def nginx_proxy(work, port, addrs, workers=1, conns=4096, extra=""):
    up = "".join(f"server {a};" for a in addrs)
    conf = nginx_conf(work, f"upstream b {{ {up} keepalive 64; }} server {{ listen 127.0.0.1:{port}; keepalive_requests 100000; {extra}"
                            "location / { proxy_pass http://b; proxy_http_version 1.1; proxy_set_header Connection \"\"; } }",
                      workers, conns)
    return [which("nginx"), "-p", work.dir, "-c", work.write(f"nginx-{port}.conf", conf)]


def haproxy_proxy(work, port, addrs, threads=1, maxconn=4000):
    srv = "\n".join(f"  server s{i} {a}" for i, a in enumerate(addrs))
    conf = f"""global
  nbthread {threads}
  maxconn {maxconn}
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
    return [which("haproxy"), "-db", "-f", work.write(f"haproxy-{port}.cfg", conf)]


def weir_proxy(rel, work, name, port, addrs, threads=1, steal=None, server="", extra=""):
    """Weir on `port`, round robin over `addrs`. `steal`: server.work_stealing (None: the
    default)."""
    file = re.sub(r"[^\w-]", "-", name) + f"-{port}"
    nodes = "".join(f"      - {{host: {a.split(':')[0]}, port: {a.split(':')[1]}, weight: 1}}\n" for a in addrs)
    ws = "" if steal is None else f"  work_stealing: {'true' if steal else 'false'}\n"
    conf = f"""server:
  listen: ["127.0.0.1:{port}"]
  threads: {threads}
{ws}  pid_file: {work.dir}/{file}.pid
  upgrade_sock: {work.dir}/{file}.sock
{server}routes:
  - {{id: r, uri: /*, upstream_id: u}}
upstreams:
  - id: u
    nodes:
{nodes}{extra}"""
    return [f"{rel}/weir", "-c", work.write(f"{file}.yaml", conf)]


def record(kind, **fields):
    """Append one result to $BENCH_RESULTS (JSON lines) for bench/summary.py."""
    path = os.environ.get("BENCH_RESULTS")
    if path:
        with open(path, "a") as f:
            f.write(json.dumps({"kind": kind, **fields}) + "\n")
