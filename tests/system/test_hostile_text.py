"""Texts from outside, at the aggregator's door: a Hello whose node id,
host name or role holds a newline and a "<2>" priority, or ESC, must not
forge a journal record or reach a terminal raw (the logger escapes every
message), and a Hello with an overlong text (a 500 KB host name) is refused
with a reason naming the field: nothing of it is stored or served, and
everyone else goes on being served."""

import re
import uuid

import pytest

import muster_harness as mh
from muster_harness import ChangeMaker, StreamClient, wait_until

COMPONENTS = ["c1", "c2"]
FORGED = "\n<2>aggregatord: forged\x1b[31m\r"


@pytest.fixture
def aggr(env):
    env.write_profile("agent", mh.profile_ini("agent", [
        (c, dict(check="exec", command="true", interval="10s", rise=1, fall=1)) for c in COMPONENTS
    ], [("work", COMPONENTS)]))
    # the default 1 MiB frame cap, so a 500 KB host name reaches the Hello check
    a = env.aggregator(stale_timeout="5s", max_frame="1MiB").start()
    a.digest = env.profile_digest("agent")
    return a


def bystander(aggr):
    cl = StreamClient(aggr.stream_port)
    r = cl.hello("bystander", "agent", uuid.uuid4().hex, 0, digest=aggr.digest)
    assert r.WhichOneof("body") == "welcome", r
    mk = ChangeMaker(COMPONENTS)
    cl.send_changes(mk.make(2))
    cl.wait_ack(2)
    return cl, mk


def assert_log_lines_are_whole(text):
    """Every line of the daemon's stderr is one record of its own: it starts
    with a "<N>aggregatord: " prefix the logger wrote, and holds no raw
    control character (ESC, CR)."""
    for line in text.split("\n")[:-1]:
        assert re.match(r"<[3-7]>aggregatord: ", line), f"a line not written as a record: {line!r}"
        assert not re.search(r"[\x00-\x1f\x7f]", line), f"a raw control character: {line!r}"


@pytest.mark.parametrize("field", ["node_id", "hostname", "role"])
def test_control_characters_in_a_hello_cannot_forge_a_log_line(aggr, field):
    before, mk = bystander(aggr)
    offset = aggr.log_size()
    values = {"node_id": "evil", "hostname": "evil-host", "role": "agent"}
    values[field] += FORGED
    cl = StreamClient(aggr.stream_port)
    r = cl.hello(values["node_id"], values["role"], uuid.uuid4().hex, 0, digest=aggr.digest,
                 hostname=values["hostname"])
    kind = r.WhichOneof("body")
    if kind == "welcome":
        cl.send_changes(ChangeMaker(COMPONENTS).make(1))
        cl.wait_ack(1)
    cl.close()

    # the end of the connection is logged (disconnected, or rejected for an
    # unknown role); node ids and roles are quoted, escaped within the line
    escaped = "\\n<2>aggregatord: forged\\x1b[31m\\r"

    def logged():
        new = aggr.log_since(offset)
        return new if re.search(r"disconnected|rejected", new) else None
    new = wait_until(logged, 3, desc="a log line about the end of the connection")
    assert_log_lines_are_whole(new)
    if field != "hostname":
        assert escaped in new, new
    assert "forged" not in "".join(l for l in new.split("\n") if l.startswith("<2>")), new

    # what is served is the text as sent, in JSON (which escapes it itself)
    if kind == "welcome" and field == "node_id":
        wait_until(lambda: values["node_id"] in
                   [n["id"] for n in aggr.get("/v1/nodes").json()["nodes"]],
                   3, desc="the node, under its id as sent, in /v1/nodes")
    # everyone else is still served
    before.send_changes(mk.make(1))
    before.wait_ack(3)


def test_overlong_hostname_is_refused_and_not_stored(aggr):
    before, mk = bystander(aggr)
    offset = aggr.log_size()
    cl = StreamClient(aggr.stream_port)
    r = cl.hello("huge-host", "agent", uuid.uuid4().hex, 0, digest=aggr.digest,
                 hostname="h" * 500_000)
    assert r.WhichOneof("body") == "reject", r
    assert mh.pb().RejectCode.Name(r.reject.code) == "REJECT_BAD_HELLO", r.reject
    assert "overlong hostname (500000 bytes, at most 253)" in r.reject.reason, r.reject.reason
    cl.expect_closed(timeout=3)

    def logged():
        new = aggr.log_since(offset)
        return new if "overlong hostname" in new else None
    new = wait_until(logged, 3, desc="a log line about the refused Hello")
    assert_log_lines_are_whole(new)
    assert max(len(l) for l in new.split("\n")) < 4096, "a log line is capped"

    # nothing of it is stored or served
    ids = [n["id"] for n in aggr.get("/v1/nodes").json()["nodes"]]
    assert "huge-host" not in ids, ids
    assert aggr.get("/v1/nodes/huge-host").status_code == 404
    before.send_changes(mk.make(1))
    before.wait_ack(3)
    assert not aggr.query("SELECT 1 FROM nodes WHERE node_id = ?", ("huge-host",))
