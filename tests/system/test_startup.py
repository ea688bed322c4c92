"""Startup progress, learned ETAs, lateness and root causes on a simulated
DC/OS cluster: three masters and two agents (one private, one public) that
run the shipped DC/OS profiles (deploy/profiles), remapped so that every
component is an exec check of a marker file. The test creates and removes
markers to decide when each component comes up or fails:

    <tmp>/markers/<node>/<component>

The profiles keep the shipped stage structure (components, milestones,
after, requires); only the checks change. The agents share one profile per
role (the digest must match the aggregator's), so each agent is started
with MUSTER_NODE=<node id> in its environment and the check reads
"$MUSTER_NODE" to find its node's markers.

Also: the shipped profiles pass --check-config on both daemons."""

import configparser
import contextlib
import os
import shlex
import uuid

import pytest

import muster_harness as mh
from muster_harness import run_to_completion

pytestmark = pytest.mark.no_valgrind(
    reason="the DC/OS startup simulation: no daemon code it alone reaches, and among the longest files")

PROFILES_DIR = os.path.join(mh.REPO, "deploy", "profiles")
ROLES = ("master", "agent", "agent_public")
MASTERS = ("m1", "m2", "m3")
AGENTS = (("a1", "agent"), ("a2", "agent_public"))
INTERVAL = "200ms"


# ---------------------------------------------------------------- the shipped profiles


def read_profile(role):
    """The shipped profile as {"components": [names], "stages": [(name, {key: value})],
    "leader_component": name or None, "described": {component: {description, name}}}."""
    cp = configparser.ConfigParser(interpolation=None, inline_comment_prefixes=None,
                                   strict=True, delimiters=("=",))
    cp.optionxform = str
    with open(os.path.join(PROFILES_DIR, f"{role}.ini")) as f:
        cp.read_file(f)
    components, stages, described = [], [], {}
    for section in cp.sections():
        if section.startswith("component "):
            components.append(section.split('"')[1])
            described[components[-1]] = {k: v for k, v in cp[section].items()
                                         if k in ("description", "name")}
        elif section.startswith("stage "):
            stages.append((section.split('"')[1], dict(cp[section])))
    assert cp["profile"]["role"] == role
    return {"components": components, "stages": stages, "described": described,
            "leader_component": cp["profile"].get("leader_component")}


SHIPPED = {role: read_profile(role) for role in ROLES}


def stage_names(role):
    return [name for name, _ in SHIPPED[role]["stages"]]


def stage_members(role, stage):
    """Components and milestones of a stage: what must be up to reach it."""
    keys = dict(SHIPPED[role]["stages"])[stage]
    return keys.get("components", "").split() + keys.get("milestones", "").split()


def write_remapped_profiles(env, grace):
    """The shipped profiles with every component an exec check of its marker."""
    markers = env.path("markers")
    os.makedirs(markers, exist_ok=True)
    for role in ROLES:
        lines = ["[profile]", f"role = {role}", f"startup_grace = {grace}"]
        if SHIPPED[role]["leader_component"]:
            lines.append(f"leader_component = {SHIPPED[role]['leader_component']}")
        lines.append("")
        for comp in SHIPPED[role]["components"]:
            lines += [f'[component "{comp}"]', "check = exec",
                      f'command = test -e {shlex.quote(markers)}/"$MUSTER_NODE"/{comp} || exit 2',
                      f"interval = {INTERVAL}", "timeout = 1s", "rise = 1", "fall = 1"]
            lines += [f"{k} = {v}" for k, v in SHIPPED[role]["described"][comp].items()]
            lines.append("")
        for name, keys in SHIPPED[role]["stages"]:
            lines.append(f'[stage "{name}"]')
            lines += [f"{k} = {v}" for k, v in keys.items()]
            lines.append("")
        env.write_profile(role, "\n".join(lines))
    return markers


# ---------------------------------------------------------------- the simulated cluster


class DCOS:
    def __init__(self, env, grace="10m"):
        self.env = env
        self.markers = write_remapped_profiles(env, grace)
        self.aggr = env.aggregator(expected_masters=list(MASTERS), stale_timeout="5s",
                                   log_level="info").start()
        self.agents = {}
        self.roles = dict([(m, "master") for m in MASTERS] + list(AGENTS))

    def nodes(self):
        return list(self.roles)

    # --- markers
    def up(self, node, *components):
        os.makedirs(os.path.join(self.markers, node), exist_ok=True)
        for c in components:
            open(os.path.join(self.markers, node, c), "w").close()

    def down(self, node, *components):
        for c in components:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(self.markers, node, c))

    def up_stage(self, node, stage):
        self.up(node, *stage_members(self.roles[node], stage))

    def up_all(self, node, but=()):
        role = self.roles[node]
        self.up(node, *[c for c in SHIPPED[role]["components"] if c not in but])

    # --- agents
    def start(self, node, role=None, **kw):
        os.makedirs(os.path.join(self.markers, node), exist_ok=True)
        if node not in self.agents:
            self.agents[node] = self.env.agent(node, role or self.roles[node], self.aggr,
                                               log_level="info", **kw)
        agent = self.agents[node]
        old = os.environ.get("MUSTER_NODE")
        os.environ["MUSTER_NODE"] = node   # the checks find their node's markers
        try:
            agent.start()
        finally:
            if old is None:
                del os.environ["MUSTER_NODE"]
            else:
                os.environ["MUSTER_NODE"] = old
        return agent

    def start_all(self):
        for node in self.nodes():
            self.start(node)

    def reboot(self, node):
        """A new boot id, and the agent restarted, as after a reboot."""
        agent = self.agents[node]
        agent.stop()
        agent.boot_id = str(uuid.uuid4())
        with open(agent.boot_id_file, "w") as f:
            f.write(agent.boot_id + "\n")
        self.start(node)
        return agent.boot_id

    # --- the API
    def node(self, node):
        return self.aggr.node(node)

    def startup(self, node):
        return self.node(node)["startup"]

    def stage(self, node, name):
        return next(s for s in self.startup(node)["stages"] if s["name"] == name)

    def wait_node(self, node, pred, timeout=5, desc=None):
        return self.aggr.wait_node(node, pred, timeout, desc=desc)

    def wait_stage(self, node, stage, state, timeout=5):
        def ok(n):
            st = next(s for s in n["startup"]["stages"] if s["name"] == stage)
            return st["state"] == state
        return self.wait_node(node, ok, timeout, desc=f"{node} stage {stage} {state}")

    def wait_all_healthy(self, timeout=8):
        for node in self.nodes():
            self.wait_node(node, lambda n: n["verdict"] == "healthy" and
                           n["startup"]["percent"] == 100, timeout, desc=f"{node} healthy, 100%")
        return self.aggr.wait_verdict("healthy", timeout)


@pytest.fixture
def dcos(env):
    return DCOS(env)


def roots_of(h):
    return {(r["node"], r["component"]) for r in h["root_causes"]}


def reason_for(reasons, node, component):
    return next((r for r in reasons if r["node"] == node and r["component"] == component), None)


def assert_reached_in_order(startup):
    """Each stage was reached no earlier than the stages before it."""
    reached = [s["reached"] for s in startup["stages"]]
    assert all(reached), startup
    assert reached == sorted(reached), startup


# ---------------------------------------------------------------- the profiles themselves


def test_shipped_profiles_pass_check_config(env):
    aggr_conf = env.write("aggr.ini", f"[aggregator]\nprofiles = {PROFILES_DIR}\n"
                                      f"database = {env.path('x.db')}\n")
    rc, out, err, _ = run_to_completion(
        [mh.binary("muster-aggregatord"), "--config", aggr_conf, "--check-config"])
    assert rc == 0, err
    assert "3 profiles" in out, out
    for role in ROLES:
        conf = env.write(f"agent-{role}.ini", "\n".join([
            "[agent]", "node_id = n1", f"role = {role}", f"profiles = {PROFILES_DIR}",
            f"spool = {env.path(role + '.spool')}", "aggregators = 127.0.0.1:7610", ""]))
        rc, out, err, _ = run_to_completion(
            [mh.binary("muster-agentd"), "--config", conf, "--check-config"])
        assert rc == 0, f"{role}: {err}"
    assert not os.path.exists(env.path("x.db"))


def test_shipped_profiles_follow_the_dcos_order():
    assert stage_names("master") == ["diagnostics", "zookeeper", "mesos-master", "mesos-dns",
                                     "networking", "orchestration", "logging-metrics",
                                     "security", "adminrouter"]
    for role in ("agent", "agent_public"):
        assert stage_names(role) == ["diagnostics", "mesos-agent", "networking",
                                     "logging-metrics", "adminrouter-agent"]
        assert dict(SHIPPED[role]["stages"])["mesos-agent"]["requires"] == "master:mesos-master"
    text = {role: open(os.path.join(PROFILES_DIR, f"{role}.ini")).read() for role in ROLES}
    for unit in ("dcos-diagnostics.service", "dcos-exhibitor.service", "dcos-mesos-master.service",
                 "dcos-mesos-dns.service", "dcos-net.service", "dcos-marathon.service",
                 "dcos-metronome.service", "dcos-bouncer.service", "dcos-adminrouter.service"):
        assert f"unit = {unit}" in text["master"], unit
    assert "unit = dcos-mesos-slave.service" in text["agent"]
    assert "unit = dcos-mesos-slave-public.service" in text["agent_public"]
    assert "unit = dcos-adminrouter-agent.service" in text["agent"]
    assert "mesos-leader" in dict(SHIPPED["master"]["stages"])["mesos-master"]["milestones"]


# ---------------------------------------------------------------- scenarios


def test_normal_boot_in_order(dcos):
    """Everything starts at once; components come up stage by stage. Each
    node's progress follows: the stage waited on, the percent, the state of
    each stage. The agents' Mesos agent waits for a master's Mesos master."""
    dcos.start_all()
    for node in dcos.nodes():
        n = dcos.wait_node(node, lambda n: n["startup"]["state"] != "unknown" and
                           n["components"], desc=f"{node} reporting")
        assert n["verdict"] == "starting", n
        assert n["startup"]["percent"] == 0 and n["startup"]["waiting_on"] == "diagnostics", n
    assert dcos.aggr.health()["verdict"] == "starting"

    # The agents are quick: their Mesos agent is up before any master's.
    for node, role in AGENTS:
        dcos.up_stage(node, "diagnostics")
        dcos.up_stage(node, "mesos-agent")
    for node, _ in AGENTS:
        n = dcos.wait_stage(node, "diagnostics", "done")
        st = n["startup"]
        assert st["stage"] == "mesos-agent", st
        assert st["waiting_on"].startswith("mesos-agent, waiting for mesos-master on m1..m3"), st
        assert dcos.stage(node, "mesos-agent")["state"] == "pending", \
            "its components are up, but no master has its mesos-master stage"
        assert st["percent"] == 20

    stages = stage_names("master")
    for k, stage in enumerate(stages):
        for m in MASTERS:
            dcos.up_stage(m, stage)
        for m in MASTERS:
            dcos.wait_stage(m, stage, "done")
        st = dcos.startup("m1")
        assert st["percent"] == 100 * (k + 1) // len(stages), st
        if k + 1 < len(stages):
            assert st["waiting_on"] == stages[k + 1], st
            assert dcos.node("m1")["verdict"] == "starting"
        if stage == "mesos-master":
            # Now the agents follow.
            for node, _ in AGENTS:
                n = dcos.wait_stage(node, "mesos-agent", "done")
                assert n["startup"]["waiting_on"] == "networking", n["startup"]
                mm = dcos.stage("m1", "mesos-master")
                assert dcos.stage(node, "mesos-agent")["reached"] >= mm["started"]
    for node, _ in AGENTS:
        for stage in stage_names(dcos.roles[node])[2:]:
            dcos.up_stage(node, stage)

    h = dcos.wait_all_healthy()
    assert h["root_causes"] == [] and h["reasons"] == [], h
    for node in dcos.nodes():
        st = dcos.startup(node)
        assert st["state"] == "done" and st["waiting_on"] is None, st
        assert st["eta_seconds"] == 0
        assert isinstance(st["elapsed"], int)
        assert all(s["state"] == "done" and s["duration"] is not None for s in st["stages"]), st
        assert_reached_in_order(st)
    summary = dcos.aggr.nodes()["a2"]["startup"]
    # The list names what began the startup too: a fresh spool is an install.
    assert summary == {"percent": 100, "stage": "adminrouter-agent", "state": "done",
                       "cause": "install"}, summary
    # Every stage of every node is stored, once per boot.
    want = {"m1": 9, "m2": 9, "m3": 9, "a1": 5, "a2": 5}
    mh.wait_until(lambda: dict(dcos.aggr.query(
        "SELECT node_id, count(*) FROM stage_completions GROUP BY node_id")) == want, 3,
        desc=f"stage completions stored: {want}")


def test_zookeeper_down_on_one_master_leaves_a_quorum(env):
    """Exhibitor never comes up on m3. m1 and m2 are a quorum of three, so
    their Mesos masters start and the whole cluster but m3 finishes; m3
    waits at zookeeper, and once its startup grace is over its exhibitor is
    the one root cause, blocking the rest of m3."""
    dcos = DCOS(env, grace="3s")
    for node in dcos.nodes():
        if node == "m3":
            dcos.up_stage(node, "diagnostics")
        else:
            dcos.up_all(node)
    dcos.start_all()
    for node in ("m1", "m2", "a1", "a2"):
        dcos.wait_node(node, lambda n: n["verdict"] == "healthy" and
                       n["startup"]["percent"] == 100, 8, desc=f"{node} healthy")
    mm = dcos.stage("m1", "mesos-master")
    assert mm["state"] == "done"
    assert mm["requires"] == ["master:zookeeper@quorum"]

    n3 = dcos.wait_node("m3", lambda n: n["verdict"] == "unhealthy" and
                        n["startup"]["stages"][1]["state"] == "failed", 8,
                        desc="m3 unhealthy, its zookeeper stage failed")
    st = n3["startup"]
    assert st["waiting_on"] == "zookeeper", st
    assert st["percent"] == 11, st
    assert dcos.stage("m3", "zookeeper")["state"] == "failed"
    assert dcos.stage("m3", "mesos-master")["state"] == "pending"

    h = dcos.aggr.wait_health(lambda h: roots_of(h) == {("m3", "exhibitor")}, 5,
                              desc="exhibitor on m3 the one root cause")
    assert h["verdict"] == "unhealthy", h
    root = h["root_causes"][0]
    assert root["message"].startswith("exhibitor on m3 has been unhealthy since "), root
    assert "; blocked: " in root["message"] and "mesos-master on m3" in root["message"], root
    assert {(b["node"], b["component"]) for b in root["blocked"]} >= {
        ("m3", "mesos-master"), ("m3", "marathon"), ("m3", "adminrouter")}, root
    r = reason_for(h["reasons"], "m3", "mesos-master")
    assert r and "(blocked by exhibitor)" in r["message"], h["reasons"]
    assert {(n["verdict"]) for n in dcos.aggr.nodes().values() if n["id"] != "m3"} == {"healthy"}


def test_mesos_master_failing_blocks_every_agent(env):
    """After a healthy start, the Mesos master fails on every master, and
    with it Marathon and every agent's Mesos agent. The masters' Mesos
    masters are the root causes; Marathon and the Mesos agents are blocked."""
    dcos = DCOS(env, grace="3s")
    for node in dcos.nodes():
        dcos.up_all(node)
    dcos.start_all()
    dcos.wait_all_healthy()

    for m in MASTERS:
        dcos.down(m, "mesos-master", "marathon")
    for node, _ in AGENTS:
        dcos.down(node, "mesos-agent")

    want = {(m, "mesos-master") for m in MASTERS}
    h = dcos.aggr.wait_health(lambda h: roots_of(h) == want and
                              all(reason_for(h["reasons"], a, "mesos-agent") for a, _ in AGENTS) and
                              all(reason_for(h["reasons"], m, "marathon") for m in MASTERS),
                              5, desc="the Mesos masters as the root causes")
    assert h["verdict"] == "unhealthy"
    root = next(r for r in h["root_causes"] if r["node"] == "m1")
    assert root["state"] == "unhealthy"
    assert root["message"].endswith("; blocked: marathon on m1, mesos-agent on a1, a2"), root
    for agent, _ in AGENTS:
        r = reason_for(h["reasons"], agent, "mesos-agent")
        assert r["message"].endswith("(blocked by mesos-master on m1..m3)"), r
        assert {(b["node"], b["component"]) for b in r["blocked_by"]} == want, r
        n = dcos.node(agent)
        assert n["verdict"] == "unhealthy"
        assert {(x["node"], x["component"]) for x in n["root_causes"]} == want, n["root_causes"]
        st = n["startup"]
        assert st["percent"] == 100, "progress is not lost within a boot"
        assert dcos.stage(agent, "mesos-agent")["state"] == "failed", st
    assert reason_for(h["reasons"], "m2", "marathon")["message"].endswith(
        "(blocked by mesos-master)")

    # The Mesos masters return: so does everything.
    for m in MASTERS:
        dcos.up(m, "mesos-master", "marathon")
    for node, _ in AGENTS:
        dcos.up(node, "mesos-agent")
    dcos.wait_all_healthy()


def test_slow_stage_beyond_its_p95_is_late(dcos, metric):
    """Two quick boots teach the masters' stage durations. In the third,
    orchestration on m2 takes longer than its p95: m2 is late (and the
    cluster unhealthy, a master being late), not unhealthy; Marathon on m2
    is the root cause. Then it comes up and all is well."""
    for node in dcos.nodes():
        dcos.up_all(node)
    dcos.start_all()
    dcos.wait_all_healthy()
    for m in MASTERS:
        dcos.reboot(m)
    for m in MASTERS:
        dcos.wait_node(m, lambda n: n["startup"]["boot_id"] == dcos.agents[n["id"]].boot_id and
                       n["startup"]["percent"] == 100, 8, desc=f"{m} done again")
    mh.wait_until(lambda: dcos.aggr.query(
        "SELECT count(*) FROM stage_completions WHERE role = 'master'")[0][0] == 54, 3,
        desc="two boots of three masters stored")

    # Orchestration is slow, and Admin Router waits for it.
    slow = ("marathon", "metronome", "marathon-leader")
    dcos.down("m2", *slow, "adminrouter")
    dcos.reboot("m2")
    n = dcos.wait_node("m2", lambda n: n["startup"]["waiting_on"] == "orchestration", 8,
                       desc="m2 waiting on orchestration")
    orch = dcos.stage("m2", "orchestration")
    assert orch["typical_seconds"] is not None and orch["late_after_seconds"] is not None, orch
    late_after = orch["late_after_seconds"]
    metric("learned late_after for orchestration", late_after, "s")
    assert n["startup"]["eta_seconds"] is not None, n["startup"]

    n = dcos.wait_node("m2", lambda n: n["verdict"] == "late", late_after + 5, desc="m2 late")
    st = n["startup"]
    assert st["late"] is True and st["state"] == "late", st
    assert dcos.stage("m2", "orchestration")["state"] == "late"
    assert all(c["state"] in ("healthy", "starting") for c in n["components"]), \
        "late is not unhealthy"
    h = dcos.aggr.wait_verdict("unhealthy")
    assert ("m2", "marathon") in roots_of(h), h["root_causes"]
    root = next(r for r in h["root_causes"] if r["component"] == "marathon")
    assert root["state"] == "late", root
    assert "past the p95 of" in root["message"] and "for stage orchestration" in root["message"], root
    assert root["message"].endswith("; blocked: adminrouter on m2"), root
    assert any(r["node"] == "m2" and r["component"] is None and r["state"] == "late" and
               "startup is late: stage orchestration" in r["message"] for r in h["reasons"]), h
    assert all(r["state"] == "late" for r in h["root_causes"]), h["root_causes"]

    dcos.up("m2", *slow, "adminrouter")
    dcos.wait_all_healthy()


def test_learned_durations_survive_a_restart(dcos):
    """Completions are stored: after a restart of the aggregator the boots
    under way go on where they were, and what earlier boots taught is there
    for the next one."""
    for m in MASTERS:
        dcos.up_all(m)
        dcos.start(m)
    dcos.aggr.wait_verdict("healthy", 8)
    for m in MASTERS:
        dcos.reboot(m)
    for m in MASTERS:
        dcos.wait_node(m, lambda n: n["startup"]["boot_id"] == dcos.agents[n["id"]].boot_id and
                       n["startup"]["percent"] == 100, 8, desc=f"{m} done in its second boot")
    before = dcos.startup("m2")
    assert dcos.stage("m2", "orchestration")["typical_seconds"] is None, "shown for stages to come"

    dcos.aggr.stop()
    dcos.aggr.start()
    n = dcos.wait_node("m2", lambda n: n["connected"] and n["verdict"] == "healthy", 8,
                       desc="m2 back")
    assert n["startup"]["percent"] == 100
    assert [s["reached"] for s in n["startup"]["stages"]] == \
        [s["reached"] for s in before["stages"]], "the boot goes on where it was"

    dcos.down("m1", "marathon")
    dcos.reboot("m1")
    dcos.wait_node("m1", lambda n: n["startup"]["waiting_on"] == "orchestration", 8,
                   desc="m1 waiting on orchestration")
    orch = dcos.stage("m1", "orchestration")
    assert orch["typical_seconds"] is not None and orch["late_after_seconds"] is not None, orch
    assert dcos.startup("m1")["eta_seconds"] is not None
    dcos.up("m1", "marathon")
    dcos.aggr.wait_verdict("healthy", 8)


def test_reboot_restarts_progress(dcos):
    """A new boot id starts the node's progress over; the stages of both
    boots are stored."""
    for node in dcos.nodes():
        dcos.up_all(node)
    dcos.start_all()
    dcos.wait_all_healthy()
    first = dcos.startup("a1")
    assert first["percent"] == 100

    later = [c for s in stage_names("agent")[1:] for c in stage_members("agent", s)]
    dcos.down("a1", *later)
    boot = dcos.reboot("a1")
    n = dcos.wait_node("a1", lambda n: n["boot_id"] == boot and n["startup"]["percent"] == 20,
                       8, desc="a1 in its new boot, diagnostics done")
    st = n["startup"]
    assert st["boot_id"] == boot and st["waiting_on"] == "mesos-agent", st
    assert n["verdict"] == "starting", n
    assert dcos.stage("a1", "diagnostics")["reached"] > first["stages"][-1]["reached"]
    assert dcos.stage("a1", "mesos-agent")["state"] == "in_progress"
    assert dcos.aggr.nodes()["a1"]["startup"]["state"] == "in_progress"

    dcos.up("a1", *later)
    n = dcos.wait_node("a1", lambda n: n["startup"]["percent"] == 100, 8, desc="a1 done again")
    assert_reached_in_order(n["startup"])
    def rows():
        return dict(dcos.aggr.query("SELECT boot_id, count(*) FROM stage_completions"
                                    " WHERE node_id = 'a1' GROUP BY boot_id"))
    mh.wait_until(lambda: sorted(rows().values()) == [5, 5] and boot in rows(), 3,
                  desc="both boots of a1 stored")


def test_unknown_role_is_refused(dcos):
    """An agent whose role the aggregator has no profile for is refused with
    a reason; it stays up (retrying slowly) and appears nowhere."""
    for node in MASTERS:
        dcos.up_all(node)
        dcos.start(node)
    gpu = dcos.env.path("gpu-profiles")
    os.makedirs(gpu)
    with open(os.path.join(gpu, "gpu.ini"), "w") as f:
        f.write('[profile]\nrole = gpu\n[component "x"]\ncheck = exec\ncommand = true\n'
                'interval = 1s\n[stage "s"]\ncomponents = x\n')
    size = dcos.aggr.log_size()
    g1 = dcos.start("g1", role="gpu", extra={"profiles": gpu})
    mh.wait_until(lambda: "unknown role 'gpu'" in dcos.aggr.log_since(size), 5,
                  desc="the aggregator's rejection")
    mh.wait_until(lambda: "REJECT_UNKNOWN_ROLE" in g1.proc.stderr_text(), 5,
                  desc="the agent logs the rejection")
    g1.assert_alive()
    assert dcos.aggr.node("g1") is None
    assert "g1" not in dcos.aggr.nodes()
    for m in MASTERS:
        dcos.wait_node(m, lambda n: n["verdict"] == "healthy", 8, desc=f"{m} healthy")
    assert dcos.aggr.wait_verdict("healthy")["root_causes"] == []
