"""What DC/OS shows of a node comes from the node (issue 18, part 2): each
component's description and display name travel from the agent in its
snapshots and show in GET /v1/nodes/{id}; the agent can take its node id from
a command, as DC/OS takes a node's IP from detect_ip.

The systemd tests run a real systemd user manager (the systemd_manager
fixture); every assertion is on what the aggregator serves, or on what the
agent says when it refuses to start."""

import os

import pytest

import muster_harness as mh

pytestmark = pytest.mark.no_valgrind(
    reason="a real systemd manager and node_id_command deadlines, which memcheck's slowdown runs into; these paths run in the AddressSanitizer pass")

UNIT_CHECK = dict(check="systemd", interval="1m", timeout="2s")
SLEEPER = "[Unit]\nDescription={desc}\n[Service]\nExecStart=/bin/sleep 1000\n"


def profile_text(role, components):
    """A profile of components [(name, {key: value})] in one stage; unlike
    mh.profile_ini, a component may have a `name` key."""
    parts = [f"[profile]\nrole = {role}\nstartup_grace = 0s\n"]
    for comp, keys in components:
        parts.append(f'[component "{comp}"]\n' + "".join(f"{k} = {v}\n" for k, v in keys.items()))
    parts.append(mh.stage_ini("base", [c for c, _ in components]))
    return "\n".join(parts)


def component_of(node, name):
    return next((c for c in node.get("components", []) if c.get("name") == name), None)


def wait_described(aggr, node_id, name, description, display_name):
    """Waits until the component shows this description and display name
    (None: null); returns it."""
    def ok(n):
        c = component_of(n, name)
        return c is not None and (c.get("description"), c.get("display_name")) == (
            description, display_name)
    n = aggr.wait_node(node_id, ok, 5.0, desc=f"{name}: {description!r}, {display_name!r}")
    return component_of(n, name)


@pytest.mark.no_valgrind(reason="a real systemd manager: no daemon code only it reaches")
def test_unit_descriptions_and_profile_keys_reach_the_node_body(env, systemd_manager):
    sd = systemd_manager
    sd.write_unit("mst-master.service",
                  SLEEPER.format(desc="Mesos Master: distributed systems kernel"), reload=False)
    sd.write_unit("mst-zk.service", SLEEPER.format(desc="Exhibitor and ZooKeeper"), reload=False)
    sd.write_unit("mst-net.service", SLEEPER.format(desc="Net: what systemd says"), reload=False)
    sd.write_unit("mst-bare.service", "[Service]\nExecStart=/bin/sleep 1000\n")
    for u in ("mst-master", "mst-zk", "mst-net", "mst-bare"):
        sd.systemctl("start", f"{u}.service")
    components = [
        ("mesos-master", dict(unit="mst-master.service", **UNIT_CHECK)),
        ("exhibitor", dict(unit="mst-zk.service", **UNIT_CHECK)),
        # The profile's keys win over the unit's Description=.
        ("dcos-net", dict(unit="mst-net.service", **UNIT_CHECK,
                          description="A distributed systems & network overlay orchestration "
                                      "engine", name="DC/OS Net")),
        ("bare", dict(unit="mst-bare.service", **UNIT_CHECK)),
        # Any check kind may be described by its profile.
        ("dns", dict(check="exec", command="true", interval="1m", timeout="2s", rise=1,
                     description="leader.mesos resolves", name="Leader DNS")),
    ]
    env.write_profile("master", profile_text("master", components))
    aggr = env.aggregator(expected_masters=["m1"]).start()
    env.agent("m1", "master", aggr, extra={"systemd": sd.address}).start()
    aggr.wait_node("m1", lambda n: n["verdict"] == "healthy", 5.0, desc="m1 healthy")

    # DC/OS's split of Description= at ": " into exactly two parts.
    wait_described(aggr, "m1", "mesos-master", "distributed systems kernel", "Mesos Master")
    # No split: the whole text, and no name (DC/OS shows the unit id).
    wait_described(aggr, "m1", "exhibitor", "Exhibitor and ZooKeeper", None)
    wait_described(aggr, "m1", "dcos-net",
                   "A distributed systems & network overlay orchestration engine", "DC/OS Net")
    wait_described(aggr, "m1", "dns", "leader.mesos resolves", "Leader DNS")
    # systemd makes up a Description= for a unit without one: its id.
    c = wait_described(aggr, "m1", "bare", "mst-bare.service", None)
    assert c["state"] == "healthy", c

    # An edited unit's new Description= arrives without a state change,
    # after systemd's daemon-reload, in a fresh snapshot.
    sd.write_unit("mst-zk.service",
                  SLEEPER.format(desc="Exhibitor: ZooKeeper supervisor"))
    c = wait_described(aggr, "m1", "exhibitor", "ZooKeeper supervisor", "Exhibitor")
    assert c["state"] == "healthy", c


def test_long_descriptions_are_refused_at_their_line(env):
    long_name = "N" * 129
    profile = env.write_profile("master", profile_text(
        "master", [("svc", dict(check="exec", command="true", name=long_name))]))
    aggr = env.aggregator()
    agent = env.agent("m1", "master", aggr)
    agent.write_config()
    rc, out, err, _ = mh.run_to_completion(agent.argv("--check-config"))
    assert rc == 1, (rc, out, err)
    line = next(i for i, text in enumerate(open(profile).read().splitlines(), 1)
                if text.startswith("name = "))
    assert f"{profile}:{line}: component 'svc': name: must be 1 to 128 bytes (is 129)" in err, err


# ---------------------------------------------------------------- node_id_command


def simple_cluster(env):
    env.write_profile("agent", mh.profile_ini(
        "agent", [("svc", dict(check="exec", command="true", interval="1s"))],
        [("base", ["svc"])]))
    return env.aggregator().start()


def test_node_id_command_names_the_node(env):
    aggr = simple_cluster(env)
    # detect_ip prints the address and a newline.
    script = env.write("detect_ip", "#!/bin/sh\necho 10.0.7.190\n")
    os.chmod(script, 0o755)
    agent = env.agent(None, "agent", aggr, name="a1",
                      extra={"node_id": None, "node_id_command": script}).start()
    n = aggr.wait_node("10.0.7.190", lambda n: n["verdict"] == "healthy", 5.0,
                       desc="the node named by the command's output")
    assert n["id"] == "10.0.7.190", n
    assert f"node id 10.0.7.190, from node_id_command '{script}'" in agent.proc.stderr_text()


def config_line(agent, key):
    return next(i for i, text in enumerate(open(agent.config).read().splitlines(), 1)
                if text.startswith(f"{key} = "))


@pytest.mark.parametrize("command,timeout,message", [
    ("echo 'no route to the master' >&2; exit 3", "5s",
     "exited with status 3: no route to the master"),
    ("echo 10.0.0.1 10.0.0.2", "5s",
     "printed '10.0.0.1 10.0.0.2', which is not a node id (1-253 bytes of printable UTF-8 "
     "without spaces)"),
    ("printf '\\377\\376'", "5s", "which is not a node id"),
    ("echo", "5s", "printed '', which is not a node id"),
    ("head -c 100000 /dev/zero | tr '\\0' x", "5s",
     "printed more than 1024 bytes (killed): not a node id"),
    ("/nonexistent/detect_ip", "5s", "exited with status 127: "),
], ids=["fails", "two-words", "not-utf8", "empty", "too-much", "missing"])
def test_node_id_command_failures_stop_the_agent_at_its_line(env, command, timeout, message):
    aggr = simple_cluster(env)
    agent = env.agent(None, "agent", aggr, name="a1",
                      extra={"node_id": None, "node_id_command": command,
                             "node_id_timeout": timeout})
    agent.write_config()
    rc, out, err, _ = mh.run_to_completion(agent.argv())
    assert rc != 0, (rc, out, err)
    want = f"{agent.config}:{config_line(agent, 'node_id_command')}: [agent] node_id_command: "
    assert want in err, err
    assert message in err, err
    assert aggr.get("/v1/nodes").json()["nodes"] == [], "the agent must not have said Hello"


def test_node_id_command_past_its_timeout_is_killed_with_what_it_started(env):
    aggr = simple_cluster(env)
    pidfile = env.path("hung.pid")
    # The shell starts a child that would outlive it: both must go.
    command = f"sleep 600 & echo $! > {pidfile}; wait"
    agent = env.agent(None, "agent", aggr, name="a1",
                      extra={"node_id": None, "node_id_command": command,
                             "node_id_timeout": "300ms"})
    agent.write_config()
    rc, out, err, secs = mh.run_to_completion(agent.argv("--check-config"))
    assert rc == 1, (rc, out, err)
    assert (f"{agent.config}:{config_line(agent, 'node_id_command')}: [agent] node_id_command: "
            f"'{command}' did not exit within 300ms (killed)") in err, err
    pid = int(open(pidfile).read())
    mh.wait_until(lambda: not os.path.exists(f"/proc/{pid}") or
                  open(f"/proc/{pid}/stat").read().split(") ")[1].startswith("Z"),
                  2.0, desc="the command's child killed")


def test_node_id_and_node_id_command_are_exclusive(env):
    aggr = simple_cluster(env)
    agent = env.agent("a1", "agent", aggr, extra={"node_id_command": "echo 10.0.0.1"})
    agent.write_config()
    rc, out, err, _ = mh.run_to_completion(agent.argv("--check-config"))
    assert rc == 1, (rc, out, err)
    assert (f"{agent.config}:{config_line(agent, 'node_id_command')}: [agent] node_id_command: "
            f"node_id is set too (line {config_line(agent, 'node_id')}): set one of them") in err, \
        err
