"""An agent that cannot record its state says so (issue 17: "when an agent's
spool disk is full and all its checks fail, the node stayed healthy with no
reasons").

The agent's spool lives on a small tmpfs of the test's own, which the test
fills. Then the node's checks fail: the agent cannot commit the changes, so it
reports a fault in its heartbeats, and the node must turn unhealthy within a
few heartbeats with a reason naming the cause (never stay healthy), and be a
root cause. Once the disk has room again the fault ends, the failing checks'
changes are committed and arrive, and fixing the checks makes the node
healthy. The changes made after the disk freed are compared row by row in the
agent's spool and the aggregator's database.

A faulty agent makes the cluster degraded, a faulty master unhealthy."""

import os
import re
import time
import uuid

import pytest

import muster_harness as mh
from muster_harness import T, wait_until
from test_durability import assert_spool_matches_aggregator, wait_caught_up
from test_hostile_text import assert_log_lines_are_whole
from test_storage import fill, small_fs  # noqa: F401 (a fixture)

COMPONENTS = ["c1", "c2"]
HEARTBEAT_S = 0.2
FAULT_RE = re.compile(r"^(\S+): the agent cannot record its state: writing the spool (\S+) failed: "
                      r"database or disk is full \(since (\S+)\)$")


def write_profiles(env, faulty):
    """A master and an agent role, each with two exec checks read from rc
    files (rise and fall 1), run every 100 ms on the faulty node and every
    10 s on the other (the machine is shared: the watch must not starve):
    {node: {component: rc_file}}."""
    rcs = {}
    for node, role in (("m1", "master"), ("a1", "agent")):
        comps = []
        for c in COMPONENTS:
            cmd, rc_file = mh.exec_rc_script(env, f"{node}-{c}", 0)
            rcs.setdefault(node, {})[c] = rc_file
            comps.append((c, dict(check="exec", command=cmd,
                                  interval="100ms" if node == faulty else "10s", timeout="1s",
                                  rise=1, fall=1)))
        env.write_profile(role, mh.profile_ini(role, comps, [("base", COMPONENTS)]))
    return rcs


def node_healthy(n):
    return n is not None and n["verdict"] == "healthy"


def fault_reasons(body, node_id):
    return [r for r in body.get("reasons", [])
            if r.get("node") == node_id and r.get("component") is None
            and FAULT_RE.match(r.get("message") or "")]


def spool_changes_after(ag, seq):
    return ag.spool_query("SELECT seq, component, from_state, to_state, at_ms FROM changes "
                          "WHERE seq > ? ORDER BY seq", (seq,))


@pytest.mark.no_valgrind(
    reason="a timed scenario (a fault seen within a few heartbeats, held for seconds, then "
           "cleared), ~20x slower under valgrind; the wire test below runs there")
@pytest.mark.parametrize("faulty,cluster_during", [("a1", "degraded"), ("m1", "unhealthy")])
def test_spool_disk_full_makes_the_node_unhealthy_until_it_records_again(env, small_fs, metric,
                                                                          faulty, cluster_during):
    rcs = write_profiles(env, faulty)
    aggr = env.aggregator(expected_masters=["m1"], stale_timeout="5s").start()
    agents = {}
    for node, role in (("m1", "master"), ("a1", "agent")):
        ag = env.agent(node, role, aggr, heartbeat=f"{int(HEARTBEAT_S * 1000)}ms",
                       log_level="info")
        if node == faulty:
            ag.spool = os.path.join(small_fs, f"{node}.spool")
        agents[node] = ag.start()
    ag = agents[faulty]
    aggr.wait_verdict("healthy", timeout=10)
    wait_until(lambda: node_healthy(aggr.node(faulty)), 5, desc=f"{faulty} healthy")
    wait_caught_up(ag, aggr, 10)
    seq_before = ag.max_seq()
    assert aggr.node(faulty)["agent_fault"] is None

    with mh.VerdictWatch(aggr) as watch:
        # The disk fills, then every check of the node fails: nothing can be
        # recorded.
        filler = os.path.join(small_fs, "filler")
        fill(filler)
        log_at = ag.proc.stderr_size()
        t_fail = time.monotonic()
        for rc_file in rcs[faulty].values():
            mh.set_rc(rc_file, 2)

        n = aggr.wait_node(faulty, lambda n: n["verdict"] == "unhealthy" and fault_reasons(n, faulty),
                           timeout=T(5 * HEARTBEAT_S + 0.5),
                           desc=f"{faulty} unhealthy with the disk-full fault within a few "
                                "heartbeats")
        t_seen = time.monotonic()
        metric(f"spool disk full on {faulty}: the fault seen after the checks failed",
               (t_seen - t_fail) * 1000, "ms")
        m = FAULT_RE.match(fault_reasons(n, faulty)[0]["message"])
        assert m.group(1) == faulty and m.group(2) == ag.spool, n["reasons"]
        assert n["agent_fault"]["message"] == (f"writing the spool {ag.spool} failed: "
                                               "database or disk is full"), n["agent_fault"]
        assert n["agent_fault"]["since"] == m.group(3)
        # It is a root cause of its own, and the cluster says so.
        assert any(r["node"] == faulty and r["component"] is None and r["state"] == "unhealthy"
                   and "cannot record its state" in r["message"]
                   for r in n["root_causes"]), n["root_causes"]
        h = aggr.wait_health(lambda h: h["verdict"] == cluster_during and fault_reasons(h, faulty),
                             timeout=T(1), desc=f"cluster {cluster_during} naming the fault")
        assert any(r["node"] == faulty and r["component"] is None for r in h["root_causes"]), h

        # The fault holds while the agent keeps failing: several retries.
        wait_until(lambda: ag.proc.stderr_since(log_at).count("cannot record") >= 6, T(5),
                   desc="the agent retried recording while the disk is full")
        assert ag.max_seq() == seq_before, "a change was recorded on a full disk"
        n = aggr.node(faulty)
        assert n["verdict"] == "unhealthy" and fault_reasons(n, faulty), n
        # What the aggregator shows of the components is what was recorded.
        assert {c["name"]: c["state"] for c in n["components"]} == \
            {c: "healthy" for c in COMPONENTS}

        # Room again: the fault ends and the failing checks' changes arrive.
        os.unlink(filler)
        t_freed = time.monotonic()
        freed_ms = mh.now_ms()
        n = aggr.wait_node(faulty, lambda n: n["agent_fault"] is None and all(
            c["state"] == "unhealthy" for c in n["components"]), timeout=T(3),
            desc="the fault cleared and the failing checks' states arrived")
        metric(f"spool disk freed on {faulty}: the true states arrived after",
               (time.monotonic() - t_freed) * 1000, "ms")
        assert n["verdict"] == "unhealthy" and not fault_reasons(n, faulty), n["reasons"]
        for c in COMPONENTS:
            assert any(r["component"] == c and r["state"] == "unhealthy" for r in n["reasons"]), \
                n["reasons"]

        # Fixed: healthy.
        t_fixed = time.monotonic()
        for rc_file in rcs[faulty].values():
            mh.set_rc(rc_file, 0)
        aggr.wait_node(faulty, node_healthy, timeout=T(3), desc=f"{faulty} healthy once fixed")
        aggr.wait_verdict("healthy", timeout=T(3))

    # Never healthy from a few heartbeats after the checks failed until they
    # were fixed: not while the fault was on, nor while it cleared.
    late = t_fail + T(5 * HEARTBEAT_S + 0.5)
    watch.assert_never(
        lambda s: late <= s.t < t_fixed and s.node_verdict(faulty) in ("healthy", None),
        f"{faulty} healthy (or gone) while its checks failed")
    watch.assert_never(
        lambda s: late <= s.t < t_fixed and s.cluster == "healthy",
        "the cluster healthy while a node's checks failed")
    assert cluster_during in watch.cluster_verdicts(), watch.cluster_verdicts()

    # Row by row: the changes made after the disk freed, in the spool and in
    # the aggregator's database.
    wait_caught_up(ag, aggr, 10)
    rows = spool_changes_after(ag, seq_before)
    assert [r[0] for r in rows] == list(range(seq_before + 1, seq_before + 5)), rows
    assert sorted((r[1], r[2], r[3]) for r in rows[:2]) == \
        [(c, "healthy", "unhealthy") for c in COMPONENTS], rows
    assert sorted((r[1], r[2], r[3]) for r in rows[2:]) == \
        [(c, "unhealthy", "healthy") for c in COMPONENTS], rows
    assert all(r[4] >= freed_ms for r in rows), (freed_ms, rows)
    held = aggr.query("SELECT seq, component, from_state, to_state, at_ms FROM changes "
                      "WHERE node_id=? AND spool_id=? AND seq > ? ORDER BY seq",
                      (faulty, ag.spool_id(), seq_before))
    assert [tuple(r) for r in held] == [tuple(r) for r in rows]
    assert_spool_matches_aggregator(ag, aggr)



@pytest.mark.no_valgrind(reason="a timed scenario, ~20x slower under valgrind")
def test_a_fault_outlives_the_failure_it_could_not_record(env, small_fs, metric):
    """A check that fails and recovers while the disk is full leaves nothing
    to record, but the agent still cannot record: the fault stays until a
    write succeeds (the agent's retry timer tries one every second), and
    then the node is healthy without a change in the spool."""
    rcs = write_profiles(env, "a1")
    aggr = env.aggregator(stale_timeout="5s").start()
    ag = env.agent("a1", "agent", aggr, heartbeat=f"{int(HEARTBEAT_S * 1000)}ms",
                   log_level="info")
    ag.spool = os.path.join(small_fs, "a1.spool")
    ag.start()
    wait_until(lambda: node_healthy(aggr.node("a1")), 10, desc="a1 healthy")
    wait_caught_up(ag, aggr, 10)
    seq_before = ag.max_seq()

    with mh.VerdictWatch(aggr) as watch:
        filler = os.path.join(small_fs, "filler")
        fill(filler)
        t_fail = time.monotonic()
        mh.set_rc(rcs["a1"]["c1"], 2)
        aggr.wait_node("a1", lambda n: fault_reasons(n, "a1"), timeout=T(5 * HEARTBEAT_S + 0.5),
                       desc="a1's fault")
        log_at = ag.proc.stderr_size()
        mh.set_rc(rcs["a1"]["c1"], 0)
        # c1 is healthy again, as recorded: nothing waits to be recorded, and
        # the retry timer's small writes keep failing.
        wait_until(lambda: ag.proc.stderr_since(log_at).count("database or disk is full") >= 2,
                   T(5), desc="the agent's retries failing while the disk is full")
        n = aggr.node("a1")
        assert n["verdict"] == "unhealthy" and fault_reasons(n, "a1"), n
        os.unlink(filler)
        t_freed = time.monotonic()
        aggr.wait_node("a1", node_healthy, timeout=T(3), desc="a1 healthy once a write succeeds")
        metric("spool disk freed with nothing to record: the fault cleared after",
               (time.monotonic() - t_freed) * 1000, "ms")
    watch.assert_never(lambda s: t_fail + T(5 * HEARTBEAT_S + 0.5) <= s.t < t_freed
                       and s.node_verdict("a1") in ("healthy", None),
                       "a1 healthy while its agent could not record")
    assert ag.max_seq() == seq_before
    assert aggr.node("a1")["agent_fault"] is None


# --- the wire: what the aggregator takes from a heartbeat -------------------------


def foreign_node(env, aggr, node_id):
    """A foreign client streaming as node_id, every component healthy."""
    cl = mh.StreamClient(aggr.stream_port)
    r = cl.hello(node_id, "agent", uuid.uuid4().hex, 0, digest=env.profile_digest("agent"))
    assert r.WhichOneof("body") == "welcome", r
    mk = mh.ChangeMaker(COMPONENTS)
    mk.state = {c: mh.pb().STATE_HEALTHY for c in COMPONENTS}
    cl.send(mk.snapshot())
    aggr.wait_node(node_id, node_healthy, timeout=3, desc=f"{node_id} healthy")
    return cl


def heartbeat(cl, fault="", since_ms=0):
    cl.send(mh.pb().Envelope(heartbeat=mh.pb().Heartbeat(sent_ms=mh.now_ms(), fault=fault,
                                                         fault_since_ms=since_ms)))


def test_a_heartbeat_fault_is_shown_kept_while_away_and_capped(env):
    env.write_profile("agent", mh.profile_ini("agent", [
        (c, dict(check="exec", command="true", interval="10s")) for c in COMPONENTS
    ], [("base", COMPONENTS)]))
    aggr = env.aggregator(stale_timeout="30s").start()
    cl = foreign_node(env, aggr, "f1")
    offset = aggr.log_size()

    # A fault: unhealthy, the fault as sent (control characters and all, as
    # JSON escapes them) and since when the agent says.
    fault = "the disk is on fire\n<2>aggregatord: forged"
    since_ms = mh.now_ms() - 5000
    heartbeat(cl, fault, since_ms)
    n = aggr.wait_node("f1", lambda n: n["verdict"] == "unhealthy", timeout=3,
                       desc="f1 unhealthy with a fault")
    since = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(since_ms / 1000)) + \
        f".{since_ms % 1000:03d}Z"
    assert n["agent_fault"] == {"message": fault, "since": since}, n["agent_fault"]
    assert n["reasons"][0]["message"] == \
        f"f1: the agent cannot record its state: {fault} (since {since})", n["reasons"]
    new = wait_until(lambda: (lambda t: t if "cannot record its state" in t else None)(
        aggr.log_since(offset)), 3, desc="the fault logged")
    assert_log_lines_are_whole(new)

    # It ends with a heartbeat without one.
    heartbeat(cl)
    n = aggr.wait_node("f1", node_healthy, timeout=3, desc="f1 healthy once the fault ends")
    assert n["agent_fault"] is None and not n["reasons"], n

    # A fault stays while the agent is away: its disk is as full as it was.
    heartbeat(cl, "writing the spool /x failed: disk I/O error", mh.now_ms())
    aggr.wait_node("f1", lambda n: n["agent_fault"] is not None, timeout=3, desc="a fault")
    cl.close()
    n = aggr.wait_node("f1", lambda n: not n["connected"], timeout=3, desc="f1 disconnected")
    assert n["verdict"] == "unhealthy" and n["agent_fault"]["message"].endswith("disk I/O error")

    # Capped: 256 bytes pass, 257 are refused and change nothing.
    cl = foreign_node(env, aggr, "f2")
    heartbeat(cl, "é" * 128, mh.now_ms())
    n = aggr.wait_node("f2", lambda n: n["agent_fault"] is not None, timeout=3, desc="f2's fault")
    assert n["agent_fault"]["message"] == "é" * 128
    heartbeat(cl)
    aggr.wait_node("f2", node_healthy, timeout=3, desc="f2 healthy")
    heartbeat(cl, "x" * 257, mh.now_ms())
    r = cl.recv_kind(("reject",))
    assert mh.pb().RejectCode.Name(r.reject.code) == "REJECT_MALFORMED", r.reject
    assert r.reject.reason == "heartbeat fault over 256 bytes or not UTF-8", r.reject.reason
    cl.expect_closed(timeout=3)
    assert aggr.node("f2")["agent_fault"] is None
