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
