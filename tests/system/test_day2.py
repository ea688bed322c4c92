"""Day-2 operations (issue 19) with real daemons: maintenance of a node or a
component (a master in maintenance rebooted never makes the cluster
unhealthy; a maintenance ends at its end time, recorded), acknowledgement of
a failing component (still failing, cleared when it recovers), forgetting a
node (gone from every view, history kept, back when its agent returns), who
may write (401 without the token, 403 from elsewhere than loopback without
any token), and every change in the node history with who and why. The
ZooKeeper parts (the state survives a leader kill -9; followers redirect
writes) are at the end."""

import os
import socket
import time
from types import SimpleNamespace

import pytest

import muster_harness as mh
from muster_harness import T, operator_write, set_rc, wait_until

FAST = dict(interval="100ms", timeout="2s", rise=1, fall=1)


def token_file(env, name, value):
    path = env.path(name)
    with open(path, "w") as f:
        f.write(value + "\n")
    os.chmod(path, 0o600)
    return path


def write_profiles(env):
    """A master and an agent profile, each one exec check whose exit code is
    in a file: returns (master rc file, agent rc file)."""
    if os.path.exists(env.path("msvc.rc")):
        return env.path("msvc.rc"), env.path("asvc.rc")
    m_cmd, m_rc = mh.exec_rc_script(env, "msvc", 0)
    env.write_profile("master", mh.profile_ini("master", [
        ("msvc", dict(check="exec", command=m_cmd, **FAST))], [("base", ["msvc"])]))
    a_cmd, a_rc = mh.exec_rc_script(env, "asvc", 0)
    env.write_profile("agent", mh.profile_ini("agent", [
        ("asvc", dict(check="exec", command=a_cmd, **FAST))], [("work", ["asvc"])]))
    return m_rc, a_rc


def start_cluster(env, aggr=None, stale_timeout="1s", agents_to=None, **aggr_kw):
    m_rc, a_rc = write_profiles(env)
    aggr = aggr or env.aggregator(expected_masters=["m1"], stale_timeout=stale_timeout,
                                  **aggr_kw).start()
    m1 = env.agent("m1", "master", agents_to or aggr, heartbeat="200ms").start()
    a1 = env.agent("a1", "agent", agents_to or aggr, heartbeat="200ms").start()
    aggr.wait_node("a1", lambda n: n["verdict"] == "healthy" and n["connected"], 10,
                   desc="a1 healthy and connected")
    aggr.wait_verdict("healthy", 10)
    return SimpleNamespace(aggr=aggr, m1=m1, a1=a1, m_rc=m_rc, a_rc=a_rc)


def node_events(aggr, node):
    return aggr.json(f"/v1/history/nodes?node={node}&order=asc&limit=1000")["events"]


def wait_event(aggr, node, event, desc=None, timeout=5):
    return wait_until(lambda: next((e for e in node_events(aggr, node) if e["event"] == event),
                                   None), timeout, desc=desc or f"{node}: {event} in history")


def ok(r, status=200):
    assert r.status_code == status, (r.status_code, r.text[:500])
    return r.json()


def other_address():
    """One of this machine's addresses that is not loopback, or None."""
    try:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.connect(("192.0.2.1", 9))
        addr = s.getsockname()[0]
        s.close()
        return None if addr.startswith("127.") else addr
    except OSError:
        return None


# ---------------------------------------------------------------- maintenance


@pytest.mark.no_valgrind(reason="reboots a master under a 1 s stale timeout and watches verdicts")
def test_master_in_maintenance_rebooted_never_unhealthy(env):
    c = start_cluster(env)
    aggr = c.aggr
    with mh.VerdictWatch(aggr) as w:
        body = ok(operator_write(aggr, "PUT", "/v1/nodes/m1/maintenance",
                                 {"reason": "kernel upgrade", "duration": "10m"}))
        assert body["node"] == "m1" and body["maintenance"]["reason"] == "kernel upgrade", body
        assert body["maintenance"]["by"].startswith("tester via loopback from 127.0.0.1"), body
        aggr.wait_node("m1", lambda n: n["verdict"] == "maintenance", 5, desc="m1 in maintenance")
        n = aggr.node("m1")
        assert n["maintenance"]["reason"] == "kernel upgrade" and n["maintenance"]["until"], n
        h = aggr.wait_health(lambda h: h["verdict"] == "degraded", 5, desc="cluster degraded")
        assert any(r["node"] == "m1" and r["state"] == "maintenance" and "kernel upgrade" in
                   r["message"] for r in h["reasons"]), h["reasons"]

        # The reboot: the agent dies, stays away past the stale timeout, comes back.
        c.m1.kill9()
        aggr.wait_node("m1", lambda n: not n["connected"], 5, desc="m1 disconnected")
        last = mh_epoch(aggr.node("m1")["last_seen"])
        wait_until(lambda: time.time() - last > 1.5, 10, scale=False,
                   desc="m1 silent past the stale timeout")
        assert aggr.node("m1")["verdict"] == "maintenance"
        c.m1.start()
        aggr.wait_node("m1", lambda n: n["connected"], 10, desc="m1 back")
        ok(operator_write(aggr, "DELETE", "/v1/nodes/m1/maintenance"))
        aggr.wait_verdict("healthy", 10)
    w.assert_never(lambda s: s.cluster == "unhealthy", "the cluster unhealthy while m1 was in "
                   "maintenance")
    assert w.node_verdicts("m1").count("unreachable") == 0, w.node_verdicts("m1")
    ev = [e for e in node_events(aggr, "m1") if e["event"].startswith("maintenance")]
    assert [e["event"] for e in ev] == ["maintenance", "maintenance_ended"], ev
    assert ev[0]["peer"].startswith("tester via loopback") and "kernel upgrade" in ev[0]["detail"]
    # The cluster history names the maintenance where it changed the verdict.
    hist = aggr.json("/v1/history/cluster?order=asc&limit=100")["changes"]
    assert any(v["verdict"] == "degraded" and any("kernel upgrade" in r["message"]
                                                  for r in v["reasons"]) for v in hist), hist


def mh_epoch(s):
    import datetime
    return datetime.datetime.strptime(s, "%Y-%m-%dT%H:%M:%S.%fZ").replace(
        tzinfo=datetime.timezone.utc).timestamp()


def test_maintenance_expires_on_time(env):
    c = start_cluster(env, stale_timeout="5s")
    aggr = c.aggr
    body = ok(operator_write(aggr, "PUT", "/v1/nodes/a1/components/asvc/maintenance",
                             {"reason": "disk swap", "duration": "2s"}))
    until = mh_epoch(body["maintenance"]["until"])
    comp = aggr.component("a1", "asvc")
    assert comp["maintenance"]["reason"] == "disk swap" and comp["state"] == "healthy", comp
    aggr.wait_node("a1", lambda n: n["verdict"] == "degraded", 5, desc="a1 degraded")
    m = aggr.get("/metrics").text
    assert 'muster_component_maintenance{node="a1",component="asvc"} 1' in m, m[-2000:]
    ev = wait_event(aggr, "a1", "maintenance_ended", timeout=T(10))
    assert ev["peer"] == "muster" and "end time" in ev["detail"], ev
    assert mh_epoch(ev["at"]) >= until - 0.01, (ev, until)
    assert mh_epoch(ev["at"]) < until + T(2), (ev, until)
    aggr.wait_node("a1", lambda n: n["verdict"] == "healthy", 5, desc="a1 healthy again")
    assert aggr.component("a1", "asvc")["maintenance"] is None
    assert "muster_component_maintenance{" not in aggr.get("/metrics").text


def test_acknowledged_failure_stays_failing_and_clears_on_recovery(env):
    c = start_cluster(env, stale_timeout="5s")
    aggr = c.aggr
    r = operator_write(aggr, "PUT", "/v1/nodes/a1/components/asvc/ack", {"reason": "known"})
    assert r.status_code == 409 and r.json()["error"]["code"] == "conflict", r.text
    set_rc(c.a_rc, 2)
    aggr.wait_node("a1", lambda n: n["verdict"] == "unhealthy", 5, desc="a1 unhealthy")
    body = ok(operator_write(aggr, "PUT", "/v1/nodes/a1/components/asvc/ack",
                             {"reason": "JIRA-42, being fixed"}))
    assert body["acknowledged"]["reason"] == "JIRA-42, being fixed", body
    aggr.wait_node("a1", lambda n: n["components"][0]["acknowledged"] is not None, 5)
    n = aggr.node("a1")
    assert n["verdict"] == "unhealthy" and n["components"][0]["state"] == "unhealthy", n
    assert any("acknowledged by tester" in r["message"] for r in n["reasons"]), n["reasons"]
    assert aggr.health()["verdict"] == "degraded"
    assert 'muster_component_acknowledged{node="a1",component="asvc"} 1' in aggr.get("/metrics").text
    wait_event(aggr, "a1", "acknowledged")
    set_rc(c.a_rc, 0)
    ev = wait_event(aggr, "a1", "acknowledgement_cleared", timeout=T(10))
    assert ev["peer"] == "muster" and "healthy again" in ev["detail"], ev
    aggr.wait_node("a1", lambda n: n["components"][0]["acknowledged"] is None, 5)
    assert "muster_component_acknowledged{" not in aggr.get("/metrics").text
    # A second failure is not acknowledged.
    set_rc(c.a_rc, 2)
    aggr.wait_node("a1", lambda n: n["verdict"] == "unhealthy", 5)
    assert aggr.component("a1", "asvc")["acknowledged"] is None


def test_bad_writes(env):
    c = start_cluster(env, stale_timeout="5s")
    aggr = c.aggr
    cases = [
        ("PUT", "/v1/nodes/nope/maintenance", {"reason": "x"}, 404, "not_found"),
        ("PUT", "/v1/nodes/a1/components/nope/maintenance", {"reason": "x"}, 404, "not_found"),
        ("PUT", "/v1/nodes/a1/maintenance", {}, 400, "bad_body"),
        ("PUT", "/v1/nodes/a1/maintenance", {"reason": ""}, 400, "bad_body"),
        ("PUT", "/v1/nodes/a1/maintenance", {"reason": "x", "duration": "soon"}, 400, "bad_body"),
        ("PUT", "/v1/nodes/a1/maintenance", {"reason": "x", "until": "2001-01-01T00:00:00Z"},
         400, "bad_body"),
        ("PUT", "/v1/nodes/a1/maintenance", {"reason": "x", "until": "2099-01-01T00:00:00Z",
                                             "duration": "1h"}, 400, "bad_body"),
        ("PUT", "/v1/nodes/a1/maintenance", {"reason": "x", "extra": 1}, 400, "bad_body"),
        ("PUT", "/v1/nodes/a1/maintenance", {"reason": "x" * 257}, 400, "bad_body"),
        ("DELETE", "/v1/nodes/a1/maintenance", None, 409, "conflict"),
        ("DELETE", "/v1/nodes/a1/components/asvc/ack", None, 409, "conflict"),
        ("DELETE", "/v1/nodes/a1", None, 409, "conflict"),     # connected
        ("DELETE", "/v1/nodes/m1", None, 409, "conflict"),     # connected, expected master
        ("DELETE", "/v1/nodes/nope", None, 404, "not_found"),
        ("PUT", "/v1/nodes/a1", {"reason": "x"}, 405, "method_not_allowed"),
        ("PUT", "/v1/nodes/a1/whatever", {"reason": "x"}, 405, "method_not_allowed"),
    ]
    for method, path, body, status, code in cases:
        r = operator_write(aggr, method, path, body)
        assert r.status_code == status, (method, path, body, r.status_code, r.text)
        assert r.json()["error"]["code"] == code, (method, path, r.text)
    r = operator_write(aggr, "PUT", "/v1/nodes/a1/maintenance", None, data=b"{" * 5000)
    assert r.status_code == 413, r.text
    r = operator_write(aggr, "PUT", "/v1/nodes/a1/maintenance", None, data=b"not json")
    assert r.status_code == 400, r.text
    assert aggr.node("a1")["maintenance"] is None


# ---------------------------------------------------------------- forget


def test_forgotten_node_leaves_every_view_and_keeps_its_history(env):
    c = start_cluster(env, stale_timeout="1s")
    aggr = c.aggr
    a2 = env.agent("a2", "agent", aggr, heartbeat="200ms").start()
    aggr.wait_node("a2", lambda n: n["verdict"] == "healthy", 10)
    r = operator_write(aggr, "DELETE", "/v1/nodes/a2")
    assert r.status_code == 409, r.text
    a2.stop()
    aggr.wait_node("a2", lambda n: n["verdict"] == "unreachable", 10, desc="a2 unreachable")
    aggr.wait_verdict("degraded", 5)
    body = ok(operator_write(aggr, "DELETE", "/v1/nodes/a2"))
    assert body["node"] == "a2" and body["forgotten"]["by"].startswith("tester"), body

    def gone():
        nodes = list(aggr.nodes())
        return "a2" not in nodes and aggr.get("/v1/nodes/a2").status_code == 404
    wait_until(gone, 5, desc="a2 gone from the API")
    aggr.wait_verdict("healthy", 5)
    assert 'node="a2"' not in aggr.get("/metrics").text
    dcos = aggr.get("/system/health/v1/nodes")
    assert dcos.status_code == 200 and "a2" not in dcos.text, dcos.text[:500]
    assert aggr.get("/system/health/v1/nodes/a2").status_code == 404
    # its history stays
    assert any(e["event"] == "forgotten" for e in node_events(aggr, "a2"))
    assert aggr.json("/v1/history?node=a2&limit=10")["changes"], "a2's changes are gone"

    # a restart does not bring it back from the database
    aggr.stop()
    aggr.start()
    aggr.wait_verdict("healthy", 10)
    assert "a2" not in list(aggr.nodes())

    # its agent returning brings it back like any node
    a2.start()
    aggr.wait_node("a2", lambda n: n["verdict"] == "healthy", 10, desc="a2 back")
    aggr.stop()
    aggr.start()
    aggr.wait_node("a2", lambda n: n is not None, 10, desc="a2 restored after a restart")


def test_forget_after_expires_silent_nodes(env):
    c = start_cluster(env, stale_timeout="1s", extra={"forget_after": "2s"})
    aggr = c.aggr
    c.a1.stop()
    ev = wait_event(aggr, "a1", "forgotten", timeout=T(15))
    assert ev["peer"] == "muster" and "forget_after" in ev["detail"], ev
    wait_until(lambda: "a1" not in list(aggr.nodes()), 5)
    # expected masters are never forgotten
    c.m1.stop()
    aggr.wait_node("m1", lambda n: n["verdict"] == "unreachable", 10)
    assert not any(e["event"] == "forgotten" for e in node_events(aggr, "m1"))


# ---------------------------------------------------------------- who may write


def test_write_needs_token_or_loopback(env):
    # No token at all: loopback writes, elsewhere 403.
    write_profiles(env)
    aggr = env.aggregator(expected_masters=["m1"], stale_timeout="5s")
    aggr.extra["listen_http"] = f"0.0.0.0:{aggr.http_port}"
    aggr = start_cluster(env, aggr=aggr.start()).aggr
    ok(operator_write(aggr, "PUT", "/v1/nodes/a1/maintenance", {"reason": "local"}))
    other = other_address()
    if other:
        r = operator_write(aggr, "DELETE", "/v1/nodes/a1/maintenance", host=other)
        assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden", r.text
        assert aggr.node("a1")["maintenance"] is not None
    else:
        print("note: no non-loopback address on this machine; the 403 is not checked")


def test_write_needs_the_admin_token(env):
    read = token_file(env, "read.token", "read-secret")
    admin = token_file(env, "admin.token", "admin-secret")
    c = start_cluster(env, stale_timeout="5s",
                      extra={"http_token_file": read, "http_admin_token_file": admin})
    aggr = c.aggr
    for token in [None, "read-secret", "wrong"]:
        r = operator_write(aggr, "PUT", "/v1/nodes/a1/maintenance", {"reason": "x"}, token=token)
        assert r.status_code == 401, (token, r.status_code, r.text)
        assert r.headers.get("WWW-Authenticate", "").startswith("Bearer"), r.headers
    assert aggr.node("a1")["maintenance"] is None
    body = ok(operator_write(aggr, "PUT", "/v1/nodes/a1/maintenance", {"reason": "x"}))
    assert body["maintenance"]["by"].startswith("tester via admin token from 127.0.0.1"), body


def test_write_needs_the_token_without_an_admin_token(env):
    read = token_file(env, "read.token", "read-secret")
    c = start_cluster(env, stale_timeout="5s", extra={"http_token_file": read})
    aggr = c.aggr
    r = operator_write(aggr, "PUT", "/v1/nodes/a1/maintenance", {"reason": "x"}, token=None)
    assert r.status_code == 401, r.text
    ok(operator_write(aggr, "PUT", "/v1/nodes/a1/maintenance", {"reason": "x"}))


# ---------------------------------------------------------------- ZooKeeper


@pytest.mark.no_valgrind(reason="leader kill -9 and failover under ZooKeeper")
def test_operator_state_survives_leader_kill9(env, zk, cluster_name):
    from zk_harness import ElectedAggregator, wait_one_leader
    write_profiles(env)
    aggrs = [ElectedAggregator(env, zk.hosts, cluster_name, "2s", id=f"aggr{i}",
                               stale_timeout="1s", expected_masters=["m1"]) for i in (1, 2)]
    for a in aggrs:
        a.start()
    leader, _ = wait_one_leader(aggrs)
    follower = next(a for a in aggrs if a is not leader)
    c = start_cluster(env, aggr=leader, agents_to=[leader, follower])
    # a follower redirects writes, method and body kept
    r = operator_write(follower, "PUT", "/v1/nodes/m1/maintenance", {"reason": "x"},
                       allow_redirects=False)
    assert r.status_code == 307 and r.headers["Location"] == \
        f"http://{leader.http_address}/v1/nodes/m1/maintenance", (r.status_code, r.headers)
    ok(operator_write(leader, "PUT", "/v1/nodes/m1/maintenance",
                      {"reason": "rolling upgrade", "duration": "1h"}))
    set_rc(c.a_rc, 2)
    leader.wait_node("a1", lambda n: n["verdict"] == "unhealthy", 5)
    ok(operator_write(leader, "PUT", "/v1/nodes/a1/components/asvc/ack", {"reason": "known"}))

    with mh.VerdictWatch(follower) as w:
        leader.kill9()
        new, _ = wait_one_leader([follower], timeout=15)
        assert new is follower
        new.wait_node("m1", lambda n: n["verdict"] == "maintenance", 15,
                      desc="m1 in maintenance on the new leader")
        n = new.node("m1")
        assert n["maintenance"]["reason"] == "rolling upgrade", n
        a1 = new.wait_node("a1", lambda n: n["connected"] and n["components"], 15,
                           desc="a1 reconnected to the new leader")
        assert a1["components"][0]["acknowledged"]["reason"] == "known", a1
        assert a1["verdict"] == "unhealthy", a1
        # the master reboots meanwhile
        c.m1.kill9()
        new.wait_node("m1", lambda n: not n["connected"], 15)
        c.m1.start()
        new.wait_node("m1", lambda n: n["connected"], 15)
    w.assert_never(lambda s: s.cluster == "unhealthy", "cluster unhealthy after the failover")
    # the new leader writes too, and clears on recovery
    ok(operator_write(new, "DELETE", "/v1/nodes/m1/maintenance"))
    set_rc(c.a_rc, 0)
    new.wait_node("a1", lambda n: n["components"][0]["acknowledged"] is None, 10)
    new.wait_verdict("healthy", 10)


# ---------------------------------------------------------------- musterctl


@pytest.mark.no_valgrind(reason="the writes of the other day2 tests, through musterctl; it runs under ASan and LSan in the AddressSanitizer pass; left out of memcheck for the 35-minute budget")
def test_musterctl_maint_ack_forget(env):
    from test_musterctl import ctl, ctl_env
    c = start_cluster(env, stale_timeout="1s")
    aggr = c.aggr
    server = ["--server", f"127.0.0.1:{aggr.http_port}"]
    e = dict(ctl_env(), MUSTER_OPERATOR="alice")
    rc, out, err = ctl(*server, "maint", "m1", "--reason", "kernel upgrade", "--for", "2h", env=e)
    assert rc == 0 and out.startswith("m1: in maintenance until ") and "kernel upgrade" in out, \
        (rc, out, err)
    assert aggr.node("m1")["maintenance"]["by"].startswith("alice via loopback"), aggr.node("m1")
    rc, out, err = ctl(*server, "nodes", env=e)
    assert "maintenance: kernel upgrade (by alice" in out, out
    rc, out, err = ctl(*server, "node", "m1", env=e)
    assert rc == 1 and "maintenance" in out, (rc, out)
    rc, out, err = ctl(*server, "maint", "--clear", "m1", env=e)
    assert rc == 0 and out == "m1: maintenance cleared\n", (rc, out, err)
    rc, out, err = ctl(*server, "maint", "--clear", "m1", env=e)
    assert rc == 3 and "409 conflict" in err and not out, (rc, out, err)
    rc, out, err = ctl(*server, "maint", "m1", env=e)
    assert rc == 64 and "--reason" in err, (rc, err)
    rc, out, err = ctl(*server, "maint", "m1", "--reason", "x", "--until", "soon", env=e)
    assert rc == 64, (rc, err)

    set_rc(c.a_rc, 2)
    aggr.wait_node("a1", lambda n: n["verdict"] == "unhealthy", 5)
    rc, out, err = ctl(*server, "ack", "a1", "asvc", "--reason", "JIRA-42", env=e)
    assert rc == 0 and out == "asvc on a1: acknowledged: JIRA-42\n", (rc, out, err)
    rc, out, err = ctl(*server, "node", "a1", env=e)
    assert rc == 2 and "acknowledged: JIRA-42 (by alice" in out, (rc, out)
    rc, out, err = ctl(*server, "--json", "ack", "--clear", "a1", "asvc", env=e)
    assert rc == 0 and '"acknowledged":null' in out, (rc, out, err)

    rc, out, err = ctl(*server, "forget", "a1", env=e)
    assert rc == 3 and "connected" in err, (rc, out, err)
    c.a1.stop()
    aggr.wait_node("a1", lambda n: not n["connected"], 5)
    rc, out, err = ctl(*server, "forget", "a1", env=e)
    assert rc == 0 and out == "a1: forgotten (its history is kept)\n", (rc, out, err)
    assert aggr.node("a1") is None
