"""Harness for the leader-election tests: real ZooKeeper servers on loopback,
aggregators that campaign through them, and a foreign protocol client that
fails over between aggregators and keeps its own spool.

ZooKeeper is started as ENVIRONMENT.md says (zkServer.sh does not work here):
java + QuorumPeerMain on a generated zoo.cfg, one dataDir (with myid) per
server under the test's temporary directory. A server is ready when the
four-letter word `srvr` prints a `Mode:` line (`ruok`'s imok is not enough);
an ensemble is ready when every running server answers and exactly one of
them is the leader.

Every java process started here is remembered in a module-level set and
SIGKILLed at interpreter exit, whatever happened to the fixtures.
"""

import atexit
import os
import random
import select
import shutil
import signal
import socket
import sqlite3
import subprocess
import threading
import time
import uuid

import requests

import muster_harness as mh
from muster_harness import T, WaitTimeout, free_port, pb, tail, wait_until

ZK_CLASSPATH = ":".join([
    "/etc/zookeeper/conf",
    "/usr/share/java/zookeeper.jar",
    "/usr/share/java/slf4j-log4j12.jar",
    "/usr/share/java/log4j-1.2.jar",
])
# Small heap, serial GC and the C1 compiler only: the server starts faster
# and three of them fit next to the daemons on a 2-core machine.
JAVA_OPTS = ["-Xms32m", "-Xmx256m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1"]
TICK_MS = 500

_live_java = set()   # pids of every java process started and not yet reaped
_live_lock = threading.Lock()


def _kill_leftovers():
    with _live_lock:
        pids = list(_live_java)
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


atexit.register(_kill_leftovers)


def zookeeper_installed():
    return os.path.exists("/usr/share/java/zookeeper.jar") and shutil.which("java") is not None


def four_letter(port, word="srvr", timeout=0.5, host="127.0.0.1"):
    """Sends a four-letter word to host:port; returns the answer, or
    None when the server does not answer."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as s:
            s.settimeout(timeout)
            s.sendall(word.encode())
            data = b""
            while True:
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
            return data.decode("utf-8", "replace")
    except OSError:
        return None


def srvr_mode(port, host="127.0.0.1"):
    """'leader', 'follower', 'standalone', or None when not serving."""
    text = four_letter(port, "srvr", host=host)
    if not text:
        return None
    for line in text.splitlines():
        if line.startswith("Mode:"):
            return line.split(":", 1)[1].strip()
    return None


class ZKServer:
    """One ZooKeeper server (standalone, or member `sid` of an ensemble)."""

    def __init__(self, base_dir, sid=1, host="127.0.0.1"):
        self.sid = sid
        self.host = host   # its client and quorum address: 127.0.0.1, ::1, ...
        self.netns = None  # a network namespace to run in (netns_harness.py)
        self.dir = os.path.join(base_dir, f"zk{sid}")
        self.data = os.path.join(self.dir, "data")
        self.cfg = os.path.join(self.dir, "zoo.cfg")
        self.log = os.path.join(self.dir, "out.log")
        self.client_port = free_port()
        self.peer_port = free_port()
        self.election_port = free_port()
        self.popen = None
        self._logf = None
        self.starts = 0

    def __repr__(self):
        return f"<zk{self.sid} :{self.client_port} pid={self.pid} mode={self.mode()}>"

    @property
    def pid(self):
        return self.popen.pid if self.popen else None

    @property
    def address(self):
        return f"{mh.url_host(self.host)}:{self.client_port}"

    def new_ports(self):
        self.client_port, self.peer_port, self.election_port = free_port(), free_port(), free_port()

    def write_config(self, members):
        os.makedirs(self.data, exist_ok=True)
        lines = [
            f"tickTime={TICK_MS}",
            f"dataDir={self.data}",
            f"clientPort={self.client_port}",
            f"clientPortAddress={self.host}",
            "admin.enableServer=false",
            "minSessionTimeout=1000",
            "4lw.commands.whitelist=srvr",
            # never purge; no need for snapshots of a few hundred znodes
            "autopurge.purgeInterval=0",
        ]
        if len(members) > 1:
            lines += ["initLimit=10", "syncLimit=5"]
            lines += [f"server.{m.sid}={mh.url_host(m.host)}:{m.peer_port}:{m.election_port}"
                      for m in members]
            with open(os.path.join(self.data, "myid"), "w") as f:
                f.write(f"{self.sid}\n")
        with open(self.cfg, "w") as f:
            f.write("\n".join(lines) + "\n")

    def start(self):
        assert not self.alive(), f"zk{self.sid} is already running"
        self._logf = open(self.log, "ab")
        self._logf.write(f"===== start {self.starts + 1} at {time.strftime('%H:%M:%S')}\n".encode())
        self._logf.flush()
        argv = [*mh.netns_prefix(self.netns), "java", *JAVA_OPTS, "-cp", ZK_CLASSPATH,
                "-Dzookeeper.root.logger=INFO,CONSOLE",
                "org.apache.zookeeper.server.quorum.QuorumPeerMain", self.cfg]
        self.popen = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=self._logf,
                                      stderr=subprocess.STDOUT, start_new_session=True)
        with _live_lock:
            _live_java.add(self.popen.pid)
        self.starts += 1
        return self

    def alive(self):
        return self.popen is not None and self.popen.poll() is None

    def mode(self):
        return srvr_mode(self.client_port, self.host) if self.alive() else None

    def kill(self):
        """SIGKILL (ZooKeeper's data survives: it syncs its log before it
        answers)."""
        if self.popen is None:
            return
        if self.popen.poll() is None:
            try:
                os.kill(self.popen.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.popen.wait()
        with _live_lock:
            _live_java.discard(self.popen.pid)
        if self._logf and not self._logf.closed:
            self._logf.close()

    def pause(self):
        os.kill(self.popen.pid, signal.SIGSTOP)

    def resume(self):
        os.kill(self.popen.pid, signal.SIGCONT)

    def restart(self):
        self.kill()
        return self.start()

    def log_tail(self, lines=40):
        return tail(self.log, lines)

    def address_in_use(self):
        try:
            with open(self.log, "rb") as f:
                return b"Address already in use" in f.read()
        except OSError:
            return False


class ZKEnsemble:
    """1 (standalone) or 3 ZooKeeper servers on loopback."""

    def __init__(self, base_dir, n=3, host="127.0.0.1"):
        assert n in (1, 3), "1 or 3 servers"
        self.base_dir = base_dir
        os.makedirs(base_dir, exist_ok=True)
        self.servers = [ZKServer(base_dir, sid, host) for sid in range(1, n + 1)]

    def __repr__(self):
        return f"<ZKEnsemble {self.servers}>"

    @property
    def hosts(self):
        return ",".join(s.address for s in self.servers)

    def _write_configs(self):
        for s in self.servers:
            s.write_config(self.servers)

    def start(self, timeout=20.0):
        """Starts every server and waits for the quorum. Retries with new
        ports when a port turned out to be taken."""
        for attempt in range(3):
            self._write_configs()
            for s in self.servers:
                s.start()
            try:
                return self.wait_ready(timeout)
            except AssertionError:
                if attempt < 2 and any(s.address_in_use() or not s.alive() for s in self.servers):
                    self.kill_all()
                    for s in self.servers:
                        shutil.rmtree(s.dir, ignore_errors=True)
                        s.new_ports()
                    continue
                raise

    def modes(self, servers=None):
        return {s.sid: s.mode() for s in (servers or self.servers)}

    def ready(self, servers=None):
        """The running servers all serve and (ensemble) exactly one leads."""
        servers = [s for s in (servers or self.servers) if s.alive()]
        if not servers:
            return None
        modes = [s.mode() for s in servers]
        if any(m is None for m in modes):
            return None
        if len(self.servers) == 1:
            return modes == ["standalone"] and servers
        if modes.count("leader") == 1 and modes.count("follower") == len(modes) - 1:
            return servers
        return None

    def wait_ready(self, timeout=20.0):
        t0 = time.monotonic()
        try:
            wait_until(self.ready, timeout, interval=0.05, desc="ZooKeeper quorum serving")
        except WaitTimeout as e:
            raise AssertionError(f"{e}\n{self.report()}") from None
        return time.monotonic() - t0

    def leader(self):
        for s in self.servers:
            if s.alive() and s.mode() in ("leader", "standalone"):
                return s
        return None

    def wait_reelection(self, timeout=10.0):
        """After a server died: exactly one leader and the rest followers
        among the survivors. Returns the seconds waited."""
        return self.wait_ready(timeout)

    def kill(self, server):
        server.kill()

    def kill_all(self):
        for s in self.servers:
            s.kill()

    def restart(self, server, wait=True, timeout=20.0):
        server.restart()
        if wait:
            return self.wait_ready(timeout)

    def restart_all(self, wait=True, timeout=20.0):
        """Starts every server that is down (and waits for the quorum)."""
        for s in self.servers:
            if not s.alive():
                s.start()
        if wait:
            return self.wait_ready(timeout)

    def ensure_healthy(self, timeout=20.0):
        """Brings a possibly damaged ensemble back: resumes paused servers,
        starts dead ones, waits for the quorum."""
        for s in self.servers:
            if s.alive():
                try:
                    s.resume()
                except ProcessLookupError:
                    pass
        if all(s.alive() for s in self.servers) and self.ready():
            return 0.0
        return self.restart_all(wait=True, timeout=timeout)

    def close(self):
        self.kill_all()
        shutil.rmtree(self.base_dir, ignore_errors=True)

    def report(self, lines=25):
        out = []
        for s in self.servers:
            out.append(f"----- zk{s.sid} client {s.client_port} peer {s.peer_port} election "
                       f"{s.election_port} pid {s.pid} alive {s.alive()} mode {s.mode()}")
            out.append(s.log_tail(lines))
        return "\n".join(out)

    # --- a real ZooKeeper client for checks (the Java CLI: ~0.7 s per call)
    def cli(self, *command, timeout=20.0):
        """Runs one zkCli command (e.g. "ls", "/path"); returns its stdout."""
        argv = ["java", *JAVA_OPTS, "-cp", ZK_CLASSPATH, "-Dzookeeper.root.logger=WARN,CONSOLE",
                "org.apache.zookeeper.ZooKeeperMain", "-server", self.hosts, *command]
        r = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout)
        return r.stdout.decode("utf-8", "replace")

    def children(self, path):
        out = self.cli("ls", path)
        for line in reversed(out.splitlines()):
            line = line.strip()
            if line.startswith("[") and line.endswith("]"):
                inner = line[1:-1].strip()
                return sorted(x.strip() for x in inner.split(",") if x.strip())
        raise AssertionError(f"zkCli ls {path}: no listing in output:\n{out}")

    def get(self, path):
        """Returns (data lines as text, stat dict) of a znode."""
        out = self.cli("get", "-s", path)
        lines = out.splitlines()
        try:
            start = max(i for i, ln in enumerate(lines) if ln.startswith("WatchedEvent")) + 1
        except ValueError:
            start = 0
        data, stat = [], {}
        for ln in lines[start:]:
            if " = " in ln and ln.split(" = ", 1)[0] in (
                    "cZxid", "ctime", "mZxid", "mtime", "pZxid", "cversion", "dataVersion",
                    "aclVersion", "ephemeralOwner", "dataLength", "numChildren"):
                k, v = ln.split(" = ", 1)
                stat[k] = v.strip()
            elif not stat and ln.strip() and not ln.startswith("20"):   # skip log lines
                data.append(ln)
        if "cZxid" not in stat:
            raise AssertionError(f"zkCli get -s {path}: no stat in output:\n{out}")
        return "\n".join(data), stat


# ---------------------------------------------------------------- aggregators


class ElectedAggregator(mh.Aggregator):
    """An aggregator that campaigns through ZooKeeper."""

    def __init__(self, env, zk_hosts, cluster, session_timeout="2s", **kw):
        super().__init__(env, cluster=cluster, **kw)
        self.zk_hosts = zk_hosts
        self.session_timeout = session_timeout

    def config_text(self):
        return (super().config_text() + "[zookeeper]\n"
                f"hosts = {self.zk_hosts}\nsession_timeout = {self.session_timeout}\n")

    @property
    def stream_address(self):
        return f"{mh.url_host(self.host)}:{self.stream_port}"

    @property
    def http_address(self):
        return f"{mh.url_host(self.host)}:{self.http_port}"

    def readyz_full(self, timeout=0.5):
        """(status, json or None); (None, None) when nothing answers."""
        try:
            r = mh.http_get(self.http_port, "/readyz", timeout=timeout, host=self.host)
        except requests.RequestException:
            return None, None
        try:
            return r.status_code, r.json()
        except ValueError:
            return r.status_code, None

    def readyz(self):
        """The readyz body when it says ready (any role), else None."""
        st, j = self.readyz_full()
        if st == 200 and isinstance(j, dict) and j.get("ready") is True:
            return j
        return None

    def role(self):
        j = self.readyz()
        return j.get("role") if j else None

    def is_leader(self):
        return self.role() == "leader"

    def wait_ready(self, timeout=10.0):
        deadline = time.monotonic() + T(timeout)
        while time.monotonic() < deadline:
            if self.proc is not None and not self.proc.alive():
                raise AssertionError(f"{self.proc.name} exited with {self.proc.poll()} before it was "
                                     f"ready:\n{tail(self.proc.stderr_path, 30)}")
            if self.readyz():
                return
            time.sleep(0.02)
        raise AssertionError(f"{self.id}: GET /readyz never answered 200 {{\"ready\":true}} within "
                             f"{T(timeout)}s; last: {self.readyz_full()}")

    def alive(self):
        return self.proc is not None and self.proc.alive()

    def sigterm(self):
        """SIGTERM without waiting (stop() collects the exit code later)."""
        self.proc.terminated = True
        self.proc.signal(signal.SIGTERM)

    def pause(self):
        """SIGSTOP, and waits until the kernel shows every thread stopped."""
        self.proc.signal(signal.SIGSTOP)
        wait_until(self.stopped, 2, interval=0.005, desc=f"{self.id} stopped by SIGSTOP")

    def stopped(self):
        try:
            with open(f"/proc/{self.proc.pid}/stat") as f:
                return f.read().rsplit(")", 1)[1].split()[0] == "T"
        except OSError:
            return False

    def resume(self):
        self.proc.signal(signal.SIGCONT)

    def restart(self, wait=True):
        """Starts again on the same ports and the same database."""
        self.start(wait=wait, new_ports_on_conflict=False)
        return self


def leader_of(aggrs):
    """The aggregators whose /readyz says role leader."""
    return [a for a in aggrs if a.alive() and a.role() == "leader"]


def wait_one_leader(aggrs, timeout=15.0, settled=True):
    """Waits until exactly one of aggrs (those alive) says leader and, when
    settled, every other one says follower and names that leader. Returns
    (leader, readyz bodies by id)."""
    last = {}

    def check():
        views = {a.id: (a.readyz() if a.alive() else "dead") for a in aggrs}
        last["v"] = views
        leaders = [a for a in aggrs if isinstance(views[a.id], dict)
                   and views[a.id].get("role") == "leader"]
        if len(leaders) != 1:
            return None
        ld = leaders[0]
        if settled:
            for a in aggrs:
                v = views[a.id]
                if a is ld or v == "dead":
                    continue
                if not (isinstance(v, dict) and v.get("role") == "follower"
                        and (v.get("leader") or {}).get("id") == ld.id):
                    return None
        return ld, views
    try:
        return wait_until(check, timeout, interval=0.02, desc="exactly one leader")
    except WaitTimeout as e:
        raise WaitTimeout(f"{e}\nlast readyz: {last.get('v')}") from None


def spool_rows_in(aggr, node_id, spool_id, cols="seq"):
    return aggr.query(f"SELECT {cols} FROM changes WHERE node_id=? AND spool_id=? ORDER BY seq, id",
                      (node_id, spool_id))


def check_seqs_present(aggr, node_id, spool_id, upto, what):
    """Every seq 1..upto of (node, spool) is in aggr's SQLite exactly once.
    Returns a list of problems (empty when all is well)."""
    seqs = [r[0] for r in spool_rows_in(aggr, node_id, spool_id)]
    problems = []
    counts = {}
    for s in seqs:
        counts[s] = counts.get(s, 0) + 1
    missing = [s for s in range(1, upto + 1) if s not in counts]
    dups = sorted(s for s, n in counts.items() if n > 1)
    if missing:
        problems.append(f"{what}: {len(missing)} of seq 1..{upto} missing from {aggr.id}'s "
                        f"database, e.g. {missing[:15]}")
    if dups:
        problems.append(f"{what}: seq stored more than once in {aggr.id}'s database: {dups[:15]}")
    return problems


# ---------------------------------------------------------------- the foreign client


class FailoverClient:
    """A foreign agent on Google's protobuf runtime, on its own thread, that
    behaves like a real agent around failovers: it keeps every change it
    made (its spool), starts with the configured aggregators in turn,
    follows Redirects, retries on Reject(NOT_LEADER), replays from
    Welcome.held_seq, sends a snapshot, then streams new changes and
    heartbeats. Every frame that matters is recorded with its time and the
    connection it came on, so tests can account for every Ack.

    silence: seconds without any frame after which it drops the connection
    and tries the others (None: never, i.e. it stays on a paused peer)."""

    def __init__(self, name, targets, digest, role="agent", components=("c1", "c2", "c3"),
                 batch=4, period=0.02, heartbeat=0.2, silence=0.6, port_names=None):
        self.name = name
        self.node_id = name
        self.role = role
        self.digest = digest
        self.targets = list(targets)           # stream ports
        self.port_names = dict(port_names or {})
        self.batch = batch
        self.period = period
        self.heartbeat = heartbeat
        self.silence = silence
        self.spool_id = uuid.uuid4().hex
        self.boot_id = str(uuid.uuid4())
        self.mk = mh.ChangeMaker(components, boot_id=self.boot_id)
        self.producing = threading.Event()
        self.producing.set()
        self._stop = threading.Event()
        self.lock = threading.Lock()
        self.conn_no = 0
        self.current = None          # (conn_no, port, epoch, leader_id) while welcomed
        self.max_ack = 0             # highest Ack ever received, from anyone
        self.acks = []               # (t_mono, conn_no, port, seq)
        self.welcomes = []           # (t_mono, conn_no, port, leader_id, epoch, held_seq, last_seq)
        self.redirects = []          # (t_mono, conn_no, port, stream_address, leader_id, epoch)
        self.rejects = []            # (t_mono, conn_no, port, code, reason)
        self.closes = []             # (t_mono, conn_no, port, why)
        self.violations = []         # protocol promises broken by an aggregator
        self.thread = threading.Thread(target=self._run, name=f"client-{name}", daemon=True)

    # --- control
    def start(self):
        self.thread.start()
        return self

    def stop(self):
        self._stop.set()
        self.thread.join(5)

    def pause_production(self):
        self.producing.clear()

    def resume_production(self):
        self.producing.set()

    def name_of(self, port):
        return self.port_names.get(port, str(port))

    # --- observations
    def sent_seq(self):
        return self.mk.seq

    def acks_since(self, t_mono, conn_no=None):
        with self.lock:
            return [a for a in self.acks if a[0] >= t_mono and (conn_no is None or a[1] == conn_no)]

    def welcomes_since(self, t_mono, port=None):
        with self.lock:
            return [w for w in self.welcomes if w[0] >= t_mono and (port is None or w[2] == port)]

    def last_ack_on(self, conn_no):
        with self.lock:
            v = [a[3] for a in self.acks if a[1] == conn_no]
        return max(v) if v else 0

    def caught_up(self):
        """Welcomed, and the current connection acknowledged everything made."""
        with self.lock:
            cur = self.current
        return bool(cur) and self.last_ack_on(cur[0]) >= self.mk.seq > 0

    def wait_welcomed_by(self, port, after=0.0, timeout=10.0):
        return wait_until(lambda: self.welcomes_since(after, port), timeout, interval=0.01,
                          desc=f"{self.name} welcomed by {self.name_of(port)}")

    def wait_acks(self, n, after=0.0, port=None, timeout=10.0):
        def enough():
            with self.lock:
                return len([a for a in self.acks if a[0] >= after and
                            (port is None or a[2] == port)]) >= n
        return wait_until(enough, timeout, interval=0.01,
                          desc=f"{self.name}: {n} Acks" + (f" from {self.name_of(port)}" if port else ""))

    def summary(self):
        with self.lock:
            return (f"{self.name}: sent {self.mk.seq}, max ack {self.max_ack}, "
                    f"{len(self.welcomes)} welcomes {[(self.name_of(w[2]), w[4], w[5]) for w in self.welcomes][-6:]}, "
                    f"{len(self.redirects)} redirects, {len(self.rejects)} rejects "
                    f"{[r[3:] for r in self.rejects][-3:]}, closes {[(self.name_of(c[2]), c[3]) for c in self.closes][-4:]}, "
                    f"violations {self.violations[:5]}")

    # --- the thread
    def _record(self, lst, item):
        with self.lock:
            lst.append(item)

    def _run(self):
        idx = random.randrange(len(self.targets))
        redirect_to = None
        redirects_in_row = 0
        rnd = random.Random()
        while not self._stop.is_set():
            if redirect_to is not None:
                port, redirect_to = redirect_to, None
            else:
                port = self.targets[idx % len(self.targets)]
                idx += 1
            self.conn_no += 1
            conn_no = self.conn_no
            outcome = self._session(port, conn_no)
            if outcome and outcome[0] == "redirect":
                redirects_in_row += 1
                if redirects_in_row <= 3:
                    redirect_to = outcome[1]
                    continue
            elif outcome and outcome[0] == "welcomed":
                redirects_in_row = 0
            # back off a little, with jitter, before the next try
            self._stop.wait(rnd.uniform(0.02, 0.1))

    def _session(self, port, conn_no):
        try:
            cl = mh.StreamClient(port, timeout=0.5)
        except OSError as e:
            self._record(self.closes, (time.monotonic(), conn_no, port, f"connect: {e}"))
            return None
        try:
            return self._converse(cl, port, conn_no)
        except (mh.StreamClosed, OSError, socket.timeout) as e:
            self._record(self.closes, (time.monotonic(), conn_no, port, f"{type(e).__name__}: {e}"))
            return None
        finally:
            with self.lock:
                if self.current and self.current[0] == conn_no:
                    self.current = None
            cl.close()

    def _converse(self, cl, port, conn_no):
        cl.send(pb().Envelope(hello=pb().Hello(
            node_id=self.node_id, role=self.role, profile_digest=self.digest,
            hostname="foreign-" + self.node_id, boot_id=self.boot_id,
            boot_time_ms=mh.now_ms() - 60000, agent_version="pytest-failover",
            spool_id=self.spool_id, last_seq=self.mk.seq, protocol_version=1)))
        env = cl.recv_kind(("welcome", "redirect", "reject"), timeout=2.0)
        kind = env.WhichOneof("body")
        now = time.monotonic()
        if kind == "redirect":
            rd = env.redirect
            self._record(self.redirects, (now, conn_no, port, rd.stream_address, rd.leader_id,
                                          rd.epoch))
            try:
                host, p = rd.stream_address.rsplit(":", 1)
                return ("redirect", int(p))
            except ValueError:
                self.violations.append(f"Redirect without a usable address: {rd}")
                return None
        if kind == "reject":
            self._record(self.rejects, (now, conn_no, port, env.reject.code, env.reject.reason))
            return ("reject", env.reject.code)
        w = env.welcome
        held = w.held_seq
        self._record(self.welcomes, (now, conn_no, port, w.leader_id, w.epoch, held, self.mk.seq))
        with self.lock:
            self.current = (conn_no, port, w.epoch, w.leader_id)
        if held > self.mk.seq:
            self.violations.append(f"{self.name_of(port)} Welcome.held_seq {held} > our last seq "
                                   f"{self.mk.seq}")
            held = self.mk.seq
        # replay what the aggregator does not hold, then the snapshot
        for s in range(held + 1, self.mk.seq + 1, 200):
            cl.send_changes([self.mk.made[i] for i in range(s, min(s + 200, self.mk.seq + 1))])
        cl.send(self.mk.snapshot())
        last_rx = time.monotonic()
        last_hb = 0.0
        while not self._stop.is_set():
            now = time.monotonic()
            if self.producing.is_set():
                cl.send_changes(self.mk.make(self.batch))
            if now - last_hb >= self.heartbeat:
                cl.send_heartbeat(self.mk.seq)
                last_hb = now
            deadline = now + self.period
            while True:
                timeout = max(0.0, deadline - time.monotonic())
                if not cl.has_frame() and not select.select([cl.sock], [], [], timeout)[0]:
                    break
                env = cl.recv(timeout=1.0)
                last_rx = time.monotonic()
                k = env.WhichOneof("body")
                if k == "ack":
                    seq = env.ack.seq
                    if seq > self.mk.seq:
                        self.violations.append(f"{self.name_of(port)} acknowledged {seq} > sent "
                                               f"{self.mk.seq}")
                    with self.lock:
                        self.acks.append((last_rx, conn_no, port, seq))
                        self.max_ack = max(self.max_ack, seq)
                elif k == "reject":
                    self._record(self.rejects, (last_rx, conn_no, port, env.reject.code,
                                                env.reject.reason))
                    return ("reject", env.reject.code)
                elif k != "heartbeat":
                    self.violations.append(f"unexpected frame from {self.name_of(port)}: {k}")
            if self.silence is not None and time.monotonic() - last_rx > self.silence:
                self._record(self.closes, (time.monotonic(), conn_no, port, "silence"))
                return ("silence",)
        return ("stopped",)

    # --- final accounting
    def check_in(self, aggr, upto=None):
        """Problems (list of strings) with seq 1..upto (default: the highest
        Ack ever received) in aggr's database: each exactly once and with the
        content this client sent."""
        upto = self.max_ack if upto is None else upto
        problems = check_seqs_present(aggr, self.node_id, self.spool_id, upto, self.name)
        rows = spool_rows_in(aggr, self.node_id, self.spool_id, "seq, component, to_state")
        for seq, comp, to in rows:
            c = self.mk.made.get(seq)
            if c is None:
                problems.append(f"{self.name}: {aggr.id} holds seq {seq}, which was never sent")
            elif (comp, to) != (c.component, mh.state_name(c.to)):
                problems.append(f"{self.name}: seq {seq} stored as {(comp, to)}, sent "
                                f"{(c.component, mh.state_name(c.to))}")
        return problems


# ---------------------------------------------------------------- real agents


def agent_check_in(agent, aggr, upto=None):
    """Problems with the agent's spool rows 1..upto (default: its acked_seq)
    in aggr's database: every one present exactly once, with the same
    content."""
    sid = agent.spool_id()
    upto = (agent.acked_seq() or 0) if upto is None else upto
    problems = check_seqs_present(aggr, agent.node_id, sid, upto, f"agent {agent.node_id}")
    cols = "seq, component, to_state, at_ms, output"
    srows = {r[0]: tuple(r) for r in agent.spool_query(f"SELECT {cols} FROM changes WHERE seq<=?",
                                                         (upto,))}
    diff = [(srows[r[0]], tuple(r)) for r in spool_rows_in(aggr, agent.node_id, sid, cols)
            if r[0] in srows and tuple(r) != srows[r[0]]]
    if diff:
        problems.append(f"agent {agent.node_id}: rows differ (spool, {aggr.id}): {diff[:3]}")
    return problems


def safe_acked(agent):
    try:
        return agent.acked_seq() or 0
    except sqlite3.Error:
        return 0


def safe_held(aggr, node_id, spool_id):
    try:
        return aggr.held_seq(node_id, spool_id) or 0
    except sqlite3.Error:
        return 0


def stream_log(agent, offset=0, limit=40):
    """The agent's connection story since offset (its stderr): connects,
    Redirects, Rejects, Welcomes and backoffs, without per-change lines."""
    try:
        text = agent.proc.stderr_since(offset)
    except OSError as e:
        return f"<cannot read the agent's log: {e}>"
    keep = [ln for ln in text.splitlines() if "stream:" in ln and not any(
        x in ln for x in ("queued changes", "acknowledged seq", "queued snapshot"))]
    return "\n".join(keep[:limit])
