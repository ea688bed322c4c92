"""HTTPS and the bearer token on the aggregator's HTTP API, with real daemons,
an openssl-made PKI (pki.py) and real clients: Python's requests and ssl,
musterctl, and the followers' warm copy through a real ZooKeeper.

- HTTPS is served and verifies against the cluster CA, not against another
  one; plain HTTP to the HTTPS port is refused at once and the daemon goes
  on serving.
- With [aggregator] http_token_file: the right token is served, a wrong or
  missing one gets 401 with the JSON error body and WWW-Authenticate;
  /healthz, /readyz and the dashboard's files stay open; /metrics, DC/OS
  routes and unknown paths need the token; refusals are counted.
- Blocking reads with the token park and wake; without it they do not park.
- SIGHUP serves a new certificate to new connections while an open
  connection and a parked read go on; a broken file keeps the old one.
- musterctl with --token-file/--cacert (and their environment variables).
- A follower's warm copy from an HTTPS + token leader, and its redirects.
- The dashboard's token form in Chromium (tests/browser/auth.test.js)."""

import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import threading
import time
import uuid

import pytest
import requests

import muster_harness as mh
import pki
from muster_harness import ChangeMaker, T, wait_until
from test_musterctl import ctl, ctl_env
from test_tls_stream import TLSStreamClient

TOKEN = "http-token-0f1e2d3c4b5a"
EXIT_UNKNOWN = 3
EXIT_USAGE = 64
BROWSER_DIR = os.path.join(mh.REPO, "tests", "browser")
CHROMIUM = "/usr/bin/chromium"


# ---------------------------------------------------------------- setup


@pytest.fixture
def cluster_pki(env):
    ca = pki.PKI(env.path("pki"), "cluster")
    ca.server = ca.issue("aggr")
    return ca


def write_token(env, name="http-token", token=TOKEN, mode=0o600):
    path = env.path(name)
    with open(path, "w") as f:
        f.write(token + "\n")
    os.chmod(path, mode)
    return path


def one_component_profile(env):
    env.write_profile("agent", mh.profile_ini("agent", [
        ("svc", dict(check="exec", command="true", interval="10s", rise=1, fall=1))],
        [("base", ["svc"])]))


def https_aggregator(env, ca, token=True, **kw):
    """An aggregator serving HTTPS with ca's server certificate and, when
    token is true, the bearer token TOKEN. Not started."""
    one_component_profile(env)
    cert, key = ca.server
    extra = {"http_token_file": write_token(env)} if token else {}
    return env.aggregator(stale_timeout="10s", log_level="debug",
                          sections={"tls": {"cert": cert, "key": key, "ca": ca.ca}},
                          extra=extra, **kw)


def unauthorized_hits(aggr):
    prefix = 'muster_limit_hits_total{limit="http_unauthorized"} '
    for line in aggr.get("/metrics").text.splitlines():
        if line.startswith(prefix):
            return float(line[len(prefix):])
    raise AssertionError("no http_unauthorized counter in /metrics")


def parked_reads(aggr):
    for line in aggr.get("/metrics").text.splitlines():
        if line.startswith("muster_http_parked_reads "):
            return float(line.split(" ", 1)[1])
    raise AssertionError("no muster_http_parked_reads in /metrics")


def assert_401(r, message_part):
    assert r.status_code == 401, (r.status_code, r.text[:300])
    assert r.headers.get("WWW-Authenticate") == 'Bearer realm="muster"', r.headers
    assert r.headers.get("Content-Type") == "application/json"
    body = r.json()
    assert body["error"]["code"] == "unauthorized", body
    assert message_part in body["error"]["message"], body


def send_change(env, aggr, ca, node="py1"):
    """A foreign client over the TLS stream reports one component change;
    returns once the leader acknowledged it."""
    cl = TLSStreamClient(aggr.stream_port, ca)
    r = cl.hello(node, "agent", uuid.uuid4().hex, digest=env.profile_digest("agent"))
    assert r.WhichOneof("body") == "welcome", r
    mk = ChangeMaker(["svc"])
    cl.send_changes(mk.make(1))
    cl.wait_ack(1, timeout=5)
    return cl, mk


# ---------------------------------------------------------------- HTTPS


def test_https_served_verified_and_plain_http_refused(env, cluster_pki):
    aggr = https_aggregator(env, cluster_pki, token=False).start()
    assert aggr.url().startswith("https://")

    # Verified against the cluster CA; the certificate is the configured one.
    r = requests.get(aggr.url("/v1/health"), verify=cluster_pki.ca, timeout=T(2))
    assert r.status_code == 200 and "verdict" in r.json(), r.text[:300]
    assert pki.served_fingerprint(aggr.http_port) == pki.fingerprint(cluster_pki.server[0])

    # A client that trusts another CA refuses the server.
    other = pki.PKI(env.path("other-pki"), "other")
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(aggr.url("/v1/health"), verify=other.ca, timeout=T(2))

    # Plain HTTP to the HTTPS port: no HTTP answer, and the connection ends at
    # once rather than hanging until a timeout.
    t0 = time.monotonic()
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.get(f"http://127.0.0.1:{aggr.http_port}/v1/health", timeout=T(5))
    assert time.monotonic() - t0 < T(2), "plain HTTP was not refused promptly"
    with socket.create_connection(("127.0.0.1", aggr.http_port), timeout=T(5)) as s:
        s.sendall(b"GET /v1/health HTTP/1.1\r\nHost: x\r\n\r\n")
        got = b""
        while True:
            chunk = s.recv(4096)
            if not chunk:
                break
            got += chunk
    assert b"HTTP/" not in got and b"verdict" not in got, got[:200]

    # ... and HTTPS clients are still served.
    assert aggr.json("/v1/health")["verdict"]
    assert aggr.proc.alive()


def test_old_tls_versions_refused(env, cluster_pki):
    aggr = https_aggregator(env, cluster_pki, token=False).start()
    ctx = ssl.create_default_context(cafile=cluster_pki.ca)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    with socket.create_connection(("127.0.0.1", aggr.http_port), timeout=T(2)) as raw:
        with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as s:
            assert s.version() == "TLSv1.2"
    ctx13 = ssl.create_default_context(cafile=cluster_pki.ca)
    with socket.create_connection(("127.0.0.1", aggr.http_port), timeout=T(2)) as raw:
        with ctx13.wrap_socket(raw, server_hostname="127.0.0.1") as s:
            assert s.version() == "TLSv1.3"


# ---------------------------------------------------------------- the bearer token


def test_bearer_token_required_except_liveness_and_dashboard(env, cluster_pki):
    aggr = https_aggregator(env, cluster_pki).start()
    assert unauthorized_hits(aggr) == 0

    # The right token is served, with the scheme in any case.
    r = aggr.get("/v1/health")
    assert r.status_code == 200 and r.json()["verdict"], r.text[:300]
    assert aggr.get("/v1/nodes").status_code == 200
    assert aggr.get("/v1/health", token=None,
                    headers={"Authorization": f"bearer {TOKEN}"}).status_code == 200

    refusals = [
        (aggr.get("/v1/health", token=None), "needs a bearer token"),
        (aggr.get("/v1/health", token="guess"), "refused"),
        (aggr.get("/v1/health", token=TOKEN + "x"), "refused"),
        (aggr.get("/v1/health", token=TOKEN[:-1]), "refused"),
        (aggr.get("/v1/nodes/n1", token=None,
                  headers={"Authorization": f"Basic {TOKEN}"}), "needs a bearer token"),
        (aggr.get("/v1/history?limit=1", token=None), "needs a bearer token"),
        (aggr.get("/metrics", token=None), "needs a bearer token"),
        (aggr.get("/system/health/v1/nodes", token=None), "needs a bearer token"),
        (aggr.get("/v1/internal/replicate?after=0&limit=1", token=None), "needs a bearer token"),
        # an unknown path says nothing about what exists without the token
        (aggr.get("/no/such/thing", token=None), "needs a bearer token"),
    ]
    for r, part in refusals:
        assert_401(r, part)
    # No data leaks into a refusal.
    assert all("verdict" not in r.text for r, _ in refusals)

    # Open without a token: liveness, readiness and the dashboard's files.
    assert aggr.get("/healthz", token=None).json() == {"status": "ok", "role": "leader"}
    rz = aggr.get("/readyz", token=None)
    assert rz.status_code == 200 and rz.json()["ready"] is True
    page = aggr.get("/", token=None)
    assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html")
    assert aggr.get("/ui/app.js", token=None).status_code == 200

    # With the token: /metrics, DC/OS, and a 404 for what does not exist.
    m = aggr.get("/metrics")
    assert m.status_code == 200 and "muster_limit_hits_total" in m.text
    assert aggr.get("/system/health/v1/nodes").status_code == 200
    assert aggr.get("/no/such/thing").status_code == 404
    assert unauthorized_hits(aggr) == len(refusals)
    assert aggr.proc.alive()


def test_blocking_read_with_token(env, cluster_pki):
    aggr = https_aggregator(env, cluster_pki).start()
    first = aggr.get("/v1/health")
    index = int(first.headers["X-Muster-Index"])

    # Without the token a blocking read is refused at once, not parked.
    t0 = time.monotonic()
    assert_401(aggr.get(f"/v1/health?index={index}&wait=5s", token=None), "bearer token")
    assert time.monotonic() - t0 < T(1)

    # With it the read parks for its wait and answers with the same index...
    t0 = time.monotonic()
    r = aggr.get(f"/v1/health?index={index}&wait=1s", timeout=5)
    took = time.monotonic() - t0
    assert r.status_code == 200 and int(r.headers["X-Muster-Index"]) == index
    assert 0.9 <= took < T(3), took

    # ... and wakes early when the health changes.
    result = {}

    def read():
        t = time.monotonic()
        result["r"] = aggr.get(f"/v1/health?index={index}&wait=30s", timeout=40)
        result["took"] = time.monotonic() - t
    th = threading.Thread(target=read)
    th.start()
    wait_until(lambda: parked_reads(aggr) == 1, 3, desc="the read is parked")
    cl, _ = send_change(env, aggr, cluster_pki.ca)
    th.join(T(10))
    assert not th.is_alive()
    assert result["r"].status_code == 200 and int(result["r"].headers["X-Muster-Index"]) > index
    assert result["took"] < T(5), result["took"]
    cl.close()


# ---------------------------------------------------------------- SIGHUP reload

def test_sighup_reloads_the_https_certificate(env, cluster_pki):
    aggr = https_aggregator(env, cluster_pki).start()
    cert, key = cluster_pki.server
    first = pki.fingerprint(cert)
    assert pki.served_fingerprint(aggr.http_port) == first

    # A keep-alive connection and a parked read, both from before the reload.
    keep = requests.Session()
    keep.trust_env = False
    kw = aggr.http_kw()
    assert keep.get(aggr.url("/v1/health"), timeout=T(2), **kw).status_code == 200
    index = int(aggr.get("/v1/health").headers["X-Muster-Index"])
    parked = {}

    def read():
        parked["r"] = aggr.get(f"/v1/health?index={index}&wait=4s", timeout=20)
    th = threading.Thread(target=read)
    th.start()
    wait_until(lambda: parked_reads(aggr) == 1, 3, desc="the read is parked")

    # A broken certificate file: refused, the old certificate stays.
    good = open(cert).read()
    with open(cert, "w") as f:
        f.write("not a certificate\n")
    offset = aggr.log_size()
    aggr.proc.signal(signal.SIGHUP)
    wait_until(lambda: "cannot reload the HTTPS certificate" in aggr.log_since(offset), 5,
               desc="the broken file is refused")
    assert cert in aggr.log_since(offset)
    assert pki.served_fingerprint(aggr.http_port) == first
    with open(cert, "w") as f:
        f.write(good)

    # A renewed certificate: new connections get it.
    new_cert, new_key = cluster_pki.issue("aggr-renewed")
    os.replace(new_cert, cert)
    os.replace(new_key, key)
    offset = aggr.log_size()
    aggr.proc.signal(signal.SIGHUP)
    wait_until(lambda: "HTTPS certificate reloaded" in aggr.log_since(offset), 5,
               desc="the reload is logged")
    renewed = pki.served_fingerprint(aggr.http_port)
    assert renewed != first and renewed == pki.fingerprint(cert)

    # The open connection and the parked read went on.
    assert keep.get(aggr.url("/v1/nodes"), timeout=T(2), **kw).status_code == 200
    th.join(T(10))
    assert parked["r"].status_code == 200
    assert aggr.get("/v1/health").status_code == 200
    keep.close()


# ---------------------------------------------------------------- start-up errors


def test_bad_token_file_or_certificate_stops_the_start(env, cluster_pki):
    aggr = https_aggregator(env, cluster_pki)
    token = aggr.extra["http_token_file"]

    # A token file others can read.
    os.chmod(token, 0o644)
    aggr.write_config()
    for argv in (aggr.argv("--check-config"), aggr.argv()):
        rc, _, err, _ = mh.run_to_completion(argv)
        assert rc != 0, err
        assert "[aggregator] http_token_file" in err and token in err, err
        assert "readable by its owner only" in err, err
    os.chmod(token, 0o600)

    # A missing token file.
    aggr.extra["http_token_file"] = env.path("no-such-token")
    aggr.write_config()
    rc, _, err, _ = mh.run_to_completion(aggr.argv())
    assert rc != 0 and "no-such-token" in err and "No such file" in err, err

    # A missing certificate.
    aggr.extra["http_token_file"] = token
    aggr.sections["tls"]["cert"] = env.path("no-such-cert.pem")
    aggr.write_config()
    rc, _, err, _ = mh.run_to_completion(aggr.argv())
    assert rc != 0 and "[tls] cert" in err and "no-such-cert.pem" in err, err

    # Fixed: it starts and serves.
    aggr.sections["tls"]["cert"] = cluster_pki.server[0]
    aggr.start()
    assert aggr.get("/v1/health").status_code == 200


def test_plain_http_when_tls_http_is_off(env, cluster_pki):
    aggr = https_aggregator(env, cluster_pki)
    aggr.sections["tls"]["http"] = "no"
    aggr.start()
    assert aggr.url().startswith("http://")
    assert aggr.get("/v1/health").status_code == 200        # the token still applies
    assert_401(aggr.get("/v1/health", token=None), "bearer token")


# ---------------------------------------------------------------- musterctl


def test_musterctl_with_token_and_cacert(env, cluster_pki):
    aggr = https_aggregator(env, cluster_pki).start()
    token = aggr.extra["http_token_file"]
    url = aggr.url()

    rc, out, err = ctl("--server", url, "--cacert", cluster_pki.ca, "--token-file", token,
                       "--json", "nodes")
    assert rc == 0, err
    assert json.loads(out)["nodes"] == []
    # The same from the environment.
    rc, out, err = ctl("--json", "nodes", env=ctl_env(server=url, MUSTER_CACERT=cluster_pki.ca,
                                                      MUSTER_TOKEN_FILE=token))
    assert rc == 0 and "nodes" in json.loads(out), err
    # status follows the verdict (unknown: no agent yet) and prints it.
    rc, out, err = ctl("--server", url, "--cacert", cluster_pki.ca, "--token-file", token,
                       "--json", "status")
    assert json.loads(out)["verdict"] == "unknown" and rc == EXIT_UNKNOWN, (rc, err)

    # No token: a clear message and exit 3.
    rc, out, err = ctl("--server", url, "--cacert", cluster_pki.ca, "nodes")
    assert rc == EXIT_UNKNOWN and out == ""
    assert "401" in err and "--token-file" in err, err
    # A wrong token.
    wrong = write_token(env, "wrong-token", "not-the-token")
    rc, out, err = ctl("--server", url, "--cacert", cluster_pki.ca, "--token-file", wrong, "nodes")
    assert rc == EXIT_UNKNOWN and "refused the token in " + wrong in err, err
    # A token file others can read is not used.
    loose = write_token(env, "loose-token", TOKEN, mode=0o644)
    rc, out, err = ctl("--server", url, "--cacert", cluster_pki.ca, "--token-file", loose, "nodes")
    assert rc == EXIT_USAGE and "readable by its owner only" in err, err

    # Without the cluster CA the server is not trusted.
    rc, out, err = ctl("--server", url, "--token-file", token, "nodes")
    assert rc == EXIT_UNKNOWN and "TLS" in err and "--cacert" in err, err
    # http:// to the HTTPS port.
    rc, out, err = ctl("--server", f"http://127.0.0.1:{aggr.http_port}", "--token-file", token,
                       "nodes")
    assert rc == EXIT_UNKNOWN and "https://" in err, err


# ---------------------------------------------------------------- followers


class HTTPSElectedAggregator:
    """zk_harness.ElectedAggregator, reading /readyz through the harness's
    HTTPS-aware get() (its own readyz_full speaks plain HTTP)."""

    @staticmethod
    def make(env, zk, cluster, ca, token_file, id):
        from zk_harness import ElectedAggregator

        class A(ElectedAggregator):
            def readyz_full(self, timeout=0.5):
                try:
                    r = self.get("/readyz", timeout=timeout)
                except requests.RequestException:
                    return None, None
                try:
                    return r.status_code, r.json()
                except ValueError:
                    return r.status_code, None
        cert, key = ca.server
        return A(env, zk.hosts, cluster, "2s", id=id, stale_timeout="10s",
                 sections={"tls": {"cert": cert, "key": key, "ca": ca.ca}},
                 extra={"http_token_file": token_file})


@pytest.mark.no_valgrind(reason="the follower's copy over TLS with ZooKeeper; it runs under ASan and LSan in the AddressSanitizer pass; left out of memcheck for the 35-minute budget")
def test_follower_copies_and_redirects_over_https_with_token(env, zk, cluster_name, cluster_pki):
    from zk_harness import wait_one_leader
    one_component_profile(env)
    token = write_token(env)
    wrong = write_token(env, "other-token", "a-different-token")
    leader = HTTPSElectedAggregator.make(env, zk, cluster_name, cluster_pki, token, "aggr1")
    leader.start()
    wait_one_leader([leader])
    follower = HTTPSElectedAggregator.make(env, zk, cluster_name, cluster_pki, token, "aggr2")
    stranger = HTTPSElectedAggregator.make(env, zk, cluster_name, cluster_pki, wrong, "aggr3")
    follower.start()
    stranger.start()
    ld, _ = wait_one_leader([leader, follower, stranger])
    assert ld is leader
    epoch = leader.health()["leader"]["epoch"]

    # Changes at the leader (over the TLS stream) reach the follower's copy,
    # fetched over HTTPS with the token.
    cl, _ = send_change(env, leader, cluster_pki.ca, node="py1")
    wait_until(lambda: follower.query("SELECT count(*) FROM changes WHERE node_id='py1'")[0][0] == 1,
               10, desc="the follower copied the leader's change")
    wait_until(lambda: follower.query("SELECT count(*) FROM cluster_verdicts WHERE epoch=?",
                                      (epoch,))[0][0] > 0, 10,
               desc="the follower copied the leader's verdicts")
    # It was never refused for its token or over the leader's certificate (a
    # copy that timed out under memcheck's slowness and was retried is fine).
    refused = [line for line in follower.proc.stderr_text().splitlines()
               if "cannot copy" in line and
               ("401" in line or "certificate" in line.lower() or "SSL peer" in line)]
    assert not refused, refused
    # An aggregator with another token is refused by the leader, and says so.
    wait_until(lambda: "refused this aggregator's bearer token (401)" in stranger.proc.stderr_text(),
               10, desc="the stranger's copy is refused")
    assert stranger.query("SELECT count(*) FROM changes")[0][0] == 0

    # Redirects: an authorized request gets 307 to the leader's https://
    # address; an unauthorized one gets 401 from the follower itself.
    r = follower.get("/v1/history?limit=3", allow_redirects=False)
    assert r.status_code == 307, (r.status_code, r.text[:200])
    assert r.headers["Location"] == f"https://{leader.http_address}/v1/history?limit=3"
    r = follower.get("/v1/nodes", allow_redirects=False)
    assert r.status_code == 307 and r.headers["Location"] == f"https://{leader.http_address}/v1/nodes"
    assert_401(follower.get("/v1/nodes", token=None, allow_redirects=False), "bearer token")
    r2 = requests.get(r.headers["Location"], **follower.http_kw(), timeout=T(2))
    assert r2.status_code == 200 and any(n["id"] == "py1" for n in r2.json()["nodes"])

    # musterctl at the follower follows the redirect with its token.
    rc, out, err = ctl("--server", follower.url(), "--cacert", cluster_pki.ca, "--token-file",
                       token, "--json", "nodes")
    assert rc == 0, err
    assert [n["id"] for n in json.loads(out)["nodes"]] == ["py1"]
    cl.close()


# ---------------------------------------------------------------- dashboard


@pytest.mark.no_valgrind(reason="the dashboard in Chromium: no daemon code it alone reaches, "
                                "and much time")
def test_dashboard_token_form_in_chromium(env, cluster_pki):
    if not os.path.isdir(os.path.join(BROWSER_DIR, "node_modules", "playwright-core")):
        pytest.fail("playwright-core is not installed: run `npm ci` in tests/browser", pytrace=False)
    assert os.access(CHROMIUM, os.X_OK), "chromium is missing"
    aggr = https_aggregator(env, cluster_pki).start()
    cl, _ = send_change(env, aggr, cluster_pki.ca, node="py1")
    e = dict(os.environ, MUSTER_URL=aggr.url(), MUSTER_TOKEN=TOKEN, MUSTER_CHROMIUM=CHROMIUM,
             MUSTER_TIMEOUT_SCALE=str(mh.TIMEOUT_SCALE))
    r = subprocess.run([shutil.which("node"), "--test", "--test-reporter=spec", "auth.test.js"],
                       cwd=BROWSER_DIR, env=e, capture_output=True, text=True, timeout=T(120))
    assert r.returncode == 0, f"node --test failed ({r.returncode}):\n{(r.stdout + r.stderr)[-6000:]}"
    # The page's refusals before the token was given are counted, and the
    # wrong token the test typed too.
    assert unauthorized_hits(aggr) >= 2
    cl.close()
