"""systemd checks end to end on a real systemd user manager (the
systemd_manager fixture: its own cgroups and mount namespace, torn down
after each test). The agent reads units over D-Bus from the manager's
private socket; every assertion is on what the aggregator's API shows
(GET /v1/nodes/{id}), or on the agent's spool where the exact list of
recorded changes matters.

The components' `interval` (the agent's slow safety re-check) is a minute:
every change these tests wait for must come from systemd's signals."""

import re
import time

import pytest

import muster_harness as mh
import systemd_manager as sdm

pytestmark = pytest.mark.no_valgrind(
    reason="a real systemd manager per test: no daemon code these alone reach, and much time")

UNIT_CHECK = dict(check="systemd", interval="1m", timeout="2s")


def start_cluster(env, manager, units, grace="0s"):
    """units: {component name: unit name}. Starts an aggregator and agent m1
    watching them; returns (aggregator, agent)."""
    env.write_profile("master", mh.profile_ini(
        "master", [(c, dict(unit=u, **UNIT_CHECK)) for c, u in units.items()],
        [("base", list(units))], grace=grace))
    aggr = env.aggregator(expected_masters=["m1"]).start()
    agent = env.agent("m1", "master", aggr, extra={"systemd": manager.address}).start()
    return aggr, agent


def component_of(node, name):
    return next((c for c in node.get("components", []) if c.get("name") == name), None)


def wait_component(aggr, name, state, output=None, timeout=5.0):
    """Waits until m1's component shows state, and output when given (a
    string to equal, or a compiled regex to search); returns the component."""
    def ok(n):
        c = component_of(n, name)
        if c is None or c.get("state") != state:
            return False
        out = c.get("output", "")
        if output is None:
            return True
        return output.search(out) if isinstance(output, re.Pattern) else out == output
    n = aggr.wait_node("m1", ok, timeout, desc=f"{name} {state} with output {output!r}")
    return component_of(n, name)


def transitions(agent, component):
    """The changes the agent recorded for component, oldest first."""
    return agent.spool_query("SELECT from_state, to_state FROM changes WHERE component=? "
                             "ORDER BY seq", (component,))


def unit_reads(agent, component):
    """(reads, signals) of the agent's last read of the component's unit,
    from its debug log."""
    found = re.findall(rf"component {re.escape(component)}: unit \S+ read #(\d+) \((\d+) signals\)",
                       agent.proc.stderr_text())
    return tuple(int(x) for x in found[-1]) if found else (0, 0)


SLEEPER = "[Unit]\nDescription={desc}\n[Service]\nExecStart=/bin/sleep 1000\n"


def test_active_unit_is_healthy(env, systemd_manager):
    systemd_manager.run_unit("mst-web", "sleep 1000",
                             "Description=Mesos Master: distributed systems kernel")
    aggr, agent = start_cluster(env, systemd_manager, {"web": "mst-web.service"})

    c = wait_component(aggr, "web", "healthy", "active (running)")
    assert c["check"] == "systemd", c
    assert (c["rise"], c["fall"]) == (1, 1), c      # read, not damped
    aggr.wait_node("m1", lambda n: n["verdict"] == "healthy", desc="node healthy")
    assert transitions(agent, "web") == [("starting", "healthy")]
    # The agent keeps the Description split as DC/OS does (its debug log
    # names the unit by the display name).
    assert '"Mesos Master" -> healthy' in agent.proc.stderr_text()


def test_stop_is_unhealthy_and_start_healthy_again(env, systemd_manager):
    sd = systemd_manager
    sd.write_unit("mst-svc.service", SLEEPER.format(desc="Svc: a sleeper"))
    sd.systemctl("start", "mst-svc.service")
    aggr, agent = start_cluster(env, sd, {"svc": "mst-svc.service"})
    wait_component(aggr, "svc", "healthy", "active (running)")

    sd.systemctl("stop", "mst-svc.service")
    wait_component(aggr, "svc", "unhealthy", "inactive (dead)")
    aggr.wait_node("m1", lambda n: n["verdict"] == "unhealthy", desc="node unhealthy")

    sd.systemctl("start", "mst-svc.service")
    wait_component(aggr, "svc", "healthy", "active (running)")

    # systemd sends every PropertiesChanged twice here, and a stop or start
    # sends several: exactly one change per real transition.
    reads, signals = unit_reads(agent, "svc")
    assert signals >= 4, f"the agent saw only {signals} signals"
    assert transitions(agent, "svc") == [("starting", "healthy"), ("healthy", "unhealthy"),
                                         ("unhealthy", "healthy")]


def test_failing_unit_is_unhealthy_with_the_reason(env, systemd_manager):
    aggr, agent = start_cluster(env, systemd_manager, {"bad": "mst-bad.service"})
    wait_component(aggr, "bad", "unhealthy", "unit not found")

    systemd_manager.run_unit("mst-bad", "false")
    # Still unhealthy, now for its real reason (sent without a state change).
    wait_component(aggr, "bad", "unhealthy", "failed (Result=exit-code, ExecMainStatus=1)")
    assert systemd_manager.show("mst-bad.service", "ActiveState") == {"ActiveState": "failed"}
    assert transitions(agent, "bad")[0] == ("starting", "unhealthy")


def test_restart_loop_is_unhealthy_with_its_restart_count(env, systemd_manager):
    sd = systemd_manager
    # A failing Type=simple service is active for a few milliseconds of
    # each turn: systemd reports those moments, the agent must not.
    sd.run_unit("mst-loop", "/bin/sh -c 'exit 3'", "Restart=always", "RestartSec=150ms",
                "StartLimitIntervalSec=0")
    first = int(sd.wait_unit("mst-loop.service", lambda p: int(p["NRestarts"]) >= 1,
                             props=("NRestarts",))["NRestarts"])
    aggr, agent = start_cluster(env, sd, {"loop": "mst-loop.service"})
    wait_component(aggr, "loop", "unhealthy")

    # The count grows while the state stays: the output follows anyway.
    pattern = re.compile(rf"NRestarts=(\d+), Result=exit-code, ExecMainStatus=3\)$")
    c = wait_component(aggr, "loop", "unhealthy", pattern)
    c = wait_component(aggr, "loop", "unhealthy", re.compile(
        rf"NRestarts=({'|'.join(str(n) for n in range(first + 3, first + 200))}), "), timeout=8)
    assert c["output"].startswith(("auto-restart (", "failed (", "flapping: ", "inactive (")), c
    shown = int(re.search(r"NRestarts=(\d+)", c["output"]).group(1))
    assert shown <= int(sd.show("mst-loop.service", "NRestarts")["NRestarts"])
    assert transitions(agent, "loop") == [("starting", "unhealthy")]


def test_unit_that_recovers_after_a_restart_is_healthy_once_settled(env, systemd_manager):
    sd = systemd_manager
    flag = env.path("failed-once")
    aggr, agent = start_cluster(env, sd, {"flaky": "mst-flaky.service"})
    wait_component(aggr, "flaky", "unhealthy", "unit not found")

    # The first run fails, the second stays up.
    sd.run_unit("mst-flaky", ["/bin/sh", "-c", f"test -e {flag} || {{ touch {flag}; exit 1; }}; "
                              "exec sleep 1000"], "Restart=on-failure", "RestartSec=100ms")
    wait_component(aggr, "flaky", "unhealthy", "flapping: active (running, NRestarts=1)")
    wait_component(aggr, "flaky", "healthy", "active (running, NRestarts=1)", timeout=5)
    p = sd.show("mst-flaky.service", "ActiveEnterTimestampMonotonic", "NRestarts")
    assert p["NRestarts"] == "1", p

    # Healthy once it has been up for its RestartSec, at least 1 s: the
    # change came that long after the unit entered active. (systemd's
    # monotonic timestamps and time.monotonic() share CLOCK_MONOTONIC.)
    (at_ms,), = agent.spool_query("SELECT at_ms FROM changes WHERE component='flaky' "
                                  "ORDER BY seq DESC LIMIT 1")
    up_for = time.monotonic() - int(p["ActiveEnterTimestampMonotonic"]) / 1e6
    healthy_after = up_for - (time.time() - at_ms / 1000)
    assert 0.99 <= healthy_after <= 1.5, healthy_after
    # The failing first run may have been read during its few milliseconds
    # of `active` (NRestarts is still 0 then: nothing says it is a loop yet).
    assert transitions(agent, "flaky") in (
        [("starting", "unhealthy"), ("unhealthy", "healthy")],
        [("starting", "unhealthy"), ("unhealthy", "healthy"), ("healthy", "unhealthy"),
         ("unhealthy", "healthy")]), transitions(agent, "flaky")


def test_unknown_unit_is_unhealthy(env, systemd_manager):
    aggr, agent = start_cluster(env, systemd_manager, {"ghost": "mst-no-such-unit.service"})
    wait_component(aggr, "ghost", "unhealthy", "unit not found")
    aggr.wait_node("m1", lambda n: n["verdict"] == "unhealthy", desc="node unhealthy")

    # Reading a unit that does not exist loads it for a moment (systemd then
    # sends UnitNew/UnitRemoved): that must not feed back into more reads.
    # Counted over a second, deliberately: a loop shows as a rate.
    time.sleep(1.0)
    reads, _ = unit_reads(agent, "ghost")
    assert 1 <= reads <= 3, f"{reads} reads of a unit that does not exist in about a second"
    assert transitions(agent, "ghost") == [("starting", "unhealthy")]


def test_activating_unit_is_starting(env, systemd_manager):
    aggr, agent = start_cluster(env, systemd_manager, {"slow": "mst-slow.service"})
    wait_component(aggr, "slow", "unhealthy", "unit not found")

    systemd_manager.run_unit("mst-slow", "sleep 1000", "ExecStartPre=/bin/sleep 2", no_block=True)
    wait_component(aggr, "slow", "starting", "activating (start-pre)", timeout=1.5)
    assert systemd_manager.show("mst-slow.service", "SubState") == {"SubState": "start-pre"}
    n = aggr.node("m1")
    assert n["verdict"] != "healthy", n

    wait_component(aggr, "slow", "healthy", "active (running)", timeout=5)
    assert transitions(agent, "slow") == [("starting", "unhealthy"), ("unhealthy", "starting"),
                                          ("starting", "healthy")]


def test_manager_killed_is_unknown_and_recovers(env, systemd_manager):
    sd = systemd_manager
    sd.run_unit("mst-web", "sleep 1000")
    aggr, agent = start_cluster(env, sd, {"web": "mst-web.service"})
    wait_component(aggr, "web", "healthy", "active (running)")

    sd.kill9()
    c = wait_component(aggr, "web", "unknown", re.compile(r"^systemd bus disconnected: "))
    assert sd.address in c["output"], c

    sd.start()                       # a new manager on the same XDG_RUNTIME_DIR
    sd.run_unit("mst-web", "sleep 1000")
    wait_component(aggr, "web", "healthy", "active (running)", timeout=10)

    assert agent.proc.stderr_text().count("systemd: subscribed on") >= 2
    got = transitions(agent, "web")
    # The new manager may be read before the unit is re-created.
    assert got in ([("starting", "healthy"), ("healthy", "unknown"), ("unknown", "healthy")],
                   [("starting", "healthy"), ("healthy", "unknown"), ("unknown", "unhealthy"),
                    ("unhealthy", "healthy")]), got


def test_repeated_signals_make_no_changes(env, systemd_manager):
    sd = systemd_manager
    sd.write_unit("mst-dup.service", SLEEPER.format(desc="Dup: a sleeper"))
    sd.systemctl("start", "mst-dup.service")
    aggr, agent = start_cluster(env, sd, {"dup": "mst-dup.service"})
    wait_component(aggr, "dup", "healthy", "active (running)")
    _, signals_before = unit_reads(agent, "dup")

    # Real property changes that leave the unit active: runtime resource
    # settings, a start of the running unit, and daemon-reloads (each of
    # which makes the agent read every unit again).
    for i in range(10):
        sd.systemctl("set-property", "--runtime", "mst-dup.service", f"CPUWeight={50 + i}",
                     f"MemoryMax={100 + i}M")
        sd.systemctl("start", "mst-dup.service")
        if i % 3 == 0:
            sd.systemctl("daemon-reload")

    def settled():
        reads, signals = unit_reads(agent, "dup")
        return signals - signals_before >= 20 and reads
    mh.wait_until(settled, 5, desc="the agent to see the signals")
    # A window, deliberately: a change the signals wrongly cause would show
    # after the reads they start, and nothing marks the last of those.
    time.sleep(0.3)

    c = component_of(aggr.node("m1"), "dup")
    assert c["state"] == "healthy", c
    assert transitions(agent, "dup") == [("starting", "healthy")]

    # A restarted agent reads the unit afresh and finds what it recorded.
    agent.stop()
    agent.start()
    mh.wait_until(lambda: unit_reads(agent, "dup")[0] >= 1, 5, desc="the new agent's first read")
    assert transitions(agent, "dup") == [("starting", "healthy")]


def test_manager_teardown_leaves_nothing(tmp_path):
    """The fixture's own promise, checked from outside: after a teardown, a
    normal one and one after SIGKILL, no cgroup, mount or runtime dir is left."""
    def tmpfs_mounts():
        with open("/proc/self/mounts") as f:
            return [line for line in f if " /run/systemd " in line]

    mounts_before = tmpfs_mounts()
    for kill_first in (False, True):
        m = sdm.SystemdManager(str(tmp_path / f"m{int(kill_first)}"))
        try:
            m.start()
            m.run_unit("mst-stay", "sleep 1000")
            cgroup = m.cgroup
            assert [p for p in sdm.leftover_cgroups() if p.endswith("/" + cgroup)] == \
                sorted(f"{root}/{cgroup}" for root in sdm.CGROUP_ROOTS)
            if kill_first:
                m.kill9()
        finally:
            m.teardown()
        assert not [p for p in sdm.leftover_cgroups() if cgroup in p]
        assert not any(cgroup in p for p in sdm.leftover_cgroups(sdm.CGROUP_PREFIX))
        assert not (tmp_path / f"m{int(kill_first)}" / "run").exists()
    assert tmpfs_mounts() == mounts_before


def test_no_manager_is_unknown_with_the_reason(env, tmp_path):
    address = f"unix:path={tmp_path}/no-manager/private"
    env.write_profile("master", mh.profile_ini(
        "master", [("svc", dict(unit="mst-svc.service", **UNIT_CHECK))], [("base", ["svc"])]))
    aggr = env.aggregator(expected_masters=["m1"]).start()
    agent = env.agent("m1", "master", aggr, extra={"systemd": address}).start()
    c = wait_component(aggr, "svc", "unknown", re.compile(
        r"^systemd bus disconnected: cannot connect to unix:path=.*/no-manager/private: "
        r"No such file or directory$"))
    # It retries with backoff, and stays up.
    mh.wait_until(lambda: agent.proc.stderr_text().count("systemd bus disconnected") >= 3, 3,
                  desc="three attempts to reach the manager")
    agent.assert_alive()
    assert transitions(agent, "svc") == [("starting", "unknown")]


def test_bad_unit_name_stops_the_agent_with_its_line(env):
    profile = env.write_profile("master", mh.profile_ini(
        "master", [("ok", dict(unit="mst-ok.service", **UNIT_CHECK)),
                   ("typo", dict(unit="mst-typo", **UNIT_CHECK))], [("base", ["ok", "typo"])]))
    aggr = env.aggregator()
    agent = env.agent("m1", "master", aggr, extra={"systemd": "unix:path=/nonexistent"})
    agent.write_config()
    rc, out, err, _ = mh.run_to_completion(agent.argv("--check-config"))
    assert rc == 1, (rc, out, err)
    line = next(i for i, text in enumerate(open(profile).read().splitlines(), 1)
                if text == '[component "typo"]')
    assert f"{profile}:{line}: component 'typo': unit 'mst-typo' is not a unit name" in err, err
    assert "'ok'" not in err, err
