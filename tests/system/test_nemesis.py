"""The short nemesis run (nemesis.py): a few fixed seeds, each about 40 s of
partitions, one-way drops, a bridge, loss, kill -9 and SIGSTOP against three
aggregators, three ZooKeeper servers and three agents, each in its own
network namespace with its own IPv6 address; then the checker's proofs.
A failure names its seed: `MUSTER_NEMESIS_SEED=N` runs that one alone.
The long soak is tests/soak/nemesis."""

import os

import pytest

import nemesis
import netns_harness as nh

SEEDS = [int(s) for s in os.environ.get("MUSTER_NEMESIS_SEED", "").split(",") if s] or [1, 22]


@pytest.fixture(scope="module", autouse=True)
def _sweep():
    if nh.available() is None:
        nh.sweep_leftovers()


@pytest.mark.no_valgrind(reason="a 40 s scenario of nine daemons per seed: memcheck's 20x "
                                "slowdown turns every lease into a failover")
@pytest.mark.no_tsan(reason="timing-bound partitions; TSan's slowdown expires leases by itself")
@pytest.mark.long(reason="a 40 s partition scenario per seed")
@pytest.mark.parametrize("seed", SEEDS)
def test_nemesis(env, cluster_name, seed):
    reason = nh.available()
    if reason:
        pytest.skip(reason)
    summary, bad = nemesis.run(env, cluster_name, seed, duration=float(
        os.environ.get("MUSTER_NEMESIS_SECONDS", "40")))
    print("nemesis summary:", nemesis.format_summary(summary))
    print("\n".join(summary["fault_log"]))
    assert not bad, "\n".join(bad) + "\n" + nemesis.format_summary(summary)
    assert summary["acknowledged"] > 0


def test_checker_sees_stale_reads_and_gaps():
    """The read checker can fail: an answer with an older epoch asked after
    a newer one was served, and an answer naming another leader."""
    r = nemesis.Reader([])
    r.t0 = 0.0
    r.answers = [
        (0.00, 0.01, "a1", 200, "a1", 5),
        (0.50, 0.51, "a2", 200, "a2", 6),
        (0.40, 0.60, "a1", 200, "a1", 5),   # asked before epoch 6 answered: fine
        (0.70, 0.71, "a1", 200, "a1", 5),   # stale
        (0.80, 0.81, "a3", 200, "a2", 6),   # a follower answering as the leader
        (3.00, 3.01, "a2", 200, "a2", 6),
    ]
    bad = r.stale_reads()
    assert len(bad) == 2, bad
    assert "epoch 5 at +0.700s, after a2 had answered with epoch 6 at +0.510s" in bad[0]
    assert "a3 answered a data read naming leader a2" in bad[1]
    assert abs(r.longest_unavailable() - 2.2) < 1e-6
