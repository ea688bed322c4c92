#!/usr/bin/python3
"""Agent footprint at idle: memory and CPU of one muster-agentd running 50
checks every 10 s, side by side with the goals (SPEC.md: "a few MB resident,
near-zero CPU").

A real standalone aggregator and, per run, a fresh agent (new spool, its own
node id; tests/system/muster_harness.py starts both, at log level info and
with the default heartbeat and stale_timeout) with 50 components at interval 10s:
exec checks (`/usr/lib/nagios/plugins/check_dummy 0 ...`, or `/bin/true`
where the plugins are not installed, alternating with `/bin/true`), http
checks against a local Python HTTP server, and tcp checks against a local
listener. Once the aggregator shows every component healthy, and --settle
seconds more, a window of --window seconds is measured:

  - rss_kib: VmRSS of /proc/PID/status, the highest of the samples taken
    every second during the window;
  - private_kib: Private_Clean + Private_Dirty of /proc/PID/smaps_rollup,
    the highest sample. Pages of a library that no other process has touched
    count as private (clean) too, so this depends a little on what else runs:
    here the aggregator maps most of the same libraries;
  - cpu_pct_agent: the agent's own CPU time over the window as % of one
    core, from the scheduler's nanosecond counters (/proc/PID/task/*/schedstat;
    utime + stime of /proc/PID/stat, in clock ticks, when schedstat is
    missing);
  - cpu_pct_with_children: that plus the CPU of the exec checks it started
    and reaped (cutime + cstime of /proc/PID/stat, clock ticks).

Each of --runs runs gives one figure per metric; the report shows median
[min-max] and the ratio of the median to the goal (goals: RSS <= 8 MiB,
private <= 2 MiB, CPU <= 0.1% of a core, for the agent itself; the CPU with
children has no goal: it is mostly /bin/sh and the plugins).

Run as root with Debian's Python, against a build:
    MUSTER_BUILD_DIR=build /usr/bin/python3 bench/agent_idle.py [--quick] [--json]

--json prints one JSON object on stdout (progress goes to stderr):
    {"rss_kib": {"median", "min", "max"}, "private_kib": {...},
     "cpu_pct_agent": {...}, "cpu_pct_with_children": {...},
     "goals": {"rss_kib": 8192, "private_kib": 2048, "cpu_pct_agent": 0.1}, ...}
"""

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "system"))

import muster_harness as mh  # noqa: E402

GOALS = {"rss_kib": 8 * 1024, "private_kib": 2 * 1024, "cpu_pct_agent": 0.1}
CHECK_DUMMY = "/usr/lib/nagios/plugins/check_dummy"
N_EXEC, N_HTTP, N_TCP = 20, 15, 15   # the defaults of --exec, --http, --tcp
CLK_TCK = os.sysconf("SC_CLK_TCK")


def log(msg):
    print(msg, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- /proc readers

def read_status_kib(pid, key):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {key} in /proc/{pid}/status")


def read_rollup(pid):
    out = {}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 3 and parts[2] == "kB":
                out[parts[0].rstrip(":")] = int(parts[1])
    return out


def read_stat_ticks(pid):
    """(utime + stime, cutime + cstime) in clock ticks."""
    with open(f"/proc/{pid}/stat") as f:
        data = f.read()
    # The command name may hold spaces: fields start after the last ')'.
    fields = data[data.rindex(")") + 2:].split()
    utime, stime, cutime, cstime = (int(x) for x in fields[11:15])
    return utime + stime, cutime + cstime


def read_schedstat_ns(pid):
    """CPU time of every thread of pid in ns, or None without schedstat."""
    total = 0
    try:
        tids = os.listdir(f"/proc/{pid}/task")
        for tid in tids:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                total += int(f.read().split()[0])
    except (FileNotFoundError, ProcessLookupError, ValueError, IndexError):
        return None
    return total


def threads(pid):
    return len(os.listdir(f"/proc/{pid}/task"))


# ---------------------------------------------------------------- the setup

def exec_command(i):
    if i % 2 == 0 and os.access(CHECK_DUMMY, os.X_OK):
        return f"{CHECK_DUMMY} 0 idle-bench-{i}"
    return "/bin/true"


def profile_text(http_url, tcp_port, n_exec=N_EXEC, n_http=N_HTTP, n_tcp=N_TCP):
    comps = []
    for i in range(n_exec):
        comps.append((f"exec{i:02d}", dict(check="exec", command=exec_command(i),
                                           interval="10s", timeout="5s")))
    for i in range(n_http):
        comps.append((f"http{i:02d}", dict(check="http", url=http_url, expect_status=200,
                                           interval="10s", timeout="2s")))
    for i in range(n_tcp):
        comps.append((f"tcp{i:02d}", dict(check="tcp", address=f"127.0.0.1:{tcp_port}",
                                          interval="10s", timeout="2s")))
    return mh.profile_ini("idle", comps, [("all", [n for n, _ in comps])])


def all_healthy(aggr, node, n):
    try:
        node_view = aggr.node(node)
    except Exception:
        return False
    if not node_view:
        return False
    comps = node_view.get("components", [])
    return len(comps) == n and all(c.get("state") == "healthy" for c in comps)


def measure_one(env, aggr, run_no, args):
    node = f"idle{run_no}"
    agent = env.agent(node, "idle", aggr, heartbeat=None, log_level="info").start()
    pid = agent.proc.pid
    n = args.exec + args.http + args.tcp
    # rise 2 at 10 s: healthy after the second run of each check, ~10 s in.
    mh.wait_until(lambda: all_healthy(aggr, node, n), 40, interval=0.5, scale=False,
                  desc=f"{node}: all {n} components healthy")
    time.sleep(args.settle)
    agent.assert_alive()

    ticks0, cticks0 = read_stat_ticks(pid)
    ns0 = read_schedstat_ns(pid)
    t0 = time.monotonic()
    rss, priv, anon, pss = [], [], [], []
    end = t0 + args.window
    while True:
        roll = read_rollup(pid)
        rss.append(read_status_kib(pid, "VmRSS"))
        priv.append(roll["Private_Clean"] + roll["Private_Dirty"])
        anon.append(roll.get("Anonymous", 0))
        pss.append(roll.get("Pss", 0))
        now = time.monotonic()
        if now >= end:
            break
        time.sleep(min(1.0, end - now))
    ticks1, cticks1 = read_stat_ticks(pid)
    ns1 = read_schedstat_ns(pid)
    elapsed = time.monotonic() - t0
    n_threads = threads(pid)
    agent.assert_alive()
    # Still healthy at the end: an idle agent that stopped checking would
    # look very cheap.
    if not all_healthy(aggr, node, n):
        raise RuntimeError(f"{node}: not every component healthy at the end of the window")
    agent.stop()

    if ns0 is not None and ns1 is not None:
        agent_s = (ns1 - ns0) / 1e9
        source = "schedstat"
    else:
        agent_s = (ticks1 - ticks0) / CLK_TCK
        source = "stat"
    children_s = (cticks1 - cticks0) / CLK_TCK
    return {
        "rss_kib": max(rss),
        "private_kib": max(priv),
        "anon_kib": max(anon),
        "pss_kib": max(pss),
        "cpu_pct_agent": 100.0 * agent_s / elapsed,
        "cpu_pct_with_children": 100.0 * (agent_s + children_s) / elapsed,
        "cpu_pct_agent_ticks": 100.0 * (ticks1 - ticks0) / CLK_TCK / elapsed,
        "threads": n_threads,
        "cpu_source": source,
        "window_s": elapsed,
    }


def stats(values):
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def fmt_kib(v):
    return f"{v / 1024:.2f} MiB"


def fmt_pct(v):
    return f"{v:.3f}%"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=None, help="runs (default 5, --quick 3)")
    ap.add_argument("--window", type=float, default=None,
                    help="measured seconds per run (default 60, --quick 20)")
    ap.add_argument("--settle", type=float, default=5.0,
                    help="seconds after every component is healthy before measuring (default 5)")
    ap.add_argument("--quick", action="store_true", help="3 runs of 20 s")
    ap.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    ap.add_argument("--exec", type=int, default=N_EXEC, help=f"exec checks (default {N_EXEC})")
    ap.add_argument("--http", type=int, default=N_HTTP, help=f"http checks (default {N_HTTP})")
    ap.add_argument("--tcp", type=int, default=N_TCP, help=f"tcp checks (default {N_TCP})")
    args = ap.parse_args()
    if args.runs is None:
        args.runs = 3 if args.quick else 5
    if args.window is None:
        args.window = 20.0 if args.quick else 60.0
    if args.runs < 1 or args.window < 1:
        ap.error("--runs and --window must be at least 1")
    if min(args.exec, args.http, args.tcp) < 0 or args.exec + args.http + args.tcp < 1:
        ap.error("--exec, --http and --tcp must not be negative, and add up to at least 1")

    work = tempfile.mkdtemp(prefix="mst-idle-")
    logs = os.path.join(work, "logs")
    os.makedirs(logs)
    procs = mh.ProcessRegistry(logs)
    env = mh.TestEnv(work, procs)
    results = []
    ok = False
    try:
        http = env.http_flag(200)
        tcp = env.tcp_flag()
        env.write_profile("idle", profile_text(http.url, tcp.port, args.exec, args.http, args.tcp))
        # Production defaults on both sides: the test harness's 2 s
        # stale_timeout would have the aggregator ask for a heartbeat every
        # 667 ms instead of the agent's default 5 s.
        aggr = env.aggregator(id="idle-aggr", log_level="info", stale_timeout=None).start()
        for i in range(1, args.runs + 1):
            log(f"run {i}/{args.runs}: starting an agent with {args.exec} exec, {args.http} http "
                f"and {args.tcp} tcp checks every 10 s, measuring {args.window:g} s")
            r = measure_one(env, aggr, i, args)
            log(f"  RSS {fmt_kib(r['rss_kib'])}, private {fmt_kib(r['private_kib'])} "
                f"(anonymous {fmt_kib(r['anon_kib'])}, PSS {fmt_kib(r['pss_kib'])}), "
                f"CPU {fmt_pct(r['cpu_pct_agent'])} of a core "
                f"({fmt_pct(r['cpu_pct_with_children'])} with children), {r['threads']} thread(s)")
            results.append(r)
        ok = True
    finally:
        problems = procs.finalize()
        env.cleanup()
        for p in problems:
            log(f"problem: {p}")
        if args.keep or not ok or problems:
            log(f"work directory kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    if not ok or problems:
        return 1

    keys = ["rss_kib", "private_kib", "cpu_pct_agent", "cpu_pct_with_children"]
    out = {k: stats([r[k] for r in results]) for k in keys}
    out["goals"] = dict(GOALS)
    out["ratio_to_goal"] = {k: out[k]["median"] / g for k, g in GOALS.items()}
    out["extra"] = {k: stats([r[k] for r in results]) for k in ("anon_kib", "pss_kib")}
    out["runs"] = args.runs
    out["window_s"] = args.window
    out["checks"] = {"exec": args.exec, "http": args.http, "tcp": args.tcp, "interval_s": 10}
    out["cpu_source"] = results[0]["cpu_source"]
    if args.json:
        print(json.dumps(out, sort_keys=True))
        return 0

    print(f"agent at idle: {args.exec + args.http + args.tcp} checks every 10 s "
          f"({args.exec} exec, {args.http} http, {args.tcp} tcp), {args.runs} runs of "
          f"{args.window:g} s")
    print("| metric | median [min-max] | goal | median / goal |")
    print("| --- | --- | --- | --- |")
    rows = [("RSS (VmRSS, highest sample)", "rss_kib", fmt_kib),
            ("private (Private_Clean+Private_Dirty)", "private_kib", fmt_kib),
            ("CPU, agent alone", "cpu_pct_agent", fmt_pct),
            ("CPU, with exec children", "cpu_pct_with_children", fmt_pct)]
    for label, k, f in rows:
        s = out[k]
        goal = GOALS.get(k)
        goal_cols = f"{f(goal)} | {s['median'] / goal:.2f}x" if goal else " | "
        print(f"| {label} | {f(s['median'])} [{f(s['min'])}-{f(s['max'])}] | {goal_cols} |")
    for label, k in (("anonymous memory", "anon_kib"), ("PSS", "pss_kib")):
        s = out["extra"][k]
        print(f"| {label} | {fmt_kib(s['median'])} [{fmt_kib(s['min'])}-{fmt_kib(s['max'])}] | | |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
