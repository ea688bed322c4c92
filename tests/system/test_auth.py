"""Agent authentication with the shared token: the right token is served,
a wrong or missing one gets a Reject (unauthorized), repeated failures from
one address are slowed down, and a token file others can read is refused
at start."""
import os
import uuid

import muster_harness as mh
from muster_harness import ChangeMaker, StreamClient, pb, wait_until

COMPONENTS = ["c1"]
TOKEN = "s3cret-token-of-the-cluster"


def start(env, mode=0o600):
    env.write_profile("agent", mh.profile_ini("agent", [
        (c, dict(check="exec", command="true", interval="10s", rise=1, fall=1)) for c in COMPONENTS
    ], [("work", COMPONENTS)]))
    path = env.path("token")
    with open(path, "w") as f:
        f.write(TOKEN + "\n")
    os.chmod(path, mode)
    a = env.aggregator(stale_timeout="10s", log_level="info", extra={"token_file": path})
    a.digest = env.profile_digest("agent")
    return a


def hello(aggr, node_id, token):
    cl = StreamClient(aggr.stream_port)
    return cl, cl.hello(node_id, "agent", uuid.uuid4().hex, 0, digest=aggr.digest, token=token)


def answer(aggr, node_id, token):
    """The answer to a Hello, or None when the stream was closed at accept
    (the address's penalty after a failure)."""
    try:
        return hello(aggr, node_id, token)[1]
    except (mh.StreamClosed, OSError):
        return None


def hits(aggr):
    for line in aggr.get("/metrics").text.splitlines():
        if line.startswith('muster_limit_hits_total{limit="stream_auth_backoff"} '):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError("no stream_auth_backoff counter")


def test_right_token_served_wrong_refused_and_slowed(env):
    aggr = start(env).start()
    good, r = hello(aggr, "good", TOKEN)
    assert r.WhichOneof("body") == "welcome", r

    bad, r = hello(aggr, "bad", "guess-1")
    assert r.WhichOneof("body") == "reject", r
    assert r.reject.code == pb().REJECT_UNAUTHORIZED
    assert r.reject.reason == "wrong or missing token"
    # Once the first failure's penalty (100 ms) has run out, no token at
    # all is refused the same way.
    r = wait_until(lambda: answer(aggr, "bad", ""), 3, interval=0.05,
                   desc="a Hello answered once the penalty ran out")
    assert r.WhichOneof("body") == "reject" and r.reject.code == pb().REJECT_UNAUTHORIZED, r

    # Right after a failure the address is refused at accept, without a
    # Reject to learn from; the penalty doubles with each failure.
    quick = StreamClient(aggr.stream_port)
    assert quick.expect_closed(timeout=3) == []
    assert hits(aggr) >= 1
    assert "wrong or missing token" in aggr.proc.stderr_text()

    # The stream that authenticated keeps being served meanwhile.
    mk = ChangeMaker(COMPONENTS)
    good.send_changes(mk.make(1))
    good.wait_ack(1)

    # Once the penalty has run out, the right token is welcomed again.
    wait_until(lambda: (r := answer(aggr, "good2", TOKEN)) and r.WhichOneof("body") == "welcome",
               10, interval=0.1, desc="the right token welcomed once the penalty ran out")


def test_token_file_readable_by_others_is_refused(env):
    aggr = start(env, mode=0o644)
    aggr.write_config()
    rc, _, err, _ = mh.run_to_completion(aggr.argv())
    assert rc != 0
    assert "token" in err and ("owner" in err or "permission" in err.lower()), err
