"""musterctl, the real binary, against a live aggregator fed by foreign
stream clients (Google's protobuf runtime, as in test_protocol.py): each
command's text and --json output and its exit code for healthy, degraded and
unhealthy clusters; --server before and after the command and
$MUSTER_SERVER; a follower's 307 followed; an unreachable server; bad usage;
history paging; and `watch` printing one line per change when its output is
not a tty."""

import http.server
import json
import os
import select
import signal
import subprocess
import threading
import time
import uuid

import pytest

import muster_harness as mh
from muster_harness import T, ChangeMaker, StreamClient, pb

AGENT_COMPONENTS = ["c1", "c2"]
EXIT_USAGE = 64


def ctl_binary():
    return mh.binary("musterctl")


def ctl_env(server=None, **extra):
    """The environment musterctl runs in: no proxies, no inherited
    MUSTER_SERVER unless asked for."""
    e = {k: v for k, v in os.environ.items()
         if k.lower() not in ("http_proxy", "https_proxy", "all_proxy", "no_proxy")
         and k != "MUSTER_SERVER"}
    if server is not None:
        e["MUSTER_SERVER"] = server
    e.update(extra)
    return e


def ctl(*args, env=None, timeout=10.0):
    """Runs musterctl to completion: (returncode, stdout, stderr)."""
    r = subprocess.run(mh.WRAPPER + [ctl_binary(), *args], stdin=subprocess.DEVNULL,
                       capture_output=True, timeout=T(timeout), env=env or ctl_env())
    return r.returncode, r.stdout.decode("utf-8", "replace"), r.stderr.decode("utf-8", "replace")


class Cluster:
    """An aggregator with one master (m1: svc) and one agent (a1: c1, c2),
    both foreign clients whose states the test sets through snapshots."""

    def __init__(self, env):
        env.write_profile("master", mh.profile_ini("master", [
            ("svc", dict(check="exec", command="true", interval="10s", rise=1, fall=1))],
            [("base", ["svc"])]))
        env.write_profile("agent", mh.profile_ini("agent", [
            (c, dict(check="exec", command="true", interval="10s", rise=1, fall=1))
            for c in AGENT_COMPONENTS], [("work", AGENT_COMPONENTS)]))
        self.aggr = env.aggregator(expected_masters=["m1"], stale_timeout="30s").start()
        self.url = f"http://127.0.0.1:{self.aggr.http_port}"
        self.clients = {}
        self.makers = {}
        self.join("m1", "master", ["svc"])
        self.join("a1", "agent", AGENT_COMPONENTS)
        # an Ack means committed; the published view may follow a moment later
        for node_id in ("m1", "a1"):
            self.aggr.wait_node(node_id, lambda n: n.get("verdict") == "healthy", timeout=5)
        self.aggr.wait_verdict("healthy", timeout=5)

    def join(self, node_id, role, comps):
        cl = StreamClient(self.aggr.stream_port)
        r = cl.hello(node_id, role, uuid.uuid4().hex, 0, digest=self.aggr.env.profile_digest(role))
        assert r.WhichOneof("body") == "welcome", r
        mk = ChangeMaker(comps)
        self.clients[node_id], self.makers[node_id] = cl, mk
        # every component starting -> healthy, then the snapshot
        cl.send_changes(mk.make(len(comps)))
        cl.send(mk.snapshot())
        cl.wait_ack(mk.seq)

    def set_state(self, node_id, comp, state):
        """Moves comp on node_id to state through a Change."""
        cl, mk = self.clients[node_id], self.makers[node_id]
        mk.seq += 1
        c = pb().Change(seq=mk.seq, component=comp, check=pb().CHECK_EXEC, to=state,
                        at_ms=mh.now_ms(), output=f"{comp} is now {mh.state_name(state)}",
                        boot_id=mk.boot_id, health=1, rise=1, fall=1)
        setattr(c, "from", mk.state[comp])
        mk.state[comp] = state
        mk.made[mk.seq] = c
        cl.send_changes([c])
        cl.wait_ack(mk.seq)

    def close(self):
        for cl in self.clients.values():
            cl.close()


@pytest.fixture
def cluster(env):
    c = Cluster(env)
    yield c
    c.close()


def assert_json(out):
    try:
        return json.loads(out)
    except ValueError:
        raise AssertionError(f"musterctl --json printed something that is not JSON: {out[:500]!r}")


def test_commands_follow_the_verdict(cluster):
    url = cluster.url
    # healthy
    rc, out, err = ctl("--server", url, "status")
    assert rc == 0, (rc, out, err)
    assert "cluster: healthy" in out, out
    assert "\033[" not in out, "colours on a pipe"
    assert out.splitlines()[0] == (
        "MUSTER HEALTHY - cluster healthy | healthy=2 degraded=0 starting=0 late=0 unhealthy=0 "
        "unreachable=0 missing=0 unknown=0 maintenance=0 nodes=2 root_causes=0"), out
    rc, out, err = ctl("--server", url, "nodes")
    assert rc == 0, (rc, out, err)
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["ID", "ROLE", "VERDICT"], out
    rows = {ln.split()[0]: ln.split() for ln in lines[1:]}
    assert rows["m1"][1:3] == ["master", "healthy"] and rows["a1"][1:3] == ["agent", "healthy"], out
    rc, out, err = ctl("--server", url, "node", "a1")
    assert rc == 0, (rc, out, err)
    assert "verdict:   healthy" in out and "c1" in out and "c2" in out, out
    assert "work" in out, f"the startup stage is not shown:\n{out}"

    # degraded: an agent's component fails
    cluster.set_state("a1", "c2", pb().STATE_UNHEALTHY)
    cluster.aggr.wait_verdict("degraded")
    rc, out, err = ctl("--server", url, "status")
    assert rc == 1, (rc, out, err)
    assert "cluster: degraded" in out and "reasons:" in out, out
    assert "a1" in out and "c2" in out, f"the reason does not name a1/c2:\n{out}"
    rc, out, err = ctl("--server", url, "node", "a1")
    assert rc == 2, f"node a1 is unhealthy, exit {rc}:\n{out}{err}"
    comp_line = [ln for ln in out.splitlines() if ln.split()[:1] == ["c2"]]
    assert comp_line and comp_line[0].split()[1] == "unhealthy", out
    assert "c2 is now unhealthy" in out, "the component's output is missing"
    rc, out, err = ctl("--server", url, "node", "m1")
    assert rc == 0, (rc, out, err)
    rc, out, err = ctl("--server", url, "nodes")
    assert rc == 0, "nodes exits 0 on success whatever the verdicts"

    # unhealthy: the master's component fails
    cluster.set_state("m1", "svc", pb().STATE_UNHEALTHY)
    cluster.aggr.wait_verdict("unhealthy")
    rc, out, err = ctl("--server", url, "status")
    assert rc == 2, (rc, out, err)
    assert "cluster: unhealthy" in out and "root causes:" in out, out
    causes = out.split("root causes:")[1]
    assert "svc" in causes and "m1" in causes, f"m1/svc is not a root cause:\n{out}"
    # The first line is a Nagios plugin's: verdict, top root cause, perfdata.
    first, perf = out.splitlines()[0].split(" | ")
    causes = assert_json(ctl("--server", url, "--json", "status")[1])["root_causes"]
    top = max(causes, key=lambda c: c["blocked_total"])  # the first on a tie, as max() picks
    assert first == "MUSTER UNHEALTHY - " + top["message"], (first, causes)
    assert perf == ("healthy=0 degraded=0 starting=0 late=0 unhealthy=2 unreachable=0 missing=0 "
                    "unknown=0 maintenance=0 nodes=2 root_causes=2"), perf

    # --json on every command: the server's JSON, the same exit codes
    rc, out, _ = ctl("--server", url, "--json", "status")
    assert rc == 2 and assert_json(out)["verdict"] == "unhealthy"
    rc, out, _ = ctl("--server", url, "nodes", "--json")
    assert rc == 0 and {n["id"] for n in assert_json(out)["nodes"]} == {"m1", "a1"}
    rc, out, _ = ctl("--server", url, "node", "m1", "--json")
    assert rc == 2 and assert_json(out)["id"] == "m1"
    assert {c["name"]: c["state"] for c in assert_json(out)["components"]} == {"svc": "unhealthy"}
    rc, out, _ = ctl("--server", url, "history", "--json")
    assert rc == 0 and len(assert_json(out)["changes"]) >= 5

    # back to healthy
    cluster.set_state("m1", "svc", pb().STATE_HEALTHY)
    cluster.set_state("a1", "c2", pb().STATE_HEALTHY)
    cluster.aggr.wait_verdict("healthy")
    assert ctl("--server", url, "status")[0] == 0


def test_unknown_node(cluster):
    rc, out, err = ctl("--server", cluster.url, "node", "nope")
    assert rc == 3, (rc, out, err)
    assert "nope" in err and out == ""


def test_server_option_and_environment(cluster):
    url = cluster.url
    dead = f"http://127.0.0.1:{mh.free_port()}"
    assert ctl("--server", url, "status")[0] == 0
    assert ctl("status", "--server", url)[0] == 0
    assert ctl(f"--server={url}", "status")[0] == 0
    assert ctl("status", env=ctl_env(server=url))[0] == 0
    # host:port without a scheme
    assert ctl("status", "--server", f"127.0.0.1:{cluster.aggr.http_port}")[0] == 0
    # --server wins over $MUSTER_SERVER
    assert ctl("status", "--server", url, env=ctl_env(server=dead))[0] == 0
    rc, _, err = ctl("status", env=ctl_env(server=dead))
    assert rc == 3 and dead in err, err


def test_unreachable_server():
    port = mh.free_port()
    for cmd in (["status"], ["nodes"], ["node", "m1"], ["history"], ["watch"]):
        rc, out, err = ctl("--server", f"http://127.0.0.1:{port}", *cmd)
        assert rc == 3, f"{cmd}: exit {rc}, stderr {err!r}"
        assert "cannot reach" in err and str(port) in err, f"{cmd}: unclear message {err!r}"
        # status is a Nagios plugin: Nagios reads stdout, so it says UNKNOWN there too.
        assert out == ("MUSTER UNKNOWN - no cluster verdict from the aggregator\n"
                       if cmd == ["status"] else "")


@pytest.mark.parametrize("args", [
    [], ["bogus"], ["node"], ["status", "extra"], ["status", "--node", "m1"],
    ["history", "--limit", "0"], ["history", "--since", "yesterday"], ["--server"],
    ["--frobnicate", "status"], ["history", "--all", "--limit", "5"],
])
def test_bad_usage(args):
    rc, out, err = ctl("--server", "http://127.0.0.1:1", *args)
    assert rc == EXIT_USAGE, f"{args}: exit {rc}, stderr {err!r}"
    assert err.startswith("musterctl: ") and "--help" in err, err


def test_help():
    rc, out, _ = ctl("--help")
    assert rc == 0 and "Exit codes" in out and "history" in out


class _RedirectingFollower:
    """Answers every request with 307 to the same path on the leader, as a
    follower aggregator does."""

    def __init__(self, leader_url):
        class H(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                self.send_response(307)
                self.send_header("Location", leader_url + self.path)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *a):
                pass
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                         daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def test_follower_redirect_is_followed(cluster):
    f = _RedirectingFollower(cluster.url)
    try:
        rc, out, err = ctl("--server", f.url, "status")
        assert rc == 0 and "cluster: healthy" in out, (rc, out, err)
        rc, out, err = ctl("--server", f.url, "node", "a1", "--json")
        assert rc == 0 and assert_json(out)["id"] == "a1", (rc, out, err)
        rc, out, err = ctl("--server", f.url, "history", "--all", "--json")
        assert rc == 0 and assert_json(out)["changes"], (rc, out, err)
    finally:
        f.close()


@pytest.mark.no_valgrind(reason="hundreds of changes paged through musterctl; it runs under ASan and LSan in the AddressSanitizer pass; left out of memcheck for the 35-minute budget")
def test_history_pages_return_every_change(cluster):
    cl, mk = cluster.clients["a1"], cluster.makers["a1"]
    first = mk.seq + 1
    for _ in range(25):
        cl.send_changes(mk.make(100))
    cl.wait_ack(mk.seq, timeout=10)
    want = set(range(first, mk.seq + 1))          # 2500 changes: three pages of 1000

    rc, out, err = ctl("--server", cluster.url, "history", "--node", "a1", "--all", "--json")
    assert rc == 0, (rc, err)
    changes = assert_json(out)["changes"]
    seqs = [c["seq"] for c in changes if c["node"] == "a1"]
    assert len(seqs) == len(set(seqs)), "a change was repeated across pages"
    assert want <= set(seqs), f"missing: {sorted(want - set(seqs))[:10]}"
    assert all(c["node"] == "a1" for c in changes)
    ats = [c["at"] for c in changes]
    assert ats == sorted(ats, reverse=True), "not newest first"

    # default: the newest 100, with a hint on stderr
    rc, out, err = ctl("--server", cluster.url, "history")
    assert rc == 0 and len(out.splitlines()) == 100, (rc, len(out.splitlines()))
    assert "--all" in err
    rc, out, _ = ctl("--server", cluster.url, "history", "--limit", "1500", "--json")
    assert rc == 0 and len(assert_json(out)["changes"]) == 1500
    # filters reach the server
    rc, out, _ = ctl("--server", cluster.url, "history", "--all", "--component", "c1", "--json")
    comps = {c["component"] for c in assert_json(out)["changes"]}
    assert rc == 0 and comps == {"c1"}, comps
    rc, out, _ = ctl("--server", cluster.url, "history", "--all", "--node", "m1")
    lines = out.splitlines()
    assert rc == 0 and lines and all(ln.split()[1] == "m1" for ln in lines), out
    rc, out, _ = ctl("--server", cluster.url, "history", "--since", "1h", "--until",
                     "2000-01-01T00:00:00Z")
    assert rc == 0 and out.strip() == "(no changes)", out


def _read_line(proc, timeout):
    deadline = time.monotonic() + T(timeout)
    buf = b""
    while not buf.endswith(b"\n"):
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"musterctl watch printed no line within {timeout}s (got {buf!r})")
        r, _, _ = select.select([proc.stdout], [], [], left)
        if r:
            ch = os.read(proc.stdout.fileno(), 1)
            if not ch:
                raise AssertionError(f"musterctl watch closed its output (rc {proc.poll()})")
            buf += ch
    return buf.decode()


def test_watch_prints_a_line_per_change(cluster):
    p = subprocess.Popen(mh.WRAPPER + [ctl_binary(), "watch", "--server", cluster.url],
                         stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         env=ctl_env())
    try:
        first = _read_line(p, 5)
        assert " healthy" in first and "\033[" not in first, first
        t0 = time.monotonic()
        cluster.set_state("a1", "c1", pb().STATE_UNHEALTHY)
        line = _read_line(p, 3)
        assert time.monotonic() - t0 < T(2), "watch took longer than 2 s to show the change"
        assert " degraded" in line and "a1" in line and "c1" in line, line
        cluster.set_state("a1", "c1", pb().STATE_HEALTHY)
        assert " healthy" in _read_line(p, 3)
        # SIGINT stops it, even in the middle of a blocking read
        p.send_signal(signal.SIGINT)
        assert p.wait(T(3)) == 0
        assert p.stderr.read() == b""
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        p.stdout.close()
        p.stderr.close()


def test_watch_json_lines(cluster):
    p = subprocess.Popen(mh.WRAPPER + [ctl_binary(), "--json", "watch"], stdin=subprocess.DEVNULL,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         env=ctl_env(server=cluster.url))
    try:
        assert json.loads(_read_line(p, 5))["verdict"] == "healthy"
        cluster.set_state("m1", "svc", pb().STATE_UNHEALTHY)
        assert json.loads(_read_line(p, 3))["verdict"] == "unhealthy"
        p.send_signal(signal.SIGINT)
        assert p.wait(T(3)) == 0
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        p.stdout.close()
        p.stderr.close()


def _on_a_tty(args, extra_env):
    """Runs musterctl with its stdout on a pseudo-terminal; returns (rc, output)."""
    import pty
    master, slave = pty.openpty()
    try:
        p = subprocess.Popen(mh.WRAPPER + [ctl_binary(), *args], stdin=subprocess.DEVNULL,
                             stdout=slave, stderr=subprocess.PIPE, env=ctl_env(**extra_env))
        os.close(slave)
        slave = -1
        out = b""
        while True:
            r, _, _ = select.select([master], [], [], T(5))
            if not r:
                break
            try:
                chunk = os.read(master, 65536)
            except OSError:       # EIO: the child closed the terminal
                break
            if not chunk:
                break
            out += chunk
        return p.wait(T(5)), out.decode("utf-8", "replace")
    finally:
        if slave >= 0:
            os.close(slave)
        os.close(master)


def test_colours_only_on_a_tty_and_no_color(cluster):
    rc, out = _on_a_tty(["status", "--server", cluster.url], {})
    assert rc == 0 and "\033[32mhealthy" in out, repr(out)
    rc, out = _on_a_tty(["status", "--server", cluster.url], {"NO_COLOR": "1"})
    assert rc == 0 and "healthy" in out and "\033[" not in out, repr(out)
