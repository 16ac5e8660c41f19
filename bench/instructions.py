#!/usr/bin/env python3
"""Instructions per proxied request, measured with callgrind: deterministic, unlike req/s on a
shared machine. Usage: instructions.py PORT PID_OF_PROXY_UNDER_CALLGRIND [N]

Warms up, zeroes callgrind's counters, sends N sequential keepalive requests, dumps, and prints
total instructions / N. The proxy must have been started as
  valgrind --tool=callgrind --callgrind-out-file=FILE <proxy...>
"""
import glob, http.client, os, re, subprocess, sys

port, pid = int(sys.argv[1]), sys.argv[2]
n = int(sys.argv[3]) if len(sys.argv) > 3 else 2000


def run(count):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    for _ in range(count):
        c.request("GET", "/", headers={"Host": "bench"})
        r = c.getresponse()
        r.read()
        assert r.status == 200, r.status
    c.close()


run(200)
subprocess.run(["callgrind_control", "-z", pid], check=True, capture_output=True)
run(n)
out = subprocess.run(["callgrind_control", "-d", pid], check=True, capture_output=True, text=True).stdout
files = sorted(glob.glob(f"*{pid}*") + glob.glob(f"/tmp/cg*{pid}*"), key=os.path.getmtime)
total = 0
for f in files[-1:]:
    for line in open(f):
        m = re.match(r"(summary|totals): (\d+)", line)
        if m:
            total = int(m.group(2))
print(f"{total / n:.0f} instructions per request ({n} requests)")
