"""Notifications through a real Alertmanager (Debian's
prometheus-alertmanager on loopback, notifying a webhook receiver this test
runs), from aggregators with [alertmanager] urls:

- a master component fails: each alert group (Alertmanager groups by
  cluster and alertname here, as deploy/prometheus/alertmanager.yml does)
  gets one notification, the component's naming the root cause and the
  node; the leader is killed with SIGKILL during the failure and the next
  leader re-sends the set: no second notification for any group; recovery
  resolves every group;
- Alertmanager down for a minute while the master fails: the failures
  show in /metrics and the log (once per resend interval), and once it is
  back the alert reaches the receiver, then its resolution.
"""

import json
import os
import shutil
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests

import muster_harness as mh
from muster_harness import T, free_port, tail, wait_until

AM_BINARY = shutil.which("prometheus-alertmanager")
pytestmark = pytest.mark.skipif(
    AM_BINARY is None,
    reason="prometheus-alertmanager is missing (deploy/install-deps installs it)")

FAILURE_GROUPS = ("MusterClusterUnhealthy", "MusterNodeUnhealthy", "MusterComponentFailed")


class Webhook:
    """Alertmanager's webhook receiver: records every notification."""

    def __init__(self):
        self.posts = []
        self.lock = threading.Lock()
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                n = int(self.headers.get("Content-Length", "0"))
                body = json.loads(self.rfile.read(n))
                with hook.lock:
                    hook.posts.append(body)
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *a):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def notifications(self, alertname=None, status=None, since=0):
        """Notifications from the since-th on, of one alert group
        (groupLabels.alertname) and status."""
        with self.lock:
            posts = list(self.posts[since:])
        return [p for p in posts
                if (alertname is None or p["groupLabels"].get("alertname") == alertname)
                and (status is None or p["status"] == status)]

    def count(self):
        with self.lock:
            return len(self.posts)

    def close(self):
        self.server.shutdown()
        self.server.server_close()


class Alertmanager:
    """A real Alertmanager on loopback, clustering off, with its own storage,
    routing everything to the webhook grouped by cluster and alertname."""

    def __init__(self, env, webhook):
        self.env = env
        self.port = free_port()
        self.storage = env.path("alertmanager-data")
        os.makedirs(self.storage, exist_ok=True)
        self.config = env.write("alertmanager.yml", f"""
route:
  receiver: hook
  group_by: [cluster, alertname]
  group_wait: 1s
  group_interval: 1s
  repeat_interval: 1h
receivers:
- name: hook
  webhook_configs:
  - url: {webhook.url}
    send_resolved: true
""")
        self.proc = None

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    def start(self):
        self.proc = mh.start_peer(self.env, "alertmanager", [
            AM_BINARY, f"--config.file={self.config}", f"--storage.path={self.storage}",
            f"--web.listen-address=127.0.0.1:{self.port}", "--cluster.listen-address=",
            "--log.level=info"], self.url + "/-/ready")
        return self

    def stop(self):
        rc = self.proc.stop()
        assert rc == 0, f"Alertmanager exited with {rc}:\n{tail(self.proc.stderr_path, 30)}"

    def alerts(self, **filters):
        r = requests.get(self.url + "/api/v2/alerts", timeout=5,
                         params={"filter": [f'{k}="{v}"' for k, v in filters.items()]})
        r.raise_for_status()
        return r.json()


@pytest.fixture
def webhook():
    w = Webhook()
    yield w
    w.close()


def master_profile(env):
    cmd, rc_file = mh.exec_rc_script(env, "svc", 0)
    env.write_profile("master", mh.profile_ini("master", [
        ("svc", dict(check="exec", command=cmd, interval="100ms", timeout="2s", rise=1, fall=1)),
    ], [("serve", ["svc"])]))
    return rc_file


def am_section(am, resend="2s"):
    return {"alertmanager": {"urls": am.url, "external_url": "http://dashboard.example:7611/",
                             "resend_interval": resend, "timeout": "1s"}}


def metric(aggr, name):
    text = requests.get(aggr.url("/metrics"), timeout=5).text
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return None


def healthy_master_notifying(env, webhook):
    """A standalone aggregator notifying a real Alertmanager, its master m1
    healthy: (the rc file of m1's check, the Alertmanager, the aggregator)."""
    rc_file = master_profile(env)
    am = Alertmanager(env, webhook).start()
    aggr = env.aggregator(stale_timeout="5s", expected_masters=["m1"],
                          sections=am_section(am)).start()
    env.agent("m1", "master", aggr).start()
    aggr.wait_verdict("healthy", timeout=T(15))
    return rc_file, am, aggr


def alert_of(notification, alertname):
    return next(a for a in notification["alerts"] if a["labels"]["alertname"] == alertname)


@pytest.mark.no_valgrind(reason="a real Alertmanager and ZooKeeper across a failover: timing")
def test_master_failure_notifies_once_across_a_leader_kill(env, zk, cluster_name, webhook):
    from zk_harness import ElectedAggregator, wait_one_leader
    rc_file = master_profile(env)
    am = Alertmanager(env, webhook).start()
    aggrs = [ElectedAggregator(env, zk.hosts, cluster_name, "2s", id=f"aggr{i}",
                               stale_timeout="5s", expected_masters=["m1"],
                               sections=am_section(am)) for i in (1, 2, 3)]
    for a in aggrs:
        a.start()
    leader, _ = wait_one_leader(aggrs)
    env.agent("m1", "master", aggrs).start()
    leader.wait_verdict("healthy", timeout=T(15))
    # Whatever the start-up said (the cluster unknown, then starting) is
    # resolved at Alertmanager before the failure.
    wait_until(lambda: not am.alerts(cluster=cluster_name), timeout=T(20),
               desc="no active alert while healthy")
    assert not webhook.notifications(alertname="MusterComponentFailed")
    start = webhook.count()

    mh.set_rc(rc_file, 2)
    leader.wait_verdict("unhealthy", timeout=T(10))
    wait_until(lambda: all(webhook.notifications(g, "firing", start) for g in FAILURE_GROUPS),
               timeout=T(20), desc="a notification for each group")
    note = webhook.notifications("MusterComponentFailed", "firing", start)[0]
    assert len(note["alerts"]) == 1, note
    alert = note["alerts"][0]
    assert alert["labels"] == {"alertname": "MusterComponentFailed", "cluster": cluster_name,
                               "component": "svc", "node": "m1", "role": "master",
                               "severity": "critical"}, alert
    assert "svc on m1 has been unhealthy" in alert["annotations"]["summary"], alert
    assert "svc says 2" in alert["annotations"]["root_cause"], alert
    assert alert["generatorURL"] == "http://dashboard.example:7611/#node=m1", alert
    cluster_alert = alert_of(webhook.notifications("MusterClusterUnhealthy", "firing", start)[0],
                             "MusterClusterUnhealthy")
    assert "svc on m1" in cluster_alert["annotations"]["root_cause"], cluster_alert
    assert cluster_alert["labels"]["severity"] == "critical"
    node_alert = alert_of(webhook.notifications("MusterNodeUnhealthy", "firing", start)[0],
                          "MusterNodeUnhealthy")
    assert node_alert["labels"]["node"] == "m1" and node_alert["labels"]["role"] == "master"
    assert metric(leader, "muster_notifications_alerts") == 3
    for a in aggrs:
        if a is not leader:
            assert metric(a, "muster_notifications_sent_total") == 0, f"{a.id} follows and posts"

    # The leader dies during the failure; the next one re-sends the set.
    leader.kill9()
    survivors = [a for a in aggrs if a is not leader]
    new_leader, _ = wait_one_leader(survivors, timeout=T(20))
    wait_until(lambda: (metric(new_leader, "muster_notifications_sent_total") or 0) >= 3,
               timeout=T(20), desc="the new leader re-sent the set (three times)")
    new_leader.wait_verdict("unhealthy")
    for g in FAILURE_GROUPS:
        assert len(webhook.notifications(g, "firing", start)) == 1, \
            (g, webhook.notifications(g, None, start))

    # Recovery resolves every group, through the new leader.
    mh.set_rc(rc_file, 0)
    new_leader.wait_verdict("healthy", timeout=T(10))
    wait_until(lambda: all(webhook.notifications(g, "resolved", start) for g in FAILURE_GROUPS),
               timeout=T(20), desc="every group resolved")
    for g in FAILURE_GROUPS:
        assert len(webhook.notifications(g, "firing", start)) == 1, g
        resolved = webhook.notifications(g, "resolved", start)
        assert all(a["status"] == "resolved" for a in resolved[0]["alerts"]), resolved
    assert metric(new_leader, "muster_notifications_alerts") == 0
    assert metric(new_leader, "muster_notifications_failed_total") == 0


@pytest.mark.no_valgrind(reason="waits a minute with Alertmanager down")
@pytest.mark.long(reason="waits a minute with Alertmanager down")
def test_alertmanager_down_for_a_minute_loses_no_alert(env, webhook):
    rc_file, am, aggr = healthy_master_notifying(env, webhook)
    am.stop()
    log_at = aggr.log_size()

    mh.set_rc(rc_file, 2)
    aggr.wait_verdict("unhealthy", timeout=T(10))
    wait_until(lambda: metric(aggr, "muster_notifications_failing") == 1, timeout=T(10),
               desc="the failing post counted")
    down_for = 60.0
    t0 = time.monotonic()
    while time.monotonic() - t0 < down_for:
        time.sleep(1)
        assert aggr.proc.alive()
    failures = metric(aggr, "muster_notifications_failed_total")
    assert failures >= 10, f"{failures} attempts in a minute (back-off capped at 2s)"
    logged = [l for l in aggr.log_since(log_at).splitlines() if "cannot post" in l]
    # Once per resend interval (2 s): about 30 lines in a minute, not one per attempt.
    assert 1 <= len(logged) <= down_for / 2 + 3, logged
    assert not webhook.notifications("MusterComponentFailed")

    am.start()
    wait_until(lambda: webhook.notifications("MusterComponentFailed", "firing"), timeout=T(20),
               desc="the alert delivered once Alertmanager is back")
    alert = webhook.notifications("MusterComponentFailed", "firing")[0]["alerts"][0]
    assert alert["labels"]["node"] == "m1" and alert["labels"]["component"] == "svc", alert
    wait_until(lambda: metric(aggr, "muster_notifications_failing") == 0, timeout=T(10))
    assert "posting again" in aggr.log_since(log_at)

    mh.set_rc(rc_file, 0)
    aggr.wait_verdict("healthy", timeout=T(10))
    wait_until(lambda: webhook.notifications("MusterComponentFailed", "resolved"), timeout=T(20),
               desc="the resolution delivered")


@pytest.mark.parametrize("lines,line,message", [
    (["urls = alertmanager:9093"], 2, "is not an http:// or https:// URL"),
    (["urls = http://a:9093, ftp://b"], 2, "'ftp://b' is not an http:// or https:// URL"),
    (["urls = " + ",".join(f"http://am{i}:9093" for i in range(17))], 2, "at most 16"),
    (["urls = http://a:9093", "external_url = dashboard"], 3, "external_url 'dashboard'"),
    (["urls = http://a:9093", "resend_interval = 5s", "timeout = 10s"], 4,
     "timeout must not be longer than resend_interval"),
    (["resend_interval = 0s"], 2, "resend_interval"),
    (["max_alerts = 0"], 2, "max_alerts"),
    (["url = http://a:9093"], 2, "url"),
])
def test_alertmanager_section_errors_at_their_line(env, lines, line, message):
    master_profile(env)
    aggr = env.aggregator()
    aggr.write_config()
    with open(aggr.config, "a") as f:
        f.write("[alertmanager]\n" + "".join(l + "\n" for l in lines))
    first = sum(1 for _ in open(aggr.config)) - len(lines)  # the [alertmanager] line
    rc, out, err, _ = mh.run_to_completion(aggr.argv("--check-config"), timeout=10)
    assert rc != 0, f"accepted: {lines}"
    assert f"{aggr.config}:{first + line - 1}:" in err and message in err, err


def test_alertmanager_section_accepted(env):
    master_profile(env)
    aggr = env.aggregator(sections={"alertmanager": {
        "urls": "http://127.0.0.1:9093/ https://am2.example:9093", "external_url":
        "https://muster.example/", "resend_interval": "30s", "timeout": "5s",
        "max_alerts": "50"}})
    aggr.write_config()
    rc, out, err, _ = mh.run_to_completion(aggr.argv("--check-config"), timeout=10)
    assert rc == 0, err


def test_acknowledged_failure_is_not_notified_again(env, webhook):
    """An operator acknowledges the failing component (issue 19): its alert
    resolves and is not sent again while it keeps failing; the cluster
    alert stays, since the cluster is still unhealthy."""
    rc_file, am, aggr = healthy_master_notifying(env, webhook)
    mh.set_rc(rc_file, 2)
    wait_until(lambda: webhook.notifications("MusterComponentFailed", "firing"), timeout=T(20),
               desc="the failure notified")

    r = mh.operator_write(aggr, "PUT", "/v1/nodes/m1/components/svc/ack",
                          {"reason": "known, being fixed"})
    assert r.status_code == 200, r.text
    wait_until(lambda: webhook.notifications("MusterComponentFailed", "resolved"), timeout=T(20),
               desc="the acknowledged failure's alert resolved")
    assert aggr.component("m1", "svc")["state"] == "unhealthy"
    firing_before = len(webhook.notifications("MusterComponentFailed", "firing"))
    # Three more posts of the set while it keeps failing (2 s apart): none
    # fires the component's alert again.
    sent = metric(aggr, "muster_notifications_sent_total")
    wait_until(lambda: metric(aggr, "muster_notifications_sent_total") >= sent + 3,
               timeout=T(20), desc="three more posts of the alert set")
    assert len(webhook.notifications("MusterComponentFailed", "firing")) == firing_before
    # Alertmanager's own list of active alerts no longer has it.
    assert not [a for a in am.alerts(alertname="MusterComponentFailed")
                if a["labels"].get("component") == "svc"]
    assert am.alerts(alertname="MusterClusterUnhealthy"), "the cluster is still unhealthy"
