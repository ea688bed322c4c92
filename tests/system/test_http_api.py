"""HTTP API conventions seen by a client: JSON errors with fitting statuses,
X-Muster-Index on every /v1 resource, liveness and readiness."""

import pytest
import requests

import muster_harness as mh
from muster_harness import ChangeMaker, StreamClient

COMPONENTS = ["c1", "c2"]


@pytest.fixture
def aggr(env):
    env.write_profile("agent", mh.profile_ini("agent", [
        (c, dict(check="exec", command="true", interval="10s", rise=1, fall=1)) for c in COMPONENTS
    ], [("work", COMPONENTS)]))
    a = env.aggregator(stale_timeout="5s").start()
    cl = StreamClient(a.stream_port)
    r = cl.hello("n1", "agent", "spool-n1", 0, digest=env.profile_digest("agent"))
    assert r.WhichOneof("body") == "welcome", r
    mk = ChangeMaker(COMPONENTS)
    cl.send_changes(mk.make(2))
    cl.send(mk.snapshot())
    cl.wait_ack(2)
    a.client = cl
    a.wait_node("n1", lambda n: len(n["components"]) == 2, 3, desc="n1 with two components")
    return a


def request(method, aggr, path, **kw):
    try:
        return mh.http_request(method, aggr.http_port, path, **kw)
    except requests.ConnectionError as e:
        raise AssertionError(f"{method} {path}: the server closed the connection without an "
                             f"answer ({e})") from None


def assert_json_error(r, status, code=None):
    assert r.status_code == status, f"{r.request.method} {r.url} -> {r.status_code}: {r.text[:300]}"
    assert r.headers.get("Content-Type", "").startswith("application/json"), dict(r.headers)
    j = r.json()
    assert set(j) == {"error"}, j
    assert isinstance(j["error"].get("code"), str) and j["error"]["code"], j
    assert isinstance(j["error"].get("message"), str) and j["error"]["message"], j
    if code:
        assert j["error"]["code"] == code, j


def test_unknown_node_is_404(aggr):
    assert_json_error(aggr.get("/v1/nodes/no-such-node"), 404, "not_found")


def test_unknown_path_is_404(aggr):
    assert_json_error(aggr.get("/v1/no-such-thing"), 404)


@pytest.mark.parametrize("body", [None, b'{"x":1}'], ids=["no-body", "with-body"])
@pytest.mark.parametrize("path", ["/v1/health", "/v1/nodes", "/v1/nodes/n1"])
def test_post_is_405(aggr, path, body):
    assert_json_error(request("POST", aggr, path, data=body), 405)
    # and the server still answers afterwards
    assert aggr.get("/v1/health").status_code == 200


@pytest.mark.parametrize("path", ["/v1/health", "/v1/nodes", "/v1/nodes/n1"])
def test_index_header(aggr, path):
    r = aggr.get(path)
    assert r.status_code == 200
    assert r.headers.get("Content-Type", "").startswith("application/json"), dict(r.headers)
    assert "X-Muster-Index" in r.headers, dict(r.headers)
    idx = int(r.headers["X-Muster-Index"])
    assert idx > 0
    if "index" in r.json():
        assert r.json()["index"] == idx


def test_node_detail_shape(aggr):
    n = aggr.node("n1")
    assert n["id"] == "n1" and n["role"] == "agent"
    comps = {c["name"]: c for c in n["components"]}
    assert set(comps) == set(COMPONENTS)
    for c in comps.values():
        assert c["check"] == "exec"
        assert c["state"] == "healthy"
        assert mh.RFC3339_MS.match(c["since"]), c
        for k in ("output", "health", "rise", "fall"):
            assert k in c, (k, c)
    for k in ("startup", "reasons", "root_causes", "verdict"):
        assert k in n, (k, n)


def test_liveness_and_readiness(aggr):
    assert aggr.get("/healthz").status_code == 200
    r = aggr.get("/readyz")
    assert r.status_code == 200
    assert r.json()["ready"] is True and r.json()["role"] == "leader"
