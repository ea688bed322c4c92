"""The DC/OS version and the Mesos id of a node (issue 18, part 3): the agent
reads the version from DC/OS's dcos-version.json ([agent] dcos_version_file)
and fetches the Mesos id from the local Mesos state ([agent]
mesos_state_url), carries them to the aggregator (Hello, heartbeats), and
every route shows them: /v1/nodes/{id} ("dcos"), the local
/system/health/v1 (dcos_version, mesos_id) and /report (MesosID). DC/OS's
own test_dcos_diagnostics_health asserts both non-empty.

The Mesos state is a small HTTP server the test runs on the node's address
(127.0.0.5), padded past what the agent reads, as a master's state is."""

import uuid

import pytest
import requests

import muster_harness as mh
from muster_harness import T, wait_until

pytestmark = pytest.mark.no_valgrind(
    reason='a fake Mesos polled every 100 ms for seconds at a time; these paths run in the AddressSanitizer pass')

NODE = "127.0.0.5"
UNIT = "dcos-mesos-slave.service"
FIRST_ID = "0cf6ba23-3d08-4f4e-bdd4-39e1a6b0b9a4-S1"
SECOND_ID = "0cf6ba23-3d08-4f4e-bdd4-39e1a6b0b9a4-S7"


def dcos_agent_profile(env):
    env.write_profile("agent", mh.profile_ini("agent", [
        (UNIT, dict(check="exec", command="true", interval="200ms", rise=1, fall=1,
                    name="Mesos Agent", description="distributed systems kernel agent")),
    ], [("base", [UNIT])]))


def facts(aggr, ip):
    """What each route shows of the node: (dcos_version, mesos_id) as
    /v1/nodes/{id}, the local route and /report (its node, and the node in
    each unit's list) show them."""
    node = aggr.node(ip)["dcos"]
    base = f"http://{ip}:{aggr.http_port}/system/health/v1"
    local = requests.get(base, params={"cache": "0"}, timeout=T(5))
    local.raise_for_status()
    local = local.json()
    report = requests.get(base + "/report", timeout=T(5))
    report.raise_for_status()
    report = report.json()
    in_units = {n["MesosID"] for u in report["Units"].values() for n in u["Nodes"]
                if n["IP"] == ip}
    return {"node": (node["version"], node["mesos_id"]),
            "local": (local["dcos_version"], local["mesos_id"]),
            "report": report["Nodes"][ip]["MesosID"], "report_units": in_units}


def shown(version, mesos_id):
    return {"node": (version, mesos_id), "local": (version, mesos_id or ""),
            "report": mesos_id or "", "report_units": {mesos_id or ""}}


def wait_facts(aggr, version, mesos_id, timeout, desc):
    last = {}

    def ok():
        last["v"] = facts(aggr, NODE)
        return last["v"] == shown(version, mesos_id)
    try:
        wait_until(ok, timeout, desc=desc)
    except mh.WaitTimeout as e:
        raise mh.WaitTimeout(f"{e}\nlast seen: {last.get('v')}") from None


@pytest.fixture
def mesos(env):
    m = mh.FakeMesosState(FIRST_ID, host=NODE, pad=1_000_000)
    yield m
    m.close()


def dcos_agent(env, aggr, mesos, **extra):
    return env.agent(NODE, "agent", aggr, extra={
        "dcos_version_file": mh.dcos_version_file(env, "2.2.0"),
        "mesos_state_url": f"http://{{node_id}}:{mesos.port}/state",
        "mesos_state_interval": "200ms", **extra})


def test_version_and_mesos_id_reach_every_route_and_follow_a_new_registration(env, mesos):
    dcos_agent_profile(env)
    aggr = env.aggregator(stale_timeout="5s")
    aggr.extra["listen_http"] = f"0.0.0.0:{aggr.http_port}"   # the local route at the node's IP
    aggr.start()
    agent = dcos_agent(env, aggr, mesos).start()
    aggr.wait_node(NODE, lambda n: n["verdict"] == "healthy", 10, desc="the node healthy")
    # The id comes from the state's first bytes, though the state is 1 MB.
    wait_facts(aggr, "2.2.0", FIRST_ID, 5, "the version and the first Mesos id everywhere")
    body = requests.get(f"http://{NODE}:{aggr.http_port}/system/health/v1", timeout=T(5)).json()
    # DC/OS's test_dcos_diagnostics_health: every key but units non-empty.
    for key in ("hostname", "ip", "dcos_version", "node_role", "mesos_id",
                "dcos_diagnostics_version"):
        assert body[key], (key, body)

    # The Mesos agent registers again under a new id: every route shows it
    # within seconds (a heartbeat carries it at once).
    mesos.mesos_id = SECOND_ID
    wait_facts(aggr, "2.2.0", SECOND_ID, 3, "the new Mesos id everywhere")
    assert (f"Mesos id {SECOND_ID}, from http://{NODE}:{mesos.port}/state (was {FIRST_ID}: "
            f"Mesos registered again)") in agent.proc.stderr_text()

    # Mesos down (an error answer), then registering (no "id"): the node
    # keeps the last id Mesos named, and the agent says why once per reason.
    mesos.status = 503
    hits = mesos.hits
    wait_until(lambda: mesos.hits >= hits + 3, 5, desc="three fetches answered 503")
    log = agent.proc.stderr_text()
    assert log.count("HTTP 503 (expected 200)") == 1, log[-2000:]
    assert f"HTTP 503 (expected 200); keeping {SECOND_ID}, ignoring" in log
    mesos.status, mesos.mesos_id = 200, None
    wait_until(lambda: "no \"id\" in the state's first 65536 bytes"
               in agent.proc.stderr_text(), 5, desc="a large state without an id said")
    mesos.pad = 0
    wait_until(lambda: "the state has no \"id\" (Mesos has not registered yet)"
               in agent.proc.stderr_text(), 5, desc="a small state without an id said")
    assert facts(aggr, NODE) == shown("2.2.0", SECOND_ID)

    # An agent that starts again does not know the id until Mesos names it:
    # its Hello does not make the node forget it.
    agent.stop()
    agent = dcos_agent(env, aggr, mesos).start()
    aggr.wait_node(NODE, lambda n: n["connected"], 10, desc="the agent back")
    assert facts(aggr, NODE) == shown("2.2.0", SECOND_ID)
    mesos.mesos_id = FIRST_ID
    wait_facts(aggr, "2.2.0", FIRST_ID, 3, "the id Mesos names after the agent's restart")
    agent.assert_alive()


def test_a_node_without_facts_shows_them_empty(env):
    """Without the keys (not a DC/OS node): null in /v1/nodes/{id}, "" in
    DC/OS's routes, as before."""
    dcos_agent_profile(env)
    aggr = env.aggregator().start()
    env.agent("a1", "agent", aggr).start()
    n = aggr.wait_node("a1", lambda n: n["verdict"] == "healthy", 10, desc="a1 healthy")
    assert n["dcos"] == {"version": None, "mesos_id": None}, n["dcos"]
    rep = aggr.get("/system/health/v1/report").json()
    assert rep["Nodes"]["a1"]["MesosID"] == ""
    local = aggr.get("/system/health/v1?node=a1").json()
    assert (local["dcos_version"], local["mesos_id"]) == ("", "")


def config_line(agent, key):
    return next(i for i, text in enumerate(open(agent.config).read().splitlines(), 1)
                if text.startswith(f"{key} = "))


@pytest.mark.parametrize("content,message", [
    (None, "cannot read {path}: No such file or directory"),
    ("2.2.0\n", "{path} is not JSON: "),
    ('{"dcos-variant": "open"}', "{path} has no \"version\" string"),
    ('{"version": 2}', "{path} has no \"version\" string"),
    ('["2.2.0"]', "{path} has no \"version\" string"),
    ('{"version": "2.2 beta"}', "{path}: \"version\" must be 1-64 bytes of printable UTF-8 "
                                "without spaces"),
    ('{"version": "' + "9" * 65 + '"}', "{path}: \"version\" must be 1-64 bytes"),
    ('{"version": "2.2.0"', "{path} is not JSON: "),
], ids=["missing", "not-json", "no-version", "not-a-string", "not-an-object", "spaces",
        "too-long", "cut"])
def test_a_bad_dcos_version_file_stops_the_agent_at_its_line(env, content, message):
    dcos_agent_profile(env)
    aggr = env.aggregator().start()
    path = env.path("dcos-version.json")
    if content is not None:
        with open(path, "w") as f:
            f.write(content)
    agent = env.agent("a1", "agent", aggr, extra={"dcos_version_file": path})
    agent.write_config()
    rc, out, err, _ = mh.run_to_completion(agent.argv("--check-config"))
    assert rc == 1, (rc, out, err)
    assert (f"{agent.config}:{config_line(agent, 'dcos_version_file')}: [agent] "
            f"dcos_version_file: " + message.format(path=path)) in err, err


def test_a_bad_mesos_state_url_stops_the_agent_at_its_line(env):
    dcos_agent_profile(env)
    aggr = env.aggregator().start()
    agent = env.agent("a1", "agent", aggr, extra={"mesos_state_url": "ftp://{node_id}/state"})
    agent.write_config()
    rc, out, err, _ = mh.run_to_completion(agent.argv("--check-config"))
    assert rc == 1, (rc, out, err)
    assert (f"{agent.config}:{config_line(agent, 'mesos_state_url')}: [agent] "
            f"mesos_state_url: ") in err, err


def test_the_aggregator_caps_what_the_wire_says(env):
    """A Hello's dcos_version over 64 bytes and a heartbeat's mesos_id over
    128 are refused; at the caps they are shown."""
    dcos_agent_profile(env)
    aggr = env.aggregator().start()
    digest = env.profile_digest("agent")
    cl = mh.StreamClient(aggr.stream_port)
    r = cl.hello("f1", "agent", uuid.uuid4().hex, digest=digest, dcos_version="9" * 65)
    assert r.WhichOneof("body") == "reject", r
    assert r.reject.reason == "Hello with an overlong dcos_version (65 bytes, at most 64)", r
    cl.close()

    cl = mh.StreamClient(aggr.stream_port)
    r = cl.hello("f1", "agent", uuid.uuid4().hex, digest=digest, dcos_version="9" * 64,
                 mesos_id="m" * 128)
    assert r.WhichOneof("body") == "welcome", r
    n = aggr.wait_node("f1", lambda n: n["dcos"]["mesos_id"], 3, desc="f1's Mesos id")
    assert n["dcos"] == {"version": "9" * 64, "mesos_id": "m" * 128}
    # A heartbeat names a new one; an empty one keeps it.
    cl.send(mh.pb().Envelope(heartbeat=mh.pb().Heartbeat(sent_ms=mh.now_ms(), mesos_id="new-S2")))
    aggr.wait_node("f1", lambda n: n["dcos"]["mesos_id"] == "new-S2", 3, desc="the new id")
    cl.send(mh.pb().Envelope(heartbeat=mh.pb().Heartbeat(sent_ms=mh.now_ms())))
    cl.send(mh.pb().Envelope(heartbeat=mh.pb().Heartbeat(sent_ms=mh.now_ms(), mesos_id="x" * 129)))
    r = cl.recv_kind(("reject",))
    assert r.reject.reason == "heartbeat mesos_id over 128 bytes or not UTF-8", r.reject
    cl.expect_closed(timeout=3)
    assert aggr.node("f1")["dcos"]["mesos_id"] == "new-S2"
