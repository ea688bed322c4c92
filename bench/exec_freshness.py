#!/usr/bin/python3
"""Freshness of an exec check: from a check flipping to GET /v1/health
showing the new cluster verdict.

One aggregator, one master with an exec check (`test -e FLAG || exit 2`,
every --interval, rise 1, fall 1). Each cycle removes or creates FLAG and
polls /v1/health (only parsing a body when X-Muster-Index moved) until the
verdict follows. Two figures per change:
  - from the check's result: the change's own time (`at` in /v1/history,
    stamped by the agent when the result came in) to the verdict seen
    changed; this is muster's part;
  - from the file flip: adds the wait for the next check run (up to one
    interval), which is the check's configuration, not muster.

Usage: MUSTER_BUILD_DIR=build /usr/bin/python3 bench/exec_freshness.py [--cycles 40]
"""
import argparse
import datetime
import os
import statistics
import sys
import tempfile
import time

import requests

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "system"))
import muster_harness as mh  # noqa: E402


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100.0 * (len(xs) - 1))))]


def summary(name, xs):
    return (f"| {name} | {statistics.median(xs):.1f} | {pct(xs, 90):.1f} | {pct(xs, 99):.1f} | "
            f"{max(xs):.1f} |")


def parse_ms(t):
    return datetime.datetime.fromisoformat(t.replace("Z", "+00:00")).timestamp() * 1000


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cycles", type=int, default=40)
    ap.add_argument("--interval", default="100ms")
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="mst-exec-fresh-")
    logs = os.path.join(work, "logs")
    os.makedirs(logs)
    procs = mh.ProcessRegistry(logs)
    env = mh.TestEnv(work, procs)
    flag = os.path.join(work, "flag")
    open(flag, "w").close()
    from_result, from_flip = [], []
    try:
        env.write_profile("master", mh.profile_ini("master", [
            ("svc", dict(check="exec", command=f"test -e {flag} || exit 2",
                         interval=args.interval, timeout="1s", rise=1, fall=1))],
            [("base", ["svc"])]))
        aggr = env.aggregator(expected_masters=["m1"], log_level="info").start()
        env.agent("m1", "master", aggr, log_level="info").start()
        base = f"http://127.0.0.1:{aggr.http_port}"
        s = requests.Session()
        mh.wait_until(lambda: s.get(f"{base}/v1/health").json()["verdict"] == "healthy", 10,
                      desc="healthy")
        for i in range(args.cycles):
            want = "unhealthy" if i % 2 == 0 else "healthy"
            idx = s.get(f"{base}/v1/health").headers["X-Muster-Index"]
            top = s.get(f"{base}/v1/history", params={"node": "m1", "limit": 1}).json()
            last_seq = top["changes"][0]["seq"] if top["changes"] else 0
            flipped = time.time() * 1000
            if want == "unhealthy":
                os.unlink(flag)
            else:
                open(flag, "w").close()
            while True:
                r = s.get(f"{base}/v1/health")
                if r.headers["X-Muster-Index"] != idx and r.json()["verdict"] == want:
                    seen = time.time() * 1000
                    break
                time.sleep(0.0005)
            # The verdict follows on receipt; the row is in history once committed.
            def committed():
                c = s.get(f"{base}/v1/history", params={"node": "m1", "limit": 1}).json()
                return c["changes"][0] if c["changes"] and c["changes"][0]["seq"] > last_seq \
                    else None
            at = parse_ms(mh.wait_until(committed, 5, desc="change committed")["at"])
            from_result.append(seen - at)
            from_flip.append(seen - flipped)
            time.sleep(0.05)
        print(f"exec freshness: {args.cycles} flips, check every {args.interval}, "
              f"/v1/health polled every 0.5 ms")
        print("| from | p50 ms | p90 ms | p99 ms | max ms |")
        print("| --- | --- | --- | --- | --- |")
        print(summary("the check's result (muster's part)", from_result))
        print(summary("the file flip (adds the check interval)", from_flip))
    finally:
        for p in procs.finalize():
            print(f"problem: {p}", file=sys.stderr)
        env.cleanup()


if __name__ == "__main__":
    main()
