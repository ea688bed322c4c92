#!/usr/bin/python3
"""HTTP benchmarks of the aggregator, each side by side with its ceiling in
the same run (medians of interleaved runs; the machines are noisy):

  1. GET /v1/health requests/s with `wrk -t2 -c64`, against a minimal
     libmicrohttpd server answering a fixed 30-byte body with the same thread
     pool (bench/mhd_ceiling.c). Goal: >= 0.75x.
  2. Memory per parked long-poll (aggregator RSS growth / parked reads).
     Goal: <= 8 KB.
  3. Time to wake N parked reads with one change, against the bare MHD
     suspend/resume loop of the ceiling server. Goal: <= 2x.

Usage: bench/http_bench.py [--build DIR] [--runs 5] [--parked 10000] [--quick]
Prints a Markdown table.
"""
import argparse
import json
import os
import re
import resource
import selectors
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "tests", "system"))
import muster_harness as mh  # noqa: E402


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def raise_nofile():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def wait_http(url, timeout=10):
    end = time.time() + timeout
    while time.time() < end:
        try:
            urllib.request.urlopen(url, timeout=1).read()
            return
        except Exception:
            time.sleep(0.05)
    raise RuntimeError(f"{url} did not answer")


def wrk(url, seconds):
    out = subprocess.run(["wrk", "-t2", "-c64", f"-d{seconds}s", url], capture_output=True,
                         text=True, check=True).stdout
    return float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def park(port, path, n):
    """Opens n connections each sending one GET of path; returns them."""
    req = f"GET {path} HTTP/1.1\r\nHost: b\r\n\r\n".encode()
    socks = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(req)
        socks.append(s)
    return socks


def wait_all_answered(socks, t0, timeout=60):
    """Seconds from t0 (monotonic) until every socket has received a
    response head."""
    sel = selectors.DefaultSelector()
    for s in socks:
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ)
    left = len(socks)
    while left:
        if time.monotonic() - t0 > timeout:
            raise RuntimeError(f"{left} reads never answered")
        for key, _ in sel.select(timeout=1):
            try:
                data = key.fileobj.recv(4096)
            except BlockingIOError:
                continue
            if data:
                sel.unregister(key.fileobj)
                left -= 1
    return time.monotonic() - t0


def close_all(socks):
    for s in socks:
        s.close()


def median_range(xs):
    return statistics.median(xs), min(xs), max(xs)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=os.environ.get("MUSTER_BUILD_DIR", os.path.join(ROOT, "build")))
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--parked", type=int, default=10000)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    args = ap.parse_args()
    if args.quick:
        args.runs, args.seconds, args.parked = 3, 2, 2000
    raise_nofile()
    mh.load_pb()
    tmp = tempfile.mkdtemp(prefix="muster-bench-")
    procs = []
    try:
        os.makedirs(f"{tmp}/profiles")
        with open(f"{tmp}/profiles/agent.ini", "w") as f:
            f.write('[profile]\nrole = agent\n[component "svc"]\ncheck = exec\ncommand = true\n'
                    '[stage "s"]\ncomponents = svc\n')
        sp, hp, cp = free_port(), free_port(), free_port()
        with open(f"{tmp}/aggr.conf", "w") as f:
            f.write(f"[aggregator]\nid = bench\nlisten_stream = 127.0.0.1:{sp}\n"
                    f"listen_http = 127.0.0.1:{hp}\ndatabase = {tmp}/aggr.db\n"
                    f"profiles = {tmp}/profiles\nstale_timeout = 10m\n"
                    f"http_max_connections_per_address = 30000\n[log]\nlevel = warning\n")
        aggr = subprocess.Popen([f"{args.build}/muster-aggregatord", "--config", f"{tmp}/aggr.conf"])
        ceil = subprocess.Popen([f"{args.build}/mhd-ceiling", str(cp), "2"], stdout=subprocess.DEVNULL)
        procs += [aggr, ceil]
        wait_http(f"http://127.0.0.1:{hp}/readyz")
        wait_http(f"http://127.0.0.1:{cp}/fixed")
        # A small cluster, so /v1/health is a real body.
        digest = mh.sha256_file(f"{tmp}/profiles/agent.ini")
        feeders = []
        for i in range(20):
            cl = mh.StreamClient(sp)
            assert cl.hello(f"n{i}", "agent", uuid.uuid4().hex, 0, digest=digest).WhichOneof("body") == "welcome"
            mk = mh.ChangeMaker(["svc"])
            cl.send_changes(mk.make(1))
            cl.wait_ack(1)
            cl.send(mk.snapshot())
            feeders.append((cl, mk))

        rows = []
        ours, theirs = [], []
        for _ in range(args.runs):
            theirs.append(wrk(f"http://127.0.0.1:{cp}/fixed", args.seconds))
            ours.append(wrk(f"http://127.0.0.1:{hp}/v1/health", args.seconds))
        ratios = [o / t for o, t in zip(ours, theirs)]
        rows.append(("GET /v1/health req/s", median_range(ours), "minimal MHD, 30-byte body",
                     median_range(theirs), median_range(ratios), ">= 0.75x"))

        # Parked reads: memory and wake time, interleaved with the ceiling.
        mem, wake_ours, wake_theirs = [], [], []
        for _ in range(max(1, args.runs // 2)):
            idx = urllib.request.urlopen(f"http://127.0.0.1:{hp}/v1/health").headers["X-Muster-Index"]
            before = rss_kb(aggr.pid)
            socks = park(hp, f"/v1/health?index={idx}&wait=5m", args.parked)
            time.sleep(1.0)
            mem.append((rss_kb(aggr.pid) - before) * 1024 / args.parked)
            cl, mk = feeders[0]
            # From sending the change: it is committed, acknowledged and
            # published before the reads wake.
            t0 = time.monotonic()
            cl.send_changes(mk.make(1))
            wake_ours.append(wait_all_answered(socks, t0))
            close_all(socks)
            socks = park(cp, "/park", args.parked)
            time.sleep(1.0)
            t0 = time.monotonic()
            urllib.request.urlopen(f"http://127.0.0.1:{cp}/wake").read()
            wake_theirs.append(wait_all_answered(socks, t0))
            close_all(socks)
            time.sleep(0.5)
        rows.append((f"memory per parked read ({args.parked})", median_range(mem), "goal", (8192, 8192, 8192),
                     median_range([m / 8192 for m in mem]), "<= 1.0x of 8 KB"))
        rows.append((f"wake {args.parked} parked reads (s)", median_range(wake_ours), "bare MHD resume loop",
                     median_range(wake_theirs), median_range([o / t for o, t in zip(wake_ours, wake_theirs)]),
                     "<= 2x"))
        if args.json:
            print(json.dumps({
                "runs": args.runs, "seconds": args.seconds, "parked": args.parked,
                "health_rps": ours, "ceiling_rps": theirs,
                "parked_bytes": mem, "wake_s": wake_ours, "wake_ceiling_s": wake_theirs}))
        else:
            print("| benchmark | muster median [min-max] | ceiling | ceiling median [min-max] "
                  "| ratio median [min-max] | goal |")
            print("| --- | --- | --- | --- | --- | --- |")
            fmt = lambda t: f"{t[0]:.4g} [{t[1]:.4g}-{t[2]:.4g}]"
            for name, o, cname, c, r, goal in rows:
                print(f"| {name} | {fmt(o)} | {cname} | {fmt(c)} | {fmt(r)} | {goal} |")
        for cl, _ in feeders:
            cl.close()
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
