"""The web dashboard (GET /) in a real browser: Debian's Chromium driven by
playwright-core from npm (tests/browser/dashboard.test.js, run with
`node --test`). This test starts the simulated DC/OS cluster of
test_startup.py (an aggregator, three masters and two agents running the
shipped profiles, each component an exec check of a marker file), brings
part of it up and hands the browser test the URL and the markers: the node
script then changes the cluster by creating and removing markers while it
watches the page.

Screenshots are kept under artifacts/dashboard/ (ignored by git)."""

import json
import os
import shutil
import signal
import subprocess

import pytest

import muster_harness as mh
from test_startup import DCOS, SHIPPED, stage_members, stage_names

pytestmark = pytest.mark.no_valgrind(
    reason="the dashboard in Chromium: no daemon code it alone reaches, and much time")

BROWSER_DIR = os.path.join(mh.REPO, "tests", "browser")
ARTIFACTS = os.path.join(mh.REPO, "artifacts", "dashboard")
CHROMIUM = "/usr/bin/chromium"


def test_dashboard_in_chromium(env, tmp_path):
    if not os.path.isdir(os.path.join(BROWSER_DIR, "node_modules", "playwright-core")):
        pytest.fail("playwright-core is not installed: run `npm ci` in tests/browser "
                    "(tests/run does)", pytrace=False)
    assert os.access(CHROMIUM, os.X_OK), "chromium is missing (deploy/install-deps installs it)"
    node = shutil.which("node")
    assert node, "node is missing"

    dcos = DCOS(env)
    dcos.start_all()
    for n in ("m1", "m2", "a1", "a2"):
        dcos.up_all(n)
    dcos.up_stage("m3", "diagnostics")   # m3 is still starting
    for n in ("m1", "m2", "a1", "a2"):
        dcos.wait_node(n, lambda x: x["verdict"] == "healthy" and x["startup"]["percent"] == 100,
                       timeout=10, desc=f"{n} healthy")
    dcos.wait_stage("m3", "diagnostics", "done")

    # An agent restarted: its reachability events are the newest in the timeline.
    dcos.agents["a2"].stop()
    dcos.wait_node("a2", lambda x: not x["connected"], timeout=5, desc="a2 disconnected")
    dcos.start("a2")   # with MUSTER_NODE=a2, or its checks find no markers
    dcos.wait_node("a2", lambda x: x["connected"] and x["verdict"] == "healthy", timeout=10,
                   desc="a2 back")

    os.makedirs(ARTIFACTS, exist_ok=True)
    plan = {
        "reconnected": "a2",
        "nodes": {n: dcos.roles[n] for n in dcos.nodes()},
        "starting": "m3",
        "next_stages": [stage_members("master", s) for s in stage_names("master")[1:3]],
        "flap": {"node": "a1", "component": "telegraf"},
        "master_fail": {"node": "m1", "component": "mesos-master"},
        "silent": "a2",
    }
    assert "telegraf" in SHIPPED["agent"]["components"]
    e = dict(os.environ,
             MUSTER_URL=f"http://127.0.0.1:{dcos.aggr.http_port}",
             MUSTER_MARKERS=dcos.markers,
             MUSTER_PLAN=json.dumps(plan),
             MUSTER_ARTIFACTS=ARTIFACTS,
             MUSTER_CHROMIUM=CHROMIUM,
             MUSTER_TIMEOUT_SCALE=str(mh.TIMEOUT_SCALE),
             MUSTER_AGGR_PID=str(dcos.aggr.proc.pid),
             MUSTER_AGENT_PIDS=json.dumps({n: a.proc.pid for n, a in dcos.agents.items()}))
    try:
        r = subprocess.run([node, "--test", "--test-reporter=spec", "dashboard.test.js"],
                           cwd=BROWSER_DIR, env=e, capture_output=True, text=True,
                           timeout=mh.T(240))
    finally:
        # the script freezes the aggregator and an agent (SIGSTOP) for a while
        dcos.aggr.proc.signal(signal.SIGCONT)
        for a in dcos.agents.values():
            if a.proc and a.proc.alive():
                a.proc.signal(signal.SIGCONT)
    out = r.stdout + r.stderr
    with open(os.path.join(ARTIFACTS, "node-test.log"), "w") as f:
        f.write(out)
    assert r.returncode == 0, f"node --test failed ({r.returncode}):\n{out[-6000:]}"


def test_dashboard_behind_a_follower(env, zk, cluster_name):
    """A follower serves the page itself and sends the browser on to the
    leader's dashboard, which then shows the data; when that leader is
    killed, the page finds the new one by itself."""
    from zk_harness import ElectedAggregator, wait_one_leader
    env.write_profile("agent", mh.profile_ini("agent", [
        ("c1", dict(check="exec", command="true", interval="10s", rise=1, fall=1))], [("work", ["c1"])]))
    aggrs = [ElectedAggregator(env, zk.hosts, cluster_name, "2s", id=f"aggr{i}") for i in (1, 2)]
    for a in aggrs:
        a.start()
    leader, _ = wait_one_leader(aggrs)
    follower = next(a for a in aggrs if a is not leader)
    r = follower.get("/", allow_redirects=False)
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/html"), r.status_code
    e = dict(os.environ,
             MUSTER_FOLLOWER_URL=f"http://{follower.http_address}",
             MUSTER_LEADER_URL=f"http://{leader.http_address}",
             MUSTER_LEADER_PID=str(leader.proc.pid),
             MUSTER_ARTIFACTS=ARTIFACTS, MUSTER_CHROMIUM=CHROMIUM,
             MUSTER_TIMEOUT_SCALE=str(mh.TIMEOUT_SCALE))
    # The script kills the leader with SIGKILL and watches the page find the
    # follower, which is elected.
    leader.proc.killed = True
    try:
        r = subprocess.run([shutil.which("node"), "--test", "--test-reporter=spec",
                            "follower.test.js"],
                           cwd=BROWSER_DIR, env=e, capture_output=True, text=True,
                           timeout=mh.T(120))
    finally:
        if leader.proc.alive():
            leader.proc.kill9()
    assert r.returncode == 0, f"node --test failed ({r.returncode}):\n{(r.stdout + r.stderr)[-6000:]}"
