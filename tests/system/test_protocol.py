"""The agent stream, driven by a foreign client built on Google's protobuf
runtime: Hello/Welcome, ingest with cumulative Acks after commit, idempotent
replay, per-spool sequence numbers, snapshots, heartbeats, and every refusal
(with its Reject code, the connection closed, a log line, and nobody else
harmed)."""

import re
import uuid

import pytest

import muster_harness as mh
from muster_harness import ChangeMaker, StreamClient, encode_varint, pb, wait_until

MAX_FRAME = 64 * 1024
COMPONENTS = ["c1", "c2", "c3"]


@pytest.fixture
def aggr(env):
    env.write_profile("agent", mh.profile_ini("agent", [
        (c, dict(check="exec", command="true", interval="10s", rise=1, fall=1)) for c in COMPONENTS
    ], [("work", COMPONENTS)]))
    env.write_profile("master", mh.profile_ini("master", [
        ("svc", dict(check="exec", command="true", interval="10s", rise=1, fall=1))],
        [("base", ["svc"])]))
    a = env.aggregator(stale_timeout="5s", max_frame="64KiB").start()
    a.digest = env.profile_digest("agent")
    return a


def new_spool():
    return uuid.uuid4().hex


def welcomed(aggr, node_id, spool_id=None, last_seq=0, role="agent"):
    cl = StreamClient(aggr.stream_port)
    r = cl.hello(node_id, role, spool_id or new_spool(), last_seq, digest=aggr.digest)
    assert r.WhichOneof("body") == "welcome", f"expected Welcome for {node_id}, got {r}"
    return cl, r.welcome


def rows_for(aggr, node_id, spool_id):
    return aggr.query(
        "SELECT seq, component, check_kind, from_state, to_state, at_ms, output, boot_id, health, "
        "rise, fall, epoch FROM changes WHERE node_id=? AND spool_id=? ORDER BY seq, id",
        (node_id, spool_id))


def test_ingest_ack_replay_and_spools(aggr):
    sp = new_spool()
    cl, w = welcomed(aggr, "f1", sp)
    assert w.held_seq == 0
    assert w.leader_id == "aggr1"
    assert aggr.health()["leader"]["epoch"] == w.epoch

    mk = ChangeMaker(COMPONENTS)
    for _ in range(10):
        cl.send_changes(mk.make(10))
    cl.send(mk.snapshot())

    def committed_before_ack(ack):
        n = aggr.query("SELECT count(DISTINCT seq) FROM changes WHERE node_id='f1' AND spool_id=? "
                       "AND seq <= ?", (sp, ack))[0][0]
        assert n == ack, f"Ack {ack} arrived but only {n} of seq 1..{ack} are in the database"

    acks = cl.wait_ack(100, on_ack=committed_before_ack)
    assert acks == sorted(acks), f"acks are not cumulative/monotonic: {acks}"
    assert acks[-1] == 100, f"acked beyond what was sent: {acks}"

    rows = rows_for(aggr, "f1", sp)
    assert [r[0] for r in rows] == list(range(1, 101)), "every seq 1..100 exactly once"
    for r in rows:
        c = mk.made[r[0]]
        expect = (c.component, "exec", mh.state_name(getattr(c, "from")), mh.state_name(c.to),
                  c.at_ms, c.output, c.boot_id, 1, 1, 1, w.epoch)
        assert tuple(r[1:]) == expect, f"row for seq {r[0]} differs from what was sent"
    assert aggr.held_seq("f1", sp) == 100

    # replay 50..100: acknowledged again, stored once
    cl.send_changes([mk.made[s] for s in range(50, 101)])
    again = cl.wait_ack(100)
    assert again[-1] == 100
    assert aggr.query("SELECT count(*), count(DISTINCT seq) FROM changes WHERE node_id='f1' AND "
                      "spool_id=?", (sp,))[0] == (100, 100)
    cl.close()

    # same spool: the aggregator says what it holds
    cl2, w2 = welcomed(aggr, "f1", sp, last_seq=100)
    assert w2.held_seq == 100
    cl2.close()

    # a fresh spool (reinstalled node) starts at 0 and is kept apart
    sp2 = new_spool()
    cl3, w3 = welcomed(aggr, "f1", sp2, last_seq=0)
    assert w3.held_seq == 0
    mk2 = ChangeMaker(COMPONENTS)
    cl3.send_changes(mk2.make(10))
    cl3.send(mk2.snapshot())
    cl3.wait_ack(10)
    assert [r[0] for r in rows_for(aggr, "f1", sp2)] == list(range(1, 11))
    assert len(rows_for(aggr, "f1", sp)) == 100
    assert aggr.held_seq("f1", sp2) == 10
    assert aggr.held_seq("f1", sp) == 100
    cl3.close()


def test_welcome_advertises_heartbeat(aggr):
    """Welcome.heartbeat_ms is "the interval the aggregator expects"."""
    cl, w = welcomed(aggr, "f-w")
    assert w.heartbeat_ms > 0, f"Welcome without a heartbeat interval: {w}"


def test_heartbeat_is_answered(aggr):
    cl, w = welcomed(aggr, "f-hb")
    mk = ChangeMaker(COMPONENTS)
    cl.send_changes(mk.make(5))
    cl.send(mk.snapshot())
    cl.wait_ack(5)
    cl.send_heartbeat(seq=5)
    env = cl.recv_kind("heartbeat", timeout=2)
    assert env.WhichOneof("body") == "heartbeat", env
    assert env.heartbeat.seq == 5, f"the aggregator's heartbeat should carry its ack (5): {env}"
    assert env.heartbeat.sent_ms > 0


def test_snapshot_reconciles(aggr):
    cl, w = welcomed(aggr, "f-snap")
    mk = ChangeMaker(COMPONENTS)
    cl.send_changes(mk.make(3))        # every component starting -> healthy
    cl.send(mk.snapshot())
    cl.wait_ack(3)
    aggr.wait_node("f-snap", lambda n: {c["name"]: c["state"] for c in n["components"]} ==
                   {"c1": "healthy", "c2": "healthy", "c3": "healthy"}, 3,
                   desc="three healthy components")
    # the snapshot is the truth: c3 is gone, c1's state is what it says
    mk.state["c1"] = pb().STATE_WARNING
    cl.send(mk.snapshot(only=["c1", "c2"]))
    n = aggr.wait_node("f-snap", lambda n: {c["name"]: c["state"] for c in n["components"]} ==
                       {"c1": "warning", "c2": "healthy"}, 3,
                       desc="c3 removed and c1 warning after the snapshot")
    assert n["verdict"] == "degraded", n
    # the connection is still good
    cl.send_changes(mk.make(1))
    cl.wait_ack(4)


def test_profile_drift_is_accepted_and_reported(aggr):
    """A Hello whose profile digest differs from the aggregator's is welcomed
    and reported as drift."""
    cl = StreamClient(aggr.stream_port)
    r = cl.hello("f-drift", "agent", new_spool(), 0, digest="0" * 64)
    assert r.WhichOneof("body") == "welcome", r
    mk = ChangeMaker(COMPONENTS)
    cl.send_changes(mk.make(3))
    cl.send(mk.snapshot())
    cl.wait_ack(3)
    n = aggr.wait_node("f-drift", lambda n: len(n["components"]) == 3, 3, desc="f-drift listed")
    assert n["profile_drift"] is True, n
    assert aggr.nodes()["f-drift"]["profile_drift"] is True
    h = aggr.health()
    assert any("drift" in str(x).lower() for x in n["reasons"] + h["reasons"]), \
        f"profile drift is not among the reasons: node {n['reasons']}, cluster {h['reasons']}"
    # a node with the right digest is not drifting
    cl2, _ = welcomed(aggr, "f-nodrift")
    n2 = aggr.wait_node("f-nodrift", lambda n: True, 3, desc="f-nodrift listed")
    assert n2["profile_drift"] is False, n2


# ----------------------------------------------------------------- refusals

def _hello_env(**kw):
    base = dict(node_id="bad", role="agent", spool_id=new_spool(), hostname="h",
                boot_id="00000000-0000-4000-8000-000000000009", protocol_version=1)
    base.update(kw)
    return pb().Envelope(hello=pb().Hello(**base))


def _frame(env):
    data = env.SerializeToString()
    return encode_varint(len(data)) + data


def _bad_unknown_role(cl, aggr):
    cl.send(_hello_env(role="nosuchrole", profile_digest=aggr.digest))


def _bad_empty_node(cl, aggr):
    cl.send(_hello_env(node_id="", profile_digest=aggr.digest))


def _bad_changes_first(cl, aggr):
    cl.send_changes(ChangeMaker(COMPONENTS).make(1))


def _bad_snapshot_first(cl, aggr):
    cl.send(ChangeMaker(COMPONENTS).snapshot())


def _bad_heartbeat_first(cl, aggr):
    cl.send_heartbeat()


def _bad_second_hello(cl, aggr):
    cl.send(_hello_env(node_id="twice", profile_digest=aggr.digest))
    r = cl.recv_kind(("welcome", "reject"))
    assert r.WhichOneof("body") == "welcome", r
    cl.send(_hello_env(node_id="twice", profile_digest=aggr.digest))


UNDECODABLE = b"\x0a\x05ab"   # field 1, length 5, only 2 bytes follow


def _bad_undecodable(cl, aggr):
    with pytest.raises(Exception):
        pb().Envelope().ParseFromString(UNDECODABLE)   # Google's runtime agrees it is broken
    cl.send_raw(encode_varint(len(UNDECODABLE)) + UNDECODABLE)


def _bad_undecodable_after_hello(cl, aggr):
    _welcome_first(cl, aggr, "undec")
    cl.send_raw(encode_varint(len(UNDECODABLE)) + UNDECODABLE)


def _bad_too_large(cl, aggr):
    cl.send_raw(encode_varint(MAX_FRAME + 1))     # the body never comes


def _bad_too_large_after_hello(cl, aggr):
    _welcome_first(cl, aggr, "big")
    cl.send_raw(encode_varint(10 * 1024 * 1024))


def _bad_endless_varint(cl, aggr):
    cl.send_raw(b"\xff" * 11)


def _welcome_first(cl, aggr, node):
    cl.send(_hello_env(node_id=node, profile_digest=aggr.digest))
    r = cl.recv_kind(("welcome", "reject"))
    assert r.WhichOneof("body") == "welcome", r


BAD = [
    ("unknown_role", _bad_unknown_role, "REJECT_UNKNOWN_ROLE"),
    ("empty_node_id", _bad_empty_node, "REJECT_BAD_HELLO"),
    ("changes_before_hello", _bad_changes_first, "REJECT_PROTOCOL"),
    ("snapshot_before_hello", _bad_snapshot_first, "REJECT_PROTOCOL"),
    ("heartbeat_before_hello", _bad_heartbeat_first, "REJECT_PROTOCOL"),
    ("second_hello", _bad_second_hello, "REJECT_PROTOCOL"),
    ("undecodable_frame", _bad_undecodable, "REJECT_MALFORMED"),
    ("undecodable_after_hello", _bad_undecodable_after_hello, "REJECT_MALFORMED"),
    ("too_large", _bad_too_large, "REJECT_TOO_LARGE"),
    ("too_large_after_hello", _bad_too_large_after_hello, "REJECT_TOO_LARGE"),
    ("endless_varint", _bad_endless_varint, "REJECT_MALFORMED"),
]


@pytest.mark.parametrize("name,action,code", BAD, ids=[b[0] for b in BAD])
def test_refusal(aggr, name, action, code):
    # a well-behaved client connected before the bad one
    before, _ = welcomed(aggr, "bystander")
    mk = ChangeMaker(COMPONENTS)
    before.send_changes(mk.make(3))
    before.send(mk.snapshot())
    before.wait_ack(3)

    log_offset = aggr.log_size()
    bad = StreamClient(aggr.stream_port)
    action(bad, aggr)
    r = bad.recv_kind("reject", timeout=3)
    assert r.WhichOneof("body") == "reject", f"expected Reject {code}, got {r}"
    assert pb().RejectCode.Name(r.reject.code) == code, f"wrong code: {r.reject}"
    assert r.reject.reason.strip(), "a Reject must say why"
    bad.expect_closed(timeout=3)

    reason = r.reject.reason.strip()
    pat = re.compile(r"reject|refus", re.I)

    def logged():
        new = aggr.log_since(log_offset)
        return [l for l in new.splitlines() if pat.search(l) or reason in l]
    wait_until(logged, 2, desc=f"a log line about the refusal (reason {reason!r})")

    # everyone else is still served
    before.send_changes(mk.make(2))
    before.wait_ack(5)
    after, w = welcomed(aggr, f"after-{name}")
    after.send_changes(ChangeMaker(COMPONENTS).make(1))
    after.wait_ack(1)
    assert aggr.get("/v1/health").status_code == 200
    assert mh.http_get(aggr.http_port, "/readyz").status_code == 200


def test_empty_envelope_is_refused(aggr):
    """A zero-length frame decodes to an Envelope with no body: refused."""
    before, _ = welcomed(aggr, "bystander")
    bad = StreamClient(aggr.stream_port)
    bad.send_raw(b"\x00")
    r = bad.recv_kind("reject", timeout=3)
    assert pb().RejectCode.Name(r.reject.code) in ("REJECT_MALFORMED", "REJECT_PROTOCOL"), r
    bad.expect_closed()
    before.send_changes(ChangeMaker(COMPONENTS).make(1))
    before.wait_ack(1)


def _batch_of_size(target, first_seq):
    """An Envelope{ChangeBatch} whose encoding is exactly target bytes."""
    changes = []
    seq = first_seq
    while True:
        c = pb().Change(seq=seq, component="c1", check=pb().CHECK_EXEC, to=pb().STATE_HEALTHY,
                        at_ms=mh.now_ms(), output="x" * 1000, boot_id="b", rise=1, fall=1)
        env = pb().Envelope(changes=pb().ChangeBatch(changes=changes + [c]))
        if env.ByteSize() > target - 1200:
            break
        changes.append(c)
        seq += 1
    for n in range(0, 2500):
        c.output = "x" * n
        env = pb().Envelope(changes=pb().ChangeBatch(changes=changes + [c]))
        if env.ByteSize() == target:
            return env, seq
    raise AssertionError("could not build a batch of exactly %d bytes" % target)


def test_max_frame_boundary(aggr):
    """A frame of exactly max_frame bytes is accepted; one byte more is not."""
    cl, _ = welcomed(aggr, "f-big")
    env, last = _batch_of_size(MAX_FRAME, 1)
    assert len(env.SerializeToString()) == MAX_FRAME
    cl.send(env)
    cl.wait_ack(last, timeout=3)
    env2, last2 = _batch_of_size(MAX_FRAME + 1, last + 1)
    try:
        cl.send(env2)
    except (BrokenPipeError, ConnectionResetError):
        pass   # refused before the body was read: fine, the Reject is already queued
    r = cl.recv_kind("reject", timeout=3)
    assert pb().RejectCode.Name(r.reject.code) == "REJECT_TOO_LARGE", r
    cl.expect_closed()
    assert aggr.held_seq("f-big", aggr.query(
        "SELECT spool_id FROM spools WHERE node_id='f-big'")[0][0]) == last


def test_burst_beyond_one_turn_is_handled_without_more_bytes(aggr):
    """An agent that writes more frames at once than the aggregator handles in
    one turn (256) and then waits gets every one of them acknowledged: the
    frames left in the buffer are not stuck until the agent sends again."""
    sp = new_spool()
    cl, _ = welcomed(aggr, "burst1", sp)
    mk = ChangeMaker(COMPONENTS)
    burst = b""
    for _ in range(600):
        data = mh.pb().Envelope(changes=mh.pb().ChangeBatch(changes=mk.make(1))).SerializeToString()
        burst += mh.encode_varint(len(data)) + data
    cl.send_raw(burst)
    # No heartbeat, nothing more: the last change must still be acked soon.
    cl.wait_ack(600, timeout=3.0)
    assert len(rows_for(aggr, "burst1", sp)) == 600
