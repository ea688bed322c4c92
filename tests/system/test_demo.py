"""deploy/demo, the README's first command: a simulated DC/OS cluster (three
masters, two agents, one public agent, each a real muster-agentd running the
shipped profiles remapped to marker files) around a standalone aggregator.

The demo is run with MUSTER_DEMO_BUILD_DIR at the tests' build directory, so
it neither installs nor builds. The test waits for the cluster to boot to
healthy with every role present, checks the dashboard answers, injects a
failure through `deploy/demo fail`, checks its root cause, recovers, then
SIGTERMs the demo and checks nothing it started is left running. With --zk
(three ZooKeeper servers, three aggregators) it also kills the leading
aggregator and checks another one takes over."""

import os
import random
import shutil
import signal
import socket
import subprocess
import time

import pytest
import requests

import muster_harness as mh

pytestmark = pytest.mark.no_valgrind(
    reason="deploy/demo starts its own daemons, not under memcheck: nothing to check")

DEMO = os.path.join(mh.REPO, "deploy", "demo")


def processes_of(state):
    """Pids of live processes with the demo's state dir in their args or cwd."""
    found = set()
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                args = f.read().replace(b"\0", b" ").decode(errors="replace")
            try:
                cwd = os.readlink(f"/proc/{pid}/cwd")
            except OSError:
                cwd = ""
            with open(f"/proc/{pid}/stat") as f:
                zombie = f.read().rsplit(")", 1)[1].split()[0] == "Z"
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
        if not zombie and (state in args or cwd.startswith(state)):
            found.add(int(pid))
    return found


def cmdline(pid):
    """A process's command line, or "" once it has exited (the agents' check
    commands come and go between a listing of /proc and this read)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except (FileNotFoundError, ProcessLookupError):
        return ""


def wait_for(pred, timeout, desc, interval=0.25):
    deadline = time.monotonic() + mh.T(timeout)
    last = None
    while True:
        try:
            last = pred()
        except (requests.RequestException, ValueError, KeyError, TypeError) as e:
            last = e
        if last and not isinstance(last, Exception):
            return last
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {desc}; last: {last!r}")
        time.sleep(interval)


def bindable(port):
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def demo_ports():
    """The demo's HTTP and stream ports, chosen so that every port the demo
    derives from them is free: HTTP PORT..PORT+2 and stream STREAM-2..STREAM
    (one per aggregator), ZooKeeper PORT+301..PORT+323 (deploy/demo). They
    lie below the kernel's ephemeral range: a port in it can be taken by any
    outgoing connection (the agents', ZooKeeper's own) between this check
    and the demo's bind, and a ZooKeeper server whose election port is taken
    exits (it left the --zk demo one process short under load)."""
    with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
        ephemeral = int(f.read().split()[0])
    rnd = random.Random()
    for _ in range(100):
        http = rnd.randrange(10000, ephemeral - 330)
        stream = http - 10
        ports = [http + k for k in (0, 1, 2)] + [stream - k for k in (0, 1, 2)] + [
            http + base + i for base in (300, 310, 320) for i in (1, 2, 3)]
        if all(bindable(p) for p in ports):
            return http, stream
    raise AssertionError(f"no free set of demo ports below {ephemeral}")


def have_zookeeper():
    return os.path.exists("/usr/share/java/zookeeper.jar") and shutil.which("java") is not None


@pytest.mark.parametrize("mode", ["standalone", pytest.param(
    "zk", marks=pytest.mark.long(reason="the demo again, with a three-server ZooKeeper: 20 s"))])
def test_demo_boots_fails_recovers_and_stops(tmp_path, mode):
    if mode == "zk" and not have_zookeeper():
        pytest.skip("ZooKeeper is not installed")
    state = str(tmp_path / "demo")
    port, stream = demo_ports()
    env = dict(os.environ, MUSTER_DEMO_DIR=state, MUSTER_DEMO_HTTP_PORT=str(port),
               MUSTER_DEMO_STREAM_PORT=str(stream), MUSTER_DEMO_BUILD_DIR=mh.BUILD_DIR)
    base = f"http://127.0.0.1:{port}"
    out = open(tmp_path / "demo.out", "w+")
    demo = subprocess.Popen([DEMO] + (["--zk"] if mode == "zk" else []), env=env, stdout=out, stderr=subprocess.STDOUT,
                            start_new_session=True)

    def demo_cmd(*args):
        r = subprocess.run([DEMO, *args], env=env, capture_output=True, text=True, timeout=10)
        assert r.returncode == 0, r
        return r.stdout

    def health():
        return requests.get(base + "/v1/health", timeout=2).json()

    try:
        # Boots stage by stage to healthy, every role present.
        h = wait_for(lambda: (lambda h: h if h["verdict"] == "healthy" else None)(health()),
                     60 if mode == "zk" else 45, "the demo cluster healthy")
        counts = {role: {v: n for v, n in by.items() if n} for role, by in h["counts"].items()}
        assert counts == {"master": {"healthy": 3}, "agent": {"healthy": 2},
                          "agent_public": {"healthy": 1}}, h["counts"]
        nodes = requests.get(base + "/v1/nodes", timeout=2).json()
        nodes = nodes.get("nodes", nodes) if isinstance(nodes, dict) else nodes
        assert {n["id"] if isinstance(n, dict) else n for n in nodes} >= {
            "m1", "m2", "m3", "a1", "a2", "p1"}, nodes

        out.flush()
        with open(tmp_path / "demo.out") as f:
            assert f"http://127.0.0.1:{port}/" in f.read()
        r = requests.get(base + "/", timeout=2)
        assert r.status_code == 200 and "<html" in r.text.lower(), r.text[:200]

        # A failure injected through the demo, and its root cause.
        assert "fail m1 mesos-master" in demo_cmd("fail", "m1", "mesos-master")
        h = wait_for(lambda: (lambda h: h if ("m1", "mesos-master") in
                              {(x["node"], x["component"]) for x in h["root_causes"]}
                              else None)(health()),
                     10, "mesos-master on m1 a root cause")
        assert h["verdict"] != "healthy", h
        demo_cmd("recover", "m1", "mesos-master")
        wait_for(lambda: (lambda h: h if h["verdict"] == "healthy" and not h["root_causes"]
                          else None)(health()), 10, "healthy again after recover")

        # Unknown nodes and components are refused.
        bad = subprocess.run([DEMO, "fail", "m9", "mesos-master"], env=env,
                             capture_output=True, timeout=10)
        assert bad.returncode != 0
        bad = subprocess.run([DEMO, "fail", "a1", "mesos-master"], env=env,
                             capture_output=True, timeout=10)
        assert bad.returncode != 0

        started = processes_of(state)
        assert len(started) >= (13 if mode == "zk" else 8), "\n".join(
            sorted(cmdline(p)[:200] for p in started))
        # aggregator(s), six agents, the supervisor (and three ZooKeeper servers)

        if mode == "zk":   # kill the leader: another aggregator takes over
            leader = health()["leader"]["id"]
            n = int(leader.rsplit("aggregator", 1)[1])
            victims = [p for p in started if f"{state}/aggregator{n}.conf" in cmdline(p)]
            assert len(victims) == 1, (leader, victims)
            os.kill(victims[0], signal.SIGTERM)
            other = f"http://127.0.0.1:{port + (n % 3)}"
            wait_for(lambda: (lambda h: h if h["leader"]["id"] != leader and
                              h["verdict"] == "healthy" else None)(
                requests.get(other + "/v1/health", timeout=2).json()),
                     20, "a new leader, healthy")
            started.discard(victims[0])

        # SIGTERM stops everything it started.
        demo.send_signal(signal.SIGTERM)
        assert demo.wait(timeout=15) == 0
        wait_for(lambda: not processes_of(state) or None, 5, "the demo's processes gone")
        assert not any(os.path.exists(f"/proc/{p}") and p in processes_of(state) for p in started)
    finally:
        if demo.poll() is None:
            os.killpg(demo.pid, signal.SIGKILL)
            demo.wait()
        for p in processes_of(state):
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass
        out.close()
