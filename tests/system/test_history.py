"""History and blocking reads on the leader's API: cursor paging that stays
exact while new changes arrive, filters, every bad-parameter class, ETag
304, and blocking reads that hold until their own resource changes."""

import threading
import time
import uuid

import pytest
import requests

import muster_harness as mh
from muster_harness import ChangeMaker, StreamClient, wait_until

COMPONENTS = ["c1", "c2", "c3"]


@pytest.fixture
def aggr(env):
    env.write_profile("agent", mh.profile_ini("agent", [
        (c, dict(check="exec", command="true", interval="10s", rise=1, fall=1)) for c in COMPONENTS
    ], [("work", COMPONENTS)]))
    a = env.aggregator(stale_timeout="30s").start()
    a.digest = env.profile_digest("agent")
    return a


def url(aggr, path):
    return f"http://127.0.0.1:{aggr.http_port}{path}"


def feeder(aggr, node_id):
    cl = StreamClient(aggr.stream_port)
    r = cl.hello(node_id, "agent", uuid.uuid4().hex, 0, digest=aggr.digest)
    assert r.WhichOneof("body") == "welcome"
    return cl, ChangeMaker(COMPONENTS)


def feed(cl, mk, n, batch=50):
    while n > 0:
        k = min(batch, n)
        cl.send_changes(mk.make(k))
        n -= k
    cl.wait_ack(mk.seq)


def page_all(aggr, params, on_page=None):
    seen, cursor, pages = [], None, 0
    while True:
        p = dict(params)
        if cursor:
            p["cursor"] = cursor
        r = requests.get(url(aggr, "/v1/history"), params=p, timeout=5)
        assert r.status_code == 200, r.text
        body = r.json()
        seen.extend(body["changes"])
        pages += 1
        if on_page:
            on_page(pages)
        cursor = body["next_cursor"]
        if not cursor:
            return seen, pages


def test_paging_is_exact_while_changes_arrive(aggr):
    cl, mk = feeder(aggr, "h1")
    feed(cl, mk, 2000)
    other, mk2 = feeder(aggr, "h2")

    # Page h1's history newest-first in small pages while h2 keeps writing:
    # every h1 change exactly once, in order, none missing.
    def more(pages):
        if pages % 10 == 0:
            feed(other, mk2, 20)

    seen, pages = page_all(aggr, {"node": "h1", "limit": 37}, on_page=more)
    seqs = [c["seq"] for c in seen]
    assert seqs == list(range(2000, 0, -1))
    assert pages == 55
    assert all(c["node"] == "h1" for c in seen)
    # Oldest first, across every node.
    seen_all, _ = page_all(aggr, {"order": "asc", "limit": 500})
    by_node = {}
    for c in seen_all:
        by_node.setdefault(c["node"], []).append(c["seq"])
    assert by_node["h1"] == list(range(1, 2001))
    assert by_node["h2"] == list(range(1, mk2.seq + 1))
    # The fields of one row.
    row = seen[0]
    assert set(row) >= {"node", "component", "boot_id", "seq", "from", "to", "at", "output"}
    made = mk.made[row["seq"]]
    assert row["component"] == made.component and row["output"] == made.output
    assert row["to"] == mh.state_name(made.to)


def test_filters(aggr):
    cl, mk = feeder(aggr, "f1")
    feed(cl, mk, 30)
    # t_mid is a millisecond of its own: after every stamp of the changes
    # so far (made and received) and before every stamp of the next (one
    # stamped in t_mid's own millisecond would fall on either side).
    done = mh.now_ms()
    t_mid = wait_until(lambda: mh.now_ms() > done and mh.now_ms(), 1, interval=0.001,
                       desc="the clock past the first changes")
    wait_until(lambda: mh.now_ms() > t_mid, 1, interval=0.001, desc="the clock past t_mid")
    feed(cl, mk, 30)
    r = requests.get(url(aggr, "/v1/history"), params={"node": "f1", "component": "c2",
                                                        "limit": 1000}, timeout=5).json()
    assert r["changes"] and all(c["component"] == "c2" for c in r["changes"])
    assert len(r["changes"]) == 20
    since = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t_mid / 1000)) + \
        ".%03dZ" % (t_mid % 1000)
    r = requests.get(url(aggr, "/v1/history"), params={"since": since, "limit": 1000},
                     timeout=5).json()
    assert [c["seq"] for c in r["changes"]] == list(range(60, 30, -1))
    r = requests.get(url(aggr, "/v1/history"), params={"until": since, "limit": 1000},
                     timeout=5).json()
    assert [c["seq"] for c in r["changes"]] == list(range(30, 0, -1))
    r = requests.get(url(aggr, "/v1/history"), params={"node": "nobody"}, timeout=5).json()
    assert r == {"changes": [], "next_cursor": None}
    # Cluster verdict changes are recorded and paged the same way.
    r = requests.get(url(aggr, "/v1/history/cluster"), params={"limit": 1000}, timeout=5).json()
    assert r["changes"] and all({"verdict", "at", "reasons"} <= set(c) for c in r["changes"])


@pytest.mark.parametrize("path,params,name", [
    ("/v1/history", {"bogus": "1"}, "bogus"),
    ("/v1/history", {"limit": "ten"}, "limit"),
    ("/v1/history", {"limit": "0"}, "limit"),
    ("/v1/history", {"limit": "1001"}, "limit"),
    ("/v1/history", {"since": "yesterday"}, "since"),
    ("/v1/history", {"until": "2026-13-45T99:00:00Z"}, "until"),
    ("/v1/history", {"order": "sideways"}, "order"),
    ("/v1/history", {"cursor": "1.d.2"}, "cursor"),
    ("/v1/history", {"node": "x" * 300}, "node"),
    ("/v1/history/cluster", {"node": "m1"}, "node"),
    ("/v1/health", {"index": "-1"}, "index"),
    ("/v1/health", {"wait": "forever"}, "wait"),
    ("/v1/health", {"wait": "10m"}, "wait"),
    ("/v1/nodes", {"limit": "5"}, "limit"),
])
def test_bad_parameters(aggr, path, params, name):
    r = requests.get(url(aggr, path), params=params, timeout=5)
    assert r.status_code == 400
    err = r.json()["error"]
    assert err["code"] == "bad_parameter"
    assert name in err["message"]


def test_cursor_of_other_filters_is_refused(aggr):
    cl, mk = feeder(aggr, "k1")
    feed(cl, mk, 10)
    r = requests.get(url(aggr, "/v1/history"), params={"limit": 3}, timeout=5).json()
    cur = r["next_cursor"]
    assert requests.get(url(aggr, "/v1/history"), params={"limit": 3, "cursor": cur},
                        timeout=5).status_code == 200
    bad = requests.get(url(aggr, "/v1/history"), params={"limit": 3, "cursor": cur,
                                                          "node": "k1"}, timeout=5)
    assert bad.status_code == 400


def test_etag_gives_304(aggr):
    r = requests.get(url(aggr, "/v1/health"), timeout=5)
    tag = r.headers["ETag"]
    r2 = requests.get(url(aggr, "/v1/health"), headers={"If-None-Match": tag}, timeout=5)
    assert r2.status_code == 304 and r2.content == b""
    assert r2.headers["X-Muster-Index"] == r.headers["X-Muster-Index"]
    cl, mk = feeder(aggr, "e1")
    feed(cl, mk, 3)
    cl.send(mk.snapshot())
    wait_until(lambda: requests.get(url(aggr, "/v1/health"), headers={"If-None-Match": tag},
                                    timeout=5).status_code == 200, desc="health changed")


def parked_reads(aggr):
    text = requests.get(url(aggr, "/metrics"), timeout=5).text
    return int(float(text.split("\nmuster_http_parked_reads ", 1)[1].split("\n", 1)[0]))


def get_index(aggr, path):
    return int(requests.get(url(aggr, path), timeout=5).headers["X-Muster-Index"])


def test_blocking_read_holds_until_wait(aggr):
    idx = get_index(aggr, "/v1/health")
    t = time.monotonic()
    r = requests.get(url(aggr, "/v1/health"), params={"index": idx, "wait": "1s"}, timeout=10)
    took = time.monotonic() - t
    assert r.status_code == 200
    assert int(r.headers["X-Muster-Index"]) == idx
    assert 1.0 <= took < 1.0 + 1.0 / 16 + 0.5


def test_blocking_read_wakes_only_for_its_resource(aggr):
    a, mka = feeder(aggr, "wa")
    b, mkb = feeder(aggr, "wb")
    feed(a, mka, 3)
    a.send(mka.snapshot())
    feed(b, mkb, 3)
    b.send(mkb.snapshot())
    def snapshot_shown(node):
        # The node's view has its snapshot: nothing of it is pending.
        r = requests.get(url(aggr, f"/v1/nodes/{node}"), timeout=5)
        if r.status_code != 200:
            return None
        n = r.json()
        comps = n.get("components") or []
        return (n, int(r.headers["X-Muster-Index"])) if comps and all(
            c["output"] == "snap" for c in comps) else None

    wait_until(lambda: snapshot_shown("wb"), desc="wb's snapshot is published")
    body_before, idx_a = wait_until(lambda: snapshot_shown("wa"),
                                    desc="wa's snapshot is published")
    _, idx_b = snapshot_shown("wb")
    result = {}

    def park(node, index, key):
        t = time.monotonic()
        r = requests.get(url(aggr, f"/v1/nodes/{node}"), params={"index": index, "wait": "3s"},
                         timeout=10)
        result[key] = dict(took=time.monotonic() - t, index=int(r.headers["X-Muster-Index"]),
                           body=r.json())

    th = threading.Thread(target=park, args=("wa", idx_a, "a"))
    th.start()
    wait_until(lambda: parked_reads(aggr) == 1, desc="the read on wa is parked")
    # A change on another node must not wake it: a read parked on wb wakes,
    # and the same pass over the parked reads (one, under a lock) leaves
    # wa's parked.
    th_b = threading.Thread(target=park, args=("wb", idx_b, "b"))
    th_b.start()
    wait_until(lambda: parked_reads(aggr) == 2, desc="the reads on wa and wb are parked")
    feed(b, mkb, 1)
    th_b.join(mh.T(5))
    assert not th_b.is_alive() and result["b"]["index"] > idx_b, result.get("b")
    assert parked_reads(aggr) == 1 and th.is_alive(), (
        f"a change to wb woke a read parked on wa at index {idx_a}: it returned "
        f"{result.get('a')}; before {body_before}")
    # ...a change on its own node wakes it promptly.
    t_change = time.monotonic()
    feed(a, mka, 1)
    th.join(5)
    assert not th.is_alive()
    assert result["a"]["index"] > idx_a
    woke_after = time.monotonic() - t_change
    assert woke_after < 0.5, f"woke {woke_after:.3f}s after the change"


def test_thousand_parked_reads_all_woken_by_one_change(aggr):
    import resource
    import socket
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 2048:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 4096), hard))
    idx = get_index(aggr, "/v1/health")
    socks = []
    req = (f"GET /v1/health?index={idx}&wait=30s HTTP/1.1\r\nHost: x\r\n\r\n").encode()
    # From 16 client addresses: http_max_connections_per_address is 64.
    for i in range(1000):
        s = socket.create_connection(("127.0.0.1", aggr.http_port),
                                     source_address=(f"127.0.0.{2 + i % 16}", 0))
        s.sendall(req)
        socks.append(s)
    try:
        wait_until(lambda: parked_reads(aggr) == 1000, 5, interval=0.05,
                   desc="1000 reads parked")
        for s in socks[:50]:
            s.setblocking(False)
            with pytest.raises(BlockingIOError):
                s.recv(1)
            s.setblocking(True)
        cl, mk = feeder(aggr, "wake")
        feed(cl, mk, 1)
        cl.send(mk.snapshot())
        t = time.monotonic()
        for s in socks:
            s.settimeout(5)
            head = s.recv(64)
            assert head.startswith(b"HTTP/1.1 200")
        took = time.monotonic() - t
        print(f"1000 parked reads answered within {took * 1000:.0f} ms of the change")
    finally:
        for s in socks:
            s.close()
