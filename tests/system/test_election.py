"""Leader election among aggregators through a real 3-server ZooKeeper
ensemble: exactly one leader, followers redirect HTTP and agents, failover
after kill -9 and SIGTERM with every acknowledged change accounted for one by
one, fencing of a leader paused past its session (SIGSTOP/SIGCONT), step-down
when ZooKeeper is gone, and many leader restarts in a row.

Acknowledged changes are checked in the SQLite file of the aggregator that
leads at the end (each aggregator has its own), for the foreign protobuf
clients (zk_harness.FailoverClient, which keeps its own spool and replays
from Welcome.held_seq) and for real muster-agentd spools.

Failover times are printed as measurements; only generous bounds are
asserted (bench/ measures them properly).

MUSTER_ELECTION_CYCLES sets the number of leader restarts (default 10).
"""

import os
import re
import statistics
import time
import uuid

import pytest
import requests

import muster_harness as mh
from muster_harness import StreamClient, T, wait_until
from test_seq import held_fingerprint_problems
from zk_harness import (ElectedAggregator, FailoverClient, agent_check_in, safe_acked, safe_held,
                        stream_log, wait_one_leader)

SESSION_TIMEOUT = 2.0          # seconds; tickTime is 500 ms
SESSION_TIMEOUT_CONF = "2s"
FLAGS = ["f1", "f2", "f3"]
COMPONENTS = ["c1", "c2", "c3"]
CYCLES = int(os.environ.get("MUSTER_ELECTION_CYCLES", "10"))


# ---------------------------------------------------------------- setup helpers


def write_profiles(env):
    """`agent` for the foreign clients; `flappy` for real agents: three exec
    checks on flag files that threads flip several times a second."""
    env.write_profile("agent", mh.profile_ini("agent", [
        (c, dict(check="exec", command="true", interval="10s", rise=1, fall=1)) for c in COMPONENTS
    ], [("work", COMPONENTS)]))
    env.write_profile("flappy", mh.profile_ini("flappy", [
        (f, dict(check="exec", command=f"test -e {env.path(f + '.flag')}", interval="100ms",
                 timeout="1s", rise=1, fall=1)) for f in FLAGS], [("base", FLAGS)]))
    return [env.toggler(env.path(f + ".flag"), 0.08) for f in FLAGS]


def make_aggregators(env, zk, cluster, n):
    return [ElectedAggregator(env, zk.hosts, cluster, SESSION_TIMEOUT_CONF, id=f"aggr{i}",
                              stale_timeout="10s") for i in range(1, n + 1)]


def start_sequentially(aggrs):
    for a in aggrs:
        a.start()
    return aggrs


def port_names(aggrs):
    return {a.stream_port: a.id for a in aggrs}


def clients_for(env, aggrs, names, **kw):
    digest = env.profile_digest("agent")
    clients = [FailoverClient(n, [a.stream_port for a in aggrs], digest,
                              port_names=port_names(aggrs), **kw) for n in names]
    for c in clients:
        # Stopped with the test: a client left running keeps reconnecting to
        # its old ports, which a later test's aggregator may be given.
        env._cleanups.append(c.stop)
    return clients


def start_togglers(togglers):
    for t in togglers:
        t.start()


def stop_togglers(togglers):
    for t in togglers:
        t.stop()


def epoch_of(aggr):
    h = aggr.health()
    return h["leader"]["epoch"]


def wait_agents_acked(agents, n=3, timeout=15.0):
    for ag in agents:
        wait_until(ag.spool_ready, timeout, desc=f"agent {ag.node_id} spool created")
        wait_until(lambda: safe_acked(ag) >= n, timeout, interval=0.05,
                   desc=f"agent {ag.node_id}: {n} changes acknowledged")


def wait_flag_checks_ran(agents, since, runs=3, timeout=5.0):
    """Waits until every flag check of each agent logged `runs` results
    after its log offset since[node_id]. With the flags still since then,
    the second run started after them, and whatever change it made is in
    the spool once the third result is logged (the agent handles one event
    at a time)."""
    def ran():
        return all(ag.proc.stderr_since(since[ag.node_id]).count(f"component {f}: result") >= runs
                   for ag in agents for f in FLAGS)
    wait_until(ran, timeout, interval=0.02,
               desc=f"every flag check ran {runs} times since the flags stopped")


def current_conns(clients):
    """Each client's connection now (None between connections)."""
    return {c.name: c.current[0] if c.current else None for c in clients}


def wait_streams_closed(clients, conns, timeout=5.0):
    """Waits until each client saw the connection conns[name] end: every Ack
    sent on it before then has been read."""
    def closed():
        return all(c.current is None or c.current[0] != conns[c.name] for c in clients)
    wait_until(closed, timeout, interval=0.005, desc="the clients saw the dead leader's streams end")


def settle_and_account(leader, clients, agents, togglers, timeout=20.0):
    """Stops producing, waits until the leader acknowledged everything each
    client and agent made, then checks every change one by one in the
    leader's SQLite. Returns (number of changes checked, problems)."""
    stop_togglers(togglers)
    for c in clients:
        c.pause_production()
    wait_flag_checks_ran(agents, {ag.node_id: ag.proc.stderr_size() for ag in agents})

    def all_caught_up():
        for c in clients:
            if not c.caught_up():
                return False
            if c.current[1] != leader.stream_port:
                return False
        for ag in agents:
            top = ag.max_seq()
            if safe_acked(ag) != top or safe_held(leader, ag.node_id, ag.spool_id()) != top:
                return False
        return True
    try:
        wait_until(all_caught_up, timeout, interval=0.05, desc=f"everything acknowledged by {leader.id}")
    except AssertionError as e:
        raise AssertionError(f"{e}\n" + "\n".join(c.summary() for c in clients) + "\n" + "\n".join(
            f"agent {ag.node_id}: spool max {ag.max_seq()} acked {safe_acked(ag)} {leader.id} held "
            f"{safe_held(leader, ag.node_id, ag.spool_id())}" for ag in agents)) from None

    problems, checked = [], 0
    for c in clients:
        problems += c.violations
        problems += c.check_in(leader, upto=c.mk.seq)
        checked += c.mk.seq
        assert c.max_ack <= c.mk.seq
    for ag in agents:
        top = ag.max_seq()
        problems += agent_check_in(ag, leader, upto=top)
        checked += top
    return checked, problems


def api_matches_clients(leader, clients):
    """The leader's API shows each client's node with the components' last
    states."""
    problems = []
    for c in clients:
        n = leader.node(c.node_id)
        if n is None:
            problems.append(f"GET /v1/nodes/{c.node_id} on {leader.id}: 404")
            continue
        got = {x.get("name"): x.get("state") for x in n.get("components", [])}
        want = {k: mh.state_name(v) for k, v in c.mk.state.items()}
        if got != want:
            problems.append(f"{leader.id} API node {c.node_id}: components {got}, expected {want}")
    return problems


# ---------------------------------------------------------------- tests


@pytest.mark.no_valgrind(reason="for time: the four election tests of the valgrind pass elect "
                                "through the same daemon code")
def test_exactly_one_leader(env, zk, cluster_name):
    write_profiles(env)
    aggrs = make_aggregators(env, zk, cluster_name, 3)
    for a in aggrs:              # all at once: they race for the lowest znode
        a.start(wait=False)
    for a in aggrs:
        a.wait_ready()
    leader, views = wait_one_leader(aggrs)
    followers = [a for a in aggrs if a is not leader]

    # ... and it stays that way (a window of time, deliberately: nothing
    # observable says "no second leader will ever appear")
    end = time.monotonic() + 1.0
    while time.monotonic() < end:
        roles = {a.id: a.role() for a in aggrs}
        assert list(roles.values()).count("leader") == 1, roles
        time.sleep(0.05)

    h = leader.health()
    epoch = h["leader"]["epoch"]
    assert h["leader"]["id"] == leader.id, h["leader"]
    assert isinstance(epoch, int) and epoch > 0, h["leader"]
    rz = leader.readyz()
    assert rz["role"] == "leader", rz
    assert rz["leader"] == {"id": leader.id, "http": leader.http_address, "epoch": epoch}, rz
    hz = leader.get("/healthz")
    assert hz.status_code == 200 and hz.json() == {"status": "ok", "role": "leader"}, hz.text

    for f in followers:
        rz = f.readyz()
        assert rz["role"] == "follower", (f.id, rz)
        assert rz["leader"] == {"id": leader.id, "http": leader.http_address, "epoch": epoch}, (f.id, rz)
        hz = f.get("/healthz")
        assert hz.status_code == 200 and hz.json() == {"status": "ok", "role": "follower"}, hz.text
        r = f.get("/v1/health")          # the redirect is followed to the leader
        assert r.status_code == 200, (f.id, r.status_code, r.text[:300])
        assert r.json()["leader"]["id"] == leader.id and r.json()["leader"]["epoch"] == epoch

    # The znodes, read by ZooKeeper's own client: one per candidate, the
    # lowest is the leader's, its data says where it listens, its czxid is
    # the epoch.
    base = f"/muster/{cluster_name}/election"
    kids = zk.children(base)
    assert len(kids) == 3 and all(re.fullmatch(r"n_\d{10}", k) for k in kids), kids
    data, stat = zk.get(f"{base}/{kids[0]}")
    assert data.splitlines() == [f"id={leader.id}", f"stream={leader.stream_address}",
                                 f"http={leader.http_address}"], data
    assert int(stat["cZxid"], 16) == epoch, (stat, epoch)
    assert stat["ephemeralOwner"] not in ("0x0", "0"), stat

    # The Welcome carries the same epoch and leader id.
    cl = StreamClient(leader.stream_port)
    r = cl.hello("one-leader", "agent", uuid.uuid4().hex, 0, digest=env.profile_digest("agent"))
    assert r.WhichOneof("body") == "welcome", r
    assert r.welcome.epoch == epoch and r.welcome.leader_id == leader.id, r.welcome
    cl.close()


def test_follower_redirects_http_and_agents(env, zk, cluster_name):
    togglers = write_profiles(env)
    aggrs = start_sequentially(make_aggregators(env, zk, cluster_name, 2))
    leader, _ = wait_one_leader(aggrs)
    f = next(a for a in aggrs if a is not leader)
    epoch = epoch_of(leader)

    # HTTP: every /v1/... answers 307 to the leader, path and query kept
    for path in ["/v1/health", "/v1/nodes", "/v1/nodes?limit=5", "/v1/nodes/some-node",
                 "/v1/history?node=a&component=b&limit=3&x=%2Fy",
                 "/v1/health?index=3&wait=1s"]:
        r = f.get(path, allow_redirects=False)
        assert r.status_code == 307, (path, r.status_code, r.text[:300])
        assert r.headers.get("Location") == f"http://{leader.http_address}{path}", \
            (path, r.headers.get("Location"))
    # ... and a real HTTP client following it gets the leader's answer
    r = f.get("/v1/nodes")
    assert r.status_code == 200 and r.url.startswith(f"http://{leader.http_address}/"), (r.status_code, r.url)
    # the node's own endpoints answer locally
    assert f.get("/healthz", allow_redirects=False).json() == {"status": "ok", "role": "follower"}
    rz = f.readyz()
    assert rz["role"] == "follower" and rz["leader"]["id"] == leader.id, rz
    m = f.get("/metrics", allow_redirects=False)
    assert m.status_code != 307, f"/metrics on a follower redirects to {m.headers.get('Location')}"
    if leader.get("/metrics").status_code == 404:
        print("note: /metrics is not served at all yet (404 on the leader too); not checked")
    else:
        assert m.status_code == 200, (m.status_code, m.text[:200])

    # A foreign client at the follower gets a Redirect to the leader's stream
    digest = env.profile_digest("agent")
    cl = StreamClient(f.stream_port)
    r = cl.hello("redir-foreign", "agent", uuid.uuid4().hex, 0, digest=digest)
    assert r.WhichOneof("body") == "redirect", r
    assert r.redirect.stream_address == leader.stream_address, r.redirect
    assert r.redirect.http_address == leader.http_address, r.redirect
    assert r.redirect.leader_id == leader.id and r.redirect.epoch == epoch, r.redirect
    cl.expect_closed(2)
    host, port = r.redirect.stream_address.rsplit(":", 1)
    cl = StreamClient(int(port))
    r = cl.hello("redir-foreign", "agent", uuid.uuid4().hex, 0, digest=digest)
    assert r.WhichOneof("body") == "welcome" and r.welcome.leader_id == leader.id, r
    cl.close()

    # A real agent that knows only the follower ends up streaming to the leader
    ag = env.agent("only-follower", "flappy", [f]).start()
    start_togglers(togglers)
    wait_agents_acked([ag], n=5)
    sid = ag.spool_id()
    wait_until(lambda: safe_held(leader, ag.node_id, sid) >= 5, 5,
               desc="the leader holds the agent's changes")
    assert leader.node(ag.node_id) is not None
    assert "redirect" in ag.proc.stderr_text().lower(), "the agent's log does not mention the redirect"
    stop_togglers(togglers)


@pytest.mark.no_valgrind(reason="a failover timed against the ZooKeeper session (the other failover tests run under memcheck); it runs under ASan and LSan in the AddressSanitizer pass; left out of memcheck for the 35-minute budget")
def test_kill9_leader_while_changes_flow(env, zk, cluster_name, metric):
    togglers = write_profiles(env)
    aggrs = start_sequentially(make_aggregators(env, zk, cluster_name, 3))
    leader, _ = wait_one_leader(aggrs)
    old_epoch = epoch_of(leader)
    clients = [c.start() for c in clients_for(env, aggrs, ["fc1", "fc2"])]
    agents = [env.agent(f"ra{i}", "flappy", aggrs).start() for i in (1, 2)]
    start_togglers(togglers)
    for c in clients:
        c.wait_acks(30, port=leader.stream_port)
    wait_agents_acked(agents)
    # The followers' warm copy has reached the leader's verdict history.
    for a in aggrs:
        if a is not leader:
            wait_until(lambda a=a: a.query("SELECT count(*) FROM cluster_verdicts WHERE epoch = ?",
                                           (old_epoch,))[0][0] > 0, 10,
                       desc=f"{a.id} copied the leader's verdicts")

    acked_by_old = {c.name: c.max_ack for c in clients}
    conns = current_conns(clients)
    t0 = time.monotonic()
    leader.kill9()
    # the dead leader's last acks may still have been in flight: read them
    wait_streams_closed(clients, conns)
    acked_by_old = {c.name: c.max_ack for c in clients}
    agent_acked_by_old = {ag.node_id: safe_acked(ag) for ag in agents}
    log_at_kill = {ag.node_id: ag.proc.stderr_size() for ag in agents}
    survivors = [a for a in aggrs if a is not leader]

    new = None
    t_leader = None
    t_clients, t_agents = {}, {}
    # agents back off up to 10 s (full jitter) between attempts: allow for it
    deadline = t0 + T(SESSION_TIMEOUT + 15)
    while time.monotonic() < deadline and not (new and len(t_clients) == len(clients)
                                               and len(t_agents) == len(agents)):
        if new is None:
            for s in survivors:
                if s.role() == "leader":
                    new, t_leader = s, time.monotonic() - t0
        if new is not None:
            for c in clients:
                w = c.welcomes_since(t0, new.stream_port)
                if w and c.name not in t_clients:
                    t_clients[c.name] = w[0][0] - t0
            for ag in agents:
                if ag.node_id not in t_agents and safe_acked(ag) > agent_acked_by_old[ag.node_id]:
                    t_agents[ag.node_id] = time.monotonic() - t0
        time.sleep(0.01)
    assert new is not None, f"no surviving aggregator became leader within {SESSION_TIMEOUT + 10}s " \
                            f"of kill -9: {[(s.id, s.readyz_full()) for s in survivors]}"
    metric("kill -9 failover: new leader /readyz", t_leader * 1000, "ms")
    for name, t in sorted(t_clients.items()):
        metric(f"kill -9 failover: foreign client {name} welcomed by the new leader", t * 1000, "ms")
    for name, t in sorted(t_agents.items()):
        metric(f"kill -9 failover: agent {name} acknowledged by the new leader", t * 1000, "ms")
    assert len(t_clients) == len(clients), [c.summary() for c in clients]
    assert len(t_agents) == len(agents), \
        f"agents not acknowledged by {new.id} within {SESSION_TIMEOUT + 15}s of the kill: " \
        f"{ {ag.node_id: safe_acked(ag) for ag in agents} } (acked at kill {agent_acked_by_old}); " \
        f"new leader after {t_leader:.2f}s; stream log of the late agents since the kill:\n" + \
        "\n".join(f"--- {ag.node_id}\n{stream_log(ag, log_at_kill[ag.node_id])}"
                  for ag in agents if ag.node_id not in t_agents)
    bound = SESSION_TIMEOUT + 3.0
    assert t_leader < bound, f"new leader after {t_leader:.2f}s (> {bound}s)"
    assert max(t_clients.values()) < bound, f"foreign clients welcomed after {t_clients} (> {bound}s)"
    # the performance goal (bench/ measures it; here it is only reported)
    goal = SESSION_TIMEOUT + 0.5 + 0.5
    late = {k: round(v, 2) for k, v in t_agents.items() if v > goal}
    if late:
        print(f"WARNING: agents streaming to the new leader later than session timeout + 1 tick + "
              f"0.5 s = {goal}s: {late}")
        for ag in agents:
            if ag.node_id in late:
                print(f"--- {ag.node_id} stream log since the kill:\n"
                      f"{stream_log(ag, log_at_kill[ag.node_id], 25)}")

    new_epoch = epoch_of(new)
    assert new_epoch > old_epoch, (old_epoch, new_epoch)
    for c in clients:
        w = c.welcomes_since(t0, new.stream_port)[0]
        assert w[4] == new_epoch and w[3] == new.id, w
    # The dead leader's cluster verdict history survived in the warm copy.
    old_verdicts = new.query("SELECT verdict, at_ms FROM cluster_verdicts WHERE epoch = ? "
                             "ORDER BY at_ms", (old_epoch,))
    assert old_verdicts, "the new leader has none of the dead leader's cluster verdict history"
    listed = requests.get(f"http://127.0.0.1:{new.http_port}/v1/history/cluster",
                          params={"limit": 1000}, timeout=5).json()["changes"]
    assert any(v["epoch"] == old_epoch for v in listed), listed[:5]

    # more changes flow on the new leader, then everything is accounted for
    t_new = time.monotonic()
    for c in clients:
        c.wait_acks(20, after=t_new, port=new.stream_port)
    checked, problems = settle_and_account(new, clients, agents, togglers)
    problems += api_matches_clients(new, clients)
    for c in clients:   # said explicitly: what the dead leader acknowledged is in the new leader
        problems += c.check_in(new, upto=acked_by_old[c.name])
    for ag in agents:
        problems += agent_check_in(ag, new, upto=agent_acked_by_old[ag.node_id])
    rows_new_epoch = new.query("SELECT count(*) FROM changes WHERE epoch=?", (new_epoch,))[0][0]
    assert rows_new_epoch > 0, "the new leader wrote no row with its epoch"
    metric("kill -9 failover: changes checked one by one in the new leader's SQLite", checked, "changes")
    metric("kill -9 failover: changes the dead leader had acknowledged",
           sum(acked_by_old.values()) + sum(agent_acked_by_old.values()), "changes")
    # The held rows' fingerprints, on the new leader (its own commits and its
    # warm copy) and on the other follower (its warm copy), are those of the
    # rows; the agents found their rows there and kept their spool ids.
    for a in survivors:
        problems += held_fingerprint_problems(a)
    for ag in agents:
        if ag.spool_meta("spool_rolls") is not None:
            problems.append(f"agent {ag.node_id} moved to a new spool id: "
                            f"{ag.spool_meta('spool_roll_reason')}")
    assert not problems, "\n".join(problems)
    for ag in agents:
        ag.assert_alive()


@pytest.mark.no_valgrind(reason="judges the paused leader's writes by a fixed 50 ms margin "
                                "around SIGSTOP, which memcheck's slowness makes meaningless")
def test_sigstop_leader_is_fenced(env, zk, cluster_name, metric):
    togglers = write_profiles(env)
    aggrs = start_sequentially(make_aggregators(env, zk, cluster_name, 2))
    leader, _ = wait_one_leader(aggrs)
    other = next(a for a in aggrs if a is not leader)
    epoch = epoch_of(leader)
    digest = env.profile_digest("agent")
    names = port_names(aggrs)
    # `pinned` knows only the leader and never gives up on a silent peer: it
    # is still connected when the paused leader wakes up.
    pinned = FailoverClient("pinned", [leader.stream_port], digest, silence=None,
                            port_names=names).start()
    env._cleanups.append(pinned.stop)
    mover = clients_for(env, aggrs, ["mover"])[0].start()
    agents = [env.agent("ra1", "flappy", aggrs).start()]
    start_togglers(togglers)
    pinned.wait_acks(20, port=leader.stream_port)
    mover.wait_acks(20, port=leader.stream_port)
    wait_agents_acked(agents)
    pinned_conn = pinned.current[0]

    wall_stop = mh.now_ms()
    t_stop = time.monotonic()
    leader.pause()
    frozen = leader.query("SELECT count(*), coalesce(max(id),0) FROM changes WHERE epoch=?", (epoch,))[0]
    spools_frozen = dict(((n, s), h) for n, s, h in leader.query(
        "SELECT node_id, spool_id, held_seq FROM spools WHERE epoch=?", (epoch,)))
    pinned_ack_at_stop = pinned.last_ack_on(pinned_conn)

    # the other aggregator takes over while the leader sleeps
    wait_until(lambda: other.role() == "leader", SESSION_TIMEOUT + 5, interval=0.02,
               desc=f"{other.id} takes over from the paused leader")
    t_takeover = time.monotonic() - t_stop
    metric("SIGSTOP: the other aggregator leads after", t_takeover * 1000, "ms")
    # stay asleep well past the session timeout (time passing is the
    # scenario: the session expires while the leader cannot notice)
    time.sleep(max(0.0, t_stop + SESSION_TIMEOUT + 1.5 - time.monotonic()))
    assert other.role() == "leader"

    wall_cont = mh.now_ms()
    t_cont = time.monotonic()
    leader.resume()
    # it steps down ...
    wait_until(lambda: leader.role() == "follower", 5, interval=0.01,
               desc=f"{leader.id} answers as a follower after waking")
    metric("SIGSTOP: the woken leader answers as follower after", (time.monotonic() - t_cont) * 1000, "ms")
    # ... and closes the stream it had
    wait_until(lambda: pinned.current is None or pinned.current[0] != pinned_conn, 5, interval=0.01,
               desc="the woken leader closes the pinned client's stream")
    # keep the pinned client sending on for a moment after it lands elsewhere
    pinned.wait_welcomed_by(other.stream_port, after=t_cont, timeout=10)
    pinned.wait_acks(10, after=t_cont, port=other.stream_port)

    problems = []
    late = [a for a in pinned.acks_since(t_cont) if a[1] == pinned_conn]
    if late:
        problems.append(f"the woken leader acknowledged {[a[3] for a in late]} after SIGCONT "
                        f"(last ack before SIGSTOP {pinned_ack_at_stop}, sent {pinned.mk.seq})")
    during = [a for a in pinned.acks_since(t_stop + 0.05) if a[1] == pinned_conn and a[0] < t_cont]
    if during:
        problems.append(f"acks received while the leader was stopped: {[a[3] for a in during]}")
    if any(w[2] == leader.stream_port for w in pinned.welcomes_since(t_cont) + mover.welcomes_since(t_cont)):
        problems.append("the woken leader welcomed a client after SIGCONT")

    # SQLite: nothing written with the old epoch after the pause began
    newrows = leader.query("SELECT id, node_id, seq, received_ms FROM changes WHERE epoch=? AND id>?",
                           (epoch, frozen[1]))
    after_stop = [r for r in newrows if r[3] > wall_stop + 50]
    if after_stop:
        problems.append(f"{len(after_stop)} rows with epoch {epoch} received after SIGSTOP (at "
                        f"{wall_stop}, SIGCONT at {wall_cont}) were written: {after_stop[:5]}")
    if newrows and not after_stop:
        print(f"note: {len(newrows)} rows received before SIGSTOP became visible after it "
              f"(a commit in flight at the pause): {newrows[:3]}")
    for n, s, h in leader.query("SELECT node_id, spool_id, held_seq FROM spools WHERE epoch=?",
                                (epoch,)):
        before = spools_frozen.get((n, s))
        top_before = leader.query("SELECT coalesce(max(seq),0) FROM changes WHERE node_id=? AND "
                                  "spool_id=? AND epoch=? AND received_ms<=?",
                                  (n, s, epoch, wall_stop + 50))[0][0]
        if h > max(before or 0, top_before):
            problems.append(f"spools row ({n}, {s}) epoch {epoch}: held_seq {before} at SIGSTOP, "
                            f"{h} after waking")
    metric("SIGSTOP: rows the old leader had at the pause", frozen[0], "rows")

    # it follows the new leader
    wait_until(lambda: (leader.readyz() or {}).get("leader", {}) and
               leader.readyz()["leader"].get("id") == other.id, 5,
               desc=f"{leader.id} names {other.id} as leader")
    r = leader.get("/v1/health", allow_redirects=False)
    assert r.status_code == 307 and r.headers["Location"] == f"http://{other.http_address}/v1/health", \
        (r.status_code, r.headers.get("Location"), r.text[:200])
    assert epoch_of(other) > epoch

    checked, more = settle_and_account(other, [pinned, mover], agents, togglers)
    problems += more
    metric("SIGSTOP: changes checked one by one in the new leader's SQLite", checked, "changes")
    assert not problems, "\n".join(problems)


LEASE_ROUNDS = 4
# Every kind of data answer a leader gives, plus liveness and readiness.
LEASE_PATHS = ["/v1/health", "/v1/nodes", "/v1/nodes/{node}", "/v1/history?limit=5",
               "/v1/history/cluster?limit=5", "/v1/internal/replicate?after=0&limit=5",
               "/system/health/v1/units", "/metrics", "/readyz", "/healthz"]


def timed_get(aggr, path, timeout):
    """(path, monotonic time of the answer, status, headers, body text), or
    the exception's text in place of the status when nothing answered."""
    try:
        r = aggr.get(path, allow_redirects=False, timeout=timeout)
        return path, time.monotonic(), r.status_code, r.headers, r.text
    except requests.RequestException as e:
        return path, time.monotonic(), f"no answer: {e}", {}, ""


def answers_as_leader(path, status, headers, body):
    """Why an answer of an aggregator that no longer leads says it leads
    (None when it does not)."""
    if not isinstance(status, int):
        return None
    if path == "/metrics":
        return "muster_leader 1" if re.search(r"^muster_leader 1$", body, re.M) else None
    if re.search(r'"role":\s*"leader"', body):
        return f"{status} role leader"
    if path.startswith("/v1/") or path.startswith("/system/"):
        if status in (200, 304):
            return f"{status} with data ({body[:80]!r})"
    return None


def parked_reads(aggr):
    m = re.search(r"^muster_http_parked_reads (\d+)$", aggr.get("/metrics").text, re.M)
    return int(m.group(1)) if m else 0


@pytest.mark.no_valgrind(reason="four failovers by session expiry in a row: memcheck's slowness "
                                "stretches each one past the time the test may take")
def test_paused_leader_answers_nothing_as_leader(env, zk, cluster_name, metric):
    """Issue 16, probe 11: a leader woken from SIGSTOP past its lease answered
    requests that arrived during the pause with `role: leader` and 200 data
    from its old epoch, before its loop had stepped down. Each of four rounds
    parks a blocking read on the leader, pauses it, sends every kind of
    request while it sleeps, waits until the other aggregator leads, wakes it
    and checks every answer it gave after the pause: none says it leads
    (503 lease_expired, or a follower's 503/307; /healthz 200 "follower";
    /readyz not "leader"); the new leader answers as leader."""
    from concurrent.futures import ThreadPoolExecutor

    write_profiles(env)
    aggrs = start_sequentially(make_aggregators(env, zk, cluster_name, 2))
    leader, _ = wait_one_leader(aggrs)
    clients = [c.start() for c in clients_for(env, aggrs, ["pl1", "pl2"])]
    for c in clients:
        c.wait_acks(5, port=leader.stream_port)
    paths = [p.format(node=clients[0].node_id) for p in LEASE_PATHS]
    pool = ThreadPoolExecutor(max_workers=len(paths) + 2)
    env._cleanups.append(lambda: pool.shutdown(wait=False))
    lies, fenced = [], 0

    for rnd in range(1, LEASE_ROUNDS + 1):
        other = next(a for a in aggrs if a is not leader)
        epoch = epoch_of(leader)
        # Still, so that the blocking read stays parked until the pause.
        for c in clients:
            c.pause_production()
        parked = None

        def park():
            # Changes still in flight may move the index: park again then.
            nonlocal parked
            if parked is None or parked.done():
                index = int(leader.get("/v1/health").headers["X-Muster-Index"])
                parked = pool.submit(timed_get, leader, f"/v1/health?index={index}&wait=60s", 30)
            return parked_reads(leader) >= 1
        wait_until(park, 5, interval=0.01, desc=f"round {rnd}: a blocking read parked on {leader.id}")

        t_stop = time.monotonic()
        leader.pause()
        t_stopped = time.monotonic()
        # In flight while it sleeps: the kernel takes the connections and
        # the requests; the woken process answers them.
        futures = [pool.submit(timed_get, leader, p, 30) for p in paths]
        wait_until(lambda: other.role() == "leader", SESSION_TIMEOUT + 5, interval=0.02,
                   desc=f"round {rnd}: {other.id} takes over from the paused {leader.id}")
        t_takeover = time.monotonic() - t_stop
        t_cont = time.monotonic()
        leader.resume()
        for c in clients:
            c.resume_production()

        for path, t, status, headers, body in [f.result() for f in futures] + [parked.result()]:
            if t < t_stopped:
                # Woken (a publish) and answered before the pause: the
                # leader still led.
                assert path.startswith("/v1/health?index="), (path, t_stop, t)
                print(f"note: round {rnd}: the blocking read was answered before the pause")
                continue
            assert t >= t_cont, f"round {rnd}: {path} answered during the pause: {status}"
            if not isinstance(status, int):
                lies.append(f"round {rnd}: {path}: {status}")
                continue
            why = answers_as_leader(path, status, headers, body)
            if why:
                lies.append(f"round {rnd}: {leader.id} (paused, epoch {epoch}) answered {path} "
                            f"{why} {(t - t_cont) * 1000:.0f} ms after SIGCONT")
            if status == 503 and "lease_expired" in body:
                fenced += 1
                assert headers.get("Retry-After") == "1", (path, dict(headers))
            if path == "/healthz" and status != 200:
                lies.append(f"round {rnd}: /healthz answered {status} after the pause")
        metric(f"lease round {rnd}: the other aggregator leads after", t_takeover * 1000, "ms")

        # The woken one follows the new leader; the new leader answers as one.
        wait_until(lambda: ((leader.readyz() or {}).get("leader") or {}).get("id") == other.id, 10,
                   desc=f"round {rnd}: {leader.id} names {other.id} as leader")
        h = other.health()
        assert h["leader"]["id"] == other.id and h["leader"]["epoch"] > epoch, h["leader"]
        assert other.readyz()["role"] == "leader"
        leader = other

    metric("lease: answers refused 503 lease_expired by woken leaders", fenced, "answers")
    pool.shutdown(wait=True)
    assert not lies, "\n".join(lies)


def test_zookeeper_outage_leader_steps_down(env, zk, cluster_name, metric):
    togglers = write_profiles(env)
    aggrs = start_sequentially(make_aggregators(env, zk, cluster_name, 2))
    leader, _ = wait_one_leader(aggrs)
    clients = [c.start() for c in clients_for(env, aggrs, ["zo1"])]
    agents = [env.agent("ra1", "flappy", aggrs).start()]
    start_togglers(togglers)
    clients[0].wait_acks(20, port=leader.stream_port)
    wait_agents_acked(agents)

    agent_log = agents[0].proc.stderr_size()
    t0 = time.monotonic()
    zk.kill_all()
    wait_until(lambda: not any(a.role() == "leader" for a in aggrs), SESSION_TIMEOUT + 5,
               interval=0.01, desc="no aggregator leads once ZooKeeper is gone")
    t_down = time.monotonic()
    metric("ZooKeeper outage: the leader stepped down after", (t_down - t0) * 1000, "ms")
    assert t_down - t0 < SESSION_TIMEOUT + 1.0, f"stepped down only after {t_down - t0:.2f}s"

    # From the lease's end until the loop has stepped down and published
    # that, /readyz answers 503 lease_expired: wait for the follower's view.
    rz = wait_until(lambda: leader.readyz(), 2, desc="the ex-leader's /readyz says follower")
    assert rz["role"] == "follower", rz
    r = leader.get("/v1/health", allow_redirects=False)
    assert r.status_code == 503 and r.json()["error"]["code"] == "no_leader", (r.status_code, r.text[:300])
    # an agent at the ex-leader is refused: not the leader, and no leader known
    cl = StreamClient(leader.stream_port)
    resp = cl.hello("zk-out-probe", "agent", uuid.uuid4().hex, 0, digest=env.profile_digest("agent"))
    assert resp.WhichOneof("body") == "reject" and resp.reject.code == mh.pb().REJECT_NOT_LEADER, resp
    cl.close()
    other = next(a for a in aggrs if a is not leader)
    print(f"follower {other.id} during the outage: readyz {other.readyz_full()}, /v1/health "
          f"{other.get('/v1/health', allow_redirects=False).status_code}")

    # The agent persists acked_seq at most every 250 ms, so an Ack it got
    # before the step-down can reach its spool a little after it: wait until
    # its stream has ended and the last Ack it logged is persisted.
    ag = agents[0]

    def acks_persisted():
        log = ag.proc.stderr_since(agent_log)
        if "; next attempt in" not in log:
            return False
        acked = [int(x) for x in re.findall(r"acknowledged seq (\d+)", log)]
        persisted = [int(x) for x in re.findall(r"spool: acked_seq (\d+) persisted", log)]
        return not acked or bool(persisted) and max(persisted) >= max(acked)
    wait_until(acks_persisted, 5, desc="the agent's stream ended and its last Ack persisted")
    agent_acked = safe_acked(ag)
    # Changes keep coming and everyone keeps trying: nobody may acknowledge
    # them. Wait until the agent spooled more and tried again, and each
    # client was refused a few more times.
    t_try, tried_log = time.monotonic(), ag.proc.stderr_size()

    def everyone_tried():
        return (ag.max_seq() >= agent_acked + 10 and
                "; next attempt in" in ag.proc.stderr_since(tried_log) and
                all(len([r for r in c.rejects + c.closes if r[0] >= t_try]) >= 3 for c in clients))
    wait_until(everyone_tried, 15, interval=0.05,
               desc="new changes spooled, the agent and every client tried again")
    problems = []
    for c in clients:
        if c.acks_since(t_down):
            problems.append(f"{c.name} got Acks while ZooKeeper was down: {c.acks_since(t_down)[:5]}")
        if c.welcomes_since(t_down):
            problems.append(f"{c.name} was welcomed while ZooKeeper was down: {c.welcomes_since(t_down)}")
    if safe_acked(agents[0]) != agent_acked:
        problems.append(f"the agent's acked_seq moved from {agent_acked} to {safe_acked(agents[0])} "
                        f"while ZooKeeper was down")

    t1 = time.monotonic()
    zk.restart_all()
    metric("ZooKeeper outage: ensemble serving again after restart", (time.monotonic() - t1) * 1000, "ms")
    leader2, _ = wait_one_leader(aggrs, timeout=SESSION_TIMEOUT + 15)
    metric("ZooKeeper outage: a leader again after the restart", (time.monotonic() - t1) * 1000, "ms")
    for c in clients:
        c.wait_welcomed_by(leader2.stream_port, after=t1, timeout=15)
    checked, more = settle_and_account(leader2, clients, agents, togglers)
    problems += more
    assert not problems, "\n".join(problems)


def test_sigterm_leader_fails_over_fast(env, zk, cluster_name, metric):
    togglers = write_profiles(env)
    aggrs = start_sequentially(make_aggregators(env, zk, cluster_name, 3))
    leader, _ = wait_one_leader(aggrs)
    clients = [c.start() for c in clients_for(env, aggrs, ["st1"])]
    agents = [env.agent("ra1", "flappy", aggrs).start()]
    start_togglers(togglers)
    clients[0].wait_acks(20, port=leader.stream_port)
    wait_agents_acked(agents)
    survivors = [a for a in aggrs if a is not leader]

    t0 = time.monotonic()
    leader.sigterm()
    new = wait_until(lambda: next((s for s in survivors if s.role() == "leader"), None), 5,
                     interval=0.002, desc="a new leader after SIGTERM")
    dt = time.monotonic() - t0
    metric("SIGTERM failover: new leader /readyz", dt * 1000, "ms")
    w = clients[0].wait_welcomed_by(new.stream_port, after=t0, timeout=5)
    metric("SIGTERM failover: foreign client welcomed by the new leader", (w[0][0] - t0) * 1000, "ms")
    leader.stop()                # exit code 0
    assert dt < 2.0, f"SIGTERM failover took {dt:.3f}s"

    checked, problems = settle_and_account(new, clients, agents, togglers)
    assert not problems, "\n".join(problems)


@pytest.mark.no_valgrind(reason="ten leader restarts in a row: about 5 minutes under memcheck")
@pytest.mark.long(reason="ten leader restarts in a row: 20 s")
def test_leader_restarted_repeatedly_loses_nothing(env, zk, cluster_name, metric):
    togglers = write_profiles(env)
    aggrs = start_sequentially(make_aggregators(env, zk, cluster_name, 3))
    clients = [c.start() for c in clients_for(env, aggrs, ["rr1", "rr2"])]
    agents = [env.agent(f"ra{i}", "flappy", aggrs).start() for i in (1, 2, 3)]
    start_togglers(togglers)
    wait_agents_acked(agents)
    times = {"kill -9": [], "SIGTERM": []}
    acked_snapshots = []         # (cycle, {name: acked}) just before each stop
    epochs = []

    t_start = time.monotonic()
    for cycle in range(CYCLES):
        leader, _ = wait_one_leader(aggrs, timeout=SESSION_TIMEOUT + 15)
        epochs.append(epoch_of(leader))
        t_c = time.monotonic()
        # it serves: every client and agent gets something acknowledged by it
        for c in clients:
            c.wait_acks(3, after=t_c, port=leader.stream_port, timeout=20)
        for ag in agents:
            before = safe_acked(ag)
            wait_until(lambda: safe_acked(ag) > before, 20, interval=0.02,
                       desc=f"cycle {cycle}: agent {ag.node_id} acknowledged by {leader.id}")
        mode = "kill -9" if cycle % 2 == 0 else "SIGTERM"
        others = [a for a in aggrs if a is not leader]
        conns = current_conns(clients)
        t0 = time.monotonic()
        if mode == "kill -9":
            leader.kill9()
            # its last acks may still have been in flight: read them
            wait_streams_closed(clients, conns)
        else:
            leader.sigterm()
        acked_snapshots.append((cycle, {**{c.name: c.max_ack for c in clients},
                                        **{ag.node_id: safe_acked(ag) for ag in agents}}))
        wait_until(lambda: any(o.role() == "leader" for o in others), SESSION_TIMEOUT + 10,
                   interval=0.005, desc=f"cycle {cycle}: a new leader after {mode} of {leader.id}")
        times[mode].append(time.monotonic() - t0)
        if mode == "SIGTERM":
            leader.stop()
        leader.restart()

    final, _ = wait_one_leader(aggrs, timeout=SESSION_TIMEOUT + 15)
    assert len(set(epochs)) == len(epochs) and epochs == sorted(epochs), \
        f"epochs must grow with every new leader: {epochs}"
    checked, problems = settle_and_account(final, clients, agents, togglers, timeout=30)
    for cycle, snap in acked_snapshots:
        for c in clients:
            problems += [f"cycle {cycle}: {p}" for p in c.check_in(final, upto=snap[c.name])]
        for ag in agents:
            problems += [f"cycle {cycle}: {p}" for p in agent_check_in(ag, final, upto=snap[ag.node_id])]
    problems += api_matches_clients(final, clients)
    for mode, ts in times.items():
        if ts:
            metric(f"restart cycles: {mode} failover median", statistics.median(ts) * 1000, "ms")
            metric(f"restart cycles: {mode} failover max", max(ts) * 1000, "ms")
    metric("restart cycles: leader restarts", CYCLES, "cycles")
    metric("restart cycles: total time", time.monotonic() - t_start, "s")
    metric("restart cycles: changes checked one by one in the final leader's SQLite", checked, "changes")
    assert not problems, "\n".join(problems[:40])
    for ag in agents:
        ag.assert_alive()
