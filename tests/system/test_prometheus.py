"""The Prometheus integration as shipped (deploy/prometheus/):

- the rules pass `promtool check rules` and their own unit tests
  (`promtool test rules`, as tests/run runs them);
- a real Prometheus server (Debian's prometheus) scrapes three aggregators
  of a real ZooKeeper cluster with the shipped rules (their `for:` and
  `keep_firing_for:` shortened to seconds, nothing else changed): no alert
  is pending or firing while the cluster is healthy, and MusterClusterUnhealthy
  fires, once, when a master's component fails.
"""

import os
import re
import shutil
import subprocess
import time

import pytest
import requests

import muster_harness as mh
from muster_harness import T, free_port, tail, wait_until

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RULES_DIR = os.path.join(ROOT, "deploy", "prometheus")
PROMETHEUS = shutil.which("prometheus")
PROMTOOL = shutil.which("promtool")


@pytest.mark.skipif(PROMTOOL is None, reason="promtool is missing (deploy/install-deps)")
def test_shipped_rules_pass_promtool():
    for argv in (["check", "rules", "muster.rules.yml"],
                 ["test", "rules", "muster.rules.test.yml"],
                 ["check", "config", "prometheus.yml"]):
        p = subprocess.run([PROMTOOL, *argv], cwd=RULES_DIR, capture_output=True, text=True,
                           timeout=60)
        out = p.stdout + p.stderr
        if argv[1] == "config":
            # The example points at the rules where a package installs them.
            assert "muster.rules.yml\" does not point to an existing file" in out or \
                p.returncode == 0, out
        else:
            assert p.returncode == 0, out


def fast_rules(path):
    """The shipped rules with their durations in seconds."""
    with open(os.path.join(RULES_DIR, "muster.rules.yml")) as f:
        text = f.read()
    text = re.sub(r"(\n\s+)for: \w+", r"\1for: 3s", text)
    text = re.sub(r"(\n\s+)keep_firing_for: \w+", r"\1keep_firing_for: 5s", text)
    with open(path, "w") as f:
        f.write(text)
    return path


class Prometheus:
    def __init__(self, env, targets, cluster, rules):
        self.env = env
        self.port = free_port()
        self.data = env.path("prometheus-data")
        target_list = ", ".join(f"'{t}'" for t in targets)
        self.config = env.write("prometheus.yml", f"""
global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files: ['{rules}']
scrape_configs:
- job_name: muster
  static_configs:
  - targets: [{target_list}]
    labels:
      cluster: '{cluster}'
""")
        self.proc = None

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    def start(self):
        self.proc = mh.start_peer(self.env, "prometheus", [
            PROMETHEUS, f"--config.file={self.config}", f"--storage.tsdb.path={self.data}",
            f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"],
            self.url + "/-/ready", timeout=60)
        return self

    def query(self, q):
        r = requests.get(self.url + "/api/v1/query", params={"query": q}, timeout=5)
        r.raise_for_status()
        return r.json()["data"]["result"]

    def query_range(self, q, start, end):
        r = requests.get(self.url + "/api/v1/query_range", timeout=10,
                         params={"query": q, "start": start, "end": end, "step": "1s"})
        r.raise_for_status()
        return r.json()["data"]["result"]

    def alerts(self):
        r = requests.get(self.url + "/api/v1/alerts", timeout=5)
        r.raise_for_status()
        return r.json()["data"]["alerts"]

    def rules_evaluated_since(self, t):
        """Whether the rule group has been evaluated after wall time t."""
        r = requests.get(self.url + "/api/v1/rules", timeout=5).json()
        groups = r["data"]["groups"]
        return groups and all(g.get("lastEvaluation", "") and
                              _rfc3339(g["lastEvaluation"]) > t for g in groups)


def _rfc3339(s):
    from datetime import datetime
    s = re.sub(r"(\.\d{6})\d*", r"\1", s).replace("Z", "+00:00")
    return datetime.fromisoformat(s).timestamp()


@pytest.mark.skipif(PROMETHEUS is None, reason="prometheus is missing (deploy/install-deps)")
@pytest.mark.no_valgrind(reason="a real Prometheus scrapes every second and evaluates on time")
@pytest.mark.long(reason="a real Prometheus against three aggregators, through a failure: 20 s")
def test_prometheus_fires_the_cluster_alert_only_when_a_master_fails(env, zk, cluster_name):
    from zk_harness import ElectedAggregator, wait_one_leader
    cmd, rc_file = mh.exec_rc_script(env, "svc", 0)
    env.write_profile("master", mh.profile_ini("master", [
        ("svc", dict(check="exec", command=cmd, interval="100ms", timeout="2s", rise=1, fall=1)),
    ], [("serve", ["svc"])]))
    aggrs = [ElectedAggregator(env, zk.hosts, cluster_name, "2s", id=f"aggr{i}",
                               stale_timeout="5s", expected_masters=["m1"]) for i in (1, 2, 3)]
    for a in aggrs:
        a.start()
    leader, _ = wait_one_leader(aggrs)
    env.agent("m1", "master", aggrs).start()
    leader.wait_verdict("healthy", timeout=T(15))

    prom = Prometheus(env, [f"127.0.0.1:{a.http_port}" for a in aggrs], cluster_name,
                      fast_rules(env.path("muster.rules.yml"))).start()
    wait_until(lambda: prom.query('sum(up{job="muster"}) == 3') and
               prom.query('max(muster_cluster_verdict{verdict="healthy"}) == 1'),
               timeout=T(30), desc="Prometheus scrapes all three and sees the cluster healthy")
    # Until every target's first scrape, the rules see part of the cluster
    # (MusterNoLeader may turn pending before the leader is scraped): the
    # window starts at the first evaluation after that.
    seen = time.time()
    wait_until(lambda: prom.rules_evaluated_since(seen + 1), timeout=T(30),
               desc="an evaluation with every target scraped")
    # Healthy for longer than every `for:` (3 s) and a few evaluations:
    # nothing pending or firing at any evaluation.
    t0 = time.time()
    wait_until(lambda: prom.rules_evaluated_since(t0 + 8), timeout=T(30),
               desc="eight seconds of rule evaluations")
    assert prom.alerts() == [], prom.alerts()
    fired = prom.query_range("ALERTS", t0, time.time())
    assert fired == [], f"alerts while healthy: {fired}"

    mh.set_rc(rc_file, 2)
    leader.wait_verdict("unhealthy", timeout=T(10))

    def cluster_alert():
        got = [a for a in prom.alerts() if a["labels"]["alertname"] == "MusterClusterUnhealthy"
               and a["state"] == "firing"]
        return got
    got = wait_until(cluster_alert, timeout=T(30), desc="MusterClusterUnhealthy firing")
    assert len(got) == 1 and got[0]["labels"] == {"alertname": "MusterClusterUnhealthy",
                                                  "cluster": cluster_name,
                                                  "severity": "critical"}, got
    others = {a["labels"]["alertname"] for a in prom.alerts()} - {"MusterClusterUnhealthy",
                                                                  "MusterClusterNotHealthy"}
    assert not others, f"other alerts fired: {others}"
