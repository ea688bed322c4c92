"""DC/OS diagnostics' health API under /system/health/v1: the routes, the
exact key sets and counts DC/OS tooling relies on, the 0/1/3 health ints,
the roles, the /report tree and DC/OS-style 404 bodies, read the way
DC/OS's own tools read them (`jq '.nodes[].host_ip'` style)."""

import uuid

import pytest
import requests

import muster_harness as mh
from muster_harness import ChangeMaker, StreamClient, wait_until

BASE = "/system/health/v1"


@pytest.fixture
def cluster(env):
    env.write_profile("master", mh.profile_ini("master", [
        ("mesos-master", dict(check="systemd", unit="dcos-mesos-master.service")),
        ("exhibitor", dict(check="exec", command="true", interval="10s", rise=1, fall=1)),
    ], [("zk", ["exhibitor"]), ("mesos", ["mesos-master"])]))
    env.write_profile("agent", mh.profile_ini("agent", [
        ("mesos-agent", dict(check="systemd", unit="dcos-mesos-slave.service")),
    ], [("mesos-agent", ["mesos-agent"])]))
    aggr = env.aggregator(stale_timeout="30s", expected_masters=["10.0.0.1", "10.0.0.9"]).start()
    clients = []
    for node, role, comps in [("10.0.0.1", "master", ["mesos-master", "exhibitor"]),
                              ("10.0.0.2", "agent", ["mesos-agent"])]:
        cl = StreamClient(aggr.stream_port)
        r = cl.hello(node, role, uuid.uuid4().hex, 0, digest=env.profile_digest(role))
        assert r.WhichOneof("body") == "welcome"
        mk = ChangeMaker(comps)
        cl.send_changes(mk.make(len(comps)))      # every component goes healthy
        cl.wait_ack(mk.seq)
        cl.send(mk.snapshot())
        clients.append((cl, mk))
    aggr.dcos = lambda path: requests.get(f"http://127.0.0.1:{aggr.http_port}{BASE}{path}",
                                          timeout=5)
    # The DC/OS view is a snapshot taken a few times a second: wait for both
    # nodes' components to be in it.
    def settled():
        if aggr.dcos("/units").status_code != 200:
            return False
        units = {u["id"] for u in aggr.dcos("/units").json()["units"]}
        health = {n["host_ip"]: n["health"] for n in aggr.dcos("/nodes").json()["nodes"]}
        return ({"dcos-mesos-slave.service", "dcos-mesos-master.service"} <= units and
                health.get("10.0.0.1") == 0 and health.get("10.0.0.2") == 0)
    wait_until(settled, desc="both nodes healthy in the DC/OS view")
    yield aggr, clients
    for cl, _ in clients:
        cl.close()


def test_routes_keys_and_health(cluster):
    aggr, clients = cluster
    nodes = aggr.dcos("/nodes").json()["nodes"]
    assert all(set(n) == {"host_ip", "health", "role"} for n in nodes)
    ips = sorted(n["host_ip"] for n in nodes)          # jq '.nodes[].host_ip'
    assert ips == ["10.0.0.1", "10.0.0.2", "10.0.0.9"]
    by_ip = {n["host_ip"]: n for n in nodes}
    assert by_ip["10.0.0.1"] == {"host_ip": "10.0.0.1", "health": 0, "role": "master"}
    assert by_ip["10.0.0.2"]["role"] == "agent" and by_ip["10.0.0.2"]["health"] == 0
    assert by_ip["10.0.0.9"]["health"] == 3            # an expected master never seen

    units = aggr.dcos("/units").json()["units"]
    assert all(set(u) == {"id", "name", "health", "description"} for u in units)
    ids = {u["id"] for u in units}
    assert {"dcos-mesos-master.service", "dcos-mesos-slave.service", "exhibitor"} <= ids
    u = aggr.dcos("/units/dcos-mesos-master.service").json()
    assert set(u) == {"id", "name", "health", "description"} and u["health"] == 0
    un = aggr.dcos("/units/dcos-mesos-master.service/nodes").json()["nodes"]
    assert un == [{"host_ip": "10.0.0.1", "health": 0, "role": "master"}]
    one = aggr.dcos("/units/dcos-mesos-master.service/nodes/10.0.0.1").json()
    assert set(one) == {"host_ip", "health", "role", "output", "help"}
    assert aggr.dcos("/nodes/10.0.0.2").json() == {"host_ip": "10.0.0.2", "health": 0,
                                                    "role": "agent"}
    nu = aggr.dcos("/nodes/10.0.0.2/units").json()["units"]
    assert [x["id"] for x in nu] == ["dcos-mesos-slave.service"]
    full = aggr.dcos("/nodes/10.0.0.2/units/dcos-mesos-slave.service").json()
    assert set(full) == {"id", "health", "output", "description", "help", "name"}
    r = aggr.dcos("/nodes/10.0.0.2/units/dcos-mesos-slave.service")
    assert r.headers["Content-Type"] == "application/json" and r.text.endswith("\n")

    # A failure shows as 1 on the unit, on the node, and in the per-unit node list.
    cl, mk = clients[1]
    cl.send_changes(mk.make(1))                        # mesos-agent goes unhealthy
    cl.wait_ack(mk.seq)
    wait_until(lambda: aggr.dcos("/units/dcos-mesos-slave.service").json()["health"] == 1,
               desc="unit turns unhealthy")
    assert aggr.dcos("/nodes/10.0.0.2").json()["health"] == 1
    assert aggr.dcos("/units/dcos-mesos-slave.service/nodes").json()["nodes"][0]["health"] == 1
    assert aggr.dcos("/nodes/10.0.0.2/units/dcos-mesos-slave.service").json()["output"] != ""


def test_report_tree_and_errors(cluster):
    aggr, _ = cluster
    rep = aggr.dcos("/report").json()
    assert set(rep) == {"Units", "Nodes", "UpdatedTime"}
    unit = rep["Units"]["dcos-mesos-master.service"]
    assert set(unit) == {"UnitName", "Nodes", "Health", "Title", "Timestamp", "PrettyName"}
    assert unit["Nodes"][0]["IP"] == "10.0.0.1"
    assert "dcos-mesos-master.service" in unit["Nodes"][0]["Output"]
    assert set(rep["Nodes"]["10.0.0.2"]) >= {"Role", "IP", "Health", "Units", "Output"}

    r = aggr.dcos("/units/no-such.service")
    assert r.status_code == 404 and r.text == "no-such.service not found\n"
    r = aggr.dcos("/nodes/10.9.9.9")
    assert r.status_code == 404 and r.text == "10.9.9.9 not found\n"
    r = requests.post(f"http://127.0.0.1:{aggr.http_port}{BASE}/nodes", timeout=5)
    assert r.status_code == 405
