"""TLS on the agent stream: real agents stream to a TLS aggregator and their
changes are committed and acknowledged; the aggregator's certificate is
verified by the agent; a plain agent against a TLS aggregator, and a TLS
agent against a plain one, are refused with a reason on both sides while
the others are served; client certificates (mTLS) are required when so
configured; a foreign client (Python's ssl + Google's protobuf) speaks the
same protocol through TLS; SIGHUP swaps the certificate for new connections;
and broken [tls] settings stop a start with path:line: message."""
import os
import signal
import socket
import ssl
import uuid

import pytest

import muster_harness as mh
import pki
from muster_harness import ChangeMaker, StreamClient, pb, wait_until

TOKEN = "tls-cluster-token"


class TLSStreamClient(StreamClient):
    """The foreign protocol client, through Python's ssl module."""

    def __init__(self, port, ca, cert=None, key=None, server_hostname="127.0.0.1", timeout=5.0):
        ctx = ssl.create_default_context(cafile=ca)
        if cert:
            ctx.load_cert_chain(cert, key)
        raw = socket.create_connection(("127.0.0.1", port), timeout=mh.T(timeout))
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.port = port
        self.sock = ctx.wrap_socket(raw, server_hostname=server_hostname)
        self.buf = bytearray()
        self.eof = False
        self.received = []

    def _fill(self, deadline):
        try:
            return super()._fill(deadline)
        except ssl.SSLError as e:   # a TLS alert or a truncated stream ends it
            self.eof = True
            raise mh.StreamClosed(f"TLS: {e}") from None


def flag_profile(env, role="agent"):
    flag = env.path(f"{role}.flag")
    script = env.write(f"{role}-check.sh", f'test -e "{flag}" || exit 2\n')
    env.write_profile(role, mh.profile_ini(role, [
        ("svc", dict(check="exec", command=f"/bin/sh {script}", interval="100ms", rise=1, fall=1)),
    ], [("base", ["svc"])]))
    return flag


def token_file(env):
    path = env.path("token")
    with open(path, "w") as f:
        f.write(TOKEN + "\n")
    os.chmod(path, 0o600)
    return path


@pytest.fixture
def cluster_pki(env):
    ca = pki.PKI(env.path("pki"), "cluster")
    ca.server = ca.issue("aggr1")
    ca.agent = ca.issue("n1")
    return ca


def tls_aggregator(env, ca, require_client_cert=False, token=None, **kw):
    cert, key = ca.server
    tls = {"cert": cert, "key": key, "ca": ca.ca,
           "require_client_cert": "yes" if require_client_cert else None,
           "http": "no"}   # the API stays plain here: test_https.py covers HTTPS
    extra = {"token_file": token} if token else {}
    return env.aggregator(stale_timeout="10s", log_level="debug", sections={"tls": tls},
                          extra=extra, **kw)


def tls_agent(env, node, aggr, ca_file, cert=None, token=None, server_name=None):
    tls = {"ca": ca_file, "cert": cert[0] if cert else None, "key": cert[1] if cert else None,
           "server_name": server_name}
    extra = {"token_file": token} if token else {}
    return env.agent(node, "agent", aggr, sections={"tls": tls}, extra=extra)


def wait_state(aggr, node, state, timeout=5):
    return aggr.wait_node(node, lambda n: any(c["name"] == "svc" and c["state"] == state
                                              for c in n.get("components", [])),
                          timeout=timeout, desc=f"{node}/svc {state}")


def wait_all_acked(agent, aggr, timeout=5):
    def done():
        top = agent.max_seq()
        return top > 0 and agent.acked_seq() == top and \
            aggr.held_seq(agent.node_id, agent.spool_id()) == top
    wait_until(done, timeout, desc=f"{agent.node_id}: every spooled change acknowledged")


def metric(aggr, name):
    for line in aggr.get("/metrics").text.splitlines():
        if line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no {name} in /metrics")


def test_tls_agent_streams_and_is_acknowledged(env, cluster_pki):
    flag = flag_profile(env)
    aggr = tls_aggregator(env, cluster_pki, token=token_file(env)).start()
    agent = tls_agent(env, "n1", aggr, cluster_pki.ca, token=env.path("token")).start()
    wait_state(aggr, "n1", "unhealthy")
    open(flag, "w").close()
    wait_state(aggr, "n1", "healthy")
    os.unlink(flag)
    wait_state(aggr, "n1", "unhealthy")
    wait_all_acked(agent, aggr)
    assert agent.max_seq() >= 2

    # What the agent talked to is TLS, with the certificate it verified.
    assert pki.served_fingerprint(aggr.stream_port) == pki.fingerprint(cluster_pki.server[0])
    log = agent.proc.stderr_text()
    assert "stream: TLS with 127.0.0.1:" in log and "TLS1." in log, log[-2000:]


def test_plain_agent_refused_cleanly_while_tls_agents_are_served(env, cluster_pki):
    flag = flag_profile(env)
    aggr = tls_aggregator(env, cluster_pki).start()
    good = tls_agent(env, "n1", aggr, cluster_pki.ca).start()
    wait_state(aggr, "n1", "unhealthy")

    # A foreign plain client gets a plain Reject that says why; its Hello is
    # never read.
    cl = StreamClient(aggr.stream_port)
    r = cl.hello("plain", "agent", uuid.uuid4().hex, token="would-be-in-clear")
    assert r.WhichOneof("body") == "reject", r
    assert r.reject.code == pb().REJECT_TLS_REQUIRED
    assert "requires TLS" in r.reject.reason
    assert cl.expect_closed() == []

    # A real agent without [tls]: refused the same way, and it says so.
    plain = env.agent("n2", "agent", aggr).start()
    wait_until(lambda: "REJECT_TLS_REQUIRED" in plain.proc.stderr_text(), 5,
               desc="the plain agent logs the Reject")
    assert "requires TLS" in plain.proc.stderr_text()
    assert aggr.node("n2") is None

    # Meanwhile the TLS agent is served as before.
    open(flag, "w").close()
    wait_state(aggr, "n1", "healthy")
    wait_all_acked(good, aggr)
    assert metric(aggr, "muster_stream_rejects_total") >= 2


def test_tls_agent_against_plain_aggregator_is_refused(env, cluster_pki):
    flag_profile(env)
    aggr = env.aggregator(stale_timeout="10s").start()
    agent = tls_agent(env, "n1", aggr, cluster_pki.ca).start()
    wait_until(lambda: "TLS handshake with" in agent.proc.stderr_text(), 5,
               desc="the agent logs the failed handshake")
    wait_until(lambda: "the agent speaks TLS" in aggr.proc.stderr_text(), 5,
               desc="the aggregator names the mistake")
    assert aggr.node("n1") is None
    agent.assert_alive()


def test_agent_refuses_an_aggregator_its_ca_did_not_sign(env, cluster_pki):
    flag_profile(env)
    other = pki.PKI(env.path("pki-other"), "other")
    aggr = tls_aggregator(env, cluster_pki).start()
    agent = tls_agent(env, "n1", aggr, other.ca).start()
    wait_until(lambda: "TLS handshake with" in agent.proc.stderr_text(), 5,
               desc="the agent refuses the certificate")
    assert "not valid" in agent.proc.stderr_text() or "signer" in agent.proc.stderr_text()
    wait_until(lambda: "TLS handshake failed" in aggr.proc.stderr_text(), 5,
               desc="the aggregator sees the handshake end")
    assert aggr.node("n1") is None


def test_agent_checks_the_name_in_the_certificate(env, cluster_pki):
    flag_profile(env)
    aggr = tls_aggregator(env, cluster_pki).start()
    # The certificate is for 127.0.0.1 and localhost, not this name.
    wrong = tls_agent(env, "n1", aggr, cluster_pki.ca, server_name="aggr.example").start()
    wait_until(lambda: "TLS handshake with" in wrong.proc.stderr_text(), 5,
               desc="a name the certificate lacks is refused")
    assert aggr.node("n1") is None
    right = tls_agent(env, "n2", aggr, cluster_pki.ca, server_name="localhost").start()
    wait_state(aggr, "n2", "unhealthy")
    wait_all_acked(right, aggr)


def test_client_certificates_required(env, cluster_pki):
    flag_profile(env)
    aggr = tls_aggregator(env, cluster_pki, require_client_cert=True).start()

    # No certificate: the handshake is refused, logged on both sides.
    bare = tls_agent(env, "bare", aggr, cluster_pki.ca).start()
    wait_until(lambda: "TLS handshake with" in bare.proc.stderr_text(), 5,
               desc="the agent without a certificate is refused")
    wait_until(lambda: "TLS handshake refused" in aggr.proc.stderr_text(), 5,
               desc="the aggregator logs the refusal")
    assert metric(aggr, "muster_stream_tls_failures_total") >= 1
    bare.stop()

    # A certificate from a CA the cluster does not trust: refused too.
    other = pki.PKI(env.path("pki-other"), "other")
    with pytest.raises((mh.StreamClosed, ssl.SSLError, ConnectionResetError, AssertionError)):
        cl = TLSStreamClient(aggr.stream_port, cluster_pki.ca, *other.issue("intruder"))
        cl.hello("intruder", "agent", uuid.uuid4().hex, digest=env.profile_digest("agent"))
    assert aggr.node("intruder") is None

    # The failures put the address in the back-off; once it runs out, an
    # agent with a certificate of the cluster CA is served.
    good = tls_agent(env, "n1", aggr, cluster_pki.ca, cert=cluster_pki.agent).start()
    wait_state(aggr, "n1", "unhealthy", timeout=10)
    wait_all_acked(good, aggr)
    assert "peer CN=n1" in aggr.proc.stderr_text()


def test_foreign_client_over_tls(env, cluster_pki):
    flag_profile(env)
    aggr = tls_aggregator(env, cluster_pki, require_client_cert=True).start()
    cl = TLSStreamClient(aggr.stream_port, cluster_pki.ca, *cluster_pki.agent)
    spool = uuid.uuid4().hex
    r = cl.hello("py1", "agent", spool, digest=env.profile_digest("agent"))
    assert r.WhichOneof("body") == "welcome", r
    mk = ChangeMaker(["svc"])
    # Enough changes for several TLS records in one go.
    for _ in range(20):
        cl.send_changes(mk.make(50))
    cl.wait_ack(1000, timeout=10)
    assert aggr.held_seq("py1", spool) == 1000


def test_sighup_reloads_the_certificate(env, cluster_pki):
    flag = flag_profile(env)
    aggr = tls_aggregator(env, cluster_pki).start()
    agent = tls_agent(env, "n1", aggr, cluster_pki.ca).start()
    wait_state(aggr, "n1", "unhealthy")
    first = pki.fingerprint(cluster_pki.server[0])

    def served():
        return pki.served_fingerprint(aggr.stream_port)
    assert served() == first

    # A broken file on SIGHUP: the old certificate stays in use.
    cert, key = cluster_pki.server
    with open(cert, "w") as f:
        f.write("not a certificate\n")
    offset = aggr.log_size()
    aggr.proc.signal(signal.SIGHUP)
    wait_until(lambda: "keeping the ones in use" in aggr.log_since(offset), 5,
               desc="the aggregator refuses the broken file")
    assert served() == first

    # A new certificate for the same names: served to new connections.
    new_cert, new_key = cluster_pki.issue("aggr1-renewed")
    os.replace(new_cert, cert)
    os.replace(new_key, key)
    offset = aggr.log_size()
    aggr.proc.signal(signal.SIGHUP)
    wait_until(lambda: "reloaded" in aggr.log_since(offset), 5, desc="the reload is logged")
    renewed = served()
    assert renewed != first and renewed == pki.fingerprint(cert)

    # The agent's open stream goes on, and so do new ones.
    open(flag, "w").close()
    wait_state(aggr, "n1", "healthy")
    wait_all_acked(agent, aggr)
    assert aggr.proc.alive()


def test_agent_sighup_reloads_its_ca(env, cluster_pki):
    flag_profile(env)
    other = pki.PKI(env.path("pki-other"), "other")
    ca_copy = env.write("agent-ca.pem", open(other.ca).read())
    aggr = tls_aggregator(env, cluster_pki).start()
    agent = tls_agent(env, "n1", aggr, ca_copy).start()
    wait_until(lambda: "TLS handshake with" in agent.proc.stderr_text(), 5,
               desc="the wrong CA refuses the aggregator")
    # The operator installs the right CA and sends SIGHUP: the agent tries
    # again at once with it, rather than after the 30 s a refused
    # certificate waits, and without a restart.
    with open(ca_copy, "w") as f:
        f.write(open(cluster_pki.ca).read())
    offset = agent.proc.stderr_size()
    agent.proc.signal(signal.SIGHUP)
    wait_until(lambda: "reloaded the TLS" in agent.proc.stderr_since(offset), 5,
               desc="the agent reloads")
    wait_state(aggr, "n1", "unhealthy", timeout=5)
    wait_all_acked(agent, aggr)


def write_conf(env, name, lines):
    return env.write(name, "\n".join(lines) + "\n")


@pytest.mark.parametrize("bad", ["missing", "/dev/zero", "over the cap"])
@pytest.mark.parametrize("daemon", ["aggregatord", "agentd"])
def test_broken_tls_settings_stop_the_start(env, cluster_pki, daemon, bad):
    """A cert or CA path that cannot be read, or that is no PEM file at all
    (a device GnuTLS would read without end, a file over the 4 MiB cap),
    stops the start with the path:line of the key."""
    flag_profile(env)
    if bad == "missing":
        missing = env.path("no-such.pem")
        why = f"cannot read {missing}"
    elif bad == "/dev/zero":
        missing, why = "/dev/zero", "/dev/zero is not a regular file"
    else:
        missing = env.path("huge.pem")
        with open(missing, "wb") as f:
            f.truncate(4 * 1024 * 1024 + 1)
        why = f"{missing} has 4194305 bytes, over the cap of 4 MiB"
    if daemon == "aggregatord":
        path = write_conf(env, "a.ini", [
            "[aggregator]",                                       # 1
            f"listen_stream = 127.0.0.1:{mh.free_port()}",        # 2
            f"listen_http = 127.0.0.1:{mh.free_port()}",          # 3
            f"database = {env.path('a.db')}",                     # 4
            f"profiles = {env.profiles}",                         # 5
            "[tls]",                                              # 6
            f"key = {cluster_pki.server[1]}",                     # 7
            f"cert = {missing}",                                  # 8
        ])
        exe, want = "muster-aggregatord", f"{path}:8: [tls] cert: {why}"
    else:
        path = write_conf(env, "n.ini", [
            "[agent]",                                            # 1
            "node_id = n1",                                       # 2
            "role = agent",                                       # 3
            f"profiles = {env.profiles}",                         # 4
            f"spool = {env.path('n.spool')}",                     # 5
            f"aggregators = 127.0.0.1:{mh.free_port()}",          # 6
            f"boot_id_file = {env.write('boot', 'b0')}",          # 7
            "[tls]",                                              # 8
            f"ca = {missing}",                                    # 9
        ])
        exe, want = "muster-agentd", f"{path}:9: [tls] ca: {why}"
    for extra in ([], ["--check-config"]):
        rc, out, err, _ = mh.run_to_completion([mh.binary(exe), "--config", path, *extra])
        assert rc != 0
        assert want in err, err


def test_key_readable_by_others_is_refused(env, cluster_pki):
    flag_profile(env)
    cert, key = cluster_pki.server
    os.chmod(key, 0o644)
    aggr = tls_aggregator(env, cluster_pki)
    aggr.write_config()
    rc, _, err, _ = mh.run_to_completion(aggr.argv())
    assert rc != 0
    assert f"[tls] key: {key} is readable by others" in err, err


def test_agent_tls_keys_need_a_ca(env, cluster_pki):
    flag_profile(env)
    agent = env.agent("n1", "agent", env.aggregator(),
                      sections={"tls": {"cert": cluster_pki.agent[0], "key": cluster_pki.agent[1]}})
    agent.write_config()
    rc, _, err, _ = mh.run_to_completion(agent.argv("--check-config"))
    assert rc != 0
    assert "[tls] ca is required" in err, err
