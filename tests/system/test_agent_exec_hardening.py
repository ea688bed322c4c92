"""What an exec check runs with, and what it cannot do to the agent
(agentd/probe/exec.c; docs/runbook.md, "How exec checks run"):

- a clean environment: PATH and LANG fixed, plus the agent's MUSTER_*
  variables, and nothing else of the agent's;
- stdin, stdout and stderr only: every other descriptor of the agent closed;
- its own process group, killed whole on a timeout and after the exit, so
  that background grandchildren do not outlive the check;
- output read up to a bound and thrown away: 10 MB of it neither blocks nor
  bloats the agent, which keeps checking on schedule.

Each test runs a real aggregator and agent and reads the check's state and
output in GET /v1/nodes/{id}, as an operator would."""

import os
import re
import uuid

import pytest

import muster_harness as mh
from muster_harness import wait_until


def start(env, components, agent_env=None):
    env.write_profile("master", mh.profile_ini(
        "master", components, [("base", [n for n, _ in components])]))
    aggr = env.aggregator(expected_masters=["n1"]).start()
    agent = env.agent("n1", "master", aggr)
    saved = dict(os.environ)
    os.environ.update(agent_env or {})
    try:
        agent.start()
    finally:
        os.environ.clear()
        os.environ.update(saved)
    return aggr, agent


def wait_component(aggr, name, pred, desc, timeout=5.0):
    last = {}

    def check():
        c = aggr.component("n1", name)
        last["c"] = c
        return c if c and pred(c) else None
    try:
        return wait_until(check, timeout, desc=f"{name}: {desc}")
    except mh.WaitTimeout as e:
        raise mh.WaitTimeout(f"{e}\nlast: {last.get('c')}") from None


def script(env, name, text):
    return f"/bin/sh {env.write(name + '.sh', text)}"


def unique_marker():
    """A sleep duration no other process uses, to find the check's sleepers."""
    return f"{1000 + uuid.uuid4().int % 1000}.{uuid.uuid4().int % 10**6:06d}"


def processes_with(marker):
    """Pids of live processes whose command line holds marker."""
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode("utf-8", "replace")
            with open(f"/proc/{pid}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if marker in cmdline and state != "Z":
            found.append((int(pid), cmdline))
    return found


def test_environment_is_clean(env):
    """The agent runs with secrets, proxies and systemd's variables in its
    environment; the check sees PATH, LANG and MUSTER_NODE only (dash adds
    PWD itself)."""
    cmd = script(env, "env", "env | sort | awk '{ printf \"%s;;\", $0 }'\n")
    aggr, _ = start(env, [("env", dict(check="exec", command=cmd, interval="200ms", rise=1,
                                       fall=1))],
                    agent_env={"SECRET_TOKEN": "hunter2", "http_proxy": "http://proxy:3128",
                               "NOTIFY_SOCKET": "/run/nonexistent", "LD_PRELOAD": "",
                               "HOME": "/root", "MUSTER_NODE": "n1"})
    c = wait_component(aggr, "env", lambda c: c["state"] == "healthy" and "PATH=" in c["output"],
                       "healthy with its environment")
    seen = dict(v.split("=", 1) for v in c["output"].split(";;") if v)
    assert seen.pop("PATH") == "/usr/sbin:/usr/bin:/sbin:/bin", c
    assert seen.pop("LANG") == "C.UTF-8", c
    assert seen.pop("MUSTER_NODE") == "n1", c
    seen.pop("PWD", None)
    # The test runner's own MUSTER_* variables (MUSTER_BUILD_DIR...) pass too.
    muster = {k: v for k, v in os.environ.items() if k.startswith("MUSTER_")}
    assert seen == muster, f"variables leaked into the check: {set(seen) - set(muster)}"


def test_only_stdin_stdout_stderr_are_open(env):
    """Descriptors 0-2 only; stdin is /dev/null and stdout/stderr one pipe.
    Probed with test -e, which opens nothing itself."""
    # Inline, not a script file: dash keeps a script it reads open as fd 10.
    cmd = ("open=''; n=0; while [ $n -lt 1024 ]; do [ -e /proc/$$/fd/$n ] && open=\"$open $n\"; "
           "n=$((n + 1)); done; echo \"fds:$open in=$(readlink /proc/$$/fd/0) "
           "out=$(readlink /proc/$$/fd/1) err=$(readlink /proc/$$/fd/2)\"")
    aggr, agent = start(env, [("fds", dict(check="exec", command=cmd, interval="200ms", rise=1,
                                           fall=1))])
    c = wait_component(aggr, "fds", lambda c: c["output"].startswith("fds:"), "fd listing")
    m = re.match(r"^fds: 0 1 2 in=(\S+) out=(\S+) err=(\S+)$", c["output"])
    assert m, c["output"]
    assert m.group(1) == "/dev/null", c["output"]
    assert m.group(2).startswith("pipe:") and m.group(2) == m.group(3), c["output"]
    # The agent itself holds many more (its loop, spool, stream, ...).
    assert len(os.listdir(f"/proc/{agent.proc.pid}/fd")) > 6


def test_timeout_kills_the_whole_process_group(env):
    """A check that starts background sleepers (one of them from a subshell,
    so not even its child) and then hangs: the timeout ends the check and
    leaves none of them behind. One run only (interval 1h)."""
    marker = unique_marker()
    cmd = script(env, "hang", "\n".join([
        f"sleep {marker} &",
        f"(sleep {marker} &)",
        "echo started",
        f"sleep {marker}",
    ]) + "\n")
    aggr, _ = start(env, [("hang", dict(check="exec", command=cmd, interval="1h",
                                        timeout="300ms", rise=1, fall=1))])
    wait_until(lambda: len(processes_with(marker)) == 3, 3, interval=0.01,
               desc=f"three 'sleep {marker}' running")
    wait_component(aggr, "hang", lambda c: c["state"] == "unknown"
                   and c["output"] == "timed out after 300ms", "timed out")
    wait_until(lambda: not processes_with(marker), 1,
               desc=f"every 'sleep {marker}' gone: {processes_with(marker)}")


def test_leftovers_of_a_finished_check_are_killed(env):
    """A check that exits 0 and leaves a sleeper in the background: the
    sleeper goes with it."""
    marker = unique_marker()
    cmd = script(env, "bg", f"sleep {marker} &\n(sleep {marker} &)\necho fine\nexit 0\n")
    aggr, _ = start(env, [("bg", dict(check="exec", command=cmd, interval="1h", rise=1,
                                      fall=1))])
    wait_component(aggr, "bg", lambda c: c["state"] == "healthy" and c["output"] == "fine",
                   "healthy")
    wait_until(lambda: not processes_with(marker), 1,
               desc=f"every 'sleep {marker}' gone: {processes_with(marker)}")


@pytest.mark.no_valgrind(reason="measures the agent's memory (VmRSS), which memcheck's own "
                                "footprint makes meaningless")
def test_ten_megabytes_of_output_are_capped(env):
    """One 10 MB line, then 10 MB more lines: the agent keeps the start of
    the first line (4 KiB, marked), reads at most 1 MiB, closes the pipe on
    the writer, stays small, and its other check keeps its pace."""
    cmd = script(env, "chatty", "head -c 10485760 /dev/zero | tr '\\0' x\necho\n"
                                "yes 'more output' | head -c 10485760\nexit 0\n")
    beat = script(env, "beat", "echo beat\n")
    aggr, agent = start(env, [
        ("chatty", dict(check="exec", command=cmd, interval="200ms", timeout="5s", rise=1,
                        fall=1)),
        ("beat", dict(check="exec", command=beat, interval="100ms", rise=1, fall=1)),
    ])
    c = wait_component(aggr, "chatty", lambda c: c["state"] == "unknown", "unknown", timeout=10)
    out = c["output"]
    assert out.endswith("x…[truncated]"), out[:200] + " ... " + out[-200:]
    # The writer (tr), then the shell itself, die of SIGPIPE once the agent
    # closes the pipe.
    assert re.match(r"^(exit code 141|killed by signal 13 \(SIGPIPE\)) after more than 1 MiB of "
                    r"output: x+…\[truncated\]$", out), out[:120]
    assert len(out.encode()) < 4096 + 200, len(out)

    # Ten more runs of 10 MB each: no state changes, and the other check
    # keeps its pace (a new result every 100 ms shows in its run count).
    wait_component(aggr, "beat", lambda c: c["state"] == "healthy", "healthy")
    changes = agent.spool_query("SELECT count(*) FROM changes")[0][0]
    log = agent.proc.stderr_size()
    def ran():
        runs = agent.proc.stderr_since(log)
        return (runs.count("component beat: result 0") >= 10 and
                runs.count("component chatty: result") >= 5)
    wait_until(ran, 2, interval=0.05, desc="ten runs of beat and five of chatty: "
               + agent.proc.stderr_since(log)[-2000:])
    assert agent.spool_query("SELECT count(*) FROM changes")[0][0] == changes
    agent.assert_alive()
    with open(f"/proc/{agent.proc.pid}/status") as f:
        rss_kib = int(re.search(r"VmRSS:\s+(\d+)", f.read()).group(1))
    assert rss_kib < 32 * 1024, f"agent RSS {rss_kib} KiB"
    n = aggr.node("n1")
    assert n["connected"] is True, n
