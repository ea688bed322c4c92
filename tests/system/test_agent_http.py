"""The agent's http checks, built in (agentd/probe/http.c): what goes on the
wire and how every kind of answer is judged, against raw-socket servers that
answer exactly as each test needs, plus a real TLS server.

Each test runs a real aggregator and agent; results are read where an
operator sees them, in the component's state and output in
GET /v1/nodes/{id}."""

import os
import re
import socket
import ssl
import subprocess
import threading
import time

import pytest

import muster_harness as mh
from muster_harness import wait_until

FAST = dict(interval="100ms", timeout="2s", rise=1, fall=1)


class RawServer:
    """A loopback TCP server that reads each request's head and hands the
    connection to respond(conn, head). Records every request head."""

    def __init__(self, respond, tls_context=None):
        self.respond = respond
        self.tls_context = tls_context
        self.requests = []
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.sock.settimeout(0.05)
        self.port = self.sock.getsockname()[1]
        self._stop = threading.Event()
        self._conns = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self):
        while not self._stop.is_set():
            try:
                c, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            self._conns.append(c)
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, c):
        try:
            c.settimeout(5)
            if self.tls_context:
                c = self.tls_context.wrap_socket(c, server_side=True)
            head = b""
            while b"\r\n\r\n" not in head and len(head) < 65536:
                data = c.recv(4096)
                if not data:
                    return
                head += data
            self.requests.append(head)
            self.respond(c, head)
        except (OSError, ssl.SSLError):
            pass
        finally:
            try:
                c.close()
            except OSError:
                pass

    def url(self, path="/health", scheme="http", host="127.0.0.1"):
        return f"{scheme}://{host}:{self.port}{path}"

    def close(self):
        self._stop.set()
        self.sock.close()
        for c in self._conns:
            try:
                c.close()
            except OSError:
                pass


def reply(status=200, body=b"ok\n", headers=None, length=True):
    def respond(c, head):
        h = [f"HTTP/1.1 {status} X"]
        if length:
            h.append(f"Content-Length: {len(body)}")
        h += headers or []
        c.sendall(("\r\n".join(h) + "\r\n\r\n").encode() + body)
    return respond


@pytest.fixture
def server(env):
    made = []

    def make(respond, tls_context=None):
        s = RawServer(respond, tls_context)
        made.append(s)
        return s
    yield make
    for s in made:
        s.close()


def start(env, components, agent_wrapper=None):
    """An aggregator and agent n1 checking components [(name, dict)]."""
    env.write_profile("master", mh.profile_ini(
        "master", components, [("base", [n for n, _ in components])]))
    aggr = env.aggregator(expected_masters=["n1"]).start()
    agent = env.agent("n1", "master", aggr)
    if agent_wrapper:
        agent.write_config()
        agent.proc = env.procs.start("agent-n1", agent_wrapper(agent.argv()))
    else:
        agent.start()
    return aggr, agent


def wait_component(aggr, name, state, output_re=None, timeout=5.0):
    def check():
        c = aggr.component("n1", name)
        if c and c["state"] == state and (output_re is None or re.search(output_re, c["output"])):
            return c
        return None
    try:
        return wait_until(check, timeout, desc=f"{name} {state} /{output_re}/")
    except mh.WaitTimeout as e:
        raise mh.WaitTimeout(f"{e}\nlast: {aggr.component('n1', name)}") from None


def test_request_on_the_wire(env, server):
    """One GET per check, on a fresh connection, asking the server to close
    it: the path and query as given, the fragment dropped, the Host header
    with the port, and user:password as Basic authorization."""
    s = server(reply())
    url = f"http://ops:s%40cret@127.0.0.1:{s.port}/health/x?full=1&b=2#frag"
    aggr, _ = start(env, [("web", dict(check="http", url=url, **FAST))])
    wait_component(aggr, "web", "healthy", r"^HTTP 200 in \d+ ms$")
    wait_until(lambda: len(s.requests) >= 3, 3, desc="three requests")
    head = s.requests[-1].decode()
    lines = head.split("\r\n")
    assert lines[0] == "GET /health/x?full=1&b=2 HTTP/1.1", head
    fields = dict(line.split(": ", 1) for line in lines[1:] if line)
    assert fields["Host"] == f"127.0.0.1:{s.port}", head
    assert fields["Connection"] == "close", head
    assert fields["User-Agent"].startswith("muster-agentd/"), head
    # base64("ops:s@cret")
    assert fields["Authorization"] == "Basic b3BzOnNAY3JldA==", head
    assert "Proxy" not in head and "#" not in head, head


def test_status_and_body_are_judged(env, server):
    s = server(reply(503, b"warming up\n"))
    body = server(reply(200, b"status: all good\n"))
    aggr, _ = start(env, [
        ("down", dict(check="http", url=s.url(), **FAST)),
        ("want-503", dict(check="http", url=s.url(), expect_status=503, **FAST)),
        ("body-ok", dict(check="http", url=body.url(), expect_body="all good", **FAST)),
        ("body-bad", dict(check="http", url=body.url(), expect_body="all bad", **FAST)),
    ])
    wait_component(aggr, "down", "unhealthy", r"^HTTP 503 \(expected 200\)$")
    wait_component(aggr, "want-503", "healthy", r"^HTTP 503 in")
    wait_component(aggr, "body-ok", "healthy", r"^HTTP 200 in")
    wait_component(aggr, "body-bad", "unhealthy",
                   r"^HTTP 200 but body does not contain 'all bad'$")


def test_chunked_body_with_the_match_split_across_chunks_and_reads(env, server):
    def respond(c, head):
        c.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        for part in (b"status: he", b"al", b"thy and fine"):
            c.sendall(b"%x;ext=zz\r\n%s\r\n" % (len(part), part))
            time.sleep(0.01)   # the scenario: each chunk in a read of its own
        c.sendall(b"0\r\nX-Trailer: 1\r\n\r\n")
    s = server(respond)
    aggr, _ = start(env, [
        ("split", dict(check="http", url=s.url(), expect_body="healthy and", **FAST)),
        # Chunk extensions and trailers are not body.
        ("extension", dict(check="http", url=s.url(), expect_body="ext=zz", **FAST)),
        ("trailer", dict(check="http", url=s.url(), expect_body="X-Trailer", **FAST)),
    ])
    wait_component(aggr, "split", "healthy", r"^HTTP 200 in")
    wait_component(aggr, "extension", "unhealthy", r"does not contain 'ext=zz'$")
    wait_component(aggr, "trailer", "unhealthy", r"does not contain 'X-Trailer'$")


def test_content_length_is_enough_without_the_server_closing(env, server):
    """A server that keeps the connection open after the body: the check ends
    at Content-Length, not at the timeout."""
    def respond(c, head):
        c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n")
        time.sleep(3)   # the scenario: the connection stays open past the check's timeout
    s = server(respond)
    aggr, _ = start(env, [("web", dict(check="http", url=s.url(), interval="100ms",
                                       timeout="2s", rise=1, fall=1))])
    c = wait_component(aggr, "web", "healthy", r"^HTTP 200 in")
    assert int(re.search(r"in (\d+) ms", c["output"]).group(1)) < 1000, c


def test_interim_and_bodiless_responses(env, server):
    def continue_then_ok(c, head):
        c.sendall(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    no_content = server(reply(204, b"", length=False))
    interim = server(continue_then_ok)
    aggr, _ = start(env, [
        ("nc", dict(check="http", url=no_content.url(), expect_status=204, **FAST)),
        ("interim", dict(check="http", url=interim.url(), expect_body="ok", **FAST)),
    ])
    wait_component(aggr, "nc", "healthy", r"^HTTP 204 in")
    wait_component(aggr, "interim", "healthy", r"^HTTP 200 in")


@pytest.mark.no_valgrind(reason="measures the agent's memory (VmRSS), which memcheck's own "
                                "footprint makes meaningless")
def test_a_huge_body_is_capped_and_the_agent_stays_small(env, server):
    """10 MB of body: only the first 64 KiB are looked at, the agent reads no
    further, and its memory does not grow with the body."""
    big = b"x" * (10 * 1024 * 1024)

    def respond(c, head):
        c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % (len(big) + 6) + big
                  + b"needle")
    s = server(respond)
    aggr, agent = start(env, [
        ("late", dict(check="http", url=s.url(), expect_body="needle", **FAST)),
        ("early", dict(check="http", url=s.url(), expect_body="xxxx", **FAST)),
    ])
    wait_component(aggr, "late", "unhealthy",
                   r"does not contain 'needle' \(in its first 64 KiB\)$")
    wait_component(aggr, "early", "healthy", r"^HTTP 200 in")
    log = agent.proc.stderr_size()
    wait_until(lambda: all(agent.proc.stderr_since(log).count(f"component {c}: result") >= 10
                           for c in ("late", "early")), 2, interval=0.05,
               desc="ten more runs of each check")
    agent.assert_alive()
    with open(f"/proc/{agent.proc.pid}/status") as f:
        rss_kib = int(re.search(r"VmRSS:\s+(\d+)", f.read()).group(1))
    assert rss_kib < 32 * 1024, f"agent RSS {rss_kib} KiB after 10 MB bodies"


def test_transport_failures(env, server):
    closed_port = mh.free_port()
    silent = server(lambda c, head: time.sleep(3))   # answers nothing, past the 500ms timeout
    garbage = server(lambda c, head: c.sendall(b"SSH-2.0-OpenSSH_9.2\r\n\r\n"))
    hangup = server(lambda c, head: None)
    short = server(lambda c, head: c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nok"))
    fast = dict(interval="100ms", timeout="500ms", rise=1, fall=1)
    aggr, _ = start(env, [
        ("refused", dict(check="http", url=f"http://127.0.0.1:{closed_port}/", **fast)),
        ("silent", dict(check="http", url=silent.url(), **fast)),
        ("garbage", dict(check="http", url=garbage.url(), **fast)),
        ("hangup", dict(check="http", url=hangup.url(), **fast)),
        ("short", dict(check="http", url=short.url(), **fast)),
    ])
    wait_component(aggr, "refused", "unhealthy",
                   rf"^connect to 127\.0\.0\.1 port {closed_port}: Connection refused$")
    wait_component(aggr, "silent", "unhealthy",
                   rf"^timed out after 500ms waiting for the response \(127\.0\.0\.1:{silent.port}\)$")
    wait_component(aggr, "garbage", "unhealthy", r"not an HTTP/1\.x response: 'SSH-2\.0")
    wait_component(aggr, "hangup", "unhealthy", r"empty reply from server$")
    wait_component(aggr, "short", "unhealthy", r"8 bytes of the body still to come$")


@pytest.mark.no_tsan(reason="the agent resolves names with getaddrinfo_a(), whose helper thread "
                            "glibc starts internally, where TSan cannot see it; the first call "
                            "into TSan's runtime from that thread crashes the agent (SIGSEGV, "
                            "with any program, not only ours)")
def test_host_names_are_resolved_without_blocking_the_loop(env, server):
    """A name goes to the resolver off the loop: the other checks keep their
    pace meanwhile, and an unknown name is a failed check."""
    s = server(reply())
    name = socket.gethostname()
    try:
        addrs = {a[4][0] for a in socket.getaddrinfo(name, s.port, socket.AF_INET)}
    except socket.gaierror:
        addrs = set()
    if "127.0.0.1" not in addrs:
        pytest.skip(f"the host name {name} does not resolve to 127.0.0.1 here")
    aggr, _ = start(env, [
        ("by-name", dict(check="http", url=s.url(host=name), **FAST)),
        ("unknown", dict(check="http", url="http://no-such-host.invalid/", interval="100ms",
                         timeout="1s", rise=1, fall=1)),
    ])
    wait_component(aggr, "by-name", "healthy", r"^HTTP 200 in")
    assert any(f"Host: {name}:{s.port}".encode() in r for r in s.requests), s.requests[-1:]
    wait_component(aggr, "unknown", "unhealthy",
                   r"^(cannot resolve no-such-host\.invalid: .+|timed out after 1s resolving the "
                   r"host name \(no-such-host\.invalid\))$")


def make_cert(tmp, name, ca=None):
    """A key and certificate for 127.0.0.1 signed by ca (or self-signed when
    ca is None, and then usable as a CA). Returns (cert_path, key_path)."""
    key, crt = os.path.join(tmp, f"{name}.key"), os.path.join(tmp, f"{name}.crt")
    subj = f"/CN={name}"
    if ca is None:
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                        "ec_paramgen_curve:P-256", "-nodes", "-keyout", key, "-out", crt,
                        "-days", "2", "-subj", subj, "-addext", "basicConstraints=critical,CA:TRUE",
                        "-addext", "keyUsage=critical,keyCertSign,digitalSignature",
                        "-addext", "subjectAltName=IP:127.0.0.1"],
                       check=True, capture_output=True)
        return crt, key
    csr = os.path.join(tmp, f"{name}.csr")
    ext = os.path.join(tmp, f"{name}.ext")
    with open(ext, "w") as f:
        f.write("subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n")
    subprocess.run(["openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                    "-nodes", "-keyout", key, "-out", csr, "-subj", subj],
                   check=True, capture_output=True)
    subprocess.run(["openssl", "x509", "-req", "-in", csr, "-CA", ca[0], "-CAkey", ca[1],
                    "-CAcreateserial", "-out", crt, "-days", "2", "-extfile", ext],
                   check=True, capture_output=True)
    return crt, key


def tls_context(crt, key):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(crt, key)
    return ctx


def test_https_verifies_the_certificate(env, server):
    """An untrusted certificate fails the check with GnuTLS's reason. Then,
    in a mount namespace where the system trust file holds the test CA (so
    nothing outside changes), the same kind of server passes: TLS carries
    the request and the response."""
    trust_file = "/etc/ssl/certs/ca-certificates.crt"
    if not os.path.exists(trust_file):
        pytest.skip(f"no {trust_file}")
    ca = make_cert(env.dir, "test-ca")
    leaf = make_cert(env.dir, "leaf", ca=ca)
    untrusted = server(reply(200, b"secure ok\n"), tls_context(*make_cert(env.dir, "self")))
    trusted = server(reply(200, b"secure ok\n"), tls_context(*leaf))
    trust = env.write("trust.crt", open(ca[0]).read())

    def in_namespace(argv):
        script = f'mount --bind "$0" {trust_file} && exec "$@"'
        return ["unshare", "-m", "sh", "-c", script, trust] + list(argv)
    aggr, _ = start(env, [
        ("untrusted", dict(check="http", url=untrusted.url(scheme="https"), **FAST)),
        ("trusted", dict(check="http", url=trusted.url(scheme="https"), expect_body="secure ok",
                         **FAST)),
        ("plain-to-tls", dict(check="http", url=trusted.url(scheme="http"), **FAST)),
    ], agent_wrapper=in_namespace)
    wait_component(aggr, "untrusted", "unhealthy",
                   r"^TLS: the certificate of 127\.0\.0\.1 is not valid: .*NOT trusted")
    wait_component(aggr, "trusted", "healthy", r"^HTTP 200 in")
    wait_component(aggr, "plain-to-tls", "unhealthy", r".")
    assert any(r.startswith(b"GET /health HTTP/1.1\r\n") for r in trusted.requests)


def test_bad_urls_stop_the_agent_at_start(env):
    env.write_profile("master", mh.profile_ini("master", [
        ("sp", dict(check="http", url="http://127.0.0.1:80/a b")),
        ("port", dict(check="http", url="http://127.0.0.1:99999/")),
        ("host", dict(check="http", url="http://exa$mple/")),
    ], [("base", ["sp", "port", "host"])]))
    aggr = env.aggregator()
    agent = env.agent("n1", "master", aggr)
    agent.write_config()
    rc, out, err, _ = mh.run_to_completion(agent.argv("--check-config"))
    assert rc == 1, (out, err)
    profile = os.path.join(env.profiles, "master.ini")
    assert re.search(rf"{re.escape(profile)}:\d+: component 'sp': url .*space", err), err
    assert re.search(rf"{re.escape(profile)}:\d+: component 'port': url .*port", err), err
    assert re.search(rf"{re.escape(profile)}:\d+: component 'host': url .*'\$'", err), err
