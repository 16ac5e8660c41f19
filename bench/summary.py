#!/usr/bin/env python3
"""The one table of a `make bench` run: every performance figure with its target, from the
results the other scripts appended to RESULTS (JSON lines) and from criterion's latest
estimates under TARGET_DIR/criterion (the router and selection benchmarks; `make bench` runs
them unless QUICK=1, else the figures shown are from their last run, with its date).
Usage: summary.py RESULTS TARGET_DIR"""
import glob, json, os, sys, time

results = [json.loads(line) for line in open(sys.argv[1])] if os.path.exists(sys.argv[1]) else []
target = sys.argv[2]
rows = []  # (figure, value, target, verdict)


def add(figure, value, goal="", ok=None):
    rows.append((figure, value, goal, "" if ok is None else ("met" if ok else "MISSED")))


def of(kind, **want):
    return [r for r in results if r["kind"] == kind and all(r.get(k) == v for k, v in want.items())]


for t in sorted({r["threads"] for r in of("throughput")}):
    tp = {r["proxy"]: r for r in of("throughput", threads=t)}
    pair = {(r["a"], r["b"]): r for r in of("paired", threads=t)}
    w = f"threads {t}"
    p = pair.get(("weir-nosteal", "weir-steal"))
    if p:
        add(f"{w}: no-steal / steal runtime, CPU per request", f"{p['cpu']:.2f}", "< 1.00 to be the default",
            p["cpu"] < 1)
        add(f"{w}: no-steal / steal runtime, req/s", f"{p['rps']:.2f}", "", None)
    for weir in ["weir-nosteal", "weir-steal"]:
        if weir not in tp:
            continue
        m = tp[weir]
        if m.get("reuse") == m.get("reuse") and m.get("reuse") is not None:
            add(f"{w}: {weir} upstream connection reuse", f"{m['reuse']:.2f}%", ">= 99%", m["reuse"] >= 99)
        for base, goal_rps, goal_cpu in [("pingora", 1.15, 0.85), ("nginx", None, 1.5), ("haproxy", None, None)]:
            q = pair.get((weir, base))
            if base not in tp:
                continue
            rps = q["rps"] if q else m["rps"] / tp[base]["rps"]
            cpu = q["cpu"] if q else m["cpu"] / tp[base]["cpu"]
            add(f"{w}: {weir} / {base}, req/s", f"{rps:.2f}", f">= {goal_rps}" if goal_rps else "",
                rps >= goal_rps if goal_rps else None)
            add(f"{w}: {weir} / {base}, CPU per request", f"{cpu:.2f}",
                f"<= {goal_cpu}" + (" (long term)" if base == "nginx" else "") if goal_cpu else "",
                cpu <= goal_cpu if goal_cpu and base == "pingora" else None)
    for other in ["pingora", "nginx", "haproxy"]:
        if other in tp and tp[other].get("reuse") is not None:
            add(f"{w}: {other} upstream connection reuse", f"{tp[other]['reuse']:.2f}%")

for r in of("cost"):
    add(f"{r['what']} cost ({r['a']} vs {r['b']}), CPU per request", f"{r['cpu_pct']:+.1f}%",
        "<= +5%" if r["what"] == "metrics" else "")

for r in of("bigbody"):
    add(f"{r['mib']} MiB {r['direction']} through {r['proxy']}",
        f"{r['mib_s']:.0f} MiB/s" + (f", peak RSS {r['peak_rss_mib']:.1f} MiB (before {r['rss_before_mib']:.1f})"
                                     if r["proxy"] != "direct" else ""),
        "bounded memory" if r["proxy"] == "weir" else "",
        r["peak_rss_mib"] - r["rss_before_mib"] < 64 if r["proxy"] == "weir" else None)

for r in of("idle"):
    add(f"{r['conns']} idle keep-alive connections, {r['proxy']}",
        f"{r['per_conn_kib']:.1f} KiB each ({r['before_kib'] / 1024:.0f} -> {r['after_kib'] / 1024:.0f} MiB; "
        f"{r['alive']}/{r['sampled']} served)",
        "<= 20 KiB" if r["proxy"] == "weir" else "",
        r["per_conn_kib"] <= 20 and r["alive"] == r["sampled"] if r["proxy"] == "weir" else None)

# Criterion: the newest estimate of each benchmark, by its full id.
crit = {}
for f in glob.glob(os.path.join(target, "criterion", "**", "new", "benchmark.json"), recursive=True):
    try:
        b = json.load(open(f))
        e = json.load(open(os.path.join(os.path.dirname(f), "estimates.json")))
        crit[b["full_id"]] = (e["median"]["point_estimate"], os.path.getmtime(f))
    except (OSError, ValueError, KeyError):
        pass


def ns(v):
    return f"{v:.0f} ns" if v < 1000 else (f"{v / 1e3:.2f} us" if v < 1e6 else f"{v / 1e6:.1f} ms")


def crit_row(figure, full_id, goal="", limit=None):
    if full_id in crit:
        v, when = crit[full_id]
        add(f"{figure} [{full_id}, {time.strftime('%m-%d %H:%M', time.gmtime(when))}]", ns(v), goal,
            v <= limit if limit else None)
    else:
        add(f"{figure} [{full_id}]", "not run", goal)


m10, m10k = crit.get("match/mixed_tries/10"), crit.get("match/mixed_tries/10000")
crit_row("route match among 10,000 routes (mixed)", "match/mixed_tries/10000", "<= 1 us", 1000)
crit_row("route match among 10 routes (mixed)", "match/mixed_tries/10")
if m10 and m10k:
    add("route match 10,000 / 10 routes", f"{m10k[0] / m10[0]:.2f}x", "<= 2x", m10k[0] / m10[0] <= 2)
crit_row("compile 10,000 routes + 1,000 upstreams", "build/first_load_10000_routes_1000_upstreams", "<= 100 ms", 100e6)
crit_row("least_conn pick, 1,000 nodes", "pick/least_conn/1 thread/1000", "<= 1 us", 1000)
crit_row("roundrobin pick, 100 nodes, 2 threads", "pick/roundrobin/2 threads/100", "<= 100 ns", 100)

width = max(len(r[0]) for r in rows) if rows else 10
vw = max([5, *(len(r[1]) for r in rows)])
print(f"\n==== make bench: every figure of the run ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
      f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}) ====\n")
print(f"{'figure':{width}}  {'value':{vw}}  {'target':24}  verdict")
for f, v, g, ok in rows:
    print(f"{f:{width}}  {v:{vw}}  {g:24}  {ok}")
print("\nRatios are medians of same-round ratios. On a shared machine wall-clock figures move by "
      "20-60% between rounds (the per-round lines above show the spread); decide optimisations with "
      "bench/instructions.py (callgrind) and bench/kernel.py (system calls, context switches).")
