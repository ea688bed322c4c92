"""IPv6 everywhere an address goes, on loopback ::1: listen_stream and
listen_http in brackets, agents' aggregators, tcp and http checks, a node id
that is an IPv6 address in every route (DC/OS's included), musterctl's
--server, ZooKeeper hosts and advertised addresses (a follower's redirect
names the leader in brackets), dual-stack listening on [::], and the
config errors that say how to write an IPv6 address."""

import http.server
import os
import socket
import subprocess
import threading

import pytest

import muster_harness as mh
from muster_harness import T, wait_until

FAST = dict(interval="100ms", timeout="2s", rise=1, fall=1)
NODE = "fd00:6d75::2"   # a node id that is an IPv6 address, as DC/OS names nodes


def have_ipv6_loopback():
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


pytestmark = pytest.mark.skipif(not have_ipv6_loopback(), reason="no IPv6 on loopback here")


class V6HTTP:
    """An HTTP server on [::1] answering 200."""

    def __init__(self):
        class H(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *a):
                pass

        class S(http.server.ThreadingHTTPServer):
            address_family = socket.AF_INET6

        self.srv = S(("::1", 0), H)
        self.port = self.srv.server_address[1]
        threading.Thread(target=self.srv.serve_forever, daemon=True).start()

    def close(self):
        self.srv.shutdown()
        self.srv.server_close()


@pytest.fixture
def v6_peers():
    web = V6HTTP()
    lsock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    lsock.bind(("::1", 0))
    lsock.listen(16)
    try:
        yield web, lsock.getsockname()[1]
    finally:
        web.close()
        lsock.close()


def write_profile(env, web_port, tcp_port):
    env.write_profile("master", mh.profile_ini("master", [
        ("web", dict(check="http", url=f"http://[::1]:{web_port}/", expect_status=200, **FAST)),
        ("port", dict(check="tcp", address=f"[::1]:{tcp_port}", **FAST)),
    ], [("serve", ["web", "port"])]))


def ctl(*args):
    env = {k: v for k, v in os.environ.items() if not k.startswith("MUSTER_")}
    env.update({"NO_COLOR": "1"})
    r = subprocess.run([mh.binary("musterctl"), *args], capture_output=True, text=True,
                       timeout=T(20), env=env)
    return r.returncode, r.stdout, r.stderr


def test_everything_on_ipv6_loopback(env, v6_peers):
    web, tcp_port = v6_peers
    write_profile(env, web.port, tcp_port)
    aggr = env.aggregator(host="::1", expected_masters=[NODE]).start()
    env.agent(NODE, "master", aggr).start()
    aggr.wait_health(lambda h: h.get("verdict") == "healthy", timeout=10,
                     desc="healthy, from http and tcp checks on [::1]")

    # The node id in /v1/nodes/{id}, with its colons, raw and escaped.
    for path in (f"/v1/nodes/{NODE}", f"/v1/nodes/{NODE.replace(':', '%3A')}"):
        r = aggr.get(path)
        assert r.status_code == 200, f"{path}: {r.status_code} {r.text[:300]}"
        assert r.json()["id"] == NODE
    # DC/OS's routes name nodes by IP.
    r = aggr.get(f"/system/health/v1/nodes/{NODE}")
    assert r.status_code == 200, r.text[:300]
    assert r.json()["host_ip"] == NODE
    r = aggr.get(f"/system/health/v1/nodes/{NODE}/units")
    assert r.status_code == 200, r.text[:300]
    # The stream's peer is logged as [::1]:port.
    assert "stream [::1]:" in aggr.proc.stderr_text()

    # musterctl: --server in brackets, bare or as a URL.
    for server in (f"[::1]:{aggr.http_port}", f"http://[::1]:{aggr.http_port}"):
        rc, out, err = ctl("--server", server, "node", NODE)
        assert rc == 0, f"musterctl --server {server}: {rc}\n{err}"
        assert NODE in out
    rc, _, err = ctl("--server", f"::1:{aggr.http_port}", "status")
    assert rc != 0 and "brackets" in err, err


def test_dual_stack_listeners(env, v6_peers):
    """[::]:PORT takes IPv4 and IPv6 clients alike."""
    web, tcp_port = v6_peers
    write_profile(env, web.port, tcp_port)
    # Started like any aggregator, so a port taken on either family is
    # retried elsewhere; the test reaches "::" (Linux connects it locally).
    aggr = env.aggregator(host="::", expected_masters=["m1"]).start()
    for host in ("127.0.0.1", "::1"):
        r = mh.http_get(aggr.http_port, "/healthz", host=host)
        assert r.status_code == 200, host
    # An agent reaching [::]:PORT by IPv4: its peer is logged as IPv4, not
    # as an IPv4-mapped IPv6 address.
    v4 = mh.Agent(env, "m1", "master", aggr)
    v4.aggregator = type("A", (), {"host": "127.0.0.1", "stream_port": aggr.stream_port})()
    v4.start()
    aggr.wait_node("m1", lambda n: n.get("verdict") == "healthy", timeout=10)
    log = aggr.proc.stderr_text()
    assert "stream 127.0.0.1:" in log and "::ffff:" not in log


def test_config_errors_say_how_to_write_ipv6(env):
    env.write_profile("master", mh.profile_ini("master", [
        ("port", dict(check="tcp", address="fd00::1:80", **FAST))], [("s", ["port"])]))
    path = env.write("bad6.ini", "\n".join([
        "[aggregator]",                                  # 1
        "id = a1",                                       # 2
        "listen_stream = fd00::1:7610",                  # 3
        "listen_http = [fd00::zz]:7611",                 # 4
        f"database = {env.path('b.db')}",                # 5
        f"profiles = {env.profiles}",                    # 6
        "advertise_http = [::]:7611",                    # 7
        "[zookeeper]",                                   # 8
        "hosts = [::1]:2181,fd00::1:2181",               # 9
        ""]))
    rc, _, err, _ = mh.run_to_completion(
        [mh.binary("muster-aggregatord"), "--config", path, "--check-config"], timeout=5)
    assert rc != 0
    for line, text in {3: "in brackets", 4: "is not an IPv6 address", 7: "advertise_http '[::]:7611'",
                       9: "[zookeeper] hosts"}.items():
        assert any(l.startswith(f"{path}:{line}:") and text in l for l in err.splitlines()), \
            f"no '{path}:{line}: ...{text}...' in:\n{err}"

    apath = env.write("agent6.ini", "\n".join([
        "[agent]",
        "node_id = n1",
        "role = master",
        f"profiles = {env.profiles}",
        f"spool = {env.path('a.spool')}",
        "aggregators = [::1]:7610,::1:7610",
        ""]))
    rc, _, err, _ = mh.run_to_completion(
        [mh.binary("muster-agentd"), "--config", apath, "--check-config"], timeout=5)
    assert rc != 0
    assert any(l.startswith(f"{apath}:6:") and "brackets" in l for l in err.splitlines()), err
    assert "address 'fd00::1:80': write an IPv6 address in brackets" in err, err


@pytest.mark.no_valgrind(reason="two elected aggregators and a ZooKeeper server on ::1")
def test_election_over_ipv6(env, tmp_path, cluster_name):
    import zk_harness
    if not zk_harness.zookeeper_installed():
        pytest.skip("ZooKeeper is not installed")
    ens = zk_harness.ZKEnsemble(str(tmp_path / "zk6"), n=1, host="::1")
    try:
        ens.start()
        hosts = ens.hosts
        assert hosts.startswith("[::1]:")
        a1 = zk_harness.ElectedAggregator(env, hosts, cluster_name, id="a1", host="::1").start(
            wait=False)
        a1.wait_ready()
        wait_until(a1.is_leader, 15, desc="a1 leads")
        a2 = zk_harness.ElectedAggregator(env, hosts, cluster_name, id="a2", host="::1").start(
            wait=False)
        a2.wait_ready()
        assert a2.role() == "follower"
        # The follower's redirect names the leader's advertise_http in brackets.
        wait_until(lambda: a2.readyz_full()[1].get("leader"), 10, desc="a2 knows the leader")
        r = mh.http_get(a2.http_port, "/v1/health", host="::1", allow_redirects=False)
        assert r.status_code == 307, (r.status_code, r.text, a2.readyz_full())
        assert r.headers["Location"] == f"http://[::1]:{a1.http_port}/v1/health"
        r = mh.http_get(a2.http_port, "/v1/health", host="::1")
        assert r.status_code == 200 and r.json()["leader"]["id"] == "a1"
    finally:
        ens.close()
