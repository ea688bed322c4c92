"""Crowds of idle or slow connections against the aggregator: the connection
caps fit inside the open file limit the daemon has, a failed accept pauses
the agent listener instead of spinning, each client address has its own HTTP
cap, and a request that trickles in is closed at http_timeout however slowly
its bytes come. Meanwhile /healthz answers and agents are acknowledged
(docs/security.md, "Connection caps")."""
import os
import re
import resource
import select
import socket
import time

import pytest
import requests

import muster_harness as mh
from muster_harness import ChangeMaker
from test_limits import COMPONENTS, _try_welcome, limit_hits, welcomed
from test_limits import start as limits_start


def start(env, nofile=None, **config):
    """test_limits' aggregator; with nofile, started under that
    RLIMIT_NOFILE (soft and hard: it cannot raise it)."""
    plain = mh.Aggregator.argv
    if nofile:
        mh.Aggregator.argv = lambda self, *more: ["prlimit", f"--nofile={nofile}:{nofile}", "--",
                                                  *plain(self, *more)]
    try:
        return limits_start(env, **config)
    finally:
        mh.Aggregator.argv = plain


def ack_latency(cl, mk):
    """Sends one change and returns how long its Ack took."""
    changes = mk.make(1)
    t0 = time.monotonic()
    cl.send_changes(changes)
    cl.wait_ack(changes[-1].seq)
    return time.monotonic() - t0


def healthz_latency(aggr):
    t0 = time.monotonic()
    r = requests.get(f"http://127.0.0.1:{aggr.http_port}/healthz", timeout=mh.T(2))
    assert r.status_code == 200, r.text
    return time.monotonic() - t0


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def connect_from(addr, port):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind((addr, 0))
    s.settimeout(mh.T(3))
    s.connect(("127.0.0.1", port))
    return s


def crowd(port, addrs, per_addr):
    return [connect_from(a, port) for a in addrs for _ in range(per_addr)]


def closed_by_server(s):
    r, _, _ = select.select([s], [], [], 0)
    if not r:
        return False
    try:
        return s.recv(1) == b""
    except (ConnectionResetError, BrokenPipeError):
        return True


def count_closed(socks):
    return sum(1 for s in socks if closed_by_server(s))


def close_all(socks):
    for s in socks:
        s.close()


@pytest.mark.no_valgrind(reason="measures the daemon's CPU use and open file limit; valgrind "
                                "spends CPU of its own and keeps descriptors under the limit")
def test_idle_crowds_fit_the_fd_limit_and_leave_room(env):
    # 400 descriptors: the default caps (20,000 streams and 20,000 HTTP
    # connections) are lowered to fit, with one warning.
    aggr = start(env, nofile=400, hello_timeout="30s", http_timeout="30s",
                 max_connections_per_address=40, http_max_connections_per_address=40)
    log = aggr.proc.stderr_text()
    assert "lowering max_connections from 20000 to 160 and http_max_connections from 20000 to 160" \
        in log, log
    agent = welcomed(aggr, "n1")
    mk = ChangeMaker(COMPONENTS)
    ack_latency(agent, mk)

    # Idle HTTP connections and pre-Hello streams from three addresses, 60
    # each: every address hits its cap (40), the rest are closed at accept.
    attackers = ["127.0.0.2", "127.0.0.3", "127.0.0.4"]
    http = crowd(aggr.http_port, attackers, 60)
    streams = crowd(aggr.stream_port, attackers, 60)
    mh.wait_until(lambda: limit_hits(aggr, "stream_connections_per_address") >= 60, 5,
                  desc="60 streams refused at the per-address cap")
    mh.wait_until(lambda: limit_hits(aggr, "http_connections") >= 60, 5,
                  desc="60 HTTP connections refused at the per-address cap")
    mh.wait_until(lambda: count_closed(http) + count_closed(streams) >= 120, 5,
                  desc="the refused connections closed")

    # Others are served: /healthz, an agent that was there, a new agent.
    assert healthz_latency(aggr) < mh.T(0.5)
    assert ack_latency(agent, mk) < mh.T(0.5)
    newcomer = welcomed(aggr, "n2")
    assert ack_latency(newcomer, ChangeMaker(COMPONENTS)) < mh.T(0.5)

    # Two more addresses fill the stream cap (160): refusals are logged once
    # a second, not once each, and the agents already in are still served.
    more = crowd(aggr.stream_port, ["127.0.0.5", "127.0.0.6"], 40)
    mh.wait_until(lambda: limit_hits(aggr, "stream_connections") >= 1, 5,
                  desc="a stream refused at max_connections")
    assert ack_latency(agent, mk) < mh.T(0.5)
    assert healthz_latency(aggr) < mh.T(0.5)

    # A window with the crowds idle: the daemon idles too.
    cpu0, t0 = cpu_seconds(aggr.proc.pid), time.monotonic()
    time.sleep(1.0)  # the scenario: a second in which nothing may spin
    cpu = (cpu_seconds(aggr.proc.pid) - cpu0) / (time.monotonic() - t0)
    assert cpu < 0.3, f"the aggregator used {cpu:.0%} of a CPU with idle crowds connected"
    log = aggr.proc.stderr_text()
    assert log.count("max_connections); refusing") <= 3, log[-3000:]
    assert log.count("max_connections_per_address); refusing") <= 5, log[-3000:]
    assert log.count("connection limit. Closing") <= 12, log[-3000:]
    close_all(http + streams + more)


@pytest.mark.no_valgrind(reason="measures the daemon's CPU use and open file limit; valgrind "
                                "spends CPU of its own and keeps descriptors under the limit")
def test_stream_listener_pauses_when_descriptors_run_out(env):
    aggr = start(env, hello_timeout="30s")
    agent = welcomed(aggr, "n1")
    mk = ChangeMaker(COMPONENTS)
    ack_latency(agent, mk)
    pid = aggr.proc.pid
    soft, hard = resource.prlimit(pid, resource.RLIMIT_NOFILE)

    # The limit drops under what the daemon holds (an operator's prlimit, a
    # leak elsewhere): every accept now fails with EMFILE.
    in_use = len(os.listdir(f"/proc/{pid}/fd"))
    resource.prlimit(pid, resource.RLIMIT_NOFILE, (in_use, hard))
    log_at = aggr.log_size()
    try:
        waiting = [connect_from("127.0.0.2", aggr.stream_port) for _ in range(20)]
        cpu0, t0 = cpu_seconds(pid), time.monotonic()
        mh.wait_until(lambda: "cannot accept connections" in aggr.log_since(log_at), 3,
                      desc="the accept failure logged")
        # The agent already connected is served while the listener pauses.
        for _ in range(5):
            assert ack_latency(agent, mk) < mh.T(0.5)
        time.sleep(1.5)  # the scenario: EMFILE for a while, which must not spin
        cpu = (cpu_seconds(pid) - cpu0) / (time.monotonic() - t0)
        log = aggr.log_since(log_at)
        assert cpu < 0.3, f"the aggregator used {cpu:.0%} of a CPU while accept failed"
        assert log.count("cannot accept connections") <= 3, log[-3000:]
        assert len(log) < 4000, f"{len(log)} bytes of log in 2 s of EMFILE"
        assert "Too many open files" in log, log[-2000:]
    finally:
        resource.prlimit(pid, resource.RLIMIT_NOFILE, (soft, hard))
    # Descriptors back: the listener resumes within its pause (at most 1 s).
    newcomer = mh.wait_until(lambda: _try_welcome(aggr, "n2"), 3, desc="a new agent welcomed")
    assert ack_latency(newcomer, ChangeMaker(COMPONENTS)) < mh.T(0.5)
    close_all(waiting)


def test_slowloris_requests_are_closed_at_http_timeout(env):
    aggr = start(env, http_timeout="2s")
    agent = welcomed(aggr, "n1")
    mk = ChangeMaker(COMPONENTS)
    ack_latency(agent, mk)
    index = aggr.get("/v1/health").headers["X-Muster-Index"]
    # A blocking read that waits longer than http_timeout: its request is
    # in, so it is not cut short.
    parked = connect_from("127.0.0.1", aggr.http_port)
    parked.sendall(f"GET /v1/health?index={index}&wait=4s HTTP/1.1\r\nHost: t\r\n\r\n".encode())

    request = b"GET /v1/health HTTP/1.1\r\nHost: t\r\nX-Slow: " + b"a" * 200
    slow = [connect_from(f"127.0.0.{2 + i % 4}", aggr.http_port) for i in range(40)]
    started = {s: time.monotonic() for s in slow}
    took = {}
    sent = 0
    deadline = time.monotonic() + mh.T(8)
    while len(took) < len(slow) and time.monotonic() < deadline:
        for s in slow:
            if s in took:
                continue
            if closed_by_server(s):
                took[s] = time.monotonic() - started[s]
                continue
            try:
                s.sendall(request[sent:sent + 1])  # one header byte every 0.5 s
            except (BrokenPipeError, ConnectionResetError):
                took[s] = time.monotonic() - started[s]
        sent += 1
        assert healthz_latency(aggr) < mh.T(0.5)
        time.sleep(0.5)  # the scenario: the trickle's pace
    assert len(took) == len(slow), f"{len(slow) - len(took)} slow requests still open " \
        f"{mh.T(8)}s later"
    worst = max(took.values())
    assert worst < mh.T(2 + 1.5), f"a slow request stayed open {worst:.1f}s with http_timeout=2s"
    assert min(took.values()) >= 1.5, "closed before http_timeout"
    assert ack_latency(agent, mk) < mh.T(0.5)
    mh.wait_until(lambda: limit_hits(aggr, "http_timeout") >= len(slow), 3)
    assert aggr.proc.stderr_text().count("whose request did not all arrive") <= 8

    # The parked read was answered by the change above or by its wait, and
    # not closed at http_timeout.
    parked.settimeout(mh.T(6))
    assert parked.recv(64).startswith(b"HTTP/1.1 200"), "the parked read was closed"
    parked.close()
    close_all(slow)


def test_idle_crowd_from_many_addresses_makes_room_for_healthz(env):
    """More idle connections than http_max_connections, each address within
    its own cap: the oldest connections still waiting for their request are
    closed to make room, so /healthz keeps answering at once instead of
    being shut out until http_timeout."""
    aggr = start(env, http_timeout="30s", http_max_connections=100,
                 http_max_connections_per_address=40)
    socks = []
    try:
        socks = crowd(aggr.http_port, [f"127.0.0.{i}" for i in range(2, 6)], 40)  # 160
        for _ in range(5):
            assert healthz_latency(aggr) < mh.T(0.5)
        evicted = mh.wait_until(lambda: limit_hits(aggr, "http_idle_evicted"), 2,
                                desc="idle connections closed to make room")
        # Room was made from the oldest: at least the 60 over the cap, and
        # the crowd's newest are still open.
        assert evicted >= 60, evicted
        assert mh.wait_until(lambda: count_closed(socks) >= 60, 2,
                             desc="the oldest idle connections closed"), count_closed(socks)
        assert not closed_by_server(socks[-1]), "the newest idle connection was closed"
        mh.wait_until(lambda: "oldest connections still waiting for their request"
                      in aggr.proc.stderr_text(), 2, desc="one log line says so")
    finally:
        close_all(socks)


def test_a_cap_that_fits_is_kept_when_the_fd_limit_is_small(env):
    """With 1000 descriptors and http_max_connections = 100, only the
    stream cap is lowered (the HTTP one fits in half of what is left), and
    the warning names only what changed."""
    aggr = limits_start(env, http_max_connections=100)   # writes its config
    aggr.stop()
    rc, out, err, _ = mh.run_to_completion(
        ["prlimit", "--nofile=1000:1000", "--", *aggr.argv("--check-config")], timeout=5)
    assert rc == 0, err
    lines = [l for l in err.splitlines() if "open file limit" in l]
    assert len(lines) == 1, err
    # 1000 less the reserve (under valgrind, less its own descriptors too)
    m = re.search(r"lowering max_connections from 20000 to (\d+) so that", lines[0])
    assert m and 700 <= int(m.group(1)) <= 900, lines[0]
    assert "http_max_connections" not in lines[0], lines[0]
