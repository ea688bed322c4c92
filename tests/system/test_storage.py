"""Faults of the machine under the aggregator's database (issue 16, items 9
and 10): the disk that fills, and the database file deleted while running.

A full disk: nothing is acknowledged that is not stored, agents back off
(growing, jittered gaps instead of a reconnect every 50 ms with the whole
backlog), the aggregator says so (/readyz 503, a reason in /v1/health,
muster_storage_failing 1) and recovers by itself once there is room again,
with every spooled change stored exactly once.

A deleted database file: the aggregator notices, logs the path once, says so
in /readyz and /v1/health, stops acknowledging (the agent keeps its spool)
and /v1/history answers 503 with the reason instead of reading a file that a
restart will not find."""

import errno
import os
import re
import select
import subprocess
import uuid

import pytest

import muster_harness as mh
from muster_harness import ChangeMaker, StreamClient, StreamClosed, T, wait_until
from test_durability import (assert_exactly_once, assert_spool_matches_aggregator, flappy_profile,
                             start_all, stop_all, wait_caught_up)

COMPONENTS = ["c1", "c2", "c3"]


@pytest.fixture
def small_fs(tmp_path):
    """A 4 MiB tmpfs of the test's own, unmounted afterwards whatever happens."""
    where = tmp_path / "small"
    where.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(where)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs (needs root): {r.stderr.strip()}")
    try:
        yield str(where)
    finally:
        # Lazy: a daemon that failed to stop may still hold files there.
        subprocess.run(["umount", "-l", str(where)], check=False)


def fill(path):
    """Writes path until the file system is full; returns the bytes written."""
    n = 0
    chunk = b"\0" * 65536
    with open(path, "wb", buffering=0) as f:
        while True:
            try:
                n += f.write(chunk)
            except OSError as e:
                if e.errno != errno.ENOSPC:
                    raise
                if len(chunk) == 1:
                    return n
                chunk = chunk[:len(chunk) // 8 or 1]


def storage_reasons(aggr):
    return [r["message"] for r in aggr.health()["reasons"]
            if r["message"].startswith("storage failing: ")]


def retry_delays(log):
    """The agent's waits before its next attempts, in ms, in order."""
    units = {"ms": 1, "s": 1000, "m": 60000}
    return [int(n) * units[u] for n, u in re.findall(r"; next attempt in (\d+)(ms|s|m)\b", log)]


class ForeignAgent:
    """A foreign client that behaves like an agent: keeps what was not
    acknowledged, reconnects and replays from the Welcome's held_seq."""

    def __init__(self, aggr, node_id, digest, output_bytes):
        self.aggr, self.node_id, self.digest = aggr, node_id, digest
        self.spool = uuid.uuid4().hex
        self.mk = ChangeMaker(COMPONENTS)
        self.output = "x" * output_bytes
        self.cl = None
        self.acked = 0

    def connect(self):
        self.cl = StreamClient(self.aggr.stream_port)
        r = self.cl.hello(self.node_id, "agent", self.spool, self.mk.seq, digest=self.digest)
        if r.WhichOneof("body") != "welcome":
            raise StreamClosed(str(r))
        self.acked = max(self.acked, r.welcome.held_seq)
        self.cl.send_changes([self.mk.made[s] for s in range(r.welcome.held_seq + 1,
                                                            self.mk.seq + 1)])

    def send(self, n):
        changes = self.mk.make(n)
        for c in changes:
            c.output = self.output
        self.cl.send_changes(changes)

    def drain(self):
        """Reads what arrived; False once the aggregator closed the stream."""
        try:
            while self.cl.has_frame() or select.select([self.cl.sock], [], [], 0)[0]:
                env = self.cl.recv(timeout=1)
                if env.WhichOneof("body") == "ack":
                    self.acked = max(self.acked, env.ack.seq)
        except (StreamClosed, ConnectionResetError, OSError):
            return False
        return True


def foreign_agent(env, aggr, node_id, output_bytes=0):
    env.write_profile("agent", mh.profile_ini("agent", [
        (c, dict(check="exec", command="true", interval="10s", rise=1, fall=1)) for c in COMPONENTS
    ], [("work", COMPONENTS)]))
    return ForeignAgent(aggr, node_id, env.profile_digest("agent"), output_bytes)


@pytest.mark.no_valgrind(reason="it measures the agents' back-off waits, which memcheck's slowdown "
                                "distorts (seen: waits that did not grow)")
def test_disk_full_backs_off_reports_and_recovers(env, small_fs, metric):
    togglers = flappy_profile(env)
    fa = foreign_agent(env, None, "f1", output_bytes=2000)
    aggr = env.aggregator(stale_timeout="30s")
    aggr.db = os.path.join(small_fs, "aggr1.db")
    aggr.start()
    fa.aggr = aggr
    ag = env.agent("n1", "flappy", aggr).start()
    start_all(togglers)
    wait_until(ag.spool_ready, 5, desc="agent spool created")
    wait_until(lambda: (ag.acked_seq() or 0) >= 5, 5, desc="5 changes acknowledged")
    fa.connect()
    fa.send(10)
    wait_until(lambda: fa.drain() and fa.acked >= 10, 5, desc="the foreign client acknowledged")

    # The disk fills; the foreign client's big changes need room at once.
    agent_log = ag.proc.stderr_size()
    filler = os.path.join(small_fs, "filler")
    fill(filler)

    def storage_failing():
        if fa.drain():
            try:
                fa.send(20)
            except OSError:
                pass
        return metric_value(aggr, "muster_storage_failing") == 1

    wait_until(storage_failing, 10, interval=0.05, desc="muster_storage_failing 1")
    wait_until(lambda: aggr.get("/readyz").status_code == 503, 5, desc="/readyz not ready")
    rz = aggr.get("/readyz")
    assert rz.json()["ready"] is False
    assert "database or disk is full" in rz.json()["storage"], rz.text
    reasons = storage_reasons(aggr)
    assert reasons and aggr.db in reasons[0] and "full" in reasons[0], aggr.health()["reasons"]
    assert metric_value(aggr, "muster_commit_failures_total") >= 1

    # The agent is dropped at each failed commit: it backs off, with growing
    # gaps, instead of coming back every 50 ms with its whole backlog.
    wait_until(lambda: len(retry_delays(ag.proc.stderr_since(agent_log))) >= 5, 15,
               desc="the agent retried 5 times while the disk is full")
    delays = retry_delays(ag.proc.stderr_since(agent_log))[:5]
    metric("disk full: the agent's first 5 back-off waits", sum(delays), "ms")
    assert all(b >= a for a, b in zip(delays, delays[1:])), f"waits do not grow: {delays}"
    assert delays[-1] >= 4 * delays[0] and sum(delays) >= 700, f"waits too short: {delays}"
    assert ag.proc.alive()

    # Room again: the aggregator recovers by itself, and stores everything.
    os.unlink(filler)
    fa.cl.close()
    wait_until(lambda: aggr.get("/readyz").status_code == 200, 40, interval=0.1,
               desc="/readyz ready again once the disk has room")
    assert metric_value(aggr, "muster_storage_failing") == 0
    wait_until(lambda: not storage_reasons(aggr), 5, desc="the storage reason cleared")
    stop_all(togglers)
    wait_caught_up(ag, aggr, 40)
    assert_spool_matches_aggregator(ag, aggr)

    fa.connect()
    wait_until(lambda: fa.drain() and fa.acked >= fa.mk.seq, 10, desc="the foreign client's replay")
    seqs = [r[0] for r in aggr.query("SELECT seq FROM changes WHERE node_id='f1' AND spool_id=?",
                                     (fa.spool,))]
    assert_exactly_once(seqs, fa.mk.seq, "foreign client after the disk was full")
    assert len(seqs) == fa.mk.seq


def metric_value(aggr, name):
    return metric_of(aggr.get("/metrics").text, name)


def metric_of(text, name):
    m = re.search(rf"^{name} (\S+)$", text, re.M)
    return float(m.group(1)) if m else None


def test_database_deleted_stops_acks_and_says_where(env):
    togglers = flappy_profile(env)
    aggr = env.aggregator(stale_timeout="30s").start()
    ag = env.agent("n1", "flappy", aggr).start()
    start_all(togglers)
    wait_until(ag.spool_ready, 5, desc="agent spool created")
    wait_until(lambda: (ag.acked_seq() or 0) >= 5, 5, desc="5 changes acknowledged")

    log = aggr.log_size()
    os.unlink(aggr.db)
    wait_until(lambda: f"database file {aggr.db} was deleted" in aggr.log_since(log), 5,
               desc="the aggregator logs the deleted database's path")
    assert aggr.log_since(log).count(f"database file {aggr.db} was deleted while open") == 1
    wait_until(lambda: aggr.get("/readyz").status_code == 503, 5, desc="/readyz not ready")
    assert "deleted" in aggr.get("/readyz").json()["storage"]
    reasons = storage_reasons(aggr)
    assert reasons and aggr.db in reasons[0] and "would not survive a restart" in reasons[0], reasons
    assert metric_value(aggr, "muster_storage_failing") == 1

    # Acks stop while the agent goes on spooling. What was in flight when
    # the file went is let through first (the agent's log says each Ack).
    at = ag.max_seq()
    wait_until(lambda: ag.max_seq() >= at + 5, 10, desc="the agent spools on")
    agent_log = ag.proc.stderr_size()
    acked = ag.acked_seq() or 0
    at = ag.max_seq()
    wait_until(lambda: ag.max_seq() >= at + 10, 10, desc="the agent spools 10 more")
    assert "acknowledged seq" not in ag.proc.stderr_since(agent_log), \
        "an Ack after the database file was deleted"
    assert (ag.acked_seq() or 0) <= max(acked, ag_last_ack(ag)), "acked_seq advanced"
    assert ag.max_seq() > (ag.acked_seq() or 0)

    for path in ("/v1/history", "/v1/history/cluster"):
        r = aggr.get(path)
        assert r.status_code == 503, f"{path}: {r.status_code} {r.text}"
        err = r.json()["error"]
        assert err["code"] == "storage_failing" and aggr.db in err["message"], err
    stop_all(togglers)
    assert ag.proc.alive() and aggr.proc.alive()


def ag_last_ack(ag):
    acks = re.findall(r"acknowledged seq (\d+)", ag.proc.stderr_text())
    return int(acks[-1]) if acks else 0
