#!/usr/bin/python3
"""Writes the seed corpora of the fuzz targets into tests/fuzz/corpus/<target>/.

The seeds are committed; run this again after a change to the wire protocol,
the shipped configs or the profiles, and commit what changes:

    /usr/bin/python3 tests/fuzz/make_corpus.py

- fuzz_frame: agent streams as the aggregator reads them (Hello, ChangeBatch,
  Snapshot, Heartbeat; a report before Hello, a second Hello, bad UTF-8, an
  invalid state, an oversized length), each behind the two bytes that pick
  how the bytes arrive and the frame cap (see fuzz_frame.c). The protobuf messages
  come from Google's protobuf, with the module generated from
  proto/muster.proto as tests/system/muster_harness.py does.
- fuzz_config: deploy/examples/*.conf and the configs of the tests.
- fuzz_profile: deploy/profiles/*.ini, alone and in pairs.
- fuzz_http: typical request targets and If-None-Match headers.
- fuzz_http_response: responses as servers send them (by length, chunked,
  until the end of the connection, interim 100, 204, a body past the 64 KiB
  the agent looks at) and broken ones, each behind the two bytes that pick
  how they arrive and the expect_body (see fuzz_http_response.c).
"""

import hashlib
import os
import shutil
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "tests", "system"))

import muster_harness as mh  # noqa: E402  (load_pb: protoc + import)

PROFILE_SEPARATOR = b"#--- next profile ---\n"


def varint(n):
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def frame(env):
    body = env.SerializeToString()
    return varint(len(body)) + body


FEED, FILL = 0, 1


def stream(how, write_size, cap_byte, *frames):
    """The two bytes fuzz_frame reads first: how the bytes arrive (FEED or
    FILL, through a pipe) in writes of write_size (1 to 1017, by 8), and the
    frame cap (64 B << cap_byte % 12)."""
    return bytes([((write_size - 1) // 8) << 1 | how, cap_byte]) + b"".join(frames)


def frame_seeds():
    pb = mh.load_pb()

    def hello(**kw):
        fields = dict(node_id="master-1", role="master", profile_digest="ab" * 32,
                      hostname="master-1.example", boot_id="b0a1", boot_time_ms=1764000000000,
                      agent_version="0.1.0", spool_id="5f0d1c2b", last_seq=3, protocol_version=1)
        fields.update(kw)
        env = pb.Envelope()
        env.hello.CopyFrom(pb.Hello(addresses=["10.0.0.1"], **fields))
        return frame(env)

    def changes(*items):
        env = pb.Envelope()
        for seq, comp, frm, to, out in items:
            env.changes.changes.add(seq=seq, component=comp, check=pb.CHECK_SYSTEMD,
                                    to=to, at_ms=1764000001000 + seq % 1000, output=out,
                                    boot_id="b0a1", health=2, rise=2, fall=3,
                                    **{"from": frm})
        return frame(env)

    def snapshot(*items):
        env = pb.Envelope()
        env.snapshot.seq = 3
        env.snapshot.at_ms = 1764000002000
        for comp, state in items:
            env.snapshot.components.add(component=comp, check=pb.CHECK_EXEC, state=state,
                                        since_ms=1764000000500, output="OK - fine | t=1s",
                                        health=2, rise=2, fall=3)
        return frame(env)

    def heartbeat():
        env = pb.Envelope()
        env.heartbeat.sent_ms = 1764000003000
        env.heartbeat.seq = 3
        return frame(env)

    def ack():
        env = pb.Envelope()
        env.ack.seq = 1
        return frame(env)

    ok_changes = changes((1, "exhibitor", pb.STATE_STARTING, pb.STATE_HEALTHY, "active"),
                         (2, "mesos-master", pb.STATE_UNSPECIFIED, pb.STATE_STARTING, ""),
                         (3, "mesos-dns", pb.STATE_HEALTHY, pb.STATE_UNHEALTHY,
                          "failed (Result: exit-code) ExecMainStatus=1"))
    ok_snapshot = snapshot(("exhibitor", pb.STATE_HEALTHY), ("mesos-master", pb.STATE_STARTING),
                           ("mesos-dns", pb.STATE_UNHEALTHY))
    big_snapshot = snapshot(*[(f"component-{i}", 1 + i % 5) for i in range(200)])
    cap = 10  # 64 B << 10 = 64 KiB frames
    return {
        "hello": stream(FILL, 1017, cap, hello()),
        "conversation": stream(FILL, 1017, cap, hello(), ok_changes, ok_snapshot, heartbeat(),
                               ok_changes, heartbeat()),
        "conversation-fed": stream(FEED, 1017, cap, hello(), ok_changes, ok_snapshot,
                                   heartbeat()),
        "conversation-byte-writes": stream(FILL, 1, cap, hello(), ok_changes, ok_snapshot,
                                           heartbeat()),
        "conversation-byte-feeds": stream(FEED, 1, cap, hello(), ok_changes, ok_snapshot,
                                          heartbeat()),
        "conversation-small-writes": stream(FILL, 9, cap, hello(), ok_changes, ok_snapshot,
                                            heartbeat()),
        "many-heartbeats": stream(FILL, 1017, 2, hello(), *[heartbeat()] * 300),
        "big-snapshot": stream(FILL, 257, cap, hello(), big_snapshot, heartbeat()),
        "big-snapshot-fed": stream(FEED, 257, cap, hello(), big_snapshot, heartbeat()),
        "big-snapshot-small-cap": stream(FILL, 257, 4, hello(), big_snapshot),
        "report-before-hello": stream(FILL, 1017, cap, ok_changes, hello()),
        "second-hello": stream(FILL, 1017, cap, hello(), hello()),
        "hello-without-node": stream(FILL, 1017, cap, hello(node_id="")),
        "hello-without-spool": stream(FILL, 1017, cap, hello(spool_id="")),
        "hello-long-node": stream(FILL, 1017, cap, hello(node_id="n" * 254)),
        "hello-bad-utf8": stream(FILL, 1017, cap, hello(node_id="master-1").replace(
            b"master-1.example", b"master-1.ex\xc3\x28ple")),  # same length
        "change-invalid-state": stream(FILL, 1017, cap, hello(),
                                       changes((1, "x", pb.STATE_HEALTHY, 9, ""))),
        "change-seq-zero": stream(FILL, 1017, cap, hello(),
                                  changes((0, "x", pb.STATE_HEALTHY, pb.STATE_HEALTHY, ""))),
        "change-no-component": stream(FILL, 1017, cap, hello(),
                                      changes((1, "", pb.STATE_HEALTHY, pb.STATE_HEALTHY, ""))),
        # The seq rule over several batches (fuzz_frame.c follows the seqs).
        "seq-gap": stream(FILL, 1017, cap, hello(), ok_changes,
                          changes(*[(s, "x", pb.STATE_HEALTHY, pb.STATE_UNHEALTHY, "") for s in (5,)]),
                          changes(*[(s, "x", pb.STATE_HEALTHY, pb.STATE_UNHEALTHY, "")
                                    for s in (3, 4)])),
        "seq-replay-then-new": stream(FILL, 1017, cap, hello(), ok_changes,
                                      changes(*[(s, "x", pb.STATE_HEALTHY, pb.STATE_UNHEALTHY, "")
                                                for s in (2, 3, 4, 5)]), heartbeat()),
        "seq-backwards": stream(FILL, 1017, cap, hello(),
                                changes(*[(s, "x", pb.STATE_HEALTHY, pb.STATE_UNHEALTHY, "")
                                          for s in (8, 7, 6)])),
        "seq-huge": stream(FILL, 1017, cap, hello(),
                           changes((2**63 + 5, "x", pb.STATE_HEALTHY, pb.STATE_UNHEALTHY, ""))),
        "seq-pruned-start": stream(FILL, 1017, cap, hello(last_seq=12),
                                   changes(*[(s, "x", pb.STATE_HEALTHY, pb.STATE_UNHEALTHY, "")
                                             for s in (10, 11)]),
                                   changes((12, "x", pb.STATE_HEALTHY, pb.STATE_UNHEALTHY, ""))),
        "snapshot-invalid-state": stream(FILL, 1017, cap, hello(), snapshot(("x", 0))),
        "unexpected-ack": stream(FILL, 1017, cap, hello(), ack()),
        "empty-envelope": stream(FILL, 1017, cap, hello(), varint(0)),
        "undecodable": stream(FILL, 1017, cap, hello(), varint(4) + b"\xff\xff\xff\xff"),
        "oversized-length": stream(FILL, 1017, 0, hello()),
        "overlong-varint": stream(FEED, 1017, cap, b"\xff" * 11),
    }


def config_seeds():
    seeds = {}
    for name in sorted(os.listdir(os.path.join(ROOT, "deploy", "examples"))):
        if name.endswith(".conf"):
            with open(os.path.join(ROOT, "deploy", "examples", name), "rb") as f:
                seeds[name] = f.read()
    seeds["aggregator-broken"] = "\n".join([
        "[aggregator]", "id = a1", "cluster = test", "stale_timeout = banana",
        "listen_stream = 127.0.0.1:7610", "no_such_key = 1", "listen_http = 127.0.0.1:7611",
        "database = /tmp/broken.db", "profiles = /tmp/profiles", "[log]", "level = debug",
        ""]).encode()
    seeds["agent-broken"] = "\n".join([
        "[agent]", "node_id = m1", "role = master", "heartbeat = banana",
        "profiles = /tmp/profiles", "no_such_key = 1", "spool = /tmp/broken.spool",
        "aggregators = 127.0.0.1:7610", "boot_id_file = /tmp/boot_id", "[log]",
        "level = debug", ""]).encode()
    seeds["quoting"] = (b'; comment\n# comment\n[agent]\nnode_id = "a ; b" ; cut\n'
                        b'role = x;y\nspool = "say \\"hi\\""\n'
                        b'aggregators = "/opt/check" --fast "x"\n'
                        b'max_frame = 512KiB\nheartbeat = 1m30s\n[log]\nlevel: debug\n')
    seeds["crlf-bom"] = b"\xef\xbb\xbf[aggregator]\r\nmax_connections = 7\r\n[log]\r\nlevel = err\r\n"
    seeds["errors"] = (b"count = 3\n[aggregator\n[]\n[aggregator]\njust some words\n= 3\n"
                       b"http_threads = 99\nhttp_threads = 2\nmax_frame = 1TiB\n"
                       b"retention = 99999999999999999999d\n[nope]\nx = 1\n"
                       b"[zookeeper]\nsession_timeout = 5\n")
    seeds["ranges"] = (b"[aggregator]\nmax_frame = 64MiB\nhello_timeout = 100ms\n"
                       b"stale_timeout = 1h\nmax_connections = 1000000\nretention = 3650d\n"
                       b"synchronous = normal\n[zookeeper]\nhosts = 10.0.0.1:2181\n")
    seeds["long-line"] = b"[aggregator]\nid = " + b"x" * 5000 + b"\ncluster = c\n"
    seeds["nul-byte"] = b"[aggregator]\nid = a\x00b\ncluster = c"  # and no final newline
    seeds["cr-only"] = b"[log]\rlevel = info\r"
    # fuzz_config expands 0x01 into a line over the line cap and 0x02 into
    # half the file cap (see the top of fuzz_config.c).
    seeds["line-over-cap"] = b"[aggregator]\nid = \x01\ncluster = c\n"
    seeds["line-over-cap-cr"] = b"[agent]\nrole = a\r\x01\nnode_id = n\n"
    seeds["file-near-cap"] = b"[agent]\n\x02node_id = n\n"
    seeds["file-over-cap"] = b"[agent]\n\x02node_id = n\n\x02"
    return seeds


def profile_seeds():
    d = os.path.join(ROOT, "deploy", "profiles")
    files = {}
    for name in sorted(os.listdir(d)):
        if name.endswith(".ini"):
            with open(os.path.join(d, name), "rb") as f:
                files[name[:-4]] = f.read()
    seeds = {f"{role}.ini": data for role, data in files.items()}
    if "master" in files and "agent" in files:
        seeds["agent+master"] = files["agent"] + PROFILE_SEPARATOR + files["master"]
    small = mh.profile_ini("a", [
        ("svc", dict(check="exec", command="true", interval="1s", rise=1, fall=1)),
        ("web", dict(check="http", url="http://127.0.0.1:8080/health", expect_status=200,
                     expect_body="ok", timeout="2s")),
        ("port", dict(check="tcp", address="127.0.0.1:53")),
        ("unit", dict(check="systemd", unit="dcos-net.service"))],
        [("base", ["svc"]), ("serve", ["web", "port", "unit"])]).encode()
    seeds["small"] = small
    seeds["requires-pair"] = (small + b'[stage "late"]\ncomponents = svc\nafter = serve\n'
                              b"requires = b:up@quorum\n" + PROFILE_SEPARATOR +
                              b'[profile]\nrole = b\n[component "c"]\ncheck = exec\n'
                              b'command = "/bin/true" --x\n[stage "up"]\ncomponents = c\n'
                              b"milestones = c\nrequires = a:base@all\n")
    # a cycle through requires, across the two roles and through a's order
    seeds["requires-cycle"] = (b'[profile]\nrole = a\n[stage "s1"]\nrequires = b:x@quorum\n'
                               b'[stage "s2"]\n' + PROFILE_SEPARATOR +
                               b'[profile]\nrole = b\n[stage "x"]\nrequires = a:s2@all\n')
    seeds["errors"] = (b'[profile]\nrole = bad role\nstartup_grace = 8d\n[component "x"]\n'
                       b"check = nope\nrise = 0\nfall = 101\nurl = ftp://x\naddress = :99999\n"
                       b'[component "x"]\n[component "y"]\ncheck = tcp\nexpect_status = 200\n'
                       b'[stage "s1"]\nafter = s2\ncomponents = ghost\n'
                       b'[stage "s2"]\nafter = s1\nrequires = nocolon x:y@some\n'
                       b'[stage "s1"]\n[widget "w"]\n[component]\n[component "a b"]\n')
    return seeds


def http_seeds():
    targets = [
        "/v1/health", "/v1/health?index=42&wait=30s", "/v1/health?index=7&wait=300",
        "/v1/nodes", "/v1/nodes?index=0&wait=5m", "/v1/nodes/master-1",
        "/v1/nodes/master-1?index=12&wait=1m30s", "/v1/nodes/a%2Fb%20c?index=1",
        "/v1/history", "/v1/history?node=master-1&component=mesos-dns&limit=50&order=asc",
        "/v1/history?since=2026-11-25T01:02:03Z&until=2026-11-26T00:00:00.123456%2B02:00"
        "&order=desc&limit=1000",
        "/v1/history?cursor=2a.d.9f3c0e1b2a4d5e6f&limit=10",
        "/v1/history?index=99&wait=10s&node=n1",
        "/v1/history/cluster?since=2026-01-01T00:00:00Z&limit=5&order=asc",
        "/v1/history/cluster?node=x", "/v1/history?limit=0", "/v1/history?order=sideways",
        "/v1/history?since=2026-02-30T00:00:00Z", "/v1/health?index=-1", "/v1/health?wait=6m",
        "/v1/health?colour=blue", "/v1/health?index", "/v1/health?index=1&index=2",
        "/v1/internal/replicate?after=0&limit=1000",
        "/v1/internal/replicate/verdicts?after=18446744073709551615&limit=10000",
        "/v1/internal/replicate?after=-1&limit=0", "/v1/nope", "/healthz", "/readyz",
        "/metrics", "/", "/ui/app.js", "/system/health/v1/units",
        "/v1/history/nodes?node=a1&since=2026-01-01T00:00:00Z&limit=20&order=asc",
        "/v1/history/nodes?component=x&index=3&wait=1s",
        "/system/health/v1", "/system/health/v1/?cache=0", "/system/health/v1?node=127.0.0.5",
        "/system/health/v1//units/./a/../dcos-net.service/nodes/?cache=0",
        "/system/health/v1/report/download", "/system/health/v1/nodes/10.0.0.1/units/x/",
        "/system/health/v1/units/a/hosts", "/system/health/v1/../../etc",
        "/system/health/v1x",
    ]
    seeds = {}
    for i, t in enumerate(targets):
        seeds[f"target-{i:02d}"] = t.encode()
    seeds["etag-list"] = b'/v1/health?index=5\nW/"4", "5"'
    seeds["etag-star"] = b"/v1/nodes\n*"
    seeds["etag-weak"] = b'/v1/nodes/n1?index=17&wait=1s\nW/"17"'
    return seeds


def http_response_seeds():
    def seed(split, expect, response):
        return bytes([split, len(expect)]) + expect + response

    ok = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
    responses = {
        "length": ok + b"Content-Length: 11\r\n\r\nall is well",
        "length-zero": b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
        "chunked": ok + b"Transfer-Encoding: chunked\r\n\r\n"
                        b"4\r\nall \r\n7;ext=1\r\nis well\r\n0\r\nX-Trailer: 1\r\n\r\n",
        "chunked-gzip": ok + b"Transfer-Encoding: gzip, chunked\r\nContent-Length: 3\r\n\r\n"
                             b"2\r\nok\r\n0\r\n\r\n",
        "until-close": b"HTTP/1.0 200 OK\nServer: old\n\nall is well\n",
        "interim": b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 503 Service Unavailable\r\n"
                   b"Content-Length: 4\r\n\r\ndown",
        "no-content": b"HTTP/1.1 204 No Content\r\nContent-Length: 9\r\n\r\n",
        "switching": b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n",
        "leading-blank": b"\r\n\r\nHTTP/1.1 404 Not Found\r\nContent-Length: 2\r\n\r\nno",
        "big-body": ok + b"Content-Length: 70000\r\n\r\n" + b"w" * 69990 + b"all is well",
        "not-http": b"SSH-2.0-OpenSSH_9.2\r\n",
        "bad-length": ok + b"Content-Length: 1x\r\n\r\n",
        "conflicting-length": ok + b"Content-Length: 2\r\nContent-Length: 3\r\n\r\nok",
        "bad-chunk": ok + b"Transfer-Encoding: chunked\r\n\r\nzz\r\n",
        "chunk-overrun": ok + b"Transfer-Encoding: chunked\r\n\r\n2\r\nokk\r\n0\r\n\r\n",
        "folding": ok + b"X-Long: a\r\n b\r\n\r\n",
        "nul": b"HTTP/1.1 200 OK\r\nX-A: \0\r\n\r\n",
        "short-body": ok + b"Content-Length: 100\r\n\r\nonly this",
        "empty": b"",
    }
    seeds = {}
    for i, (name, response) in enumerate(sorted(responses.items())):
        # whole reads, a byte at a time, and reads of varied sizes
        split = (0xFF, 0, 7 + i)[i % 3]
        seeds[name] = seed(split, b"well" if i % 2 == 0 else b"", response)
    return seeds


def write(target, seeds):
    d = os.path.join(HERE, "corpus", target)
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    for name, data in sorted(seeds.items()):
        with open(os.path.join(d, name), "wb") as f:
            f.write(data)
    print(f"{target}: {len(seeds)} seeds, "
          f"{hashlib.sha256(b''.join(seeds[k] for k in sorted(seeds))).hexdigest()[:12]}")


def main():
    try:
        write("fuzz_frame", frame_seeds())
    finally:
        mh.unload_pb()
    write("fuzz_config", config_seeds())
    write("fuzz_profile", profile_seeds())
    write("fuzz_http", http_seeds())
    write("fuzz_http_response", http_response_seeds())


if __name__ == "__main__":
    main()
