"""Verdicts end to end: real agents run real exec/http/tcp checks, the
aggregator turns them into component states, node verdicts and the cluster
verdict, as GET /v1/health and /v1/nodes show them."""

import datetime
import signal
import socket
import statistics
import time
from types import SimpleNamespace

import pytest

import muster_harness as mh
from muster_harness import T, mentions, set_rc, wait_until

FAST = dict(interval="100ms", timeout="2s", rise=1, fall=1)


def write_profiles(env, web_url, tcp_port, grace="0s"):
    svc_cmd, svc_rc = mh.exec_rc_script(env, "svc", 0)
    env.write_profile("master", mh.profile_ini("master", [
        ("svc", dict(check="exec", command=svc_cmd, **FAST)),
        ("web", dict(check="http", url=web_url, expect_status=200, **FAST)),
        ("port", dict(check="tcp", address=f"127.0.0.1:{tcp_port}", **FAST)),
    ], [("base", ["svc"]), ("serve", ["web", "port"])], grace=grace))
    w_cmd, w_rc = mh.exec_rc_script(env, "wsvc", 0)
    env.write_profile("agent", mh.profile_ini("agent", [
        ("wsvc", dict(check="exec", command=w_cmd, **FAST)),
    ], [("work", ["wsvc"])]))
    return svc_rc, w_rc


@pytest.fixture
def cluster(env):
    web = env.http_flag(200)
    port = env.tcp_flag()
    svc_rc, w_rc = write_profiles(env, web.url, port.port)
    aggr = env.aggregator(expected_masters=["m1"], stale_timeout="1s").start()
    m1 = env.agent("m1", "master", aggr).start()
    w1 = env.agent("w1", "agent", aggr).start()
    # Healthy with both nodes in: the verdict needs only the master, and a
    # worker that has not reported yet does not count against it.
    aggr.wait_health(lambda h: h.get("verdict") == "healthy" and
                     counts(h).get("agent") == {"healthy": 1}, timeout=5,
                     desc="healthy, with m1 and w1 reported")
    return SimpleNamespace(env=env, aggr=aggr, m1=m1, w1=w1, web=web, port=port, svc_rc=svc_rc,
                           w_rc=w_rc)


def counts(h):
    """/v1/health counts without zero entries."""
    return {role: {v: n for v, n in by.items() if n} for role, by in h["counts"].items()
            if any(by.values())}


def wait_states(c, node, comp, comp_state_, node_verdict, cluster_verdict, timeout=3.0):
    """Waits until the component, its node and the cluster all show the
    expected states; returns (node json, health json)."""
    n = c.aggr.wait_node(node, lambda n: n.get("verdict") == node_verdict and any(
        x.get("name") == comp and x.get("state") == comp_state_ for x in n.get("components", [])),
        timeout, desc=f"{node}/{comp} {comp_state_} and node {node_verdict}")
    h = c.aggr.wait_verdict(cluster_verdict, timeout)
    return n, h


def test_all_healthy_view(cluster):
    a = cluster.aggr
    r = a.get("/v1/health")
    assert r.status_code == 200
    h = r.json()
    assert h["verdict"] == "healthy"
    assert h["reasons"] == [] and h["root_causes"] == [], h
    assert counts(h) == {"master": {"healthy": 1}, "agent": {"healthy": 1}}, h["counts"]
    assert h["leader"]["id"] == "aggr1"
    assert isinstance(h["leader"]["epoch"], int)
    assert mh.RFC3339_MS.match(h["since"]), h["since"]
    assert "X-Muster-Index" in r.headers, dict(r.headers)
    assert int(r.headers["X-Muster-Index"]) == h["index"]

    nodes = a.nodes()
    assert set(nodes) == {"m1", "w1"}
    for nid, role, agent in (("m1", "master", cluster.m1), ("w1", "agent", cluster.w1)):
        n = nodes[nid]
        assert n["role"] == role
        assert n["verdict"] == "healthy"
        assert n["connected"] is True
        assert n["hostname"] == socket.gethostname()
        assert n["boot_id"] == agent.boot_id
        assert n["profile_drift"] is False
        assert mh.RFC3339_MS.match(n["last_seen"]), n["last_seen"]

    m1 = a.node("m1")
    comps = {c["name"]: c for c in m1["components"]}
    assert set(comps) == {"svc", "web", "port"}
    assert {n: c["check"] for n, c in comps.items()} == {"svc": "exec", "web": "http", "port": "tcp"}
    for c in comps.values():
        assert c["state"] == "healthy", c
        assert (c["rise"], c["fall"]) == (1, 1), c
    assert "svc says 0" in comps["svc"]["output"]


def test_startup_progress_when_healthy(cluster):
    n = cluster.aggr.nodes()["m1"]
    assert n["startup"]["percent"] == 100, n["startup"]
    st = cluster.aggr.node("m1")["startup"]
    assert [s["name"] for s in st["stages"]] == ["base", "serve"], st
    assert all(s["state"] == "done" for s in st["stages"]), st


def svc_of(n):
    return next((x for x in n.get("components", []) if x.get("name") == "svc"), {})


def test_exec_check_states(cluster):
    c = cluster
    # CRITICAL -> unhealthy component, unhealthy node, unhealthy cluster
    set_rc(c.svc_rc, 2)
    n, h = wait_states(c, "m1", "svc", "unhealthy", "unhealthy", "unhealthy")
    assert mentions(h["reasons"], "m1", "svc"), h["reasons"]
    assert mentions(h["root_causes"], "m1", "svc"), h["root_causes"]
    assert mentions(n["reasons"], component="svc"), n["reasons"]
    svc = next(x for x in n["components"] if x["name"] == "svc")
    assert "svc says 2" in svc["output"], svc
    # WARNING -> warning component; master degraded -> cluster degraded
    set_rc(c.svc_rc, 1)
    n, h = wait_states(c, "m1", "svc", "warning", "degraded", "degraded")
    assert mentions(h["reasons"], "m1", "svc"), h["reasons"]
    # UNKNOWN -> unknown component; that counts as unhealthy
    set_rc(c.svc_rc, 3)
    n, _ = wait_states(c, "m1", "svc", "unknown", "unhealthy", "unhealthy")
    assert "svc says 3" in svc_of(n)["output"], svc_of(n)
    set_rc(c.svc_rc, 0)
    wait_states(c, "m1", "svc", "healthy", "healthy", "healthy")
    # an exit code outside 0..3 is UNKNOWN as well
    set_rc(c.svc_rc, 7)
    n, _ = wait_states(c, "m1", "svc", "unknown", "unhealthy", "unhealthy")
    assert "svc says 7" in svc_of(n)["output"], svc_of(n)
    # back to OK
    set_rc(c.svc_rc, 0)
    wait_states(c, "m1", "svc", "healthy", "healthy", "healthy")


def test_http_check_flip(cluster):
    c = cluster
    c.web.status = 503
    n, h = wait_states(c, "m1", "web", "unhealthy", "unhealthy", "unhealthy")
    assert mentions(h["reasons"], "m1", "web"), h["reasons"]
    assert mentions(h["root_causes"], "m1", "web"), h["root_causes"]
    c.web.status = 200
    wait_states(c, "m1", "web", "healthy", "healthy", "healthy")


def test_tcp_check_flip(cluster):
    c = cluster
    c.port.close()
    n, h = wait_states(c, "m1", "port", "unhealthy", "unhealthy", "unhealthy")
    assert mentions(h["reasons"], "m1", "port"), h["reasons"]
    c.port.open()
    wait_states(c, "m1", "port", "healthy", "healthy", "healthy")


def test_failed_agent_node_degrades_cluster(cluster):
    c = cluster
    set_rc(c.w_rc, 2)
    n, h = wait_states(c, "w1", "wsvc", "unhealthy", "unhealthy", "degraded")
    assert mentions(h["reasons"], "w1", "wsvc"), h["reasons"]
    assert counts(h) == {"master": {"healthy": 1}, "agent": {"unhealthy": 1}}, h["counts"]
    set_rc(c.w_rc, 0)
    wait_states(c, "w1", "wsvc", "healthy", "healthy", "healthy")


def test_root_cause_follows_stage_graph(cluster):
    """web (stage serve) comes after svc (stage base): with both failing, svc
    is the root cause and web is only blocked."""
    c = cluster
    set_rc(c.svc_rc, 2)
    c.web.status = 503
    c.aggr.wait_node("m1", lambda n: {x["name"]: x["state"] for x in n["components"]}.get("web")
                     == "unhealthy" and {x["name"]: x["state"] for x in n["components"]}.get("svc")
                     == "unhealthy", 3, desc="svc and web unhealthy")
    h = c.aggr.wait_verdict("unhealthy")
    roots = {(r.get("node"), r.get("component")) for r in h["root_causes"]}
    assert ("m1", "svc") in roots, h["root_causes"]
    assert ("m1", "web") not in roots, h["root_causes"]
    assert mentions(h["reasons"], "m1", "web") or mentions(c.aggr.node("m1")["reasons"], "m1", "web"), \
        "the blocked component web is named nowhere among the reasons"


def test_missing_expected_master(env):
    svc_cmd, _ = mh.exec_rc_script(env, "svc", 0)
    env.write_profile("master", mh.profile_ini("master", [
        ("svc", dict(check="exec", command=svc_cmd, **FAST))], [("base", ["svc"])]))
    aggr = env.aggregator(expected_masters=["m1", "m9"], stale_timeout="1s",
                          extra={"first_contact_window": "2s"}).start()
    # no node has reported yet: no data
    h = aggr.health()
    assert h["verdict"] == "unknown", h
    env.agent("m1", "master", aggr).start()
    aggr.wait_node("m1", lambda n: n["verdict"] == "healthy", 5, desc="m1 healthy")
    # Within the first-contact window m9 is awaited, not missing (the
    # window's edges are test_verdict_edges.py's).
    if aggr.node("m9")["verdict"] != "missing":
        assert aggr.health()["verdict"] == "starting"
    h = aggr.wait_verdict("unhealthy", 5)
    assert mentions(h["reasons"], node="m9"), h["reasons"]
    nodes = aggr.nodes()
    assert "m9" in nodes, nodes
    assert nodes["m9"]["verdict"] == "missing", nodes["m9"]
    assert nodes["m9"]["role"] == "master", nodes["m9"]
    assert nodes["m1"]["verdict"] == "healthy"


def test_heartbeats_keep_an_idle_node_reachable(cluster):
    """Nothing changes for 2.5 stale timeouts: heartbeats alone must keep both
    nodes reachable and the cluster healthy."""
    c = cluster
    seen = set()
    # Sampled over a window, deliberately: staying reachable is the point.
    deadline = time.monotonic() + 2.5
    while time.monotonic() < deadline:
        nodes = c.aggr.nodes()
        seen |= {(nid, n["verdict"]) for nid, n in nodes.items()}
        seen.add(("cluster", c.aggr.health()["verdict"]))
        time.sleep(0.05)
    assert seen == {("m1", "healthy"), ("w1", "healthy"), ("cluster", "healthy")}, seen


def _one_svc_master(env):
    svc_cmd, _ = mh.exec_rc_script(env, "svc", 0)
    env.write_profile("master", mh.profile_ini("master", [
        ("svc", dict(check="exec", command=svc_cmd, **FAST))], [("base", ["svc"])]))


def test_agent_leaves_a_mute_aggregator(env):
    """An aggregator that accepts the connection but never answers the Hello:
    the agent gives up on it (handshake timeout) and reaches the other one."""
    _one_svc_master(env)
    mute = env.silent_peer()

    class Mute:
        stream_port = mute.port
    aggr = env.aggregator(expected_masters=["m1"], stale_timeout="1s").start()
    env.agent("m1", "master", [Mute, aggr]).start()
    aggr.wait_node("m1", lambda n: n["verdict"] == "healthy" and n["connected"], 8,
                   desc="m1 reached the second aggregator")
    aggr.wait_verdict("healthy")
    assert mute.accepted == 0 or mute.closed_by_peer >= 1, \
        "the agent never closed its connection to the mute aggregator"


def test_agent_leaves_an_aggregator_that_goes_silent(env, metric):
    """After a Welcome, an agent that hears nothing for three heartbeat
    intervals (3 x 200ms) drops the connection and tries the other
    aggregators."""
    _one_svc_master(env)
    peer = env.welcome_then_silent_peer(heartbeat_ms=200)

    class Peer:
        stream_port = peer.port
    aggr = env.aggregator(expected_masters=["m1"], stale_timeout="1s")   # not listening yet
    env.agent("m1", "master", [Peer, aggr]).start()
    wait_until(peer.welcomed, 5, desc="the agent said Hello to the silent peer")
    aggr.start()
    wait_until(peer.closed, 3, desc="the agent dropped the silent aggregator")
    silence = peer.closed()[0][2] - peer.welcomed()[0][2]
    metric("agent: Welcome -> drop of a silent aggregator", silence * 1000, "ms")
    assert 0.5 <= silence <= T(1.5), \
        f"the agent dropped the silent aggregator {silence:.2f}s after its Welcome (3 heartbeats = 0.6s)"
    aggr.wait_node("m1", lambda n: n["verdict"] == "healthy" and n["connected"], 5,
                   desc="m1 moved to the real aggregator")


def _rfc3339_to_epoch(s):
    return datetime.datetime.strptime(s, "%Y-%m-%dT%H:%M:%S.%fZ").replace(
        tzinfo=datetime.timezone.utc).timestamp()


def test_stopped_agent_becomes_unreachable(cluster):
    c = cluster
    c.w1.proc.signal(signal.SIGSTOP)
    try:
        n = c.aggr.wait_node("w1", lambda n: n["verdict"] == "unreachable", 1 + 3,
                             desc="w1 unreachable")
        seen_at = time.time()
        h = c.aggr.wait_verdict("degraded")
        assert mentions(h["reasons"], node="w1"), h["reasons"]
        # only silence longer than stale_timeout (1s) makes a node unreachable
        silent_for = seen_at - _rfc3339_to_epoch(n["last_seen"])
        assert silent_for >= 0.95, \
            f"w1 was unreachable after only {silent_for:.2f}s of silence (stale_timeout 1s): {n}"
    finally:
        c.w1.proc.signal(signal.SIGCONT)
    c.aggr.wait_node("w1", lambda n: n["verdict"] == "healthy", 5, desc="w1 healthy after SIGCONT")
    c.aggr.wait_verdict("healthy", 5)


def test_killed_master_unreachable_then_back(cluster):
    c = cluster
    c.m1.kill9()
    c.aggr.wait_node("m1", lambda n: n["verdict"] == "unreachable", 1 + 3, desc="m1 unreachable")
    h = c.aggr.wait_verdict("unhealthy")
    assert mentions(h["reasons"], node="m1"), h["reasons"]
    assert c.aggr.nodes()["m1"]["connected"] is False
    c.m1.start()
    c.aggr.wait_node("m1", lambda n: n["verdict"] == "healthy", 5, desc="m1 healthy after restart")
    c.aggr.wait_verdict("healthy", 5)
    assert c.aggr.nodes()["m1"]["connected"] is True


def test_freshness_latency(cluster, metric):
    """Time from flipping an exec check's flag file to /v1/health changing
    (exec interval 100ms, rise=fall=1), polled every 5 ms."""
    c = cluster
    down, up = [], []
    for _ in range(4):
        for rc, verdict, out in ((2, "unhealthy", down), (0, "healthy", up)):
            t0 = time.monotonic()
            set_rc(c.svc_rc, rc)
            deadline = t0 + T(3)
            while True:
                if c.aggr.health()["verdict"] == verdict:
                    out.append(time.monotonic() - t0)
                    break
                assert time.monotonic() < deadline, f"/v1/health not {verdict} 3s after the flip"
                time.sleep(0.005)
    lat = sorted(down + up)
    metric("flag flip -> /v1/health median latency", statistics.median(lat) * 1000, "ms")
    metric("flag flip -> /v1/health max latency", lat[-1] * 1000, "ms")
    assert lat[-1] < T(3)


def test_startup_grace_reports_starting(env):
    """Inside the startup grace, with a fresh boot id, a component that has
    never been healthy counts as starting; once healthy, a failure is a
    failure."""
    svc_cmd, svc_rc = mh.exec_rc_script(env, "svc", 2)
    env.write_profile("master", mh.profile_ini("master", [
        ("svc", dict(check="exec", command=svc_cmd, **FAST))], [("base", ["svc"])], grace="10m"))
    aggr = env.aggregator(expected_masters=["m1"], stale_timeout="1s").start()
    agent = env.agent("m1", "master", aggr).start()
    n = aggr.wait_node("m1", lambda n: n["verdict"] == "starting" and n["components"]
                       and n["components"][0]["state"] == "starting", 5,
                       desc="m1 starting with svc starting")
    assert n["startup"]["percent"] < 100, n["startup"]
    aggr.wait_verdict("starting")
    # Several failing checks later it is still only starting.
    log = agent.proc.stderr_size()
    wait_until(lambda: agent.proc.stderr_since(log).count("component svc: result") >= 4, 3,
               desc="four more runs of svc")
    assert aggr.component("m1", "svc")["state"] == "starting"
    set_rc(svc_rc, 0)
    n = aggr.wait_node("m1", lambda n: n["verdict"] == "healthy", 3, desc="m1 healthy")
    assert n["startup"]["percent"] == 100, n["startup"]
    aggr.wait_verdict("healthy")
    set_rc(svc_rc, 2)
    aggr.wait_node("m1", lambda n: n["verdict"] == "unhealthy" and n["components"][0]["state"]
                   == "unhealthy", 3, desc="m1 unhealthy after having been healthy")
    aggr.wait_verdict("unhealthy")
