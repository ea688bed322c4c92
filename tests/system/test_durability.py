"""Nothing acknowledged is lost, tested by killing processes for real: the
agent (kill -9 mid-stream, restart on the same spool) and the aggregator
(kill -9 mid-stream, restart on the same database), with a foreign client and
with the real agent."""

import select
import socket
import time
import uuid

import muster_harness as mh
from muster_harness import ChangeMaker, StreamClient, StreamClosed, T, wait_until

COMPONENTS = ["c1", "c2", "c3"]
ROW_COLS = "seq, component, check_kind, from_state, to_state, at_ms, output, boot_id, health, rise, fall"


FLAGS = ["f1", "f2", "f3"]


def flappy_profile(env):
    """Three exec checks on flag files (interval 100ms, the minimum), each
    flag toggled by its own thread: several changes a second."""
    env.write_profile("flappy", mh.profile_ini("flappy", [
        (f, dict(check="exec", command=f"test -e {env.path(f + '.flag')}", interval="100ms",
                 timeout="1s", rise=1, fall=1)) for f in FLAGS], [("base", FLAGS)]))
    return [env.toggler(env.path(f + ".flag"), 0.08) for f in FLAGS]


def start_all(togglers):
    for t in togglers:
        t.start()


def stop_all(togglers):
    for t in togglers:
        t.stop()


def spool_rows(agent):
    return agent.spool_query(f"SELECT {ROW_COLS} FROM changes ORDER BY seq")


def aggr_rows(aggr, node_id, spool_id):
    return aggr.query(f"SELECT {ROW_COLS} FROM changes WHERE node_id=? AND spool_id=? ORDER BY seq, id",
                      (node_id, spool_id))


def assert_exactly_once(aggr_seqs, upto, what):
    dup = sorted({s for s in aggr_seqs if aggr_seqs.count(s) > 1})
    assert not dup, f"{what}: seq stored more than once: {dup[:20]}"
    missing = sorted(set(range(1, upto + 1)) - set(aggr_seqs))
    assert not missing, f"{what}: seq missing from the aggregator database: {missing[:20]} " \
                        f"(of 1..{upto})"


def assert_spool_matches_aggregator(agent, aggr):
    """Every change in the agent's spool is in the aggregator's history exactly
    once, with the same content, and the spool itself has no gaps."""
    sid = agent.spool_id()
    srows = spool_rows(agent)
    assert srows, "the agent spooled nothing"
    top = srows[-1][0]
    assert [r[0] for r in srows] == list(range(1, top + 1)), "the agent's spool has gaps"
    arows = aggr_rows(aggr, agent.node_id, sid)
    assert_exactly_once([r[0] for r in arows], top, "spool vs aggregator")
    assert len(arows) == top, f"aggregator holds {len(arows)} rows for the spool, the spool has {top}"
    diffs = [(s, a) for s, a in zip(srows, arows) if tuple(s) != tuple(a)]
    assert not diffs, ("rows differ between spool and aggregator (spool, aggregator), columns "
                       f"{ROW_COLS}:\n" + "\n".join(f"  {s}\n  {a}" for s, a in diffs[:5]))
    return top


def wait_caught_up(agent, aggr, timeout):
    sid = agent.spool_id()

    def caught_up():
        top = agent.max_seq()
        held = aggr.held_seq(agent.node_id, sid)
        return top > 0 and held == top and (agent.acked_seq() or 0) == top and top
    try:
        return wait_until(caught_up, timeout, interval=0.05, desc="aggregator caught up with the spool")
    except AssertionError as e:
        raise AssertionError(f"{e}: spool max seq {agent.max_seq()}, spool acked_seq "
                             f"{agent.acked_seq()}, aggregator held_seq "
                             f"{aggr.held_seq(agent.node_id, sid)}") from None


def flapping_agent(env, acked):
    """An aggregator and agent n1 on the flappy profile, its flags toggling,
    once acked changes are acknowledged. Returns (togglers, aggregator,
    agent, spool id)."""
    togglers = flappy_profile(env)
    aggr = env.aggregator(stale_timeout="5s").start()
    ag = env.agent("n1", "flappy", aggr).start()
    start_all(togglers)
    wait_until(ag.spool_ready, 5, desc="agent spool created")
    wait_until(lambda: (ag.acked_seq() or 0) >= acked, 5, desc=f"{acked} changes acknowledged")
    return togglers, aggr, ag, ag.spool_id()


def test_agent_kill9_loses_nothing(env, metric):
    togglers, aggr, ag, sid = flapping_agent(env, 20)
    ag.kill9()
    at_kill = ag.max_seq()
    acked_at_kill = ag.acked_seq() or 0
    # The flags keep flipping while the agent is dead.
    flips = [t.flips for t in togglers]
    wait_until(lambda: all(t.flips >= f + 5 for t, f in zip(togglers, flips)), 3,
               desc="every flag flipped 5 times while the agent is dead")
    ag.start()
    wait_until(lambda: ag.max_seq() >= at_kill + 15, 5,
               desc="the restarted agent spools new changes")
    stop_all(togglers)
    assert ag.spool_id() == sid, "a restart on the same spool must keep its spool id"
    top = wait_caught_up(ag, aggr, 10)
    ag.assert_alive()
    n = assert_spool_matches_aggregator(ag, aggr)
    metric("agent kill test: changes spooled", n, "changes")
    assert top > at_kill >= acked_at_kill


def _stream_until_killed(aggr, cl, mk, kill_after_ack):
    """Streams batches, records acks; kill -9 the aggregator once kill_after_ack
    is acknowledged, and keep going until the connection dies. Returns
    (highest ack received, highest seq sent)."""
    last_ack = 0
    killed = False
    deadline = time.monotonic() + T(10)
    while True:
        assert time.monotonic() < deadline, f"streaming did not end; last ack {last_ack}"
        try:
            cl.send_changes(mk.make(20))
        except OSError:
            pass    # the aggregator is gone; read what it sent before dying
        try:
            while select.select([cl.sock], [], [], 0.002)[0] or cl.has_frame():
                env = cl.recv(timeout=1)
                if env.WhichOneof("body") == "ack":
                    assert env.ack.seq >= last_ack, f"ack went backwards {last_ack} -> {env.ack.seq}"
                    last_ack = env.ack.seq
                elif env.WhichOneof("body") == "reject":
                    raise AssertionError(f"Reject while streaming: {env}")
        except (StreamClosed, ConnectionResetError, socket.timeout):
            if killed:
                return last_ack, mk.seq
            raise
        if not killed and last_ack >= kill_after_ack:
            aggr.kill9()
            killed = True
        time.sleep(0.002)   # the stream's pace: a batch every 2 ms or so


def test_aggregator_kill9_foreign_client(env, metric):
    env.write_profile("agent", mh.profile_ini("agent", [
        (c, dict(check="exec", command="true", interval="10s", rise=1, fall=1)) for c in COMPONENTS
    ], [("work", COMPONENTS)]))
    aggr = env.aggregator(stale_timeout="5s").start()
    digest = env.profile_digest("agent")
    sp = uuid.uuid4().hex
    cl = StreamClient(aggr.stream_port)
    r = cl.hello("f-kill", "agent", sp, 0, digest=digest)
    assert r.WhichOneof("body") == "welcome", r
    mk = ChangeMaker(COMPONENTS)
    acked, sent = _stream_until_killed(aggr, cl, mk, 300)
    cl.close()
    assert acked >= 300

    # the dead aggregator's database holds everything it acknowledged
    seqs = [row[0] for row in aggr.query(
        "SELECT seq FROM changes WHERE node_id='f-kill' AND spool_id=?", (sp,))]
    assert_exactly_once(seqs, acked, "after kill -9")

    aggr.start(new_ports_on_conflict=False)
    seqs = [row[0] for row in aggr.query(
        "SELECT seq FROM changes WHERE node_id='f-kill' AND spool_id=?", (sp,))]
    assert_exactly_once(seqs, acked, "after restart")
    cl2 = StreamClient(aggr.stream_port)
    r = cl2.hello("f-kill", "agent", sp, sent, digest=digest)
    assert r.WhichOneof("body") == "welcome", r
    held = r.welcome.held_seq
    metric("aggregator kill (foreign): last ack before kill", acked, "seq")
    metric("aggregator kill (foreign): sent before kill", sent, "seq")
    metric("aggregator kill (foreign): held_seq after restart", held, "seq")
    assert held >= acked, f"Welcome.held_seq {held} < last ack {acked}"
    assert held <= sent
    assert_exactly_once(seqs, held, "Welcome.held_seq promises everything up to it")

    # finish the replay: everything sent ends up stored exactly once
    cl2.send_changes([mk.made[s] for s in range(held + 1, sent + 1)])
    cl2.send(mk.snapshot())
    cl2.wait_ack(sent, timeout=5)
    rows = aggr.query("SELECT seq, component, to_state FROM changes WHERE node_id='f-kill' AND "
                      "spool_id=? ORDER BY seq", (sp,))
    assert_exactly_once([r[0] for r in rows], sent, "after replay")
    assert len(rows) == sent
    for seq, comp, to in rows:
        assert (comp, to) == (mk.made[seq].component, mh.state_name(mk.made[seq].to)), seq


def test_aggregator_kill9_real_agent(env, metric):
    togglers, aggr, ag, sid = flapping_agent(env, 20)

    aggr.kill9()
    acked = ag.acked_seq()
    seqs = [r[0] for r in aggr.query("SELECT seq FROM changes WHERE node_id='n1' AND spool_id=?",
                                     (sid,))]
    assert_exactly_once(seqs, acked, f"spool acked_seq={acked} after aggregator kill -9")
    at_kill = ag.max_seq()
    wait_until(lambda: ag.max_seq() >= at_kill + 10, 3,
               desc="the agent keeps spooling while the aggregator is down")
    ag.assert_alive()

    aggr.start(new_ports_on_conflict=False)
    wait_until(lambda: (ag.acked_seq() or 0) > max(acked, at_kill), 15,
               desc="the agent reconnects and gets new acks")
    stop_all(togglers)
    wait_caught_up(ag, aggr, 10)
    n = assert_spool_matches_aggregator(ag, aggr)
    metric("aggregator kill (agent): spool acked_seq at kill", acked, "seq")
    metric("aggregator kill (agent): changes spooled in all", n, "changes")
