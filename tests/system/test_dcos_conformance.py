"""DC/OS's health API as DC/OS's own tests and clients read it.

Written from the facts of dcos-diagnostics (its router, handlers and Go
response structs), of dcos-test-utils' Diagnostics client and wait_for_dcos,
and of DC/OS's integration tests for the health API: the routes, the key
sets and counts, the types (null for empty lists), the status codes and the
headers. The cluster is named by IP (all on loopback: 127.0.0.x): a master,
an expected master that never reports, an agent with one failed unit, a
public agent, and a public agent whose agent is gone (unreachable).

The wait_for_dcos-style loop polls /units until every unit has health 0;
like dcos-test-utils it retries connection errors and timeouts only, and
any HTTP error aborts it. It must succeed across aggregator restarts and a
leader failover."""

import re
import threading
import time

import pytest
import requests

import muster_harness as mh
from muster_harness import T, wait_until

pytestmark = pytest.mark.no_valgrind(
    reason="a five-node DC/OS cluster per test, for the valgrind pass's time; these routes run in the AddressSanitizer pass")

BASE = "/system/health/v1"
MASTER, NEVER, GONE, AGENT, PUBLIC = ("127.0.0.1", "127.0.0.3", "127.0.0.4", "127.0.0.5",
                                      "127.0.0.6")
ANSIC = re.compile(r"^(Mon|Tue|Wed|Thu|Fri|Sat|Sun) "
                   r"(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) [ 1-3]\d "
                   r"\d\d:\d\d:\d\d \d{4}$")
UNIT_KEYS = ["id", "name", "health", "description"]                         # in a list
NODE_KEYS = ["host_ip", "health", "role"]
UNIT_NODE_KEYS = ["host_ip", "health", "role", "output", "help"]
NODE_UNIT_KEYS = ["id", "health", "output", "description", "help", "name"]
LOCAL_KEYS = ["units", "hostname", "ip", "dcos_version", "node_role", "mesos_id",
              "dcos_diagnostics_version"]
REPORT_NODE_KEYS = ["Leader", "Role", "IP", "Host", "Health", "Output", "MesosID"]
REPORT_UNIT_KEYS = ["UnitName", "Nodes", "Health", "Title", "Timestamp", "PrettyName"]
DCOS_VERSION = "2.2.0"
MESOS_IDS = {MASTER: "5f2b1c1e-8a52-4a9e-9d6b-0e2f1d3c4b5a",
             GONE: "5f2b1c1e-8a52-4a9e-9d6b-0e2f1d3c4b5a-S3",
             AGENT: "5f2b1c1e-8a52-4a9e-9d6b-0e2f1d3c4b5a-S1",
             PUBLIC: "5f2b1c1e-8a52-4a9e-9d6b-0e2f1d3c4b5a-S2"}


class Diagnostics:
    """What dcos-test-utils' Diagnostics client does: every request under
    /system/health/v1 with ?cache=0, to the master or to a node named by
    its IP; connection errors and timeouts retried for a while, nothing
    else."""

    def __init__(self, port, host="127.0.0.1", retry_for=60.0):
        self.port, self.host, self.retry_for = port, host, retry_for
        self.session = requests.Session()

    def url(self, path, node=None):
        return f"http://{node or self.host}:{self.port}{BASE}/{path.lstrip('/')}"

    def get(self, path, node=None, **kw):
        deadline = time.monotonic() + T(self.retry_for)
        while True:
            try:
                return self.session.get(self.url(path, node), params={"cache": "0"},
                                        timeout=T(10), **kw)
            except (requests.ConnectionError, requests.Timeout):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)


def check_json(r):
    """DC/OS's check_json: a 2xx with a non-empty JSON body."""
    r.raise_for_status()
    j = r.json()
    assert len(j) > 0, f"empty JSON from {r.url}"
    return j


def exact_keys(obj, keys, what):
    assert isinstance(obj, dict), f"{what}: {obj!r}"
    assert list(obj) == keys, f"{what}: keys {list(obj)} != {keys}"


# ---------------------------------------------------------------- the cluster


def write_dcos_profiles(env):
    """master, agent and agent_public. The components are exec checks named
    as DC/OS names its units (a component without a systemd unit is a unit
    by its own name); dcos-net on the agent fails when its rc file says so."""
    net_cmd, net_rc = mh.exec_rc_script(env, "agent-net")

    def comps(*names, failing=None):
        # DC/OS's tests want every unit's description non-empty and a human
        # name: the profile gives them (a systemd unit's Description= would).
        return [(n, {"check": "exec", "command": net_cmd if n == failing else "true",
                     "interval": "200ms", "rise": 1, "fall": 1, "name": TEXTS[n][0],
                     "description": TEXTS[n][1]}) for n in names]
    for role, names, failing in [
            ("master", ["dcos-mesos-master.service", "dcos-net.service", "exhibitor"], None),
            ("agent", ["dcos-mesos-slave.service", "dcos-net.service"], "dcos-net.service"),
            ("agent_public", ["dcos-mesos-slave-public.service", "dcos-net.service"], None)]:
        text = mh.profile_ini(role, comps(*names, failing=failing), [("all", names)])
        if role == "master":
            # The Mesos leader, as a master's profile says how to know it.
            text = text.replace("[profile]\n", "[profile]\nleader_component = mesos-leading\n", 1)
            text += "\n" + mh.component_ini("mesos-leading", check="exec", command="true",
                                             interval="200ms", rise=1, fall=1)
        env.write_profile(role, text)
    return net_rc


TEXTS = {
    "dcos-mesos-master.service": ("Mesos Master", "distributed systems kernel"),
    "dcos-mesos-slave.service": ("Mesos Agent", "distributed systems kernel agent"),
    "dcos-mesos-slave-public.service": ("Mesos Agent Public", "distributed systems kernel agent"),
    "dcos-net.service": ("Networking", "a distributed systems and network overlay"),
    "exhibitor": ("Exhibitor", "ZooKeeper supervisor"),
}


def listen_everywhere(aggr):
    """The aggregator answers on every loopback address, so that each node
    of the cluster has its own (DC/OS serves a node's own health at its IP)."""
    aggr.extra["listen_http"] = f"0.0.0.0:{aggr.http_port}"
    return aggr


def units_health(diag):
    r = diag.get("/units")
    r.raise_for_status()
    return {u["id"]: u["health"] for u in r.json()["units"] or []}


@pytest.fixture
def mesos_states():
    """Each node's Mesos state, at its IP (Mesos listens on it), which the
    node's agent asks for its Mesos id."""
    mesos = {ip: mh.FakeMesosState(mesos_id, host=ip) for ip, mesos_id in MESOS_IDS.items()}
    yield mesos
    for m in mesos.values():
        m.close()


@pytest.fixture
def dcos_cluster(env, mesos_states):
    net_rc = write_dcos_profiles(env)
    aggr = listen_everywhere(env.aggregator(stale_timeout="2s", expected_masters=[MASTER, NEVER],
                                            extra={"first_contact_window": "0s"}))
    aggr.start()
    version_file = mh.dcos_version_file(env, DCOS_VERSION)
    agents = {ip: env.agent(ip, role, aggr, extra={
        "dcos_version_file": version_file, "mesos_state_interval": "200ms",
        "mesos_state_url": f"http://{{node_id}}:{mesos_states[ip].port}/state"}).start()
              for ip, role in [(MASTER, "master"), (GONE, "agent_public"), (AGENT, "agent"),
                               (PUBLIC, "agent_public")]}
    wait_until(lambda: all((aggr.node(ip) or {"dcos": {}})["dcos"].get("mesos_id") == MESOS_IDS[ip]
                           for ip in agents),
               timeout=20, desc="every node's Mesos id known")
    diag = Diagnostics(aggr.http_port)
    wait_until(lambda: units_health(diag).get("dcos-mesos-slave-public.service") == 0 and
               set(units_health(diag).values()) == {0}, timeout=20,
               desc="every unit healthy in the DC/OS view")
    # One node gone: its agent is killed, and after stale_timeout it is
    # unreachable. Then one unit fails.
    agents[GONE].kill9()
    wait_until(lambda: {n["host_ip"]: n["health"] for n in
                        diag.get("/nodes").json()["nodes"]}.get(GONE) == 3, timeout=20,
               desc=f"{GONE} unreachable")
    mh.set_rc(net_rc, 2)                      # exit 2: critical (1 is a warning)
    wait_until(lambda: units_health(diag).get("dcos-net.service") == 1, timeout=20,
               desc="dcos-net.service failed on the agent")
    yield aggr, diag
    for ip, a in agents.items():
        if ip != GONE:
            a.assert_alive()


def test_nodes_and_units(dcos_cluster):
    aggr, diag = dcos_cluster
    r = diag.get("/nodes")
    assert r.status_code == 200 and r.headers["Content-Type"] == "application/json"
    assert r.text.endswith("\n")
    body = check_json(r)
    assert list(body) == ["nodes"]
    for n in body["nodes"]:
        exact_keys(n, NODE_KEYS, "a node in /nodes")
        assert isinstance(n["health"], int) and n["host_ip"] and n["role"]
    health = {n["host_ip"]: n["health"] for n in body["nodes"]}
    roles = {n["host_ip"]: n["role"] for n in body["nodes"]}
    assert health == {MASTER: 0, NEVER: 3, GONE: 3, AGENT: 1, PUBLIC: 0}
    assert roles == {MASTER: "master", NEVER: "master", GONE: "agent_public", AGENT: "agent",
                     PUBLIC: "agent_public"}
    for ip in health:                                   # jq '.nodes[].host_ip', then each
        n = check_json(diag.get(f"/nodes/{ip}"))
        exact_keys(n, NODE_KEYS, f"/nodes/{ip}")
        assert n == {"host_ip": ip, "health": health[ip], "role": roles[ip]}

    # Units from the nodes that report: the unreachable node's last units
    # are left out, and a failed unit is 1 (not hidden behind a 3).
    units = check_json(diag.get("/units"))["units"]
    for u in units:
        exact_keys(u, UNIT_KEYS, "a unit in /units")
        assert (u["name"], u["description"]) == TEXTS[u["id"]], u
        assert u["health"] in (0, 1)
        assert check_json(diag.get(f"/units/{u['id']}")) == u
    assert {u["id"]: u["health"] for u in units} == {
        "dcos-mesos-master.service": 0, "dcos-net.service": 1, "exhibitor": 0,
        "dcos-mesos-slave.service": 0, "dcos-mesos-slave-public.service": 0}

    # A unit's nodes: the reporting ones, each with the unit's health there.
    nodes = check_json(diag.get("/units/dcos-net.service/nodes"))["nodes"]
    for n in nodes:
        exact_keys(n, NODE_KEYS, "a node of a unit")
    assert {n["host_ip"]: n["health"] for n in nodes} == {MASTER: 0, AGENT: 1, PUBLIC: 0}
    assert [n["host_ip"] for n in check_json(
        diag.get("/units/dcos-mesos-slave-public.service/nodes"))["nodes"]] == [PUBLIC]
    one = check_json(diag.get(f"/units/dcos-net.service/nodes/{AGENT}"))
    exact_keys(one, UNIT_NODE_KEYS, "a unit on a node")
    assert one["health"] == 1 and one["role"] == "agent" and one["help"] and one["output"]
    ok = check_json(diag.get(f"/units/dcos-net.service/nodes/{PUBLIC}"))
    assert ok["health"] == 0 and isinstance(ok["output"], str) and ok["help"]

    # A node's units, and one unit on it.
    mine = check_json(diag.get(f"/nodes/{AGENT}/units"))
    assert list(mine) == ["units"]
    for u in mine["units"]:
        exact_keys(u, UNIT_KEYS, "a node's unit in a list")
    assert {u["id"]: u["health"] for u in mine["units"]} == {"dcos-mesos-slave.service": 0,
                                                             "dcos-net.service": 1}
    full = check_json(diag.get(f"/nodes/{AGENT}/units/dcos-net.service"))
    exact_keys(full, NODE_UNIT_KEYS, "a node's unit")
    assert full["health"] == 1 and full["output"] and full["help"] and full["name"]
    # Nodes that do not report have no units: null, as Go encodes a nil
    # slice.
    for ip in (GONE, NEVER):
        r = diag.get(f"/nodes/{ip}/units")
        assert r.status_code == 200 and r.json() == {"units": None}, (ip, r.text)


def test_not_found_and_unreachable(dcos_cluster):
    aggr, diag = dcos_cluster
    cases = [(f"/units/dcos-net.service/nodes/{GONE}", GONE),      # unreachable: left out
             (f"/units/dcos-net.service/nodes/{NEVER}", NEVER),
             ("/units/no-such.service", "no-such.service"),
             ("/units/no-such.service/nodes", "no-such.service"),
             ("/nodes/10.9.9.9", "10.9.9.9"),
             ("/nodes/10.9.9.9/units", "10.9.9.9"),
             (f"/nodes/{GONE}/units/dcos-net.service", "dcos-net.service"),
             (f"/nodes/{AGENT}/units/no-such.service", "no-such.service")]
    for path, what in cases:
        r = diag.get(path)
        assert (r.status_code, r.text) == (404, f"{what} not found\n"), path
        assert r.headers["Content-Type"] == "text/plain; charset=utf-8", path
        assert r.headers["X-Content-Type-Options"] == "nosniff", path
        assert ANSIC.match(r.headers["Last-Modified-3DT"]), path
    # No route has these paths: Go's NotFoundHandler.
    for path in ["/units/dcos-net.service/hosts", "/nodes/x/y", "/units/a/nodes/b/c",
                 "/no-such", "/report/other", "/report/download/x"]:
        r = diag.get(path)
        assert (r.status_code, r.text) == (404, "404 page not found\n"), path
        assert r.headers["X-Content-Type-Options"] == "nosniff", path
        assert "Last-Modified-3DT" not in r.headers, path


def test_report(dcos_cluster):
    aggr, diag = dcos_cluster
    r = diag.get("/report")
    rep = check_json(r)
    assert list(rep) == ["Units", "Nodes", "UpdatedTime"]
    assert "Content-disposition" not in r.headers
    # Units: each reporting node's entry carries its map of every unit's
    # output (dcos-signal reads Output[unit]).
    node_units = {MASTER: {"dcos-mesos-master.service", "dcos-net.service", "exhibitor"},
                  AGENT: {"dcos-mesos-slave.service", "dcos-net.service"},
                  PUBLIC: {"dcos-mesos-slave-public.service", "dcos-net.service"}}
    assert set(rep["Units"]) == set().union(*node_units.values())
    for name, unit in rep["Units"].items():
        exact_keys(unit, REPORT_UNIT_KEYS, f"Units[{name}]")
        assert unit["UnitName"] == name and unit["PrettyName"]
        assert isinstance(unit["Title"], str) and isinstance(unit["Timestamp"], str)
        for n in unit["Nodes"]:
            exact_keys(n, REPORT_NODE_KEYS, f"Units[{name}].Nodes[]")
            assert set(n["Output"]) == node_units[n["IP"]]
            assert isinstance(n["Leader"], bool) and n["MesosID"] == MESOS_IDS[n["IP"]]
        assert {n["IP"] for n in unit["Nodes"]} == {ip for ip, us in node_units.items()
                                                    if name in us}
    # DC/OS's own check of a failed unit (test_systemd_units_health).
    net = rep["Units"]["dcos-net.service"]
    assert net["Health"] == 1
    failed = [n for n in net["Nodes"] if n["Health"] != 0]
    assert [n["IP"] for n in failed] == [AGENT]
    assert isinstance(failed[0]["Output"], dict) and failed[0]["Output"]["dcos-net.service"]

    # Nodes: a reporting node has 8 keys (Units, each unit with 6 keys and
    # its one node); a node that does not report has 7, Output null.
    for ip, node in rep["Nodes"].items():
        if ip in node_units:
            assert list(node) == REPORT_NODE_KEYS[:6] + ["Units", "MesosID"], ip
            assert set(node["Output"]) == node_units[ip]
            assert {u["UnitName"] for u in node["Units"]} == node_units[ip]
            for u in node["Units"]:
                exact_keys(u, REPORT_UNIT_KEYS, f"Nodes[{ip}].Units[]")
                assert len(u["Nodes"]) == 1 and u["Nodes"][0]["IP"] == ip
                exact_keys(u["Nodes"][0], REPORT_NODE_KEYS, f"Nodes[{ip}].Units[].Nodes[]")
        else:
            exact_keys(node, REPORT_NODE_KEYS, f"Nodes[{ip}]")
            assert node["Output"] is None and node["Health"] == 3
        # The Mesos id the node's agent last reported (the unreachable
        # node keeps its own); none for a master that never reported.
        assert node["MesosID"] == MESOS_IDS.get(ip, ""), (ip, node["MesosID"])
    assert set(rep["Nodes"]) == {MASTER, NEVER, GONE, AGENT, PUBLIC}
    assert rep["Nodes"][AGENT]["Health"] == 1
    # The master whose profile's leader component is up leads; no other node.
    assert {ip for ip, node in rep["Nodes"].items() if node["Leader"]} == {MASTER}

    d = diag.get("/report/download")
    assert d.status_code == 200 and d.headers["Content-Type"] == "application/json"
    assert d.headers["Content-disposition"] == "attachment; filename=health-report.json"
    assert list(d.json()) == ["Units", "Nodes", "UpdatedTime"]


def test_local_node_health(dcos_cluster):
    """GET /system/health/v1 at a node's IP: that node's own health, as
    DC/OS's tests read it through the client (`get('/')`: a trailing slash,
    redirected) and as its node-ip helper maps detected IPs to nodes."""
    aggr, diag = dcos_cluster
    roles = {MASTER: "master", AGENT: "agent", PUBLIC: "agent_public"}
    for ip, role in roles.items():
        r = diag.get("/", node=ip)
        assert [h.status_code for h in r.history] == [301]
        assert r.history[0].headers["Location"] == f"{BASE}?cache=0"
        body = check_json(r)
        exact_keys(body, LOCAL_KEYS, f"local health at {ip}")
        assert body["ip"] == ip and body["node_role"] == role
        assert body["hostname"] and body["dcos_diagnostics_version"]
        # DC/OS's test_dcos_diagnostics_health: every key but units non-empty.
        assert body["dcos_version"] == DCOS_VERSION and body["mesos_id"] == MESOS_IDS[ip]
        for key in LOCAL_KEYS[1:]:
            assert body[key], (ip, key, body)
        assert "Last-Modified-3DT" not in r.headers
        assert isinstance(body["units"], list) and body["units"]
        for u in body["units"]:
            exact_keys(u, NODE_UNIT_KEYS, f"a local unit at {ip}")
            assert u["id"] and u["name"] and u["health"] in (0, 1) and u["help"] == ""
    local = {u["id"]: u for u in diag.get("/", node=AGENT).json()["units"]}
    assert local["dcos-net.service"]["health"] == 1 and local["dcos-net.service"]["output"]
    # A node whose agent does not report cannot tell its own health.
    r = diag.get("", node=GONE)
    assert r.status_code == 503 and r.headers["X-Content-Type-Options"] == "nosniff"
    # ?node= names the node (a follower's redirect uses it).
    assert diag.get(f"?node={PUBLIC}").json()["ip"] == PUBLIC


def test_router_codes_and_headers(dcos_cluster):
    aggr, diag = dcos_cluster
    url = f"http://127.0.0.1:{aggr.http_port}{BASE}"
    # A trailing slash or an unclean path: 301 to the clean route, query kept.
    for path, to in [("/units/", "/units"), ("/nodes/" + AGENT + "/", "/nodes/" + AGENT),
                     ("//units", "/units"), ("/units/dcos-net.service//nodes", None),
                     ("/", "")]:
        r = requests.get(url + path + "?cache=0", allow_redirects=False, timeout=T(5))
        assert r.status_code == 301, path
        want = BASE + (to if to is not None else "/units/dcos-net.service/nodes") + "?cache=0"
        assert r.headers["Location"] == want, path
    # Only GET: HEAD and POST get an empty 405 on a route, 404 elsewhere.
    for method in ("HEAD", "POST", "DELETE"):
        for path in ("/units", "/nodes", "/report", "", f"/nodes/{AGENT}/units"):
            r = requests.request(method, url + path, allow_redirects=False, timeout=T(5))
            assert r.status_code == 405 and r.content == b"", (method, path)
        r = requests.request(method, url + "/no-such", allow_redirects=False, timeout=T(5))
        assert r.status_code == 404, method
    # Last-Modified-3DT on every aggregated route, with or without ?cache.
    for path in ("/units", "/nodes", "/report", f"/nodes/{AGENT}", "/units/exhibitor/nodes"):
        for params in ({}, {"cache": "1"}):
            r = requests.get(url + path, params=params, timeout=T(5))
            assert r.status_code == 200 and ANSIC.match(r.headers["Last-Modified-3DT"]), path


# ------------------------------------------------------- wait_for_dcos loop


class HealthLoop(threading.Thread):
    """wait_for_dcos's health step, run without end: GET /units (through
    the Diagnostics client, which retries connection errors and timeouts),
    raise_for_status on the answer, and count a success whenever every unit
    has health 0. Any HTTP error stops it and is kept."""

    def __init__(self, port):
        super().__init__(daemon=True)
        self.diag = Diagnostics(port, retry_for=120)
        self.successes = 0
        self.reads = 0
        self.error = None
        self.stopping = threading.Event()

    def run(self):
        while not self.stopping.is_set():
            try:
                r = self.diag.get("/units")
                r.raise_for_status()
                units = r.json()["units"] or []
            except Exception as e:          # noqa: BLE001 - the loop aborts on anything
                self.error = e
                return
            self.reads += 1
            if units and all(u["health"] == 0 for u in units):
                self.successes += 1
            time.sleep(0.05)

    def wait_success(self, desc):
        since = self.successes
        wait_until(lambda: self.error is not None or self.successes > since, timeout=30,
                   desc=desc)
        assert self.error is None, f"{desc}: the health loop aborted: {self.error!r}"

    def stop(self):
        self.stopping.set()
        self.join(T(30))


def healthy_profiles(env):
    for role, unit in [("master", "dcos-mesos-master.service"),
                       ("agent", "dcos-mesos-slave.service")]:
        env.write_profile(role, mh.profile_ini(role, [
            (unit, dict(check="exec", command="true", interval="200ms", rise=1, fall=1))],
            [("all", [unit])]))


@pytest.mark.no_valgrind(reason="10 aggregator restarts; valgrind makes each take seconds")
def test_wait_for_dcos_across_restarts(env):
    healthy_profiles(env)
    aggr = env.aggregator(stale_timeout="10s").start()
    for ip, role in [(MASTER, "master"), (AGENT, "agent"), (PUBLIC, "agent")]:
        env.agent(ip, role, aggr).start()
    loop = HealthLoop(aggr.http_port)
    loop.start()
    env._cleanups.append(loop.stop)
    loop.wait_success("first success")
    for k in range(1, 11):
        aggr.stop()
        aggr.start(wait=False)
        loop.wait_success(f"success after restart {k}")
    loop.stop()
    assert loop.error is None, repr(loop.error)


@pytest.mark.no_valgrind(reason="an election and a failover under valgrind take too long")
def test_wait_for_dcos_across_failover(env, zk, cluster_name):
    from zk_harness import ElectedAggregator, wait_one_leader
    healthy_profiles(env)
    aggrs = [ElectedAggregator(env, zk.hosts, cluster_name, "2s", id=f"aggr{i}",
                               stale_timeout="10s") for i in (1, 2, 3)]
    for a in aggrs:
        a.start()
    leader, _ = wait_one_leader(aggrs)
    for ip, role in [(MASTER, "master"), (AGENT, "agent"), (PUBLIC, "agent")]:
        env.agent(ip, role, aggrs).start()
    follower = next(a for a in aggrs if a is not leader)
    loop = HealthLoop(follower.http_port)          # as through a master that does not lead
    loop.start()
    env._cleanups.append(loop.stop)
    loop.wait_success("success through a follower")
    reads = loop.reads
    leader.kill9()
    wait_until(lambda: any(a.is_leader() for a in aggrs if a is not leader), timeout=30,
               desc="a new leader")
    loop.wait_success("success after the failover")
    assert loop.reads > reads
    loop.stop()
    assert loop.error is None, repr(loop.error)
