"""A Jepsen-style nemesis and checker for muster, on netns_harness's
topology: three ZooKeeper servers, three aggregators and a few real agents,
each in its own namespace, every address IPv6.

The nemesis applies, on a schedule drawn from a seeded random.Random, one
fault at a time, holds it, heals it, and lets the cluster settle:

  leader-zk      the leader cut off from every ZooKeeper server, not from agents
  leader-agents  the leader cut off from every agent, not from ZooKeeper
  minority       the leader and one ZooKeeper server apart from the rest
  oneway         packets from the leader to ZooKeeper dropped (one way)
  bridge         the leader with zk1, the other aggregators with zk3; zk2
                 sees both sides
  loss           5-30% of packets lost between the leader and everyone
  kill9          kill -9 of the leader, restarted after the hold
  pause          SIGSTOP of the leader for the hold, then SIGCONT

Agents produce changes throughout (exec checks on flag files toggled at
random). A reader in the observer namespace asks every aggregator for
/v1/health every 50 ms without following redirects, recording each answer
with its send and receive times.

The checker, after the final heal, proves from the agents' spools, every
aggregator's database and the recorded reads:

  lost       every change an agent holds as acknowledged is in the final
             leader's database;
  doubled    no (node, spool, seq) is stored twice in any database;
  overlap    leaders' acknowledgements never overlap in time: for epochs
             e1 < e2, every change epoch e1 received came before any that
             e2 received (received_ms, one clock: one machine);
  stale read no aggregator answered a data read as leader with an epoch
             older than one already answered before the read was sent;
  converge   every agent is acknowledged by the final leader up to its
             last change within CONVERGE_S of the heal;
  fresh      the final verdicts (cluster and every node) equal what a new
             leader computes from the same history after the old one stops.

It returns a summary (faults applied, changes acknowledged, lost, doubled,
the longest time no aggregator answered as leader) and the violations,
each naming the seed."""

import collections
import json
import random
import signal
import threading
import time

import requests

import muster_harness as mh
import netns_harness as nh
import zk_harness as zh
from muster_harness import wait_until

FAULTS = ("leader-zk", "leader-agents", "minority", "oneway", "bridge", "loss", "kill9", "pause")
SESSION = "2s"
CONVERGE_S = 35.0   # the agents' reconnect back-off is at most 30 s


class Reader:
    """Asks each aggregator for /v1/health every period, in a thread of
    its own (born in the observer's namespace)."""

    def __init__(self, aggrs, period=0.05):
        self.aggrs = aggrs
        self.period = period
        self.answers = []        # (t_send, t_recv, aggr id, status, leader id, epoch)
        self.t0 = time.monotonic()
        self._stop = threading.Event()
        self._session = requests.Session()
        self._session.trust_env = False
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            for a in self.aggrs:
                t0 = time.monotonic()
                try:
                    r = self._session.get(a.url("/v1/health"), timeout=0.5, allow_redirects=False)
                    st = r.status_code
                    ld = (r.json().get("leader") or {}) if st == 200 else {}
                except (requests.RequestException, ValueError):
                    st, ld = None, {}
                self.answers.append((t0, time.monotonic(), a.id, st, ld.get("id"), ld.get("epoch")))
            self._stop.wait(self.period)

    def start(self):
        self.t0 = time.monotonic()
        self.thread.start()
        return self

    def stop(self):
        self._stop.set()
        self.thread.join(5)

    def stale_reads(self):
        """Leader answers older than an epoch already served before they were asked."""
        served = sorted((t1, ep, aid) for (_, t1, aid, st, _, ep) in self.answers if st == 200)
        bad = []
        for (t0, t1, aid, st, lid, ep) in self.answers:
            if st != 200:
                continue
            newer = [(e, tr, who) for (tr, e, who) in served if tr < t0 and e > ep]
            if newer:
                e, tr, who = max(newer)
                bad.append(f"{aid} answered as leader with epoch {ep} at {t0 - self.t0:+.3f}s, "
                           f"after {who} had answered with epoch {e} at {tr - self.t0:+.3f}s")
            if lid != aid:
                bad.append(f"{aid} answered a data read naming leader {lid}")
        return bad

    def longest_unavailable(self):
        ok = sorted(t1 for (_, t1, _, st, _, _) in self.answers if st == 200)
        gaps = [b - a for a, b in zip(ok, ok[1:])]
        return max(gaps, default=0.0)


class Cluster:
    def __init__(self, env, topo, cluster_name, n_agents, rnd):
        self.env, self.topo, self.rnd = env, topo, rnd
        self.zk = zh.ZKEnsemble(env.path("zk"), n=3)
        for i, s in enumerate(self.zk.servers, 1):
            s.host = topo.v6(f"zk{i}")
            s.netns = topo.ns(f"zk{i}")
            s.client_port, s.peer_port, s.election_port = 2181, 2888, 3888
        self.flags = []
        components = []
        for c in ("c1", "c2"):
            components.append((c, dict(check="exec", command=f"test -e {env.path(c + '.flag')}",
                                       interval="100ms", timeout="2s", rise=1, fall=1)))
        env.write_profile("agent", mh.profile_ini("agent", components, [("s", ["c1", "c2"])]))
        self.aggrs = []
        for i in range(1, 4):
            a = zh.ElectedAggregator(env, None, cluster_name, session_timeout=SESSION,
                                     id=f"a{i}", host=topo.v6(f"a{i}"), log_level="info")
            a.netns = topo.ns(f"a{i}")
            a.stream_port, a.http_port = 7610, 7611
            self.aggrs.append(a)
        self.agents = []
        for i in range(1, n_agents + 1):
            g = mh.Agent(env, f"n{i}", "agent", self.aggrs, log_level="info")
            g.netns = topo.ns(f"n{i}")
            self.agents.append(g)
        self.togglers = [mh.FlagToggler(env.path(f"{c}.flag"), period=0.4) for c in ("c1", "c2")]

    def start(self):
        self.zk.start()
        for a in self.aggrs:
            a.zk_hosts = self.zk.hosts
            a.start(wait=False, new_ports_on_conflict=False)
        for a in self.aggrs:
            a.wait_ready(20)
        zh.wait_one_leader(self.aggrs, timeout=20)
        for g in self.agents:
            g.start()
        for t in self.togglers:
            t.start()

    def leader(self):
        ls = zh.leader_of(self.aggrs)
        return ls[0] if ls else None


def apply_fault(c, kind, hold, rnd, log):
    topo = c.topo
    ld = c.leader()
    if ld is None:
        log.append((time.monotonic(), kind, "skipped: no leader"))
        return
    zks = [f"zk{i}" for i in range(1, 4)]
    agents = [g.node_id for g in c.agents]
    others = [a.id for a in c.aggrs if a is not ld]
    log.append((time.monotonic(), kind, f"leader {ld.id}, hold {hold:.1f}s"))
    if kind == "kill9":
        ld.kill9()
        time.sleep(hold)
        ld.start(wait=False, new_ports_on_conflict=False)
        return
    if kind == "pause":
        ld.proc.signal(signal.SIGSTOP)
        time.sleep(hold)
        ld.proc.signal(signal.SIGCONT)
        return
    if kind == "leader-zk":
        topo.cut([ld.id], zks)
    elif kind == "leader-agents":
        topo.cut([ld.id], agents)
    elif kind == "minority":
        topo.cut([ld.id, zks[0]], [*others, *zks[1:]])
    elif kind == "oneway":
        for z in zks:
            topo.drop(z, ld.id)
    elif kind == "bridge":
        topo.cut([ld.id, "zk1"], [*others, "zk3"])
    elif kind == "loss":
        topo.cut([ld.id], [*others, *zks, *agents], percent=rnd.randint(5, 30))
    time.sleep(hold)
    topo.heal()


def until_whole(c, timeout=40.0):
    """Seconds from a heal until one leader is settled and every agent has
    been acknowledged past what it held at the heal (None: not in timeout)."""
    t0 = time.monotonic()
    marks = {g.node_id: g.max_seq() for g in c.agents}

    def whole():
        live = [a for a in c.aggrs if a.alive()]
        try:
            zh.wait_one_leader(live, timeout=0.01)
        except mh.WaitTimeout:
            return False
        return all(g.acked_seq() >= marks[g.node_id] for g in c.agents)
    try:
        wait_until(whole, timeout, interval=0.05, scale=False)
    except mh.WaitTimeout:
        return None
    return round(time.monotonic() - t0, 2)


def check(c, reader, seed, heal_t):
    """The checker; returns (summary dict, violations)."""
    bad = []
    for t in c.togglers:
        t.stop()
    ld, _ = zh.wait_one_leader([a for a in c.aggrs if a.alive()], timeout=30)

    def converged():
        return all(g.acked_seq() == g.max_seq() for g in c.agents)
    try:
        wait_until(converged, CONVERGE_S, interval=0.1, desc="every agent acknowledged to its end")
    except mh.WaitTimeout as e:
        bad.append(f"converge: {e}")
    converge_s = time.monotonic() - heal_t

    acked = 0
    for g in c.agents:
        upto = g.acked_seq()
        acked += upto
        bad += zh.check_seqs_present(ld, g.node_id, g.spool_id(), upto, f"lost: {g.node_id}")
    doubled = 0
    spans = collections.defaultdict(lambda: [None, None])
    for a in c.aggrs:
        for (node, spool, seq, n) in a.query(
                "SELECT node_id, spool_id, seq, count(*) FROM changes GROUP BY node_id, spool_id, "
                "seq HAVING count(*) > 1"):
            doubled += n - 1
            bad.append(f"doubled: {node} {spool} seq {seq} stored {n} times in {a.id}")
        for (ep, lo, hi) in a.query("SELECT epoch, min(received_ms), max(received_ms) FROM changes "
                                    "GROUP BY epoch"):
            s = spans[ep]
            s[0] = lo if s[0] is None else min(s[0], lo)
            s[1] = hi if s[1] is None else max(s[1], hi)
    eps = sorted(spans)
    for e1, e2 in zip(eps, eps[1:]):
        if spans[e1][1] > spans[e2][0]:
            bad.append(f"overlap: epoch {e1} received a change at {spans[e1][1]} ms, after epoch {e2} "
                       f"had received one at {spans[e2][0]} ms")
    reader.stop()
    bad += [f"stale read: {x}" for x in reader.stale_reads()[:20]]

    # A fresh leader from the same history.
    def verdicts(a):
        h = a.health()
        return h["verdict"], {k: v["verdict"] for k, v in a.nodes().items()}
    before = verdicts(ld)
    ld.stop()
    rest = [a for a in c.aggrs if a is not ld and a.alive()]
    new, _ = zh.wait_one_leader(rest, timeout=30)
    try:
        wait_until(lambda: verdicts(new) == before, CONVERGE_S, interval=0.1,
                   desc="the new leader's verdicts equal the old one's")
    except mh.WaitTimeout as e:
        bad.append(f"fresh: {before} before, {verdicts(new)} from {new.id}: {e}")
    summary = dict(seed=seed, faults=None, acknowledged=acked, lost=sum(
        1 for b in bad if b.startswith("lost")), doubled=doubled,
        longest_unavailable_s=round(reader.longest_unavailable(), 2),
        converged_after_heal_s=round(converge_s, 2), epochs=len(eps))
    return summary, [f"seed {seed}: {b}" for b in bad]


def run(env, cluster_name, seed, duration, n_agents=3, faults=FAULTS):
    """One nemesis run; returns (summary, violations)."""
    reason = nh.available()
    if reason:
        raise RuntimeError(reason)
    rnd = random.Random(seed)
    hosts = ["zk1", "zk2", "zk3", "a1", "a2", "a3", *[f"n{i}" for i in range(1, n_agents + 1)]]
    with nh.Topology(hosts) as topo:
        topo.enter_observer()
        c = Cluster(env, topo, cluster_name, n_agents, rnd)
        try:
            c.start()
            reader = Reader(c.aggrs).start()
            log = []
            whole = collections.defaultdict(list)
            end = time.monotonic() + duration
            while time.monotonic() < end:
                kind = rnd.choice(faults)
                apply_fault(c, kind, rnd.uniform(1.0, 4.0), rnd, log)
                whole[kind].append(until_whole(c))
                time.sleep(rnd.uniform(0.5, 2.0))
            topo.heal()
            heal_t = time.monotonic()
            summary, bad = check(c, reader, seed, heal_t)
            summary["faults"] = dict(collections.Counter(k for (_, k, d) in log
                                                          if not d.startswith("skipped")))
            summary["whole_after_heal_s"] = {k: (None if None in v else max(v))
                                              for k, v in whole.items()}
            bad += [f"seed {seed}: whole: not whole again within 40 s of healing {k}"
                    for k, v in whole.items() if None in v]
            summary["fault_log"] = [f"{t - reader.t0:+.1f}s {k}: {d}" for (t, k, d) in log]
            return summary, bad
        finally:
            for t in c.togglers:
                t.stop()
            env.procs._stop_all()
            c.zk.close()


def format_summary(s):
    return json.dumps({k: v for k, v in s.items() if k != "fault_log"}, sort_keys=True)
