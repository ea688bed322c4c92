"""Issue 17, "Startup is not only kernel boot": a startup begins at a kernel
boot, at an install on a host that has been up for hours, and at a restart
of the node's component stack; a new startup begins from no state
(docs/profiles.md, "When a startup begins").

Each scenario runs real daemons under a VerdictWatch (muster_harness.py:
blocking reads of /v1/health and /v1/nodes plus a 50 ms sample) from before
the lifecycle event to its end, and asserts what a user sees through the
API: no verdict in the record may be one the scenario must never show.

The install and stack-restart tests run without boot_id_file: the agents read
the kernel's boot id, on a machine that booted long before (the install test
asserts that the uptime exceeds the grace)."""

import datetime
import time
import uuid

import pytest

import muster_harness as mh

pytestmark = pytest.mark.no_valgrind(
    reason="whole lifecycles with several daemons, timed by real checks and units: long")

EXEC = dict(check="exec", interval="200ms", timeout="2s", rise=1, fall=1)
UNIT = dict(check="systemd", interval="1m", timeout="2s")


def parse_time(s):
    return datetime.datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()


def uptime_seconds():
    with open("/proc/uptime") as f:
        return float(f.read().split()[0])


def kernel_boot_time():
    with open("/proc/stat") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("btime "))


def profile(role, components, stages, grace, restart_window=None):
    text = mh.profile_ini(role, components, stages, grace=grace)
    if restart_window:
        text = text.replace("[profile]\n", f"[profile]\nrestart_window = {restart_window}\n", 1)
    return text


def bad_samples(watch, verdict, nodes=None, since=None):
    """Samples whose cluster verdict, or a node's (of nodes; all when None),
    is verdict; only those from `since` (time.monotonic()) on."""
    out = []
    for s in watch.record():
        if since is not None and s.t < since:
            continue
        seen = [("cluster", s.cluster)] + [(k, v.get("verdict"))
                                           for k, v in (s.nodes or {}).items()
                                           if nodes is None or k in nodes]
        if any(v == verdict for _, v in seen):
            out.append(s)
    return out


def node_verdicts(watch, node_id, pred=lambda n: True):
    """The verdicts a node showed, in order, repeats collapsed, of the
    samples where pred(node list entry) holds."""
    out = []
    for s in watch.record():
        n = s.node(node_id)
        if n and pred(n) and (not out or out[-1] != n["verdict"]):
            out.append(n["verdict"])
    return out


def flip(rc_file, rc):
    with open(rc_file, "w") as f:
        f.write(f"{rc}\n")


# ---------------------------------------------------------------- install


def test_install_on_a_running_host(env):
    """A fresh install on a host up for longer than the grace: every node is
    starting, never unhealthy, while its checks come up one after another;
    the startup is an install that began when the agent started."""
    grace = 60
    assert uptime_seconds() > grace, "this test needs a machine up for longer than the grace"
    master_cmds = {c: mh.exec_rc_script(env, f"m-{c}", rc=2) for c in ("zk", "web")}
    agent_cmds = {c: mh.exec_rc_script(env, f"a-{c}", rc=2) for c in ("svc", "app")}
    env.write_profile("master", profile(
        "master", [(c, dict(command=cmd, **EXEC)) for c, (cmd, _) in master_cmds.items()],
        [("zk", ["zk"]), ("web", ["web"])], grace=f"{grace}s"))
    env.write_profile("agent", profile(
        "agent", [(c, dict(command=cmd, **EXEC)) for c, (cmd, _) in agent_cmds.items()],
        [("svc", ["svc"]), ("app", ["app"])], grace=f"{grace}s"))
    aggr = env.aggregator().start()
    master = env.agent("m1", "master", aggr, kernel_boot=True)
    agent = env.agent("a1", "agent", aggr, kernel_boot=True)

    with mh.VerdictWatch(aggr) as watch:
        started = time.time()
        master.start()
        agent.start()
        for node in ("m1", "a1"):
            aggr.wait_node(node, lambda n: n["verdict"] == "starting" and len(n["components"]) == 2,
                           5, desc=f"{node} starting with its components")
        # The components come up one after another, as an install's do.
        for node, rc_files in (("m1", master_cmds), ("a1", agent_cmds)):
            for name, (_, rc_file) in rc_files.items():
                flip(rc_file, 0)
                aggr.wait_node(node, lambda n: any(c["name"] == name and c["state"] == "healthy"
                                                   for c in n["components"]),
                               5, desc=f"{node} {name} healthy")
        aggr.wait_verdict("healthy", 5)
        for node in ("m1", "a1"):
            aggr.wait_node(node, lambda n: n["verdict"] == "healthy" and
                           n["startup"]["state"] == "done", 5, desc=f"{node} healthy, done")

    assert not bad_samples(watch, "unhealthy"), bad_samples(watch, "unhealthy")[:5]
    verdicts = watch.cluster_verdicts()
    assert "starting" in verdicts and verdicts[-1] == "healthy", verdicts
    assert verdicts.index("starting") < len(verdicts) - 1, verdicts
    for node in ("m1", "a1"):
        assert node_verdicts(watch, node)[-2:] == ["starting", "healthy"], \
            node_verdicts(watch, node)

    for node, a in (("m1", master), ("a1", agent)):
        n = aggr.node(node)
        st = n["startup"]
        assert st["cause"] == "install", st
        assert n["boot_id"] == a.boot_id == st["boot_id"], (n["boot_id"], a.boot_id)
        boot_time = parse_time(st["boot_time"])
        # The agent's start, not the kernel's boot (hours before).
        assert started - 1 <= boot_time <= time.time(), (st["boot_time"], started)
        assert boot_time - kernel_boot_time() > grace, st["boot_time"]
        assert all(s["state"] == "done" and s["duration"] is not None for s in st["stages"]), st
        assert aggr.nodes()[node]["startup"]["cause"] == "install"
        rows = aggr.query("SELECT stage FROM stage_completions WHERE node_id = ? AND boot_id = ?",
                          (node, a.boot_id))
        assert sorted(r[0] for r in rows) == sorted(s["name"] for s in st["stages"]), rows


# ---------------------------------------------------------------- reboot


def test_reboot_begins_from_no_state(env):
    """A node that reboots (a new boot id, the agent restarted) goes starting
    with every component starting; it shows healthy in the new boot only
    once its checks pass there, and never unhealthy; the old boot's stage
    durations are what the new boot is estimated by."""
    cmds = {c: mh.exec_rc_script(env, c, rc=0) for c in ("zk", "web")}
    env.write_profile("master", profile(
        "master", [(c, dict(command=cmd, **EXEC)) for c, (cmd, _) in cmds.items()],
        [("zk", ["zk"]), ("web", ["web"])], grace="60s"))
    aggr = env.aggregator().start()
    agent = env.agent("m1", "master", aggr).start()

    def reboot(boot_id):
        agent.stop()
        agent.boot_id = boot_id
        with open(agent.boot_id_file, "w") as f:
            f.write(agent.boot_id + "\n")

    def done(n):
        return n["verdict"] == "healthy" and n["startup"]["state"] == "done" and \
            n["boot_id"] == agent.boot_id

    aggr.wait_node("m1", done, 5, desc="m1 healthy in its first boot")
    # A quick second boot: two finished boots teach the stage durations.
    reboot(str(uuid.uuid4()))
    agent.start()
    aggr.wait_node("m1", done, 5, desc="m1 healthy in its second boot")

    with mh.VerdictWatch(aggr) as watch:
        # After this reboot the components are not up yet.
        for _, rc_file in cmds.values():
            flip(rc_file, 2)
        reboot(str(uuid.uuid4()))
        agent.start()
        n = aggr.wait_node("m1", lambda n: n["boot_id"] == agent.boot_id and
                           n["verdict"] == "starting" and
                           all(c["state"] == "starting" for c in n["components"]),
                           5, desc="m1 starting in the new boot, every component starting")
        st = n["startup"]
        assert st["cause"] == "boot", st
        # Learned from the earlier boots, as before.
        assert all(s["typical_seconds"] is not None for s in st["stages"]), st
        # The checks have run in the new boot and still fail: still starting
        # (within the grace, not unhealthy).
        mh.wait_until(lambda: all(f"component {c}: health 0/1, starting: {c} says 2" in
                                  agent.proc.stderr_text() for c in cmds),
                      5, desc="the failing checks ran in the new boot")
        checks_up = time.monotonic()
        for _, rc_file in cmds.values():
            flip(rc_file, 0)
        aggr.wait_node("m1", done, 5, desc="m1 healthy in the new boot")

    assert not bad_samples(watch, "unhealthy"), bad_samples(watch, "unhealthy")[:5]
    in_new_boot = node_verdicts(watch, "m1", lambda n: n["boot_id"] == agent.boot_id)
    # late: the stage took longer than the two quick boots before it.
    assert in_new_boot[0] == "starting" and in_new_boot[-1] == "healthy" and \
        set(in_new_boot) <= {"starting", "late", "healthy"}, in_new_boot
    early = [s for s in watch.record() if s.t < checks_up and s.node("m1") and
             s.node("m1")["boot_id"] == agent.boot_id and s.node_verdict("m1") == "healthy"]
    assert not early, early[:5]
    changes = agent.spool_query("SELECT component, from_state, to_state FROM changes "
                                "WHERE boot_id = ? ORDER BY seq", (agent.boot_id,))
    assert sorted(changes[:2]) == [("web", "healthy", "starting"), ("zk", "healthy", "starting")], \
        changes


# ---------------------------------------------------------------- stack restart

# Each unit takes a second to come up (activating, start-pre), as real
# components take their time.
STACK_UNIT = ("[Unit]\nDescription={name}: a sleeper\nPartOf=mst-stack.target\n"
              "[Service]\nExecStartPre=/bin/sleep 1\nExecStart=/bin/sleep 1000\n")
STACK_TARGET = "[Unit]\nDescription=the stack\nWants=mst-a.service mst-b.service\n"


def test_stack_restart_is_a_startup(env, systemd_manager):
    """Restarting the target of the profile's units on a running host is a
    new startup (cause restart, its own id), starting then healthy, never
    unhealthy; restarting one unit alone is not; a stack restart while the
    agent is stopped is found when it starts again."""
    sd = systemd_manager
    window = 1.0
    sd.write_unit("mst-a.service", STACK_UNIT.format(name="A"), reload=False)
    sd.write_unit("mst-b.service", STACK_UNIT.format(name="B"), reload=False)
    sd.write_unit("mst-stack.target", STACK_TARGET)
    sd.systemctl("start", "mst-stack.target")
    env.write_profile("master", profile(
        "master", [("a", dict(unit="mst-a.service", **UNIT)),
                   ("b", dict(unit="mst-b.service", **UNIT))],
        [("a", ["a"]), ("b", ["b"])], grace="30s", restart_window=f"{window:g}s"))
    aggr = env.aggregator().start()
    agent = env.agent("m1", "master", aggr, kernel_boot=True,
                      extra={"systemd": sd.address}).start()
    n = aggr.wait_node("m1", lambda n: n["verdict"] == "healthy" and n["startup"]["state"] == "done",
                       5, desc="m1 healthy")
    install = n["startup"]
    assert install["cause"] == "install" and install["boot_id"] == agent.boot_id, install

    def after_window(boot_time):
        # A restart within restart_window of a startup's start belongs to it.
        mh.wait_until(lambda: time.time() > parse_time(boot_time) + window + 0.2,
                      window + 5, desc="the restart window passed")

    def a_restarted_since(since):
        return lambda n: next(c for c in n["components"] if c["name"] == "a")["since"] != since

    with mh.VerdictWatch(aggr) as watch:
        after_window(install["boot_time"])
        # One unit restarted alone: a failure or a fix, not a startup.
        since = next(c for c in n["components"] if c["name"] == "a")["since"]
        sd.systemctl("restart", "mst-a.service")
        aggr.wait_node("m1", lambda n: a_restarted_since(since)(n) and n["verdict"] == "healthy",
                       5, desc="a restarted and healthy")
        n = aggr.node("m1")
        assert n["startup"]["boot_id"] == agent.boot_id and n["startup"]["cause"] == "install", \
            n["startup"]

        # The whole stack restarted: a new startup.
        before = time.time()
        sd.systemctl("restart", "mst-stack.target")
        restart_id = f"{agent.boot_id}+2"
        n = aggr.wait_node("m1", lambda n: n["boot_id"] == restart_id, 5,
                           desc="m1 in the restart's startup")
        assert n["startup"]["cause"] == "restart", n["startup"]
        assert before - 0.5 <= parse_time(n["startup"]["boot_time"]) <= time.time(), n["startup"]
        n = aggr.wait_node("m1", lambda n: n["verdict"] == "healthy" and
                           n["startup"]["state"] == "done", 5, desc="m1 healthy after the restart")
        assert aggr.nodes()["m1"]["startup"]["cause"] == "restart"
        in_restart = node_verdicts(watch, "m1", lambda n: n["boot_id"] == restart_id)
        assert in_restart[0] == "starting" and in_restart[-1] == "healthy", in_restart

        # The stack restarted while the agent was down: found at its start.
        agent.stop()
        after_window(n["startup"]["boot_time"])
        before = time.time()
        sd.systemctl("restart", "mst-stack.target")
        restarted = time.monotonic()
        agent.start()
        n = aggr.wait_node("m1", lambda n: n["boot_id"] == f"{agent.boot_id}+3" and
                           n["verdict"] == "healthy" and n["startup"]["state"] == "done",
                           5, desc="m1 in the startup of the restart made while its agent was down")
        assert n["startup"]["cause"] == "restart", n["startup"]
        assert before - 0.5 <= parse_time(n["startup"]["boot_time"]) <= time.time(), n["startup"]

    assert not bad_samples(watch, "unhealthy"), bad_samples(watch, "unhealthy")[:5]
    # Back, the agent says Hello in the startup its first read of the units
    # found, never first in the one before with that one's states.
    stale = [s for s in watch.record() if s.t > restarted and s.node("m1")
             and s.node("m1")["connected"] and s.node("m1")["boot_id"] != f"{agent.boot_id}+3"]
    assert not stale, stale[:3]
    assert agent.spool_meta("startup_id") == f"{agent.boot_id}+3"


# ---------------------------------------------------------------- the Hello field


def test_startup_cause_in_the_hello(env):
    """An agent older than startup_cause sends none: the API shows null. A
    cause over its cap (32 bytes) is refused like any overlong Hello text."""
    env.write_profile("master", profile("master", [("zk", dict(command="true", **EXEC))],
                                        [("zk", ["zk"])], grace="60s"))
    aggr = env.aggregator().start()
    digest = env.profile_digest("master")

    old = mh.StreamClient(aggr.stream_port)
    r = old.hello("m1", "master", "a" * 32, digest=digest)
    assert r.WhichOneof("body") == "welcome", r
    n = aggr.wait_node("m1", lambda n: n["connected"], 3, desc="m1 connected")
    assert n["startup"]["cause"] is None and aggr.nodes()["m1"]["startup"]["cause"] is None, n

    new = mh.StreamClient(aggr.stream_port)
    r = new.hello("m2", "master", "b" * 32, digest=digest, startup_cause="restart")
    assert r.WhichOneof("body") == "welcome", r
    aggr.wait_node("m2", lambda n: n["startup"]["cause"] == "restart", 3, desc="m2's cause")

    bad = mh.StreamClient(aggr.stream_port)
    r = bad.hello("m3", "master", "c" * 32, digest=digest, startup_cause="x" * 33)
    assert r.WhichOneof("body") == "reject", r
    assert mh.pb().RejectCode.Name(r.reject.code) == "REJECT_BAD_HELLO", r
    assert "startup_cause" in r.reject.reason, r.reject.reason
    for cl in (old, new, bad):
        cl.close()
