"""Configuration: a broken file stops a daemon with `path:line: message` for
every error in it; --check-config checks and exits without starting; profile
errors are reported against the profile file and line."""

import os
import socket
import subprocess
import tempfile
import time

import pytest

import muster_harness as mh
from muster_harness import run_to_completion


def good_profiles(env):
    env.write_profile("master", mh.profile_ini("master", [
        ("svc", dict(check="exec", command="true", interval="1s", rise=1, fall=1))],
        [("base", ["svc"])]))


def broken_aggregator_config(env):
    # line 4: a bad duration; line 6: an unknown key
    return env.write("aggr-broken.ini", "\n".join([
        "[aggregator]",                                          # 1
        "id = a1",                                               # 2
        "cluster = test",                                        # 3
        "stale_timeout = banana",                                # 4
        f"listen_stream = 127.0.0.1:{mh.free_port()}",           # 5
        "no_such_key = 1",                                       # 6
        f"listen_http = 127.0.0.1:{mh.free_port()}",             # 7
        f"database = {env.path('broken.db')}",                   # 8
        f"profiles = {env.profiles}",                            # 9
        "[log]",                                                 # 10
        "level = debug",                                         # 11
        ""]))


def broken_agent_config(env):
    return env.write("agent-broken.ini", "\n".join([
        "[agent]",                                               # 1
        "node_id = m1",                                          # 2
        "role = master",                                         # 3
        "heartbeat = banana",                                    # 4
        f"profiles = {env.profiles}",                            # 5
        "no_such_key = 1",                                       # 6
        f"spool = {env.path('broken.spool')}",                   # 7
        f"aggregators = 127.0.0.1:{mh.free_port()}",             # 8
        f"boot_id_file = {env.write('boot_id', 'b0')}",          # 9
        "[log]",                                                 # 10
        "level = debug",                                         # 11
        ""]))


DAEMONS = {"aggregatord": ("muster-aggregatord", broken_aggregator_config),
           "agentd": ("muster-agentd", broken_agent_config)}


@pytest.mark.parametrize("check_only", [False, True], ids=["start", "check-config"])
@pytest.mark.parametrize("daemon", sorted(DAEMONS))
def test_broken_config_reports_every_line(env, daemon, check_only):
    good_profiles(env)
    exe, make = DAEMONS[daemon]
    path = make(env)
    argv = [mh.binary(exe), "--config", path] + (["--check-config"] if check_only else [])
    rc, out, err, secs = run_to_completion(argv, timeout=5)
    assert rc != 0, f"{exe} accepted a broken config (rc 0); stderr:\n{err}"
    assert f"{path}:4:" in err, f"no '{path}:4:' (bad value) in stderr:\n{err}"
    assert f"{path}:6:" in err, f"no '{path}:6:' (unknown key) in stderr:\n{err}"


def test_missing_config_file(env):
    missing = env.path("nope.ini")
    for exe in ("muster-aggregatord", "muster-agentd"):
        rc, out, err, _ = run_to_completion([mh.binary(exe), "--config", missing], timeout=5)
        assert rc != 0, f"{exe} started without its config file"
        assert missing in err, f"{exe} does not name the missing file:\n{err}"


def test_check_config_aggregator_does_not_start(env):
    good_profiles(env)
    aggr = env.aggregator()
    aggr.write_config()
    # hold both listen ports: a daemon that tried to bind them would fail
    held = []
    for port in (aggr.stream_port, aggr.http_port):
        s = socket.socket()
        s.bind(("127.0.0.1", port))
        s.listen(1)
        held.append(s)
    try:
        rc, out, err, secs = run_to_completion(aggr.argv("--check-config"), timeout=5)
    finally:
        for s in held:
            s.close()
    assert rc == 0, f"--check-config on a good config exited {rc}:\n{err}"
    assert secs < mh.T(2), f"--check-config took {secs:.2f}s"
    assert not os.path.exists(aggr.db), "--check-config created the database: it started"


def test_check_config_agent_does_not_start(env):
    good_profiles(env)
    listener = env.tcp_flag()     # stands in for the aggregator

    class FakeAggr:
        stream_port = listener.port
    ag = env.agent("m1", "master", FakeAggr)
    ag.write_config()
    rc, out, err, secs = run_to_completion(ag.argv("--check-config"), timeout=5)
    assert rc == 0, f"--check-config on a good config exited {rc}:\n{err}"
    assert secs < mh.T(2), f"--check-config took {secs:.2f}s"
    assert listener.accepted == 0, "--check-config connected to the aggregator: it started"
    assert not os.path.exists(ag.spool), "--check-config created the spool: it started"


BROKEN_PROFILE = "\n".join([
    "[profile]",                        # 1
    "role = master",                    # 2
    "startup_grace = 0s",               # 3
    "",                                 # 4
    '[component "svc"]',                # 5
    "check = banana",                   # 6
    "command = true",                   # 7
    '[component "web"]',                # 8
    "check = http",                     # 9
    "url = http://127.0.0.1:1/",        # 10
    "interval = soon",                  # 11
    "",                                 # 12
    '[stage "base"]',                   # 13
    "components = svc web",             # 14
    ""])


@pytest.mark.parametrize("check_only", [False, True], ids=["start", "check-config"])
@pytest.mark.parametrize("daemon", ["aggregatord", "agentd"])
def test_broken_profile_reports_file_and_line(env, daemon, check_only):
    prof = env.write_profile("master", BROKEN_PROFILE)
    if daemon == "aggregatord":
        d = env.aggregator()
    else:
        d = env.agent("m1", "master", env.aggregator())
    d.write_config()
    rc, out, err, _ = run_to_completion(d.argv(*(["--check-config"] if check_only else [])),
                                        timeout=5)
    assert rc != 0, f"{daemon} accepted a broken profile; stderr:\n{err}"
    assert f"{prof}:6:" in err, f"no '{prof}:6:' (unknown check kind) in stderr:\n{err}"
    assert f"{prof}:11:" in err, f"no '{prof}:11:' (bad interval) in stderr:\n{err}"


def test_aggregator_checks_after_parsing_name_their_line(env):
    """The checks that need several keys or other files (addresses, the
    synchronous setting, the token file, advertised addresses with ZooKeeper)
    point at the line of the key that set the value, never at line 0."""
    good_profiles(env)
    path = env.write("aggr-lines.ini", "\n".join([
        "[aggregator]",                                          # 1
        "id = a1",                                               # 2
        "listen_stream = nowhere",                               # 3
        "listen_http = 127.0.0.1:not-a-port",                    # 4
        f"database = {env.path('lines.db')}",                    # 5
        f"profiles = {env.profiles}",                            # 6
        "synchronous = sometimes",                               # 7
        f"token_file = {env.path('no-such-token')}",             # 8
        "advertise_http = 0.0.0.0:7611",                         # 9
        "[zookeeper]",                                           # 10
        "hosts = 127.0.0.1:1",                                   # 11
        ""]))
    rc, out, err, _ = run_to_completion(
        [mh.binary("muster-aggregatord"), "--config", path, "--check-config"], timeout=5)
    assert rc != 0, f"a broken config was accepted; stderr:\n{err}"
    expected = {3: "listen_stream 'nowhere'", 4: "listen_http '127.0.0.1:not-a-port'",
                7: "invalid value 'sometimes' (full, normal)", 8: "token_file",
                9: "advertise_http '0.0.0.0:7611'"}
    for line, text in expected.items():
        assert any(l.startswith(f"{path}:{line}:") and text in l for l in err.splitlines()), \
            f"no '{path}:{line}: ...{text}...' in stderr:\n{err}"
    for l in err.splitlines():
        if "error" in l.lower() or path in l:
            assert not l.split(path, 1)[-1].startswith(": "), f"an error without its line: {l}"


# Dependency cycles between stages, through `requires`: each one used to pass
# --check-config and then hold its stages pending forever (startup stuck at
# 33%, the verdict healthy, no reason). Each case: the files, the file and
# the requires entry that closes the cycle (reported at its line), and the
# chain named.
def _svc_stage(name, extra=""):
    return f'[stage "{name}"]\ncomponents = svc\n{extra}'


_SVC = mh.component_ini("svc", check="exec", command="true", interval="1s", rise=1, fall=1)

CYCLES = {
    # master:s1 requires agent:x, which requires master:s1
    "cross-role": ({
        "master": ("[profile]\nrole = master\n\n" + _SVC + _svc_stage("base") + "\n"
                   + _svc_stage("s1", "requires = agent:x@quorum\n")),
        "agent": ("[profile]\nrole = agent\n\n" + _SVC
                  + _svc_stage("x", "requires = master:s1\n")),
    }, "master", "requires = agent:x@quorum", "master:s1 -> agent:x -> master:s1"),
    # a stage requiring itself, @quorum
    "self-quorum": ({
        "master": ("[profile]\nrole = master\n\n" + _SVC + _svc_stage("base")
                   + _svc_stage("s1", "requires = master:s1@quorum\n")),
    }, "master", "requires = master:s1@quorum", "master:s1 -> master:s1"),
}


@pytest.mark.parametrize("check_only", [False, True], ids=["start", "check-config"])
@pytest.mark.parametrize("daemon", ["aggregatord", "agentd"])
@pytest.mark.parametrize("case", sorted(CYCLES))
def test_requires_cycle_is_refused_at_its_line(env, case, daemon, check_only):
    files, culprit, key, chain = CYCLES[case]
    paths = {role: env.write_profile(role, text) for role, text in files.items()}
    line = files[culprit].splitlines().index(key) + 1
    if daemon == "aggregatord":
        d = env.aggregator()
    else:
        # an agent of the other role: it loads the whole directory too
        d = env.agent("a1", "agent" if "agent" in files else "master", env.aggregator())
    d.write_config()
    rc, out, err, _ = run_to_completion(d.argv(*(["--check-config"] if check_only else [])),
                                        timeout=5)
    assert rc != 0, f"{daemon} accepted a requires cycle ({case}); stderr:\n{err}"
    where = f"{paths[culprit]}:{line}:"
    hits = [l for l in err.splitlines() if l.startswith(where)]
    assert hits, f"no '{where}' (the requires closing the cycle) in stderr:\n{err}"
    assert "dependency cycle" in hits[0] and hits[0].endswith(chain), \
        f"the cycle is not named as {chain!r}: {hits[0]}"
    if daemon == "aggregatord":
        assert not os.path.exists(d.db), "the aggregator started on a cyclic profile set"
    else:
        assert not os.path.exists(d.spool), "the agent started on a cyclic profile set"


@pytest.mark.parametrize("daemon", ["aggregatord", "agentd"])
def test_shipped_profiles_pass_the_cycle_check(env, daemon):
    """DC/OS's real order (deploy/profiles) requires across roles, with no
    cycle: every role's agent and the aggregator accept it."""
    src = os.path.join(mh.REPO, "deploy", "profiles")
    roles = sorted(f[:-4] for f in os.listdir(src) if f.endswith(".ini"))
    assert {"master", "agent", "agent_public"} <= set(roles)
    for role in roles:
        with open(os.path.join(src, f"{role}.ini")) as f:
            env.write_profile(role, f.read())
    aggr = env.aggregator()
    daemons = [aggr] if daemon == "aggregatord" else \
        [env.agent(f"n-{role}", role, aggr) for role in roles]
    for d in daemons:
        d.write_config()
        rc, out, err, _ = run_to_completion(d.argv("--check-config"), timeout=5)
        assert rc == 0, f"{daemon} refused the shipped profiles:\n{err}"


# ---------------------------------------------------------------- caps on what is read

# Runs argv as the child of a fresh, small Python and prints the child's
# peak RSS. Linux counts into a process's peak the memory of the process it
# was forked from, up to its exec: forked straight from this test process
# (hundreds of MiB once a long pytest session has run), the daemon's figure
# would be this process's. A fresh interpreter is about 10 MiB.
_MEASURE = (
    "import os, sys\n"
    "pid = os.fork()\n"
    "if pid == 0:\n"
    "    os.execv(sys.argv[1], sys.argv[1:])\n"
    "_, status, ru = os.wait4(pid, 0)\n"
    "print(ru.ru_maxrss)\n"
    "sys.exit(os.waitstatus_to_exitcode(status) & 0xff)\n")


def run_measured(argv, timeout=10.0):
    """Runs a daemon that should exit by itself, as run_to_completion does,
    and also returns its own peak RSS in bytes (measured by a small parent of
    its own: see _MEASURE)."""
    with tempfile.TemporaryFile() as errf:
        t0 = time.monotonic()
        try:
            r = subprocess.run(["/usr/bin/python3", "-c", _MEASURE, *argv],
                               stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=errf,
                               timeout=mh.T(timeout))
        except subprocess.TimeoutExpired:
            raise AssertionError(f"{argv[0]} did not exit within {mh.T(timeout)}s")
        secs = time.monotonic() - t0
        errf.seek(0)
        err = errf.read().decode("utf-8", "replace")
    rc = r.returncode if r.returncode < 128 else r.returncode - 256
    return rc, err, secs, int(r.stdout.decode().strip().splitlines()[-1]) * 1024


RSS_MAX = 100 << 20      # a daemon that refuses its config stays far below this
BIG = 50 << 20           # a line as large as this would cost as much memory if buffered


def write_long_line_file(path, first, size, last):
    """first, then one line of size bytes, then last: written in pieces so the
    test itself does not hold it in memory."""
    chunk = b"x" * (1 << 20)
    with open(path, "wb") as f:
        f.write(first.encode())
        for _ in range(size // len(chunk)):
            f.write(chunk)
        f.write(chunk[:size % len(chunk)])
        f.write(b"\n" + last.encode())
    return path


def capped_inputs(env, what):
    """(path, expected stderr prefix) of a file over a cap: /dev/zero (fstat
    says size 0: capped while reading), a file with a 50 MB line (over the
    file cap: refused before reading) and a file with a 1 MB line (under the
    file cap: refused at its line)."""
    big = write_long_line_file(env.path(f"{what}-big.ini"), "[x]\nk = ", BIG, "k2 = 1\n")
    line = write_long_line_file(env.path(f"{what}-line.ini"), "[x]\nk = ", 1 << 20, "k2 = 1\n")
    return [("/dev/zero", "/dev/zero: file is larger than 4194304 bytes"),
            (big, f"{big}: file is larger than 4194304 bytes"),
            (line, f"{line}:2: line too long (over 4096 bytes)")]


@pytest.mark.parametrize("daemon", ["muster-aggregatord", "muster-agentd"])
def test_config_over_the_caps_fails_fast_and_small(env, daemon):
    """--config /dev/zero or a file with a huge line: the daemon exits at
    once with `path:` or `path:line:` and a peak RSS far below the file's
    size (it reached 5.7 GB when a line was buffered whole)."""
    for path, expected in capped_inputs(env, "conf"):
        rc, err, secs, rss = run_measured([mh.binary(daemon), "--config", path])
        assert rc != 0, f"{daemon} accepted {path}; stderr:\n{err}"
        assert expected in err, f"no '{expected}' in stderr:\n{err}"
        assert rss < RSS_MAX, f"{daemon} --config {path}: peak RSS {rss >> 20} MiB"
        assert secs < mh.T(5), f"{daemon} --config {path} took {secs:.1f}s"


@pytest.mark.parametrize("daemon", ["aggregatord", "agentd"])
def test_profile_over_the_caps_fails_fast_and_small(env, daemon):
    """The same for a profile: a profile that is /dev/zero (a symlink to it)
    or holds a huge line is refused with its path, fast and small."""
    for path, expected in capped_inputs(env, "prof"):
        prof = os.path.join(env.profiles, "master.ini")
        if os.path.lexists(prof):
            os.unlink(prof)
        os.symlink(path, prof)
        # the daemons report the profile by its path in the directory
        expected = expected.replace(path, prof)
        d = env.aggregator() if daemon == "aggregatord" else \
            env.agent("m1", "master", env.aggregator())
        d.write_config()
        rc, err, secs, rss = run_measured(d.argv())
        assert rc != 0, f"{daemon} accepted profile {path}; stderr:\n{err}"
        assert expected in err, f"no '{expected}' in stderr:\n{err}"
        assert rss < RSS_MAX, f"{daemon} with profile {path}: peak RSS {rss >> 20} MiB"
        assert secs < mh.T(5), f"{daemon} with profile {path} took {secs:.1f}s"
