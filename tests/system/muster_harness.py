"""Harness for muster's system tests: real daemons, real sockets, real SQLite.

Everything a test starts goes through a ProcessRegistry, which the `procs`
fixture (conftest.py) tears down: SIGTERM, up to 5 s, then SIGKILL. A daemon
stopped by SIGTERM must exit 0 (this catches sanitizer reports at exit), and a
daemon that died on its own while the test thought it was running is reported.

A daemon's stderr is also searched for sanitizer reports (ASan, LSan, UBSan,
TSan) at the end of every test, so a report from a daemon the test killed, or
one that does not change the exit code, still fails the test.

Every daemon the system tests start runs with MUSTER_CHECK_EVALUATE=1
(conftest.py sets it; the benchmarks that use this harness leave it off):
after each evaluation the aggregator derives its whole model again and logs
any node the incremental evaluation got wrong (aggr_model_check); such a
line fails the test too.

Environment:
  MUSTER_BUILD_DIR            where muster-aggregatord and muster-agentd live
                              (default build/ in the source tree)
  MUSTER_TEST_WRAPPER         prefix for daemon commands, e.g. "strace -f"
  MUSTER_VALGRIND=1           run every muster binary the tests start (the
                              daemons, their --check-config runs, musterctl)
                              under valgrind's memcheck (VALGRIND_ARGV), each
                              process logging to its own file; a test fails
                              if any log holds an error or a definite or
                              indirect leak
  MUSTER_TEST_TIMEOUT_SCALE   multiplies every deadline (default 1, or 5 under
                              valgrind)
  MUSTER_SANITIZER            the sanitizer the build under test has, as
                              tests/run's passes set it ("thread" for TSan):
                              tests marked no_tsan are skipped (conftest.py)
"""

import errno
import hashlib
import http.server
import importlib
import json
import os
import random
import re
import shlex
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import uuid

import requests

# ---------------------------------------------------------------- settings

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
PROTO_DIR = os.path.join(REPO, "proto")
BUILD_DIR = os.environ.get("MUSTER_BUILD_DIR", os.path.join(REPO, "build"))
USER_WRAPPER = shlex.split(os.environ.get("MUSTER_TEST_WRAPPER", ""))
VALGRIND = os.environ.get("MUSTER_VALGRIND", "0") == "1"
SANITIZER = os.environ.get("MUSTER_SANITIZER", "")
VALGRIND_SUPP = os.path.join(REPO, "tests", "valgrind.supp")
# memcheck as the valgrind pass of tests/run uses it:
# - errors of every kind, and "definitely" and "indirectly" lost blocks, are
#   errors (exit code 99 and a failed test). "Still reachable" and "possibly
#   lost" are not: a daemon stopped by SIGTERM leaves its libraries' one-time
#   allocations reachable (GnuTLS, libzookeeper-mt, SQLite), and "possibly"
#   is what interior pointers into live pools look like;
# - children are not traced: exec checks run plugins that are not ours;
# - --track-origins makes uninitialised-value reports name the allocation,
#   at about twice the cost, which the subset of tests it runs affords.
VALGRIND_ARGV = ["valgrind", "-q", "--tool=memcheck", "--error-exitcode=99",
                 "--leak-check=full", "--show-leak-kinds=definite,indirect",
                 "--errors-for-leak-kinds=definite,indirect", "--track-origins=yes",
                 "--num-callers=30"]
if os.path.exists(VALGRIND_SUPP):
    VALGRIND_ARGV.append(f"--suppressions={VALGRIND_SUPP}")
# Where processes started without a ProcessRegistry (musterctl through
# WRAPPER) write their valgrind logs; conftest checks it after every test.
VALGRIND_DIR = tempfile.mkdtemp(prefix="muster-valgrind-") if VALGRIND else None
WRAPPER = USER_WRAPPER
if VALGRIND:
    WRAPPER = VALGRIND_ARGV + [f"--log-file={VALGRIND_DIR}/wrapped.%p.log"] + USER_WRAPPER
_default_scale = "5" if VALGRIND or any("valgrind" in w for w in USER_WRAPPER) else "1"
TIMEOUT_SCALE = float(os.environ.get("MUSTER_TEST_TIMEOUT_SCALE", _default_scale))


def T(seconds):
    """A deadline, scaled for slow builds (valgrind, sanitizers)."""
    return seconds * TIMEOUT_SCALE


def binary(name):
    path = os.path.join(BUILD_DIR, name)
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        raise AssertionError(
            f"daemon binary {path} is missing or not executable. Build it first "
            f"(cmake -S {REPO} -B {BUILD_DIR} && cmake --build {BUILD_DIR}) or point "
            f"MUSTER_BUILD_DIR at a build directory.")
    return path


# ---------------------------------------------------------------- protobuf

_pb = None
_pb_dir = None


def load_pb():
    """Generates muster_pb2 from proto/muster.proto with Google's protoc and
    imports it (once per session)."""
    global _pb, _pb_dir
    if _pb is None:
        _pb_dir = tempfile.mkdtemp(prefix="muster-pb-")
        subprocess.run(["protoc", f"--python_out={_pb_dir}", "-I", PROTO_DIR, "muster.proto"],
                       check=True)
        sys.path.insert(0, _pb_dir)
        try:
            _pb = importlib.import_module("muster_pb2")
        finally:
            sys.path.remove(_pb_dir)
    return _pb


def unload_pb():
    global _pb_dir
    if _pb_dir:
        import shutil
        shutil.rmtree(_pb_dir, ignore_errors=True)
        _pb_dir = None


def pb():
    return load_pb()


STATE_NAMES = ["unspecified", "starting", "healthy", "warning", "unhealthy", "unknown"]


def state_name(v):
    return STATE_NAMES[v]


def state_value(name):
    return STATE_NAMES.index(name)


# ---------------------------------------------------------------- small helpers

class WaitTimeout(AssertionError):
    pass


def wait_until(predicate, timeout=3.0, interval=0.02, desc=None, scale=True):
    """Polls predicate() every interval until it returns something truthy, and
    returns that. Raises WaitTimeout (an AssertionError) naming desc and the
    last value seen. Exceptions from predicate propagate (a wrong answer is not
    "not yet"), except ConnectionError-like ones from transient HTTP polling,
    which predicates that want them ignored must catch themselves."""
    deadline = time.monotonic() + (T(timeout) if scale else timeout)
    last = None
    while True:
        last = predicate()
        if last:
            return last
        if time.monotonic() >= deadline:
            raise WaitTimeout(f"timed out after {timeout}s waiting for "
                              f"{desc or getattr(predicate, '__name__', 'condition')}; last value: {last!r}")
        time.sleep(interval)


def free_port():
    for _ in range(50):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]
        except OSError as e:
            if e.errno != errno.EADDRINUSE:
                raise
        finally:
            s.close()
    raise RuntimeError("no free port")


def port_is_listening(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def now_ms():
    return int(time.time() * 1000)


def sha256_file(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def tail(path, lines=80):
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        return f"<cannot read {path}: {e}>"
    text = data.decode("utf-8", "replace").splitlines()
    return "\n".join(text[-lines:])


RFC3339_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")

# ---------------------------------------------------------------- processes

# The first line of a report from a sanitizer runtime, in a daemon's stderr.
SANITIZER_REPORT = re.compile(
    r"^(?:==\d+==ERROR: (?:Address|Leak)Sanitizer\b.*"
    r"|WARNING: ThreadSanitizer: .*|FATAL: ThreadSanitizer.*"
    r"|\S+:\d+:\d+: runtime error: .*)$", re.M)


# What aggr_model_check() logs when the incremental evaluation missed a change.
EVALUATE_MISS = re.compile(r"^.*Incremental evaluation missed a change.*$", re.M)


def sanitizer_reports(path):
    """The first lines of the sanitizer reports in the file at path, and
    of the aggregator's reports of an incremental evaluation gone wrong."""
    try:
        with open(path, "rb") as f:
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return []
    return SANITIZER_REPORT.findall(text) + EVALUATE_MISS.findall(text)


def _is_muster_binary(arg):
    return (os.path.isabs(arg) and
            os.path.dirname(os.path.realpath(arg)) == os.path.realpath(BUILD_DIR))


def wrap_argv(argv, valgrind_log):
    """The command that runs argv: MUSTER_TEST_WRAPPER first, and under
    MUSTER_VALGRIND memcheck logging to valgrind_log (a valgrind --log-file
    pattern), put right before the muster binary. A tool a test put in front
    of the daemon (unshare, setpriv) so runs natively and the daemon under
    memcheck, which does not trace children."""
    argv = list(argv)
    at = next((i for i, a in enumerate(argv) if _is_muster_binary(a)), None)
    # A real peer the test runs (ZooKeeper, Alertmanager, Prometheus) is not
    # ours to check: it runs natively.
    if VALGRIND and at is not None:
        argv[at:at] = VALGRIND_ARGV + [f"--log-file={valgrind_log}"]
    return USER_WRAPPER + argv


def valgrind_findings(path):
    """The reports in a memcheck log (-q, so it holds only reports), each as
    its text. Valgrind's own notices are not findings, and memcheck does not
    count them either: "Warning: ..." blocks (set address range perms,
    unhandled ioctls), and the "--pid--" lines about syscalls valgrind 3.19
    does not know (pidfd_open, which sd-event then does without)."""
    try:
        with open(path, "rb") as f:
            text = f.read().decode("utf-8", "replace")
    except OSError as e:
        return [f"<cannot read {path}: {e}>"]
    blocks, cur = [], []
    for line in text.splitlines():
        if re.match(r"^--\d+-- ", line):
            continue
        m = re.match(r"^==\d+== ?(.*)$", line)
        body = m.group(1) if m else line
        if body.strip():
            cur.append((body, line))
        elif cur:
            blocks.append(cur)
            cur = []
    if cur:
        blocks.append(cur)
    return ["\n".join(line for _, line in b) for b in blocks
            if not b[0][0].startswith("Warning:")]


def valgrind_problems(what, paths):
    """One problem string per log among paths that holds findings."""
    problems = []
    for path in sorted(paths):
        found = valgrind_findings(path)
        if found:
            shown = "\n".join(found[:6])
            more = f"\n... and {len(found) - 6} more" if len(found) > 6 else ""
            problems.append(f"valgrind found {len(found)} problem(s) in {what} ({path}):\n"
                            f"{shown}{more}")
    return problems


class DaemonProcess:
    def __init__(self, name, argv, logdir):
        self.name = name
        self.stdout_path = os.path.join(logdir, f"{name}.stdout.log")
        self.stderr_path = os.path.join(logdir, f"{name}.stderr.log")
        # Under MUSTER_VALGRIND: one log per process (%p), so that a child
        # forked before its exec does not write into the daemon's log.
        self._valgrind_prefix = os.path.join(logdir, f"{name}.valgrind.")
        self.argv = argv = wrap_argv(argv, self._valgrind_prefix + "%p.log")
        self._out = open(self.stdout_path, "wb")
        self._err = open(self.stderr_path, "wb")
        self.popen = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=self._out,
                                      stderr=self._err, start_new_session=True)
        self.pid = self.popen.pid
        self.started = time.monotonic()
        self.killed = False        # we sent SIGKILL on purpose
        self.terminated = False    # we sent SIGTERM
        self.returncode = None

    def __repr__(self):
        return f"<{self.name} pid={self.pid} rc={self.popen.poll()}>"

    def alive(self):
        return self.popen.poll() is None

    def poll(self):
        return self.popen.poll()

    def signal(self, sig):
        if self.alive():
            os.kill(self.pid, sig)

    def stop(self, timeout=5.0):
        """SIGTERM, wait up to timeout, then SIGKILL. Returns the exit code."""
        if self.alive():
            self.terminated = True
            try:
                os.kill(self.pid, signal.SIGTERM)
                os.kill(self.pid, signal.SIGCONT)   # in case a test stopped it
            except ProcessLookupError:
                pass
            try:
                self.popen.wait(T(timeout))
            except subprocess.TimeoutExpired:
                self.killed = True
                self.popen.kill()
                self.popen.wait()
                self._close()
                raise AssertionError(f"{self.name} (pid {self.pid}) did not exit within "
                                     f"{T(timeout)}s of SIGTERM; killed it")
        self._close()
        self.returncode = self.popen.returncode
        return self.returncode

    def kill9(self):
        self.killed = True
        if self.alive():
            os.kill(self.pid, signal.SIGKILL)
        self.popen.wait()
        self._close()
        self.returncode = self.popen.returncode

    def _close(self):
        for f in (self._out, self._err):
            if not f.closed:
                f.close()

    def valgrind_logs(self):
        d = os.path.dirname(self._valgrind_prefix)
        base = os.path.basename(self._valgrind_prefix)
        try:
            return [os.path.join(d, f) for f in os.listdir(d)
                    if f.startswith(base) and f.endswith(".log")]
        except OSError:
            return []

    def memory_problems(self):
        """Sanitizer reports in stderr and valgrind findings, as problem
        strings; checked whether the daemon was stopped, killed or died."""
        problems = []
        reports = sanitizer_reports(self.stderr_path)
        if reports:
            problems.append(f"{self.name} (pid {self.pid}): {len(reports)} sanitizer or "
                            f"evaluation report(s), first: {reports[0]}; see {self.stderr_path}")
        problems += valgrind_problems(f"{self.name} (pid {self.pid})", self.valgrind_logs())
        return problems

    def stderr_text(self):
        with open(self.stderr_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def stderr_size(self):
        return os.path.getsize(self.stderr_path)

    def stderr_since(self, offset):
        with open(self.stderr_path, "rb") as f:
            f.seek(offset)
            return f.read().decode("utf-8", "replace")


class ProcessRegistry:
    """Tracks every daemon a test starts, and stops them all at the end."""

    def __init__(self, logdir):
        self.logdir = logdir
        self.procs = []
        self._names = {}

    def start(self, name, argv):
        n = self._names.get(name, 0) + 1
        self._names[name] = n
        unique = name if n == 1 else f"{name}-{n}"
        p = DaemonProcess(unique, argv, self.logdir)
        self.procs.append(p)
        return p

    def finalize(self):
        """Stops everything. Returns a list of problems (strings)."""
        problems = self._stop_all()
        for p in self.procs:
            problems += p.memory_problems()
        return problems

    def _stop_all(self):
        problems = []
        why = " (99: valgrind's exit code for errors)" if VALGRIND else ""
        for p in reversed(self.procs):
            if p.killed:
                continue
            if p.alive():
                try:
                    rc = p.stop()
                except AssertionError as e:
                    problems.append(str(e))
                    continue
                if rc != 0:
                    problems.append(f"{p.name} (pid {p.pid}) exited with {rc} after SIGTERM "
                                    f"(expected 0{why if rc == 99 else ''}); see {p.stderr_path}")
            elif not p.terminated:
                p._close()
                problems.append(f"{p.name} (pid {p.pid}) died on its own during the test with "
                                f"exit code {p.popen.returncode}; see {p.stderr_path}")
            else:
                rc = p.popen.returncode
                if rc != 0:
                    problems.append(f"{p.name} (pid {p.pid}) exited with {rc} after SIGTERM "
                                    f"(expected 0{why if rc == 99 else ''}); see {p.stderr_path}")
        return problems

    def log_report(self, lines=60):
        out = []
        for p in self.procs:
            out.append(f"===== {p.name} pid={p.pid} rc={p.popen.poll()} argv={' '.join(p.argv)}")
            for path in [p.stderr_path, p.stdout_path] + sorted(p.valgrind_logs()):
                if os.path.exists(path) and os.path.getsize(path) > 0:
                    out.append(f"----- tail of {path}")
                    out.append(tail(path, lines))
        return "\n".join(out)


def run_to_completion(argv, timeout=10.0):
    """Runs a daemon in a mode that should exit by itself (e.g. --check-config
    or a broken config). Returns (returncode, stdout, stderr, seconds)."""
    t0 = time.monotonic()
    vg_dir = tempfile.mkdtemp(prefix="muster-run-", dir=VALGRIND_DIR) if VALGRIND else None
    try:
        r = subprocess.run(wrap_argv(argv, f"{vg_dir}/%p.log"), stdin=subprocess.DEVNULL,
                           capture_output=True, timeout=T(timeout))
    except subprocess.TimeoutExpired as e:
        raise AssertionError(f"{argv[0]} did not exit within {T(timeout)}s; stderr so far:\n"
                             f"{(e.stderr or b'').decode('utf-8', 'replace')[-3000:]}")
    secs = time.monotonic() - t0
    err = r.stderr.decode("utf-8", "replace")
    problems = [f"{argv[0]}: sanitizer report: {line}" for line in SANITIZER_REPORT.findall(err)]
    if vg_dir:
        logs = [os.path.join(vg_dir, f) for f in os.listdir(vg_dir)]
        problems += valgrind_problems(" ".join(argv), logs)
        if not problems:
            import shutil
            shutil.rmtree(vg_dir, ignore_errors=True)
    if problems:
        raise AssertionError("\n".join(problems) + f"\nstderr:\n{err[-3000:]}")
    return (r.returncode, r.stdout.decode("utf-8", "replace"), err, secs)


# ---------------------------------------------------------------- HTTP

_http = requests.Session()
_http.trust_env = False   # never send loopback traffic through a proxy


def netns_prefix(netns):
    """The argv prefix that runs a command in network namespace netns (ip
    execs the command, so its pid is the command's)."""
    return ["ip", "netns", "exec", netns] if netns else []


def url_host(host):
    """host as it goes in a URL or a host:port: an IPv6 address in brackets."""
    return f"[{host}]" if ":" in host else host


def http_get(port, path, timeout=2.0, scheme="http", host="127.0.0.1", **kw):
    """GET scheme://host:port/path. For https pass verify= (a CA file)."""
    return _http.get(f"{scheme}://{url_host(host)}:{port}{path}", timeout=T(timeout), **kw)


def http_request(method, port, path, timeout=2.0, scheme="http", **kw):
    return _http.request(method, f"{scheme}://127.0.0.1:{port}{path}", timeout=T(timeout), **kw)


def http_json(port, path, timeout=2.0, **kw):
    r = http_get(port, path, timeout, **kw)
    assert r.status_code == 200, f"GET {path} -> {r.status_code}: {r.text[:500]}"
    try:
        return r.json()
    except ValueError:
        raise AssertionError(f"GET {path}: body is not JSON: {r.text[:500]!r}")


# ---------------------------------------------------------------- SQLite


def ro_query(path, sql, args=()):
    """Reads a live WAL database read-only."""
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
    try:
        return con.execute(sql, args).fetchall()
    finally:
        con.close()


# ---------------------------------------------------------------- test peers


class FlagHTTPServer:
    """A tiny HTTP server on a free loopback port whose status can be flipped."""

    def __init__(self, status=200):
        self.status = status
        self.hits = 0
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                outer.hits += 1
                body = b"ok\n" if outer.status == 200 else b"not ok\n"
                self.send_response(outer.status)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *a):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/health"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


class FlagTCPListener:
    """A listening socket on a fixed loopback port that can be closed and
    reopened. Accepted connections are closed at once."""

    def __init__(self, port=None):
        self.port = port or free_port()
        self.accepted = 0
        self.sock = None
        self.thread = None
        self._stop = threading.Event()
        self.open()

    def open(self):
        assert self.sock is None
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        deadline = time.monotonic() + 3
        while True:
            try:
                s.bind(("127.0.0.1", self.port))
                break
            except OSError as e:
                if e.errno != errno.EADDRINUSE or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        s.listen(64)
        s.settimeout(0.05)
        self.sock = s
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._accept_loop, args=(s, self._stop), daemon=True)
        self.thread.start()

    def _accept_loop(self, s, stop):
        while not stop.is_set():
            try:
                c, _ = s.accept()
                self.accepted += 1
                c.close()
            except socket.timeout:
                continue
            except OSError:
                return

    def close(self):
        if self.sock is None:
            return
        self._stop.set()
        self.thread.join(2)
        self.sock.close()
        self.sock = None


class SilentListener:
    """A peer that accepts TCP connections, reads and discards whatever comes,
    and never answers: an aggregator that hangs."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self.conns = []
        self.closed_by_peer = 0
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        import selectors
        sel = selectors.DefaultSelector()
        sel.register(self.sock, selectors.EVENT_READ)
        while not self._stop.is_set():
            for key, _ in sel.select(0.05):
                if key.fileobj is self.sock:
                    c, _ = self.sock.accept()
                    self.accepted += 1
                    self.conns.append(c)
                    sel.register(c, selectors.EVENT_READ)
                else:
                    try:
                        data = key.fileobj.recv(65536)
                    except OSError:
                        data = b""
                    if not data:
                        self.closed_by_peer += 1
                        sel.unregister(key.fileobj)
                        key.fileobj.close()
        sel.close()

    def close(self):
        self._stop.set()
        self.thread.join(2)
        for c in self.conns:
            try:
                c.close()
            except OSError:
                pass
        self.sock.close()


class WelcomeThenSilentPeer:
    """A fake aggregator that answers the first Hello with a Welcome and then
    never says anything again (it reads and discards). Records when each
    connection was welcomed and when the agent closed it."""

    def __init__(self, heartbeat_ms=200):
        self.heartbeat_ms = heartbeat_ms
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.05)
        self.port = self.sock.getsockname()[1]
        self.events = []   # (conn no, "welcomed"|"closed", monotonic time)
        self._stop = threading.Event()
        self._conns = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        n = 0
        while not self._stop.is_set():
            try:
                c, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            n += 1
            self._conns.append(c)
            threading.Thread(target=self._serve, args=(c, n), daemon=True).start()

    def _serve(self, c, n):
        c.settimeout(0.1)
        buf = b""
        welcomed = False
        while not self._stop.is_set():
            try:
                data = c.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                data = b""
            if not data:
                self.events.append((n, "closed", time.monotonic()))
                return
            buf += data
            if not welcomed and buf:
                ln = shift = 0
                for i, b in enumerate(buf[:10]):
                    ln |= (b & 0x7F) << shift
                    shift += 7
                    if not b & 0x80:
                        if len(buf) - i - 1 >= ln:
                            w = pb().Envelope(welcome=pb().Welcome(
                                epoch=1, held_seq=0, leader_id="silent",
                                heartbeat_ms=self.heartbeat_ms))
                            d = w.SerializeToString()
                            c.sendall(encode_varint(len(d)) + d)
                            welcomed = True
                            self.events.append((n, "welcomed", time.monotonic()))
                        break

    def welcomed(self):
        return [e for e in self.events if e[1] == "welcomed"]

    def closed(self):
        return [e for e in self.events if e[1] == "closed"]

    def close(self):
        self._stop.set()
        for c in self._conns:
            try:
                c.close()
            except OSError:
                pass
        self.sock.close()


class FlagToggler:
    """Creates and removes a flag file on a thread, every period seconds on
    average (uniformly jittered by +-50%, so that a check polling at a fixed
    interval does not alias with the toggling)."""

    def __init__(self, path, period=0.05):
        self.path = path
        self.period = period
        self.flips = 0
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        on = os.path.exists(self.path)
        rnd = random.Random()
        while not self._stop.wait(self.period * rnd.uniform(0.5, 1.5)):
            on = not on
            if on:
                open(self.path, "w").close()
            else:
                try:
                    os.unlink(self.path)
                except FileNotFoundError:
                    pass
            self.flips += 1

    def start(self):
        self.thread.start()
        return self

    def stop(self):
        self._stop.set()
        if self.thread.is_alive():
            self.thread.join(2)


# ---------------------------------------------------------------- varint framing


def encode_varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


class StreamClosed(Exception):
    pass


class StreamClient:
    """A foreign protocol client built on Google's protobuf runtime."""

    def __init__(self, port, timeout=5.0):
        self.port = port
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=T(timeout))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = bytearray()
        self.eof = False
        self.received = []

    # --- writing
    def send(self, env):
        data = env.SerializeToString()
        self.sock.sendall(encode_varint(len(data)) + data)

    def send_raw(self, data):
        self.sock.sendall(data)

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    # --- reading
    def _fill(self, deadline):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise socket.timeout("deadline reached")
        self.sock.settimeout(remaining)
        try:
            data = self.sock.recv(65536)
        except ConnectionResetError:
            data = b""
        if not data:
            self.eof = True
            raise StreamClosed("connection closed by peer")
        self.buf += data

    def _try_frame(self):
        n = 0
        shift = 0
        for i, b in enumerate(self.buf):
            if i >= 10:
                raise AssertionError("peer sent a varint length over 10 bytes")
            n |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                start = i + 1
                if len(self.buf) - start < n:
                    return None
                frame = bytes(self.buf[start:start + n])
                del self.buf[:start + n]
                return frame
        return None

    def has_frame(self):
        """True when a whole frame is already buffered."""
        n = shift = 0
        for i, b in enumerate(self.buf[:10]):
            n |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                return len(self.buf) - (i + 1) >= n
        return len(self.buf) >= 10   # let recv report the bad varint

    def recv(self, timeout=3.0):
        """Returns the next Envelope. Raises StreamClosed at EOF, socket.timeout
        when nothing complete arrives in time."""
        return self._recv_until(time.monotonic() + T(timeout))

    def _recv_until(self, deadline):
        while True:
            frame = self._try_frame()
            if frame is not None:
                env = pb().Envelope()
                env.ParseFromString(frame)
                self.received.append(env)
                return env
            if self.eof:
                if self.buf:
                    raise AssertionError(f"connection closed mid-frame ({len(self.buf)} bytes left)")
                raise StreamClosed("connection closed by peer")
            self._fill(deadline)

    def recv_kind(self, kinds, timeout=3.0):
        """Returns the next Envelope whose body is one of kinds, skipping
        Heartbeats and Acks that are not asked for. A Reject is always
        returned."""
        if isinstance(kinds, str):
            kinds = (kinds,)
        deadline = time.monotonic() + T(timeout)
        while True:
            env = self._recv_until(deadline)
            kind = env.WhichOneof("body")
            if kind in kinds or kind == "reject":
                return env
            if kind not in ("heartbeat", "ack"):
                raise AssertionError(f"unexpected frame while waiting for {kinds}: {env}")

    def hello(self, node_id, role, spool_id, last_seq=0, digest="", boot_id=None, **extra):
        h = pb().Hello(node_id=node_id, role=role, profile_digest=digest,
                       hostname=extra.pop("hostname", "foreign-" + node_id),
                       boot_id=boot_id or "00000000-0000-4000-8000-000000000001",
                       boot_time_ms=extra.pop("boot_time_ms", now_ms() - 60000),
                       agent_version="pytest-foreign", spool_id=spool_id, last_seq=last_seq,
                       protocol_version=extra.pop("protocol_version", 1), **extra)
        self.send(pb().Envelope(hello=h))
        return self.recv_kind(("welcome", "reject", "redirect"))

    def send_changes(self, changes):
        self.send(pb().Envelope(changes=pb().ChangeBatch(changes=changes)))

    def send_heartbeat(self, seq=0):
        self.send(pb().Envelope(heartbeat=pb().Heartbeat(sent_ms=now_ms(), seq=seq)))

    def wait_ack(self, seq, timeout=3.0, on_ack=None):
        """Reads until an Ack with seq >= seq arrives. Returns the list of ack
        values seen. Fails on a Reject or EOF."""
        deadline = time.monotonic() + T(timeout)
        seen = []
        while True:
            try:
                env = self._recv_until(deadline)
            except socket.timeout:
                raise AssertionError(f"no Ack >= {seq} within {T(timeout)}s; acks seen: {seen[-10:]}")
            kind = env.WhichOneof("body")
            if kind == "ack":
                seen.append(env.ack.seq)
                if on_ack:
                    on_ack(env.ack.seq)
                if env.ack.seq >= seq:
                    return seen
            elif kind == "reject":
                raise AssertionError(f"Reject while waiting for Ack {seq}: {env.reject}")
            elif kind != "heartbeat":
                raise AssertionError(f"unexpected frame while waiting for Ack: {env}")

    def expect_closed(self, timeout=3.0):
        """Asserts the peer closes the connection within timeout; returns the
        frames received meanwhile."""
        deadline = time.monotonic() + T(timeout)
        frames = []
        while True:
            try:
                frames.append(self._recv_until(deadline))
            except StreamClosed:
                return frames
            except socket.timeout:
                raise AssertionError(f"connection still open {T(timeout)}s later; frames: {frames}")


class ChangeMaker:
    """Produces a valid stream of Change messages for a foreign node: each
    component alternates healthy/unhealthy, with from_state chained."""

    def __init__(self, components, boot_id="00000000-0000-4000-8000-000000000001"):
        self.components = list(components)
        self.state = {c: pb().STATE_STARTING for c in self.components}
        self.seq = 0
        self.boot_id = boot_id
        self.made = {}

    def make(self, n):
        out = []
        for _ in range(n):
            self.seq += 1
            comp = self.components[self.seq % len(self.components)]
            frm = self.state[comp]
            to = pb().STATE_UNHEALTHY if frm == pb().STATE_HEALTHY else pb().STATE_HEALTHY
            self.state[comp] = to
            c = pb().Change(seq=self.seq, component=comp, check=pb().CHECK_EXEC, to=to,
                            at_ms=now_ms(), output=f"out {self.seq}", boot_id=self.boot_id,
                            health=1, rise=1, fall=1)
            setattr(c, "from", frm)
            out.append(c)
            self.made[self.seq] = c
        return out

    def snapshot(self, only=None):
        comps = []
        for c in self.components:
            if only is not None and c not in only:
                continue
            comps.append(pb().ComponentStatus(component=c, check=pb().CHECK_EXEC, state=self.state[c],
                                              since_ms=now_ms(), output="snap", health=1, rise=1,
                                              fall=1))
        return pb().Envelope(snapshot=pb().Snapshot(seq=self.seq, at_ms=now_ms(), components=comps))


# ---------------------------------------------------------------- daemons


def _ini(sections):
    lines = []
    for name, kv in sections:
        lines.append(f"[{name}]")
        for k, v in kv.items():
            if v is not None:
                lines.append(f"{k} = {v}")
        lines.append("")
    return "\n".join(lines)


class TestEnv:
    """Per-test workspace: a profiles directory, daemons, peers."""

    def __init__(self, tmp_path, procs):
        self.dir = str(tmp_path)
        self.procs = procs
        self.profiles = os.path.join(self.dir, "profiles")
        os.makedirs(self.profiles, exist_ok=True)
        self._cleanups = []

    def path(self, name):
        return os.path.join(self.dir, name)

    def write(self, name, text):
        p = self.path(name)
        with open(p, "w") as f:
            f.write(text)
        return p

    def write_profile(self, role, text):
        p = os.path.join(self.profiles, f"{role}.ini")
        with open(p, "w") as f:
            f.write(text)
        return p

    def profile_digest(self, role):
        return sha256_file(os.path.join(self.profiles, f"{role}.ini"))

    def http_flag(self, status=200):
        s = FlagHTTPServer(status)
        self._cleanups.append(s.close)
        return s

    def tcp_flag(self):
        s = FlagTCPListener()
        self._cleanups.append(s.close)
        return s

    def silent_peer(self):
        s = SilentListener()
        self._cleanups.append(s.close)
        return s

    def welcome_then_silent_peer(self, heartbeat_ms=200):
        s = WelcomeThenSilentPeer(heartbeat_ms)
        self._cleanups.append(s.close)
        return s

    def toggler(self, path, period=0.05):
        t = FlagToggler(path, period)
        self._cleanups.append(t.stop)
        return t

    def aggregator(self, **kw):
        return Aggregator(self, **kw)

    def agent(self, node_id, role, aggregator, **kw):
        return Agent(self, node_id, role, aggregator, **kw)

    def cleanup(self):
        for fn in reversed(self._cleanups):
            try:
                fn()
            except Exception:
                pass


class Aggregator:
    def __init__(self, env, id="aggr1", cluster="test", expected_masters=None, stale_timeout="2s",
                 max_frame=None, log_level="debug", db_name=None, extra=None, sections=None,
                 host="127.0.0.1"):
        self.env = env
        self.id = id
        self.host = host   # where it listens and is reached: 127.0.0.1, ::1, ...
        self.sections = sections or {}  # more INI sections, e.g. {"tls": {...}}
        self.cluster = cluster
        self.expected_masters = expected_masters
        self.stale_timeout = stale_timeout
        self.max_frame = max_frame
        self.log_level = log_level
        self.extra = extra or {}
        self.db = env.path(db_name or f"{id}.db")
        self.config = env.path(f"{id}.ini")
        self.stream_port = free_port()
        self.http_port = free_port()
        self.proc = None

    def config_text(self):
        return _ini([
            ("aggregator", dict({
                "id": self.id,
                "cluster": self.cluster,
                "listen_stream": f"{url_host(self.host)}:{self.stream_port}",
                "listen_http": f"{url_host(self.host)}:{self.http_port}",
                "database": self.db,
                "profiles": self.env.profiles,
                "expected_masters": (",".join(self.expected_masters)
                                     if self.expected_masters else None),
                "stale_timeout": self.stale_timeout,
                "max_frame": self.max_frame,
            }, **self.extra)),
            ("log", {"level": self.log_level}),
            *self.sections.items(),
        ])

    def write_config(self):
        with open(self.config, "w") as f:
            f.write(self.config_text())

    netns = None   # a network namespace to run in (netns_harness.py), or None

    def argv(self, *more):
        return [*netns_prefix(self.netns), binary("muster-aggregatord"), "--config", self.config,
                *more]

    def start(self, wait=True, new_ports_on_conflict=True):
        for attempt in range(3):
            self.write_config()
            self.proc = self.env.procs.start(self.id, self.argv())
            if not wait:
                return self
            try:
                self.wait_ready()
                return self
            except AssertionError:
                if (new_ports_on_conflict and not self.proc.alive()
                        and "in use" in self.proc.stderr_text().lower() and attempt < 2):
                    self.proc.killed = True   # expected death (port taken); retry elsewhere
                    self.stream_port, self.http_port = free_port(), free_port()
                    continue
                raise
        return self

    def readyz(self):
        try:
            r = self.get("/readyz", timeout=0.5)
        except requests.RequestException:
            return None
        if r.status_code != 200:
            return None
        try:
            j = r.json()
        except ValueError:
            return None
        return j if j.get("ready") is True and j.get("role") == "leader" else None

    def wait_ready(self, timeout=10.0):
        deadline = time.monotonic() + T(timeout)
        while time.monotonic() < deadline:
            if self.proc is not None and not self.proc.alive():
                raise AssertionError(f"{self.proc.name} exited with {self.proc.poll()} before it was "
                                     f"ready:\n{tail(self.proc.stderr_path, 30)}")
            if self.readyz():
                return
            time.sleep(0.02)
        raise AssertionError(f"{self.id}: GET /readyz never answered 200 "
                             f'{{"ready":true,"role":"leader"}} within {T(timeout)}s')

    def stop(self):
        rc = self.proc.stop()
        assert rc == 0, f"{self.id} exited with {rc} after SIGTERM:\n{tail(self.proc.stderr_path, 30)}"

    def kill9(self):
        self.proc.kill9()

    # --- HTTP: https when the config serves it ([tls] cert and key, http not
    # off), verified against [tls] ca; the bearer token of http_token_file
    # with every request unless a test says otherwise (token=None: none).
    @property
    def http_scheme(self):
        tls = self.sections.get("tls", {})
        off = str(tls.get("http", "yes")).lower() in ("no", "false", "off", "0")
        return "https" if tls.get("cert") and tls.get("key") and not off else "http"

    @property
    def http_verify(self):
        return self.sections.get("tls", {}).get("ca") or True

    @property
    def http_token(self):
        path = self.extra.get("http_token_file")
        if not path:
            return None
        with open(path) as f:
            return f.readline().strip()

    def url(self, path=""):
        return f"{self.http_scheme}://{url_host(self.host)}:{self.http_port}{path}"

    _CONFIGURED = object()

    def http_kw(self, token=_CONFIGURED, **kw):
        """requests' keyword arguments for this aggregator: verify, and an
        Authorization header with token (the configured one by default)."""
        if token is Aggregator._CONFIGURED:
            token = self.http_token
        headers = dict(kw.pop("headers", None) or {})
        if token is not None:
            headers.setdefault("Authorization", f"Bearer {token}")
        if self.http_scheme == "https":
            kw.setdefault("verify", self.http_verify)
        return dict(kw, headers=headers)

    def get(self, path, token=_CONFIGURED, **kw):
        return http_get(self.http_port, path, scheme=self.http_scheme, host=self.host,
                        **self.http_kw(token, **kw))

    def json(self, path):
        r = self.get(path)
        assert r.status_code == 200, f"GET {path} -> {r.status_code}: {r.text[:500]}"
        try:
            return r.json()
        except ValueError:
            raise AssertionError(f"GET {path}: body is not JSON: {r.text[:500]!r}")

    def health(self):
        return self.json("/v1/health")

    def nodes(self):
        return {n["id"]: n for n in self.json("/v1/nodes")["nodes"]}

    def node(self, node_id):
        r = self.get(f"/v1/nodes/{node_id}")
        if r.status_code == 404:
            return None
        assert r.status_code == 200, f"GET /v1/nodes/{node_id} -> {r.status_code}: {r.text[:300]}"
        return r.json()

    def component(self, node_id, name):
        n = self.node(node_id)
        if not n:
            return None
        for c in n.get("components", []):
            if c.get("name") == name:
                return c
        return None

    def wait_verdict(self, verdict, timeout=3.0):
        return self.wait_health(lambda h: h.get("verdict") == verdict, timeout,
                                desc=f"cluster verdict {verdict!r}")

    def wait_node(self, node_id, pred, timeout=3.0, desc=None):
        last = {}

        def check():
            n = self.node(node_id)
            last["v"] = n
            return n if n is not None and pred(n) else None
        try:
            return wait_until(check, timeout, desc=desc)
        except WaitTimeout as e:
            raise WaitTimeout(f"{e}\nlast GET /v1/nodes/{node_id}: "
                              f"{json.dumps(last.get('v'), indent=1)[:3000]}") from None

    def wait_health(self, pred, timeout=3.0, desc=None):
        last = {}

        def check():
            h = self.health()
            last["v"] = h
            return h if pred(h) else None
        try:
            return wait_until(check, timeout, desc=desc)
        except WaitTimeout as e:
            raise WaitTimeout(f"{e}\nlast GET /v1/health: "
                              f"{json.dumps(last.get('v'), indent=1)[:3000]}") from None

    # --- database
    def query(self, sql, args=()):
        return ro_query(self.db, sql, args)

    def held_seq(self, node_id, spool_id):
        rows = self.query("SELECT held_seq FROM spools WHERE node_id=? AND spool_id=?",
                          (node_id, spool_id))
        return rows[0][0] if rows else None

    # --- logs
    def log_size(self):
        return self.proc.stderr_size()

    def log_since(self, offset):
        return self.proc.stderr_since(offset)


class Agent:
    def __init__(self, env, node_id, role, aggregator, heartbeat="200ms", log_level="debug",
                 boot_id=None, spool_name=None, extra=None, sections=None, name=None,
                 kernel_boot=False):
        self.env = env
        self.node_id = node_id
        # names its files and process: two agents may share a node id
        self.name = name or node_id
        self.sections = sections or {}  # more INI sections, e.g. {"tls": {...}}
        self.role = role
        self.aggregator = aggregator
        self.heartbeat = heartbeat
        self.log_level = log_level
        self.extra = extra or {}
        self.config = env.path(f"agent-{self.name}.ini")
        self.spool = env.path(spool_name or f"{self.name}.spool")
        # kernel_boot: no boot_id_file in the config; the agent reads the
        # kernel's boot id (which every agent on this machine shares)
        self.kernel_boot = kernel_boot
        self.boot_id_file = env.path(f"{self.name}.boot_id")
        if kernel_boot:
            with open("/proc/sys/kernel/random/boot_id") as f:
                self.boot_id = f.read().strip()
        else:
            self.boot_id = boot_id or str(uuid.uuid4())
            with open(self.boot_id_file, "w") as f:
                f.write(self.boot_id + "\n")
        self.proc = None

    def config_text(self):
        aggrs = self.aggregator if isinstance(self.aggregator, list) else [self.aggregator]
        return _ini([
            ("agent", dict({
                "node_id": self.node_id,
                "role": self.role,
                "profiles": self.env.profiles,
                "spool": self.spool,
                "aggregators": ",".join(f"{url_host(getattr(a, 'host', '127.0.0.1'))}:{a.stream_port}"
                                        for a in aggrs),
                "heartbeat": self.heartbeat,
                **({} if self.kernel_boot else {"boot_id_file": self.boot_id_file}),
            }, **self.extra)),
            ("log", {"level": self.log_level}),
            *self.sections.items(),
        ])

    def write_config(self):
        with open(self.config, "w") as f:
            f.write(self.config_text())

    netns = None   # a network namespace to run in (netns_harness.py), or None

    def argv(self, *more):
        return [*netns_prefix(self.netns), binary("muster-agentd"), "--config", self.config, *more]

    def start(self):
        self.write_config()
        self.proc = self.env.procs.start(f"agent-{self.name}", self.argv())
        return self

    def stop(self):
        rc = self.proc.stop()
        assert rc == 0, f"agent {self.node_id} exited with {rc} after SIGTERM:\n" \
                        f"{tail(self.proc.stderr_path, 30)}"

    def kill9(self):
        self.proc.kill9()

    def assert_alive(self):
        assert self.proc.alive(), (f"agent {self.node_id} exited with {self.proc.poll()}:\n"
                                   f"{tail(self.proc.stderr_path, 30)}")

    # --- spool
    def spool_query(self, sql, args=()):
        return ro_query(self.spool, sql, args)

    def spool_ready(self):
        """True once the spool exists with its meta and changes tables."""
        if not os.path.exists(self.spool):
            return False
        try:
            self.spool_query("SELECT 1 FROM changes LIMIT 1")
            return self.spool_meta("spool_id") is not None
        except sqlite3.Error:
            return False

    def spool_meta(self, key):
        rows = self.spool_query("SELECT value FROM meta WHERE key=?", (key,))
        return rows[0][0] if rows else None

    def spool_id(self):
        return self.spool_meta("spool_id")

    def acked_seq(self):
        v = self.spool_meta("acked_seq")
        return int(v) if v is not None else None

    def max_seq(self):
        return self.spool_query("SELECT coalesce(max(seq),0) FROM changes")[0][0]


# ---------------------------------------------------------------- profiles


def component_ini(component, /, **kv):
    # Positional only: a profile's component may have a key named "name".
    lines = [f'[component "{component}"]']
    lines += [f"{k} = {v}" for k, v in kv.items()]
    return "\n".join(lines) + "\n"


def stage_ini(name, components, after=None):
    s = f'[stage "{name}"]\ncomponents = {" ".join(components)}\n'
    if after:
        s += f"after = {after}\n"
    return s


def profile_ini(role, components, stages, grace="0s"):
    """components: list of (name, dict); stages: list of (name, [components])."""
    parts = [f"[profile]\nrole = {role}\nstartup_grace = {grace}\n"]
    parts += [component_ini(n, **kv) for n, kv in components]
    parts += [stage_ini(n, cs) for n, cs in stages]
    return "\n".join(parts)


def exec_rc_script(env, name, rc=0):
    """An exec check whose exit code (and first output line) is read from a
    file: returns (command, rc_file_path)."""
    rc_file = env.path(f"{name}.rc")
    with open(rc_file, "w") as f:
        f.write(f"{rc}\n")
    script = env.write(f"{name}.sh",
                       f'rc=$(cat "{rc_file}")\necho "{name} says $rc"\nexit "$rc"\n')
    return f"/bin/sh {script}", rc_file


def set_rc(rc_file, rc):
    tmp = rc_file + ".tmp"
    with open(tmp, "w") as f:
        f.write(f"{rc}\n")
    os.replace(tmp, rc_file)


# ---------------------------------------------------------------- verdict helpers


def mentions(reasons, node=None, component=None):
    """True when some reason (or root cause) names node and component, in its
    fields or its message."""
    for r in reasons or []:
        text = " ".join(str(v) for v in r.values() if v is not None)
        if node and r.get("node") != node and node not in text:
            continue
        if component and r.get("component") != component and component not in text:
            continue
        return True
    return False


# ---------------------------------------------------------------- watching verdicts


class VerdictWatch:
    """Records every cluster and node verdict an aggregator publishes while a
    scenario runs, as a user polling it would see them, and more: blocking
    reads (?index=N&wait=) on /v1/health and /v1/nodes return at every
    change of either body, so a verdict that held for one publish is seen,
    however short. A plain sample every `every` seconds runs beside them, so
    the record has no gap longer than that even while nothing changes.

        with mh.VerdictWatch(aggr) as w:
            ... the scenario ...
        w.assert_never(lambda s: s.cluster == "unhealthy", "an orderly boot is never unhealthy")

    Each sample is a VerdictWatch.Sample: t (time.monotonic()), cluster
    (verdict or None when the aggregator did not answer 200), nodes ({id:
    node list entry}), health (the whole body).

    A gap between samples is no blind spot when a blocking read of each
    body was waiting through all of it: such a read returns at once when
    its body changes, and that return is itself a sample. assert_never()
    checks that every gap longer than 100 ms (a busy machine can stall the
    sampler) was covered so."""

    class Sample:
        __slots__ = ("t", "wall", "cluster", "health", "nodes", "indexes")

        def __init__(self, t, wall, health, nodes, indexes=None):
            self.t, self.wall, self.health, self.nodes = t, wall, health, nodes
            # (health's X-Muster-Index, the node list's), both read by this
            # sample's plain GETs; None for a blocking read's sample.
            self.indexes = indexes
            self.cluster = health.get("verdict") if health else None

        def node(self, node_id):
            return (self.nodes or {}).get(node_id)

        def node_verdict(self, node_id):
            n = self.node(node_id)
            return n.get("verdict") if n else None

        def __repr__(self):
            nodes = {k: (v.get("verdict"), v.get("connected")) for k, v in (self.nodes or {}).items()}
            return f"<{self.wall:.3f} cluster={self.cluster} nodes={nodes}>"

    def __init__(self, aggregator, every=0.025, wait="2s"):
        self.aggr = aggregator
        self.every = every
        self.wait = wait
        self.samples = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._last = {"health": None, "nodes": None}
        self._threads = []
        # Per body, the blocking reads that came back unchanged or changed:
        # (sent, returned) in time.monotonic().
        self._waits = {"health": [], "nodes": []}

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def start(self):
        # The first sample is taken before start() returns: the record
        # covers everything from here on.
        self._sample(self._get("/v1/health")[0], self._get("/v1/nodes")[0])
        for target in (self._poll_loop, self._follow("/v1/health", "health"),
                       self._follow("/v1/nodes", "nodes")):
            t = threading.Thread(target=target, daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def stop(self):
        # The last sample is taken before the threads are joined: a blocking
        # read may take its whole wait to return, and what it brings back
        # after the end is not part of the record.
        self._sample(self._get("/v1/health")[0], self._get("/v1/nodes")[0])
        self._stop.set()
        for t in self._threads:
            t.join(timeout=T(10))

    def _get(self, path, timeout=1.0):
        try:
            r = self.aggr.get(path, timeout=T(timeout))
        except requests.RequestException:
            return None, None
        if r.status_code != 200:
            return None, None
        try:
            return r.json(), r.headers.get("X-Muster-Index")
        except ValueError:
            return None, None

    def _sample(self, health, nodes_body, indexes=None):
        nodes = ({n["id"]: n for n in nodes_body.get("nodes", [])}
                 if nodes_body is not None else None)
        with self._lock:
            if self._stop.is_set():
                return
            if health is not None:
                self._last["health"] = health
            if nodes is not None:
                self._last["nodes"] = nodes
            self.samples.append(VerdictWatch.Sample(
                time.monotonic(), time.time(),
                health if health is not None else None,
                nodes if nodes is not None else self._last["nodes"], indexes))

    def _poll_loop(self):
        while not self._stop.is_set():
            t0 = time.monotonic()
            health, hi = self._get("/v1/health")
            nodes, ni = self._get("/v1/nodes")
            self._sample(health, nodes, (hi, ni) if hi and ni else None)
            self._stop.wait(max(0.0, self.every - (time.monotonic() - t0)))

    def _follow(self, path, which):
        def loop():
            index = None
            while not self._stop.is_set():
                q = f"{path}?index={index}&wait={self.wait}" if index else path
                sent = time.monotonic()
                body, idx = self._get(q, timeout=10.0)
                if body is None:
                    index = None
                    self._stop.wait(0.02)
                    continue
                if index:
                    with self._lock:
                        self._waits[which].append((sent, time.monotonic()))
                index = idx
                if which == "health":
                    self._sample(body, None)
                else:
                    with self._lock:
                        health = self._last["health"]
                    self._sample(health, body)
        return loop

    # --- reading the record
    def record(self):
        with self._lock:
            return list(self.samples)

    def cluster_verdicts(self):
        """The cluster verdicts in the order seen, repeats collapsed."""
        out = []
        for s in self.record():
            if s.cluster is not None and (not out or out[-1] != s.cluster):
                out.append(s.cluster)
        return out

    def node_verdicts(self, node_id):
        out = []
        for s in self.record():
            v = s.node_verdict(node_id)
            if v is not None and (not out or out[-1] != v):
                out.append(v)
        return out

    def max_gap(self):
        ts = [s.t for s in self.record()]
        return max((b - a for a, b in zip(ts, ts[1:])), default=0.0)

    def blind_spots(self, longer_than):
        """The gaps between samples longer than longer_than that nothing
        vouches for: [(start, end)]. A gap is vouched for when a blocking
        read of each body waited through it (it would have returned at a
        change), or when plain samples on both sides read the same indexes
        of both bodies (an index moves with every change of its body, so
        nothing changed in between)."""
        with self._lock:
            rec = list(self.samples)
            waits = {k: list(v) for k, v in self._waits.items()}

        def covered(a, b, which):
            return any(sent <= a and returned >= b for sent, returned in waits[which])

        def unchanged(i, j):
            # The last plain sample at or before i, the first at or after j.
            before = next((x.indexes for x in reversed(rec[:i + 1]) if x.indexes), None)
            after = next((x.indexes for x in rec[j:] if x.indexes), None)
            return before is not None and before == after
        out = []
        for i in range(len(rec) - 1):
            a, b = rec[i].t, rec[i + 1].t
            if b - a <= longer_than:
                continue
            if covered(a, b, "health") and covered(a, b, "nodes"):
                continue
            if unchanged(i, i + 1):
                continue
            out.append((a, b))
        return out

    def assert_never(self, bad, desc):
        """No sample satisfies bad(sample); the record's gaps stay below
        100 ms (scaled), so a wrong verdict of 100 ms would have been seen."""
        rec = self.record()
        hits = [s for s in rec if s.health is not None and bad(s)]
        assert not hits, (f"{desc}: seen {len(hits)} time(s), first at {hits[0]!r}; "
                          f"cluster verdicts in order: {self.cluster_verdicts()}")
        blind = self.blind_spots(T(0.1))
        assert not blind, (f"the verdicts were not watched closely enough: {len(blind)} gap(s) over "
                           f"{T(0.1):.3f}s without a blocking read waiting, the longest "
                           f"{max(b - a for a, b in blind):.3f}s")


# ---------------------------------------------------------------- operator writes (issue 19)


def operator_write(aggr, method, path, body=None, token=Aggregator._CONFIGURED, operator="tester",
                   host="127.0.0.1", **kw):
    """PUT or DELETE of operator state on aggr's HTTP API (the admin token
    when aggr's config names one, else the configured token); returns the
    response. host: the address to connect to (another of this machine's
    addresses makes a non-loopback peer)."""
    if token is Aggregator._CONFIGURED:
        admin = aggr.extra.get("http_admin_token_file")
        if admin:
            with open(admin) as f:
                token = f.readline().strip()
    headers = dict(kw.pop("headers", None) or {})
    if operator:
        headers["X-Muster-Operator"] = operator
    kw = aggr.http_kw(token, headers=headers, **kw)
    url = f"{aggr.http_scheme}://{host}:{aggr.http_port}{path}"
    return _http.request(method, url, json=body, timeout=T(kw.pop("timeout", 5.0)), **kw)


class FakeMesosState:
    """The local Mesos state endpoint as DC/OS's diagnostics read it (issue
    18): GET /state answers a JSON object whose top-level "id" is the Mesos
    id, near the start as Mesos writes it, and then `pad` bytes of
    frameworks (a master's state runs to megabytes). id None: no "id" (a
    Mesos agent not yet registered); status: what it answers. Listens on
    host (any 127.x address) at a free port."""

    def __init__(self, mesos_id, host="127.0.0.1", pad=0, status=200):
        self.mesos_id, self.pad, self.status, self.hits = mesos_id, pad, status, 0
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                outer.hits += 1
                state = {"version": "1.12.0", "git_sha": "0" * 40, "start_time": 1.0e9}
                if outer.mesos_id is not None:
                    state["id"] = outer.mesos_id
                state["pid"] = f"slave(1)@{host}:5051"
                state["frameworks"] = [{"name": "x" * 1000}] * (outer.pad // 1000)
                body = json.dumps(state).encode()
                self.send_response(outer.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                try:
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass   # the agent reads the first 64 KiB and closes

            def log_message(self, *a):
                pass

        self.server = http.server.ThreadingHTTPServer((host, 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever,
                                       kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def dcos_version_file(env, version="2.2.0", name="dcos-version.json"):
    """DC/OS's /opt/mesosphere/etc/dcos-version.json, with its other keys."""
    path = env.path(name)
    with open(path, "w") as f:
        json.dump({"version": version, "dcos-variant": "open",
                   "dcos-image-commit": "0" * 40, "bootstrap-id": "0" * 40}, f)
    return path


def start_peer(env, name, argv, ready_url, timeout=30.0):
    """Starts a real peer server (Alertmanager, Prometheus) through the test's
    process registry and waits until GET ready_url answers 200. Returns the
    process."""
    proc = env.procs.start(name, argv)

    def ready():
        assert proc.alive(), f"{name} exited:\n{tail(proc.stderr_path, 30)}"
        try:
            return requests.get(ready_url, timeout=1).status_code == 200
        except requests.RequestException:
            return False
    wait_until(ready, timeout=timeout, desc=f"{name} ready")
    return proc
