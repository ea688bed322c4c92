"""Retention: the aggregator deletes history older than `retention` in
small batches while ingest goes on, and what it pruned is still held (a
replay of pruned sequence numbers is acknowledged, not stored again)."""

import time
import uuid

import muster_harness as mh
from muster_harness import ChangeMaker, StreamClient, wait_until


def test_old_history_is_pruned_and_still_held(env):
    env.write_profile("agent", mh.profile_ini("agent", [
        ("c1", dict(check="exec", command="true", interval="10s", rise=1, fall=1))],
        [("work", ["c1"])]))
    aggr = env.aggregator(stale_timeout="30s", extra={"retention": "2s"}).start()
    spool = uuid.uuid4().hex
    cl = StreamClient(aggr.stream_port)
    assert cl.hello("r1", "agent", spool, 0,
                    digest=env.profile_digest("agent")).WhichOneof("body") == "welcome"
    mk = ChangeMaker(["c1"])
    old = mk.make(1200)
    for i in range(0, 1200, 200):
        cl.send_changes(old[i:i + 200])
    cl.wait_ack(1200)
    assert aggr.query("SELECT count(*) FROM changes")[0][0] == 1200

    time.sleep(2.2)   # deliberately: the old changes must age past retention (2s)
    # New changes keep flowing while the old ones are pruned (batches of 500).
    t0 = time.monotonic()
    for _ in range(20):
        cl.send_changes(mk.make(5))
        cl.wait_ack(mk.seq)
    assert time.monotonic() - t0 < 5
    wait_until(lambda: aggr.query("SELECT count(*) FROM changes WHERE seq <= 1200")[0][0] == 0,
               timeout=10, desc="the old history pruned")
    assert aggr.query("SELECT count(*) FROM changes WHERE seq > 1200")[0][0] == 100
    assert aggr.query("SELECT held_seq FROM spools WHERE spool_id = ?", (spool,))[0][0] == 1300
    # Pruned is not forgotten: a replay of old seqs is acknowledged, not stored.
    cl.send_changes(old[:10])
    cl.wait_ack(1300)
    assert aggr.query("SELECT count(*) FROM changes WHERE seq <= 1200")[0][0] == 0
    assert "pruned" in aggr.proc.stderr_text()
    cl.close()
