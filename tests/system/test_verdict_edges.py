"""No false verdicts at the edges of a lifecycle (issue 17, part C), seen
through the API with every verdict the aggregator publishes recorded
(VerdictWatch: blocking reads plus a 50 ms sample):

- an expected master that has not reported yet is `starting` within the
  first-contact window counted from the first report this aggregator took,
  with a reason saying when it turns missing; one that never reports is
  `missing` (the cluster `unhealthy`) once the window has passed, not before;
- an orderly boot (three expected masters, two agents, started in any order,
  checks coming up stage by stage) shows no `unhealthy` verdict, cluster or
  node, from the first report to `healthy`, and /v1/history/cluster has no
  `unhealthy` row;
- a stage held back by another node names it: `waiting_on` reads
  "mesos-agent, waiting for mesos-master on m1..m3", `waiting_for` lists the
  (node, component) pairs, and the node's reason says the same.

The simulated DC/OS cluster is test_startup's (shipped profiles, every check
an exec of a marker file)."""

import calendar
import random
import time

import pytest

import muster_harness as mh
from test_startup import AGENTS, DCOS, MASTERS, stage_members, stage_names

pytestmark = pytest.mark.no_valgrind(
    reason="scenarios of several seconds with six daemons, watched every 50 ms; no daemon code "
           "they alone reach")

BAD = ("unhealthy", "missing", "unreachable", "late")


def rfc3339_seconds(text):
    """'2026-12-07T22:49:36.465Z' as seconds since the epoch."""
    main, _, frac = text.rstrip("Z").partition(".")
    return calendar.timegm(time.strptime(main, "%Y-%m-%dT%H:%M:%S")) + float("0." + (frac or "0"))


def awaited_reason(node):
    return next((r for r in node["reasons"] if r["component"] is None and
                 "has not reported yet" in r["message"]), None)


def bad_sample(s):
    """A sample showing a verdict no orderly boot has, on the cluster or on
    any node. Before any report the masters are missing and the cluster
    unknown, as ever: that is not judged. A sample pairs the latest bodies
    of /v1/health and /v1/nodes, which may come from different moments, so
    each is judged by what it shows itself: a node list in which no node
    has reported yet is from before the first report."""
    nodes = (s.nodes or {}).values()
    reported = any(n.get("last_seen") for n in nodes)
    return s.cluster in BAD or (reported and any(n.get("verdict") in BAD for n in nodes))


def history_verdicts(aggr):
    return [c["verdict"] for c in aggr.json("/v1/history/cluster")["changes"]]


def dcos_with_window(env, window, grace="10m"):
    dcos = DCOS.__new__(DCOS)
    dcos.env = env
    from test_startup import write_remapped_profiles
    dcos.markers = write_remapped_profiles(env, grace)
    dcos.aggr = env.aggregator(expected_masters=list(MASTERS), stale_timeout="5s",
                               log_level="info",
                               extra={"first_contact_window": window}).start()
    dcos.agents = {}
    dcos.roles = dict([(m, "master") for m in MASTERS] + list(AGENTS))
    return dcos


def start_without_m3(dcos, order):
    """Every check up; the agents of order started, m3's not. Returns m3's
    node view once it shows it awaited, and when its reason says it turns
    missing (seconds since the epoch)."""
    for node in dcos.nodes():
        dcos.up_all(node)
    for node in order:
        dcos.start(node)
    n = dcos.wait_node("m3", lambda n: awaited_reason(n) is not None, 5,
                       desc="m3 awaited with its reason")
    assert n["verdict"] == "starting" and not n["connected"], n
    reason = awaited_reason(n)
    assert reason["state"] == "starting", reason
    return n, rfc3339_seconds(reason["message"].split("missing at ")[1].split(" ")[0])


# ---------------------------------------------------------------- first contact


def test_master_reporting_late_within_the_window_is_never_missing(env):
    """m3 reports seconds after the others, inside the window: it is
    `starting` with a reason naming when it would turn missing, and the
    cluster is never `unhealthy`."""
    dcos = dcos_with_window(env, "30s")
    with mh.VerdictWatch(dcos.aggr) as w:
        n, missing_at = start_without_m3(dcos, ("a1", "m1", "m2", "a2"))
        assert 25 < missing_at - time.time() <= 30.5, (awaited_reason(n), time.time())
        h = dcos.aggr.health()
        assert h["verdict"] == "starting", h
        assert ("m3", None) not in {(r["node"], r["component"]) for r in h["root_causes"]}, h
        for node in ("m1", "m2", "a1", "a2"):
            dcos.wait_node(node, lambda n: n["verdict"] == "healthy", 8, desc=f"{node} healthy")
        # Everything else is up: only m3, still awaited, keeps the cluster starting.
        dcos.aggr.wait_health(lambda h: [(r["node"], r["state"]) for r in h["reasons"]] ==
                              [("m3", "starting")], 5, desc="m3 the one reason")
        dcos.start("m3")
        dcos.aggr.wait_verdict("healthy", 8)
    w.assert_never(bad_sample, "a master reporting late within the window")
    assert "unhealthy" not in history_verdicts(dcos.aggr)


def test_master_that_never_reports_is_missing_once_the_window_passed(env):
    """m3 never reports: `starting` until the window closes, then `missing`,
    and the cluster `unhealthy` with m3 its root cause; not a moment before."""
    dcos = dcos_with_window(env, "3s")
    with mh.VerdictWatch(dcos.aggr) as w:
        _, missing_at = start_without_m3(dcos, ("m1", "m2", "a1", "a2"))
        h = dcos.aggr.wait_verdict("unhealthy", 10)
        assert time.time() >= missing_at - 0.01
    assert h["root_causes"][0]["node"] == "m3" and h["root_causes"][0]["state"] == "missing", h
    assert any(r["node"] == "m3" and r["state"] == "missing" and
               "expected master has never reported" in r["message"] for r in h["reasons"]), h
    rec = w.record()
    early = [s for s in rec if s.wall < missing_at - 0.05 and bad_sample(s)]
    assert not early, f"unhealthy before the window closed at {missing_at}: {early[0]!r}"
    # Each of the two bodies turned on time (a sample pairs the latest of
    # each, which may be from different moments: each is judged alone).
    turned = next(s for s in rec if s.cluster == "unhealthy")
    assert turned.wall - missing_at < mh.T(0.5), (turned, missing_at)
    m3_missing = next(s for s in rec if s.node_verdict("m3") == "missing" and
                      any(n.get("last_seen") for n in s.nodes.values()))
    assert missing_at - 0.05 <= m3_missing.wall < missing_at + mh.T(0.5), (m3_missing, missing_at)
    assert dcos.node("m3")["verdict"] == "missing"
    assert w.max_gap() <= mh.T(0.1), w.max_gap()
    # The history has no unhealthy row before the window closed.
    rows = dcos.aggr.json("/v1/history/cluster")["changes"]
    unhealthy = [rfc3339_seconds(c["at"]) for c in rows if c["verdict"] == "unhealthy"]
    assert unhealthy and min(unhealthy) >= missing_at - 0.01, (rows, missing_at)


# ---------------------------------------------------------------- an orderly boot


@pytest.mark.parametrize("seed", [17, 1017])
def test_orderly_boot_is_never_unhealthy(env, seed):
    """Three expected masters and two agents start in an arbitrary order,
    each once the one before it is connected; their checks come up stage by
    stage. From the first report to `healthy` no verdict, cluster or node,
    is unhealthy, missing, unreachable or late, and the cluster's history
    has no unhealthy row."""
    rnd = random.Random(seed)
    dcos = DCOS(env)
    order = list(dcos.nodes())
    rnd.shuffle(order)
    with mh.VerdictWatch(dcos.aggr) as w:
        for node in order:
            dcos.start(node)
            dcos.wait_node(node, lambda n: n["connected"], 5, desc=f"{node} connected")
        for node in dcos.nodes():
            dcos.up_stage(node, "diagnostics")
        for stage in stage_names("master"):
            for m in rnd.sample(MASTERS, len(MASTERS)):
                dcos.up_stage(m, stage)
                dcos.wait_stage(m, stage, "done", 8)
            if stage == "mesos-master":
                for node, role in AGENTS:
                    for st in stage_names(role):
                        dcos.up_stage(node, st)
        dcos.wait_all_healthy(10)
    w.assert_never(bad_sample, f"an orderly boot (order {order})")
    assert w.cluster_verdicts()[-2:] == ["starting", "healthy"], w.cluster_verdicts()
    assert "unhealthy" not in history_verdicts(dcos.aggr), history_verdicts(dcos.aggr)


# ---------------------------------------------------------------- waiting on other nodes


def test_waiting_on_names_the_awaited_node_and_component(env):
    """The agents' mesos-agent stage requires a master's mesos-master stage.
    While none has it, the agents' startup says what they wait for, by node
    and component, and so do their reasons; once a master reaches it, the
    agents wait on their own components again."""
    dcos = DCOS(env)
    dcos.start_all()
    for node, role in AGENTS:
        dcos.up_stage(node, "diagnostics")
        dcos.up_stage(node, "mesos-agent")
    for m in MASTERS:
        dcos.up_stage(m, "diagnostics")
        dcos.up_stage(m, "zookeeper")
    want = {(m, "mesos-master") for m in MASTERS} | {(m, "mesos-leader") for m in MASTERS}
    for node, _ in AGENTS:
        n = dcos.wait_node(node, lambda n: n["startup"]["waiting_for"], 5,
                           desc=f"{node} waiting for the masters")
        st = n["startup"]
        assert st["stage"] == "mesos-agent", st
        assert st["waiting_on"] == ("mesos-agent, waiting for mesos-master on m1..m3, "
                                    "mesos-leader on m1..m3"), st
        assert {(x["node"], x["component"]) for x in st["waiting_for"]} == want, st
        assert st["waiting_for_total"] == 6, st
        assert n["verdict"] == "starting", n
        r = next(r for r in n["reasons"] if r["component"] is None)
        assert r["message"] == (f"{node}: stage mesos-agent waits for mesos-master on m1..m3, "
                                "mesos-leader on m1..m3"), r
        assert r["state"] == "starting"
        assert {(x["node"], x["component"]) for x in r["blocked_by"]} == want, r
        assert dcos.aggr.nodes()[node]["startup"]["stage"] == "mesos-agent"

    # m1 brings its Mesos master up but is not the leader yet: only its
    # milestone is awaited there.
    dcos.up("m1", "mesos-master")
    n = dcos.wait_node("a1", lambda n: ("m1", "mesos-master") not in
                       {(x["node"], x["component"]) for x in n["startup"]["waiting_for"]}, 5,
                       desc="a1 no longer waiting for mesos-master on m1")
    # Grouped by component in the order they first appear (m1's first).
    assert n["startup"]["waiting_on"] == ("mesos-agent, waiting for mesos-leader on m1..m3, "
                                          "mesos-master on m2, m3"), n["startup"]
    # A master reaches the stage (the requirement is "any"): the agents'
    # stage is startable, their components are up, it is done.
    dcos.up("m1", "mesos-leader")
    for node, _ in AGENTS:
        n = dcos.wait_stage(node, "mesos-agent", "done")
        st = n["startup"]
        assert st["waiting_on"] == "networking" and st["waiting_for"] == [], st
        assert st["waiting_for_total"] == 0
        assert not any("waits for" in r["message"] for r in n["reasons"]), n["reasons"]
    # A master that has not reported is named by its components too.
    assert dcos.node("m1")["startup"]["waiting_for"] == []
