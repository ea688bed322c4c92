#!/usr/bin/python3
"""Failover: how long from the death of the leading aggregator until a new
one leads and every agent streams to it, and whether any change an agent had
been told was acknowledged goes missing.

Everything is real and on loopback, started with the system tests' harness
(tests/system/zk_harness.py and muster_harness.py): a 3-server ZooKeeper
ensemble (tickTime 500 ms), three aggregators campaigning through it, and N
muster-agentd processes configured with all three aggregators. Each agent
runs three exec checks every 100 ms on flag files that threads flip about
every 80 ms, so changes flow all the time (about 20 per agent and second).

Then, R times, kill -9 of the current leader; then R times SIGTERM of it.
After each failover the old leader is started again (it comes back as a
follower) and the next round waits for a settled election. Each round
measures, from the signal:

  new leader       the first survivor whose GET /readyz says role=leader
                   (polled every few ms);
  every agent      the moment the new leader's SQLite first holds a change of
                   that agent committed under the new leader's epoch. The
                   leader acknowledges a change only once it is committed, and
                   a follower's warm copy keeps the epoch of the leader that
                   committed a row first, so such a row means the agent
                   streams to the new leader and gets Acks from it. The
                   database is polled every 5 ms. (The agent's spool is not
                   used for the timing: it persists acked_seq in batches up
                   to 250 ms apart, and a dead leader's last Acks may land in
                   it after the signal.)
  lost             the changes each agent's spool says were acknowledged
                   (meta acked_seq, read at least 0.35 s after the signal, so
                   every Ack of the old leader is persisted) that are missing
                   from the new leader's database once it holds up to there;
                   at the end they are checked again, with everything else,
                   one by one in the final leader's database.

The goal (SPEC.md, performance goals): after kill -9, every agent streams
to the new leader within session timeout + 1 tick + 0.5 s, and nothing
acknowledged is lost; after SIGTERM (the leader closes its ZooKeeper session)
well under 1 s.

    /usr/bin/python3 bench/failover.py --build /path/to/build [--quick]
"""

import argparse
import json
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "system"))

import muster_harness as mh  # noqa: E402
import zk_harness as zkh  # noqa: E402
from zk_harness import (ElectedAggregator, agent_check_in, safe_acked, safe_held,  # noqa: E402
                        stream_log, wait_one_leader)

FLAGS = ["f1", "f2", "f3"]
AGGREGATORS = 3
POLL = 0.005                 # seconds between polls while a failover is measured
ACK_PERSIST_MARGIN = 0.35    # the agent persists acked_seq at most 250 ms late


class BenchError(Exception):
    pass


# ---------------------------------------------------------------- setup


def write_profile(env, interval):
    """`flappy`: three exec checks on flag files that threads flip (the
    election tests' workload)."""
    env.write_profile("flappy", mh.profile_ini("flappy", [
        (f, dict(check="exec", command=f"test -e {env.path(f + '.flag')}", interval=interval,
                 timeout="1s", rise=1, fall=1)) for f in FLAGS], [("base", FLAGS)]))
    return [env.toggler(env.path(f + ".flag"), 0.08) for f in FLAGS]


def readyz_leader(aggr):
    """The /readyz body when aggr says it leads, else None."""
    rz = aggr.readyz()
    return rz if rz and rz.get("role") == "leader" else None


def max_row_id(aggr):
    try:
        return aggr.query("SELECT coalesce(max(id), 0) FROM changes")[0][0]
    except Exception:
        return 0


def missing_seqs(aggr, node_id, spool_id, upto):
    """The seqs 1..upto of (node, spool) that aggr's database lacks."""
    if upto <= 0:
        return set()
    have = {r[0] for r in aggr.query("SELECT seq FROM changes WHERE node_id=? AND spool_id=? "
                                     "AND seq<=?", (node_id, spool_id, upto))}
    return set(range(1, upto + 1)) - have


# ---------------------------------------------------------------- one failover


def failover_round(mode, number, aggrs, agents, session_timeout, log, verbose=False):
    """Signals the current leader (kill -9 or SIGTERM), measures, checks,
    restarts it as a follower. Returns a dict of results."""
    leader, views = wait_one_leader(aggrs, timeout=session_timeout + 20)
    old_epoch = views[leader.id]["leader"]["epoch"]
    survivors = [a for a in aggrs if a is not leader]
    spool_ids = {ag.node_id: ag.spool_id() for ag in agents}
    # rows each survivor already has (its warm copy): only look after them
    first_id = {s.id: max_row_id(s) for s in survivors}
    log_at = {ag.node_id: ag.proc.stderr_size() for ag in agents}

    t0 = time.monotonic()
    wall0 = time.time()
    if mode == "kill -9":
        leader.kill9()
    else:
        leader.sigterm()

    new = new_epoch = t_leader = None
    t_agent, recv_agent = {}, {}
    deadline = t0 + mh.T(session_timeout + 25)
    while True:
        now = time.monotonic()
        if new is None:
            for s in survivors:
                rz = readyz_leader(s)
                if rz:
                    new, t_leader = s, time.monotonic() - t0
                    new_epoch = rz["leader"]["epoch"]
                    break
        if new is not None:
            polled = time.monotonic()
            rows = new.query("SELECT node_id, min(received_ms) FROM changes WHERE id>? AND "
                             "epoch=? GROUP BY node_id", (first_id[new.id], new_epoch))
            for node_id, received_ms in rows:
                if node_id in spool_ids and node_id not in t_agent:
                    t_agent[node_id] = polled - t0
                    recv_agent[node_id] = received_ms / 1000.0 - wall0
            if len(t_agent) == len(agents):
                break
        if now > deadline:
            late = [ag for ag in agents if ag.node_id not in t_agent]
            raise BenchError(
                f"{mode} round {number}: " + (
                    f"no survivor led within {now - t0:.1f}s: "
                    f"{[(s.id, s.readyz_full()) for s in survivors]}" if new is None else
                    f"agents {[ag.node_id for ag in late]} not streaming to {new.id} within "
                    f"{now - t0:.1f}s (new leader after {t_leader:.2f}s); their stream logs since "
                    f"the signal:\n" + "\n".join(f"--- {ag.node_id}\n{stream_log(ag, log_at[ag.node_id])}"
                                               for ag in late)))
        time.sleep(POLL)

    # Every Ack the old leader sent is in the spools now: what each agent
    # holds as acknowledged must be in the new leader's database.
    time.sleep(max(0.0, t0 + ACK_PERSIST_MARGIN - time.monotonic()))
    acked = {ag.node_id: safe_acked(ag) for ag in agents}
    try:
        mh.wait_until(lambda: all(safe_held(new, n, spool_ids[n]) >= acked[n] for n in acked), 15,
                      interval=0.05, desc=f"{new.id} holds what the agents had acknowledged")
    except mh.WaitTimeout:
        pass              # counted as missing below
    lost = {n: missing_seqs(new, n, spool_ids[n], acked[n]) for n in acked}

    problems = []
    if new_epoch <= old_epoch:
        problems.append(f"{mode} round {number}: epoch went from {old_epoch} to {new_epoch}")
    if mode == "SIGTERM":
        rc = leader.proc.stop()
        if rc != 0:
            problems.append(f"{mode} round {number}: {leader.id} exited with {rc} after SIGTERM")
    leader.restart()      # on the same ports and database: a follower now

    r = dict(mode=mode, number=number, old=leader.id, new=new.id, t_leader=t_leader,
             t_agents=t_agent, recv_agents=recv_agent, t_all=max(t_agent.values()),
             acked=acked, lost=lost, problems=problems)
    log(f"  {mode} #{number}: {leader.id} -> {new.id} (epoch {new_epoch}); leader after "
        f"{t_leader * 1000:.0f} ms, every agent after {r['t_all'] * 1000:.0f} ms "
        f"(each: {', '.join(f'{t * 1000:.0f}' for _, t in sorted(t_agent.items()))} ms; received "
        f"{', '.join(f'{t * 1000:.0f}' for _, t in sorted(recv_agent.items()))} ms); "
        f"acknowledged {sum(acked.values())}, lost {sum(len(v) for v in lost.values())}")
    if verbose:
        slow = max(agents, key=lambda ag: t_agent[ag.node_id])
        log(f"    stream log of the slowest agent, {slow.node_id}, since the signal:\n" +
            "\n".join("      " + ln for ln in stream_log(slow, log_at[slow.node_id]).splitlines()))
    return r


# ---------------------------------------------------------------- final accounting


def settle_and_account(leader, agents, togglers, rounds, timeout=30.0):
    """Stops the flags, waits until the leader acknowledged everything every
    agent made, and checks every change one by one in the leader's database
    (each round's acknowledged changes included). Returns (changes checked,
    problems); adds what is missing to each round's `lost`."""
    for t in togglers:
        t.stop()
    time.sleep(0.5)       # let the last exec results reach the spools

    def caught_up():
        for ag in agents:
            top = ag.max_seq()
            if safe_acked(ag) != top or safe_held(leader, ag.node_id, ag.spool_id()) != top:
                return False
        return True
    try:
        mh.wait_until(caught_up, timeout, interval=0.05,
                      desc=f"everything acknowledged by {leader.id}")
    except mh.WaitTimeout as e:
        raise BenchError(f"{e}\n" + "\n".join(
            f"agent {ag.node_id}: spool max {ag.max_seq()} acked {safe_acked(ag)}, {leader.id} holds "
            f"{safe_held(leader, ag.node_id, ag.spool_id())}" for ag in agents)) from None

    problems, checked = [], 0
    for ag in agents:
        top = ag.max_seq()
        problems += agent_check_in(ag, leader, upto=top)   # presence, once, same content
        checked += top
        sid = ag.spool_id()
        for r in rounds:
            r["lost"][ag.node_id] |= missing_seqs(leader, ag.node_id, sid, r["acked"][ag.node_id])
    return checked, problems


# ---------------------------------------------------------------- report


def fmt_s(v):
    return f"{v * 1000:.0f} ms" if v < 1 else f"{v:.2f} s"


def stat_row(name, values, goal, goal_text):
    med = statistics.median(values)
    spread = f"{fmt_s(med)} [{fmt_s(min(values))}–{fmt_s(max(values))}]"
    return f"| {name} | {spread} | {goal_text} | {med / goal:.2f} |"


def lost_row(name, rounds):
    per = [sum(len(v) for v in r["lost"].values()) for r in rounds]
    acked = [sum(r["acked"].values()) for r in rounds]
    return (f"| {name} | {statistics.median(per):g} [{min(per)}–{max(per)}] "
            f"(of {min(acked)}–{max(acked)} acknowledged) | 0 | — |")


def report(rounds, session_timeout, tick):
    kill_goal = session_timeout + tick + 0.5
    term_goal = 1.0
    lines = ["| metric (per round, from the signal) | median [min–max] | goal | median / goal |",
             "| --- | --- | --- | --- |"]
    for mode, goal, goal_text in (("kill -9", kill_goal,
                                   f"≤ {kill_goal:g} s (session {session_timeout:g} s + tick "
                                   f"{tick:g} s + 0.5 s)"),
                                  ("SIGTERM", term_goal, "< 1 s")):
        rs = [r for r in rounds if r["mode"] == mode]
        if not rs:
            continue
        lines.append(stat_row(f"{mode}: new leader (/readyz role=leader)",
                              [r["t_leader"] for r in rs], goal, goal_text))
        lines.append(stat_row(f"{mode}: every agent acknowledged by the new leader",
                              [r["t_all"] for r in rs], goal, goal_text))
        lines.append(stat_row(f"{mode}: each agent (all agents × rounds)",
                              [t for r in rs for t in r["t_agents"].values()], goal, goal_text))
        lines.append(lost_row(f"{mode}: acknowledged changes lost", rs))
    return "\n".join(lines)


# ---------------------------------------------------------------- main


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--build", default=os.environ.get("MUSTER_BUILD_DIR", mh.BUILD_DIR),
                    help="directory with muster-aggregatord and muster-agentd "
                         "(default $MUSTER_BUILD_DIR or build/)")
    ap.add_argument("--agents", type=int, default=5, help="real agents (default 5)")
    ap.add_argument("--rounds", type=int, default=None,
                    help="failovers of each kind (default 5, --quick 3)")
    ap.add_argument("--quick", action="store_true", help="3 rounds of each kind")
    ap.add_argument("--session-timeout", type=float, default=2.0,
                    help="the aggregators' ZooKeeper session timeout in seconds (default 2)")
    ap.add_argument("--interval", default="100ms", help="the agents' check interval (default 100ms)")
    ap.add_argument("--gap", type=float, default=1.0,
                    help="seconds of steady streaming between rounds (default 1)")
    ap.add_argument("--verbose", action="store_true",
                    help="print the slowest agent's connection log after each round")
    ap.add_argument("--keep", action="store_true", help="keep the work directory (logs, databases)")
    ap.add_argument("--json", action="store_true",
                    help="progress to stderr, and one JSON object of the figures on stdout")
    args = ap.parse_args()
    rounds_n = args.rounds if args.rounds is not None else (3 if args.quick else 5)
    if rounds_n < 1 or args.agents < 1:
        ap.error("--rounds and --agents must be at least 1")
    if not 1.0 <= args.session_timeout <= 10.0:
        ap.error("--session-timeout must be between 1 and 10 s (ZooKeeper's bounds at tick 500 ms)")
    mh.BUILD_DIR = os.path.abspath(args.build)
    try:
        for b in ("muster-aggregatord", "muster-agentd"):
            mh.binary(b)  # fails early, with a hint, when missing
    except AssertionError as e:
        print(e, file=sys.stderr)
        return 1
    if not zkh.zookeeper_installed():
        print("ZooKeeper is not installed (deploy/install-deps installs it)", file=sys.stderr)
        return 1

    # SIGTERM/SIGHUP to this script clean up like Ctrl-C does
    def interrupted(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")
    signal.signal(signal.SIGTERM, interrupted)
    signal.signal(signal.SIGHUP, interrupted)

    session_timeout = args.session_timeout
    tick = zkh.TICK_MS / 1000.0
    started = time.monotonic()

    def log(msg):
        print(f"[{time.monotonic() - started:6.1f}s] {msg}", flush=True,
              file=sys.stderr if args.json else sys.stdout)

    work = tempfile.mkdtemp(prefix="mst-failover-")
    logs = os.path.join(work, "logs")
    os.makedirs(logs)
    procs = mh.ProcessRegistry(logs)
    env = mh.TestEnv(os.path.join(work, "env"), procs)
    zk = zkh.ZKEnsemble(os.path.join(work, "zookeeper"), n=3)
    ok = interrupted_by = False
    problems = []
    try:
        t = zk.start()
        log(f"ZooKeeper: 3 servers serving after {t:.1f}s ({zk.hosts})")
        togglers = write_profile(env, args.interval)
        cluster = "bench-failover"
        aggrs = [ElectedAggregator(env, zk.hosts, cluster, f"{int(session_timeout * 1000)}ms",
                                   id=f"aggr{i}", stale_timeout="10s", log_level="info")
                 for i in range(1, AGGREGATORS + 1)]
        for a in aggrs:
            a.start()
        leader, _ = wait_one_leader(aggrs, timeout=session_timeout + 20)
        agents = [env.agent(f"fo{i}", "flappy", aggrs, log_level="info").start()
                  for i in range(1, args.agents + 1)]
        for tg in togglers:
            tg.start()
        for ag in agents:
            mh.wait_until(ag.spool_ready, 15, desc=f"agent {ag.node_id}'s spool")
            mh.wait_until(lambda: safe_acked(ag) >= 3, 15, interval=0.05,
                          desc=f"agent {ag.node_id}: changes acknowledged")
        log(f"{AGGREGATORS} aggregators ({leader.id} leads, session timeout {session_timeout:g}s), "
            f"{len(agents)} agents streaming; {rounds_n} rounds of kill -9, then of SIGTERM")

        rounds = []
        for mode in ("kill -9", "SIGTERM"):
            for i in range(1, rounds_n + 1):
                time.sleep(args.gap)
                rounds.append(failover_round(mode, i, aggrs, agents, session_timeout, log,
                                             args.verbose))
                problems += rounds[-1]["problems"]

        final, _ = wait_one_leader(aggrs, timeout=session_timeout + 20)
        checked, more = settle_and_account(final, agents, togglers, rounds)
        problems += more
        for ag in agents:
            if not ag.proc.alive():
                problems.append(f"agent {ag.node_id} exited with {ag.proc.poll()}")
        log(f"final leader {final.id}: {checked} changes checked one by one in its SQLite")

        if args.json:
            print(json.dumps({
                "agents": len(agents), "session_timeout_s": session_timeout, "tick_s": tick,
                "kill_goal_s": session_timeout + tick + 0.5, "term_goal_s": 1.0,
                "rounds": [{"mode": r["mode"], "t_leader": r["t_leader"], "t_all": r["t_all"],
                            "lost": sum(len(v) for v in r["lost"].values()),
                            "acked": sum(r["acked"].values())} for r in rounds],
                "checked": checked}))
        out = sys.stderr if args.json else sys.stdout
        print(file=out)
        print(f"Failover, {len(agents)} agents (3 exec checks every {args.interval} each), "
              f"{AGGREGATORS} aggregators, 3-server ZooKeeper (tick {tick:g} s), session timeout "
              f"{session_timeout:g} s, {rounds_n} round{'s' if rounds_n > 1 else ''} of each kind, "
              f"build {mh.BUILD_DIR}", file=out)
        print(file=out)
        print(report(rounds, session_timeout, tick), file=out)
        print(file=out)
        print(f"Changes checked one by one in the final leader's SQLite: {checked}. "
              f"Total run time {time.monotonic() - started:.0f} s.", file=out)
        lost_total = sum(len(v) for r in rounds for v in r["lost"].values())
        if lost_total:
            problems.append(f"{lost_total} acknowledged changes lost: " + "; ".join(
                f"{r['mode']} #{r['number']} {n}: {sorted(v)[:10]}"
                for r in rounds for n, v in r["lost"].items() if v))
        ok = not problems
    except (BenchError, AssertionError) as e:
        print(f"failed: {e}", file=sys.stderr)
    except KeyboardInterrupt as e:
        interrupted_by = True
        print(f"interrupted ({e})", file=sys.stderr)
    finally:
        env.cleanup()                       # the flag togglers
        problems += procs.finalize()        # the daemons, before ZooKeeper goes
        zk.kill_all()
        if args.keep:
            print(f"work directory kept: {work}", file=sys.stderr)
        else:
            if not ok and not interrupted_by:
                print(procs.log_report(20), file=sys.stderr)   # the daemons' last words
            shutil.rmtree(work, ignore_errors=True)
        for p in problems:
            print(f"problem: {p}", file=sys.stderr)
    return 0 if ok and not problems else 1


if __name__ == "__main__":
    sys.exit(main())
