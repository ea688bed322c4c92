#!/usr/bin/python3
"""Freshness of systemd checks: how long from a unit's state change in
systemd to the changed component state in the aggregator's API.

A real systemd user manager (tests/system/systemd_manager.py: its own cgroups
and mount namespace, torn down at the end) runs one unit from a unit file.
A real aggregator and agent (tests/system/muster_harness.py) watch it, the
agent over the manager's private socket. Each cycle stops the unit, waits
until GET /v1/nodes/{id} shows the component unhealthy, starts it again and
waits for healthy. The reader polls every --poll-ms over one keep-alive
connection and parses a body only when X-Muster-Index has moved.

Latency is measured from systemd's own timestamps of the change, read
afterwards with `systemctl show`: ActiveExitTimestampMonotonic for a stop
(the unit leaves `active`, which is what makes it unhealthy) and
ActiveEnterTimestampMonotonic for a start. They are CLOCK_MONOTONIC, like
time.monotonic(). For comparison, the time from `systemctl --user stop`
returning is printed too; it is shorter, and can be negative, because
systemctl returns only once the stop job has finished (the unit is
`inactive`), while the agent reports the unit as soon as it leaves `active`.
The agent's own share is the time from the event to the change's at_ms in
its spool (the commit time, at millisecond resolution).

Run as root (the manager needs cgroups and a mount namespace):
    MUSTER_BUILD_DIR=build /usr/bin/python3 bench/systemd_freshness.py [--cycles 100]
"""

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time

import requests

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "system"))

import muster_harness as mh  # noqa: E402
import systemd_manager as sdm  # noqa: E402

UNIT = "mst-fresh.service"
ANCHOR = "mst-fresh-anchor.service"
NODE = "b1"


def percentile(values, p):
    """Nearest-rank percentile."""
    s = sorted(values)
    k = max(0, min(len(s) - 1, int(round(p / 100.0 * len(s) + 0.5)) - 1))
    return s[k]


def summary(name, values_ms):
    return (f"{name:<34} n={len(values_ms):<4} p50={percentile(values_ms, 50):7.2f}  "
            f"p90={percentile(values_ms, 90):7.2f}  p99={percentile(values_ms, 99):7.2f}  "
            f"max={max(values_ms):7.2f}  mean={statistics.mean(values_ms):7.2f} ms")


class NodeWatcher:
    """Polls GET /v1/nodes/{id} until a component shows a state."""

    def __init__(self, port, node, component, poll_s):
        self.url = f"http://127.0.0.1:{port}/v1/nodes/{node}"
        self.component = component
        self.poll_s = poll_s
        self.http = requests.Session()
        self.http.trust_env = False
        self.index = None

    def state(self):
        r = self.http.get(self.url, timeout=2)
        r.raise_for_status()
        self.index = r.headers.get("X-Muster-Index")
        for c in r.json().get("components", []):
            if c.get("name") == self.component:
                return c.get("state")
        return None

    def wait_for(self, state, timeout=10.0):
        """Returns time.monotonic() at the first answer showing state."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            r = self.http.get(self.url, timeout=2)
            seen = time.monotonic()
            index = r.headers.get("X-Muster-Index")
            if index != self.index:
                self.index = index
                for c in r.json().get("components", []):
                    if c.get("name") == self.component and c.get("state") == state:
                        return seen
            time.sleep(self.poll_s)
        raise TimeoutError(f"{self.component} not {state} within {timeout}s")


def recorded_after(agent, event_monotonic):
    """ms from a systemd event (CLOCK_MONOTONIC s) to the agent's commit of
    the change to its spool (at_ms is realtime ms: 1 ms resolution)."""
    (at_ms,), = agent.spool_query("SELECT at_ms FROM changes ORDER BY seq DESC LIMIT 1")
    realtime_offset = time.time() - time.monotonic()
    return at_ms - (event_monotonic + realtime_offset) * 1000


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cycles", type=int, default=100, help="stop/start cycles (default 100)")
    ap.add_argument("--poll-ms", type=float, default=1.0, help="API poll period (default 1 ms)")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    args = ap.parse_args()
    if args.cycles < 1:
        ap.error("--cycles must be at least 1")

    work = tempfile.mkdtemp(prefix="mst-fresh-")
    logs = os.path.join(work, "logs")
    os.makedirs(logs)
    procs = mh.ProcessRegistry(logs)
    env = mh.TestEnv(work, procs)
    manager = sdm.SystemdManager(os.path.join(work, "systemd"))
    stop_ms, start_ms, from_systemctl_ms, agent_ms = [], [], [], []
    ok = False
    try:
        manager.start()
        manager.write_unit(UNIT, "[Unit]\nDescription=Freshness: a sleeper\n"
                                 "StartLimitIntervalSec=0\n"
                                 "[Service]\nExecStart=/bin/sleep infinity\n", reload=False)
        # systemd garbage-collects an inactive unit that nothing references,
        # and its timestamps with it: an active unit that wants it keeps it.
        manager.write_unit(ANCHOR, f"[Unit]\nWants={UNIT}\n"
                                   "[Service]\nExecStart=/bin/sleep infinity\n")
        manager.systemctl("start", ANCHOR, UNIT)

        env.write_profile("master", mh.profile_ini(
            "master", [("svc", dict(check="systemd", unit=UNIT, interval="1h"))],
            [("base", ["svc"])]))
        aggr = env.aggregator(id="bench-aggr", expected_masters=[NODE], log_level="info").start()
        agent = env.agent(NODE, "master", aggr, log_level="info",
                          extra={"systemd": manager.address}).start()
        watcher = NodeWatcher(aggr.http_port, NODE, "svc", args.poll_ms / 1000.0)
        mh.wait_until(lambda: watcher.state() == "healthy", 10, desc="svc healthy")

        for i in range(args.cycles):
            manager.systemctl("stop", UNIT)
            returned = time.monotonic()
            seen = watcher.wait_for("unhealthy")
            left = int(manager.show(UNIT, "ActiveExitTimestampMonotonic")
                       ["ActiveExitTimestampMonotonic"]) / 1e6
            if left == 0:
                raise RuntimeError(f"{UNIT} lost its timestamps (garbage-collected?)")
            stop_ms.append((seen - left) * 1000)
            from_systemctl_ms.append((seen - returned) * 1000)
            agent_ms.append(recorded_after(agent, left))

            manager.systemctl("start", UNIT)
            seen = watcher.wait_for("healthy")
            entered = int(manager.show(UNIT, "ActiveEnterTimestampMonotonic")
                          ["ActiveEnterTimestampMonotonic"]) / 1e6
            start_ms.append((seen - entered) * 1000)
            agent_ms.append(recorded_after(agent, entered))

        print(f"systemd freshness: {args.cycles} stop/start cycles, API polled every "
              f"{args.poll_ms:g} ms")
        print(summary("stop  -> unhealthy (from ActiveExit)", stop_ms))
        print(summary("start -> healthy   (from ActiveEnter)", start_ms))
        print(summary("both", stop_ms + start_ms))
        print(summary("stop  -> unhealthy (from systemctl)", from_systemctl_ms))
        print(summary("agent alone: change -> in its spool", agent_ms))
        ok = True
    finally:
        problems = procs.finalize()
        env.cleanup()
        manager.teardown()
        for p in problems:
            print(f"problem: {p}", file=sys.stderr)
        if args.keep or not ok or problems:
            print(f"work directory kept: {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    left = sdm.leftover_cgroups()
    if left:
        print(f"cgroups left behind: {left}", file=sys.stderr)
        return 1
    return 0 if ok and not problems else 1


if __name__ == "__main__":
    sys.exit(main())
