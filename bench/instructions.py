#!/usr/bin/env python3
"""Instructions per proxied request, measured with callgrind: deterministic, unlike req/s on a
shared machine (callgrind counts user-space instructions only, not the kernel's share).

  instructions.py RELEASE_DIR [VARIANT ...]
      starts three nginx backends and each variant under callgrind, one at a time, and prints
      instructions per request for each. Variants: pingora, pingora-nosteal,
      pingora-nomodules, pingora-l4read0, weir-steal, weir-nosteal, weir+metrics (default: pingora weir-steal weir-nosteal). Env: N (3000
      requests), CONC (1: sequential requests on one connection; >1: that many connections,
      requests interleaved, so a worker sees several in flight), KEEP_OUT=DIR keeps the
      callgrind files there (for callgrind_annotate).
  instructions.py PORT PID [N]
      measures a proxy already started as
      valgrind --tool=callgrind --callgrind-out-file=FILE <proxy...>

Each measurement warms up (200 requests), zeroes callgrind's counters, sends N keep-alive
requests, dumps, and divides the total by N."""
import glob, os, re, socket, subprocess, sys, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import Work, free_port, nginx_conf, weir_proxy, which

REQ = b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n"


def answer(s, buf):
    """Read one response (Content-Length framing, small); returns leftover bytes."""
    while True:
        i = buf.find(b"\r\n\r\n")
        if i >= 0:
            head = buf[:i]
            m = re.search(rb"(?i)\r\ncontent-length:\s*(\d+)", head)
            n = int(m.group(1)) if m else 0
            if len(buf) >= i + 4 + n:
                assert head.startswith(b"HTTP/1.1 200"), head[:40]
                return buf[i + 4 + n:]
        d = s.recv(65536)
        if not d:
            raise ConnectionError("closed")
        buf += d


def run(port, count, conc=1):
    socks = [socket.create_connection(("127.0.0.1", port), timeout=120) for _ in range(conc)]
    bufs = [b""] * conc
    sent = 0
    for s in socks:
        s.sendall(REQ)
        sent += 1
    done = 0
    while done < count:
        for i, s in enumerate(socks):
            bufs[i] = answer(s, bufs[i])
            done += 1
            if sent < count:
                s.sendall(REQ)
                sent += 1
    for s in socks:
        s.close()


def measure(port, pid, n, conc=1, out_glob=None):
    run(port, 200, conc)
    subprocess.run(["callgrind_control", "-z", str(pid)], check=True, capture_output=True)
    run(port, n, conc)
    subprocess.run(["callgrind_control", "-d", str(pid)], check=True, capture_output=True, text=True)
    pattern = out_glob or f"*{pid}*"
    files = sorted(glob.glob(pattern) + glob.glob(f"/tmp/cg*{pid}*"), key=os.path.getmtime)
    total = 0
    for f in files[-1:]:
        for line in open(f):
            m = re.match(r"(summary|totals): (\d+)", line)
            if m:
                total = int(m.group(2))
    return total / n


def variants(rel, work, addrs):
    def pingora(steal, *flags):
        return lambda port: [f"{rel}/pingora-rr", *([] if steal else ["--no-steal"]), *flags, f"127.0.0.1:{port}", *addrs]

    def weir(name, steal, extra=""):
        return lambda port: weir_proxy(rel, work, name, port, addrs, 1, steal, extra=extra)

    return {
        "pingora": pingora(True),
        "pingora-nosteal": pingora(False),
        # What two of Pingora's defaults cost: its disabled compression module, its 64 KiB
        # read buffer per client connection.
        "pingora-nomodules": pingora(True, "--no-modules"),
        "pingora-l4read0": pingora(True, "--l4-read", "0"),
        "weir-steal": weir("weir-steal", True),
        "weir-nosteal": weir("weir-nosteal", False),
        "weir+metrics": weir("weir+metrics", False, extra=f'control: {{listen: "127.0.0.1:{free_port()}"}}\n'),
    }


def main(rel, names):
    n = int(os.environ.get("N", 3000))
    conc = int(os.environ.get("CONC", 1))
    work = Work("weir-instr-")
    out = os.environ.get("KEEP_OUT") or work.dir
    try:
        backends = [free_port() for _ in range(3)]
        servers = "".join(f"server {{ listen 127.0.0.1:{p}; keepalive_requests 1000000; location / {{ return 200 'node {p}'; }} }}\n"
                          for p in backends)
        work.start([which("nginx"), "-p", work.dir, "-c", work.write("backends.conf", nginx_conf(work, servers))],
                   backends[-1])
        addrs = [f"127.0.0.1:{p}" for p in backends]
        table = variants(rel, work, addrs)
        for name in names or ["pingora", "weir-steal", "weir-nosteal"]:
            port = free_port()
            cg = os.path.join(out, f"callgrind.{name}.out")
            cmd = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={cg}", *table[name](port)]
            p = work.start(cmd, port, timeout=300)
            time.sleep(0.5)
            r = measure(port, p.pid, n, conc, out_glob=cg + "*")
            work.stop(p)
            print(f"{name:16} {r:8.0f} instructions per request ({n} requests, {conc} connection(s))", flush=True)
    finally:
        work.close()


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1].isdigit():
        port, pid = int(sys.argv[1]), sys.argv[2]
        n = int(sys.argv[3]) if len(sys.argv) > 3 else 2000
        print(f"{measure(port, pid, n):.0f} instructions per request ({n} requests)")
    else:
        main(sys.argv[1], sys.argv[2:])
