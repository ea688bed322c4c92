"""GET /metrics: Prometheus text that passes `promtool check metrics`, with
the cluster's state, ingest counters, commit batch sizes, HTTP requests by
route, parked reads and leadership, read from a live aggregator."""

import shutil
import subprocess
import threading
import time
import uuid

import pytest
import requests

import muster_harness as mh
from muster_harness import ChangeMaker, StreamClient, wait_until

COMPONENTS = ["c1", "c2"]


def scrape(aggr):
    r = requests.get(f"http://127.0.0.1:{aggr.http_port}/metrics", timeout=5)
    assert r.status_code == 200
    assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    return r.text


def sample(text, name, **labels):
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    prefix = f"{name}{{{want}}} " if labels else f"{name} "
    for line in text.splitlines():
        if line.startswith(prefix):
            return float(line[len(prefix):])
    return None


def test_metrics_pass_promtool_and_follow_the_cluster(env):
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing (deploy/install-deps installs prometheus)"
    env.write_profile("agent", mh.profile_ini("agent", [
        (c, dict(check="exec", command="true", interval="10s", rise=1, fall=1)) for c in COMPONENTS
    ], [("work", COMPONENTS)]))
    aggr = env.aggregator(stale_timeout="30s").start()
    cl = StreamClient(aggr.stream_port)
    assert cl.hello('n"1', "agent", uuid.uuid4().hex, 0,
                    digest=env.profile_digest("agent")).WhichOneof("body") == "welcome"
    mk = ChangeMaker(COMPONENTS)
    cl.send_changes(mk.make(40))
    cl.wait_ack(40)
    cl.send(mk.snapshot())
    # The snapshot's publish done: the node shows the snapshot's output. A
    # read parked after that stays parked.
    wait_until(lambda: '"snap"' in requests.get(
        f"http://127.0.0.1:{aggr.http_port}/v1/nodes/n%221", timeout=5).text,
        desc="the snapshot shown")
    requests.get(f"http://127.0.0.1:{aggr.http_port}/v1/health", timeout=5)
    requests.get(f"http://127.0.0.1:{aggr.http_port}/v1/nope", timeout=5)
    idx = requests.get(f"http://127.0.0.1:{aggr.http_port}/v1/health",
                       timeout=5).headers["X-Muster-Index"]
    parked = threading.Thread(target=lambda: requests.get(
        f"http://127.0.0.1:{aggr.http_port}/v1/health", params={"index": idx, "wait": f"{int(mh.T(5))}s"},
        timeout=mh.T(20)))
    parked.start()
    text = wait_until(lambda: (lambda t: sample(t, "muster_http_parked_reads") == 1 and t)(
        scrape(aggr)), timeout=mh.T(10), desc="the blocking read parked")

    check = subprocess.run([promtool, "check", "metrics"], input=text.encode(),
                           capture_output=True, timeout=30)
    assert check.returncode == 0, check.stdout.decode() + check.stderr.decode()

    assert sample(text, "muster_ingest_changes_total") == 40
    assert sample(text, "muster_ingest_acks_total") >= 1
    assert sample(text, "muster_leader") == 1
    assert sample(text, "muster_agents_connected") == 1
    assert sample(text, "muster_http_parked_reads") == 1
    assert sample(text, "muster_http_requests_total", route="/v1/health", code="2xx") >= 2
    assert sample(text, "muster_http_requests_total", route="other", code="404") == 1
    assert sample(text, "muster_commit_batch_rows_count") >= 1
    assert sample(text, "muster_node_verdict", node='n\\"1', role="agent",
                  verdict="unhealthy") == 1 or \
        sample(text, "muster_node_verdict", node='n\\"1', role="agent", verdict="healthy") == 1
    states = [l for l in text.splitlines() if l.startswith("muster_component_state{")]
    assert len(states) == 2
    cl.close()
    parked.join(mh.T(20))


def test_first_scrape_has_the_cluster_gauges(env):
    """The cluster gauges come with the published view: the very first
    scrape after start has them (nothing waits for the loop), and a node's
    lines follow its changes."""
    env.write_profile("agent", mh.profile_ini("agent", [
        (c, dict(check="exec", command="true", interval="10s", rise=1, fall=1)) for c in COMPONENTS
    ], [("work", COMPONENTS)]))
    aggr = env.aggregator(stale_timeout="30s").start(wait=False)

    def first_scrape():
        try:
            r = requests.get(f"http://127.0.0.1:{aggr.http_port}/metrics", timeout=5)
        except requests.ConnectionError:
            return None
        assert r.status_code == 200
        return r.text

    text = wait_until(first_scrape, timeout=10, desc="the first scrape")
    assert sample(text, "muster_leader") in (0, 1)
    assert sample(text, "muster_leader_epoch") is not None
    verdicts = [l for l in text.splitlines() if l.startswith("muster_cluster_verdict{")]
    assert sum(float(l.rsplit(" ", 1)[1]) for l in verdicts) == 1, verdicts
    assert "# TYPE muster_node_verdict gauge" in text
    assert "# TYPE muster_component_state gauge" in text

    aggr.wait_ready()
    cl = StreamClient(aggr.stream_port)
    assert cl.hello("n1", "agent", uuid.uuid4().hex, 0,
                    digest=env.profile_digest("agent")).WhichOneof("body") == "welcome"
    mk = ChangeMaker(COMPONENTS)
    cl.send_changes(mk.make(len(COMPONENTS)))  # every component goes healthy
    cl.wait_ack(mk.seq)
    cl.send(mk.snapshot())

    def node_lines():
        t = scrape(aggr)
        states = [l for l in t.splitlines() if l.startswith('muster_component_state{node="n1"')]
        return (sample(t, "muster_node_verdict", node="n1", role="agent", verdict="healthy") == 1
                and len(states) == 2 and all(l.endswith('state="healthy"} 1') for l in states)
                and sample(t, "muster_agents_connected") == 1 and t)

    text = wait_until(node_lines, timeout=10, desc="n1 healthy in /metrics")
    assert sample(text, "muster_cluster_verdict", verdict="healthy") == 1
    cl.close()


def families(text):
    """The metric names of the samples in text."""
    return {line.split("{")[0].split(" ")[0] for line in text.splitlines()
            if line and not line.startswith("#")}


PROCESS = ("process_cpu_seconds_total", "process_resident_memory_bytes", "process_open_fds",
           "process_start_time_seconds")
CLUSTER = ("muster_cluster_verdict", "muster_node_verdict", "muster_component_state",
           "muster_node_connected", "muster_node_last_seen_timestamp_seconds",
           "muster_node_startup_percent", "muster_node_startup_stage")


def test_followers_export_no_cluster_verdict(env, zk, cluster_name):
    """Two aggregators, a real ZooKeeper, a healthy node and an expected
    master that never reports. The leader exports the cluster (the node's
    and the missing master's series); the follower exports its process and
    election metrics and muster_leader 0, and no cluster, node or component
    series, so a plain alert on muster_cluster_verdict or
    muster_node_verdict{verdict="missing"} fires on no follower. Both pass
    promtool. After the leader stops, the follower leads and exports the
    cluster itself."""
    from zk_harness import ElectedAggregator, wait_one_leader
    env.write_profile("agent", mh.profile_ini("agent", [
        (c, dict(check="exec", command="true", interval="10s", rise=1, fall=1)) for c in COMPONENTS
    ], [("work", COMPONENTS)]))
    aggrs = [ElectedAggregator(env, zk.hosts, cluster_name, "2s", id=f"aggr{i}",
                               stale_timeout="30s", expected_masters=["m9"],
                               extra={"first_contact_window": "0s"}) for i in (1, 2)]
    for a in aggrs:
        a.start()
    leader, _ = wait_one_leader(aggrs)
    follower = next(a for a in aggrs if a is not leader)
    env.agent("n1", "agent", [leader, follower]).start()

    def leader_sees_n1():
        t = scrape(leader)
        return (sample(t, "muster_node_verdict", node="n1", role="agent", verdict="healthy") == 1
                and t)
    text = wait_until(leader_sees_n1, timeout=10, desc="n1 healthy in the leader's /metrics")
    assert sample(text, "muster_leader") == 1
    assert sample(text, "muster_cluster_verdict", verdict="unhealthy") == 1, \
        "m9 never reported: the leader says so"
    assert sample(text, "muster_node_verdict", node="m9", role="master", verdict="missing") == 1
    # Per node: connected, last seen, startup progress; the role on component states.
    assert sample(text, "muster_node_connected", node="n1", role="agent") == 1
    assert sample(text, "muster_node_connected", node="m9", role="master") == 0
    assert abs(sample(text, "muster_node_last_seen_timestamp_seconds", node="n1",
                      role="agent") - time.time()) < 60
    assert sample(text, "muster_node_last_seen_timestamp_seconds", node="m9",
                  role="master") is None, "m9 never reported: no last seen"
    assert sample(text, "muster_node_startup_percent", node="n1", role="agent") == 100
    assert sample(text, "muster_node_startup_stage", node="n1", role="agent", stage="work",
                  state="done") == 1
    for c in COMPONENTS:
        assert sample(text, "muster_component_state", node="n1", role="agent", component=c,
                      state="healthy") == 1, text
    assert sample(text, "muster_notifications_configured") == 0
    assert sample(text, "muster_notifications_sent_total") == 0

    ftext = scrape(follower)
    assert sample(ftext, "muster_leader") == 0, ftext
    assert sample(ftext, "muster_leader_epoch") == sample(text, "muster_leader_epoch")
    got = families(ftext)
    assert not got & set(CLUSTER), f"a follower exports {sorted(got & set(CLUSTER))}"
    for name in PROCESS:
        assert sample(ftext, name) is not None, f"{name} missing on the follower"
        assert sample(text, name) is not None, f"{name} missing on the leader"
    assert sample(ftext, "process_resident_memory_bytes") > 1e6
    assert sample(ftext, "process_open_fds") > 3
    assert abs(sample(ftext, "process_start_time_seconds") - time.time()) < 600
    version = [l for l in ftext.splitlines() if l.startswith("muster_build_info{")]
    assert len(version) == 1 and version[0].endswith("} 1"), version
    assert 'version="' in version[0]

    promtool = shutil.which("promtool")
    if promtool:
        for t in (text, ftext):
            p = subprocess.run([promtool, "check", "metrics"], input=t, capture_output=True,
                               text=True, timeout=30)
            assert p.returncode == 0, p.stdout + p.stderr

    # The follower takes over: the cluster's series are its own now.
    leader.stop()
    wait_one_leader([follower])
    text = wait_until(lambda: (sample(scrape(follower), "muster_leader") == 1 and
                               sample(scrape(follower), "muster_node_verdict", node="n1",
                                      role="agent", verdict="healthy") == 1 and scrape(follower)),
                      timeout=15, desc="the new leader exports the cluster")
    assert families(text) >= set(CLUSTER)
