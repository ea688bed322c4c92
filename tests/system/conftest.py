"""pytest glue for muster's system tests.

Run: /usr/bin/python3 -m pytest -v tests/system
     MUSTER_BUILD_DIR=/path/to/build  (default build/ in the source tree)
     MUSTER_VALGRIND=1  (optional: every muster binary under memcheck; see
                        muster_harness.py)
     MUSTER_SANITIZER=thread  (set by tests/run's ThreadSanitizer pass)

Markers, each with the reason it is left out, next to the test (a module's
`pytestmark` for a whole file):
  no_valgrind(reason=...)  skipped when MUSTER_VALGRIND=1
  no_tsan(reason=...)      skipped when MUSTER_SANITIZER=thread
  long(reason=...)         skipped when MUSTER_PASS is release, thread or
                           valgrind: a scenario of 20 s or more that
                           tests/run runs once, in its AddressSanitizer pass,
                           so that the release pass keeps its 6-minute budget
                           and the whole run its 35 minutes (run directly,
                           pytest runs it)
A skipped test shows as skipped with its reason (pytest -rs), never as
silently left out.
"""

import os
import shutil
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))

# Every process the tests start inherits it: each aggregator checks its
# incremental evaluation against a full one (muster_harness.py).
os.environ["MUSTER_CHECK_EVALUATE"] = "1"

import muster_harness as mh  # noqa: E402
import systemd_manager as sdm  # noqa: E402

_metrics = []


@pytest.fixture(scope="session", autouse=True)
def protobuf_module():
    """Google protobuf code generated from proto/muster.proto for the session."""
    mod = mh.load_pb()
    yield mod
    mh.unload_pb()


@pytest.fixture(autouse=True)
def valgrind_wrapped_processes(request):
    """Under MUSTER_VALGRIND: processes a test ran through mh.WRAPPER itself
    (musterctl) log into mh.VALGRIND_DIR; a finding in a log the test left
    there fails the test."""
    if not mh.VALGRIND:
        yield
        return
    def logs():
        return {os.path.join(mh.VALGRIND_DIR, f) for f in os.listdir(mh.VALGRIND_DIR)
                if f.startswith("wrapped.")}
    before = logs()
    yield
    new = logs() - before
    problems = mh.valgrind_problems("a process the test ran", new)
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)
    for path in new:
        os.unlink(path)


@pytest.fixture(scope="session", autouse=True)
def valgrind_log_dir():
    yield
    if mh.VALGRIND_DIR:
        shutil.rmtree(mh.VALGRIND_DIR, ignore_errors=True)


@pytest.fixture
def procs(request, tmp_path):
    """Every daemon of a test. At the end: SIGTERM, 5 s, SIGKILL; a daemon
    stopped by SIGTERM must exit 0, and one that died on its own is an error.
    The test's directory (configs, databases, logs) is removed when the test
    passed, and kept for diagnosis when it failed."""
    logdir = tmp_path / "logs"
    logdir.mkdir()
    reg = mh.ProcessRegistry(str(logdir))
    request.node._muster_procs = reg
    yield reg
    problems = reg.finalize()
    if problems:
        pytest.fail("daemon shutdown problems:\n  " + "\n  ".join(problems), pytrace=False)
    if not getattr(request.node, "_muster_failed", False):
        shutil.rmtree(tmp_path, ignore_errors=True)


@pytest.fixture
def env(tmp_path, procs):
    e = mh.TestEnv(tmp_path, procs)
    yield e
    e.cleanup()


@pytest.fixture
def systemd_manager(tmp_path):
    """A real `systemd --user` in its own cgroups and mount namespace
    (systemd_manager.py, after ENVIRONMENT.md), running when the test starts.
    Torn down completely afterwards, whatever the test did: the manager, its
    cgroups in both hierarchies and its runtime directory."""
    m = sdm.SystemdManager(str(tmp_path / "systemd"), timeout_scale=mh.TIMEOUT_SCALE)
    try:
        m.start()
        yield m
    finally:
        m.teardown()


@pytest.fixture(scope="session", autouse=True)
def no_systemd_cgroups_left():
    """At the end of the session: no muster-test-* cgroup of this session may
    be left in either hierarchy (each manager's teardown removes its own)."""
    yield
    left = sdm.leftover_cgroups()
    if left:
        pytest.fail("systemd test cgroups left behind: " + ", ".join(left), pytrace=False)


@pytest.fixture
def metric():
    """metric(name, value, unit): reported in the terminal summary."""
    def record(name, value, unit=""):
        _metrics.append((name, value, unit))
        print(f"METRIC {name}: {value:.1f} {unit}")
    return record


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.failed:
        item._muster_failed = True
        reg = getattr(item, "_muster_procs", None)
        if reg is not None and reg.procs:
            rep.sections.append((f"daemon logs ({rep.when})", reg.log_report()))


def pytest_terminal_summary(terminalreporter):
    if _metrics:
        terminalreporter.section("muster measurements")
        for name, value, unit in _metrics:
            terminalreporter.write_line(f"{name}: {value:.1f} {unit}")


# ---------------------------------------------------------------- ZooKeeper (leader-election tests)
# One real 3-server ensemble for the whole session, started only when a test
# asks for it; tests keep apart by campaigning under their own cluster name.

@pytest.fixture(scope="session")
def zk_ensemble(tmp_path_factory):
    import zk_harness
    if not zk_harness.zookeeper_installed():
        pytest.fail("ZooKeeper is not installed (deploy/install-deps installs the zookeeper package)",
                    pytrace=False)
    ens = zk_harness.ZKEnsemble(str(tmp_path_factory.mktemp("zookeeper")), n=3)
    try:
        ens.start()
        yield ens
    finally:
        ens.close()     # SIGKILL every server, remove the data dirs


@pytest.fixture
def zk(request, zk_ensemble):
    """The session's ensemble, whole again (a previous test may have killed
    servers); on failure its state and log tails go into the report."""
    zk_ensemble.ensure_healthy()
    request.node._muster_zk = zk_ensemble
    yield zk_ensemble
    zk_ensemble.ensure_healthy()   # before the daemons are stopped


@pytest.fixture
def cluster_name(request):
    """A cluster name of the test's own: its election path is /muster/<name>/election."""
    import re
    import uuid
    return re.sub(r"[^A-Za-z0-9_-]", "-", request.node.name)[:60] + "-" + uuid.uuid4().hex[:6]


class _ZKReport:
    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_makereport(self, item, call):
        outcome = yield
        rep = outcome.get_result()
        zk = getattr(item, "_muster_zk", None)
        if rep.failed and zk is not None and rep.when == "call":
            rep.sections.append(("zookeeper", zk.report()))


def pytest_configure(config):
    config.pluginmanager.register(_ZKReport(), "muster-zk-report")
    config.addinivalue_line("markers", "no_valgrind(reason): skipped under MUSTER_VALGRIND=1, "
                                       "for the reason given")
    config.addinivalue_line("markers", "no_tsan(reason): skipped under MUSTER_SANITIZER=thread, "
                                       "for the reason given")
    config.addinivalue_line("markers", "long(reason): skipped under MUSTER_PASS=release, thread or "
                                       "valgrind; tests/run runs it in the AddressSanitizer pass")


# (marker, whether its pass is on, how the pass is named in the skip reason)
_PASS_MARKERS = [("no_valgrind", mh.VALGRIND, "valgrind"),
                 ("no_tsan", mh.SANITIZER == "thread", "ThreadSanitizer"),
                 ("long", os.environ.get("MUSTER_PASS") in ("release", "thread", "valgrind"),
                  f"the {os.environ.get('MUSTER_PASS')} pass (it runs in the AddressSanitizer pass)")]


def pytest_collection_modifyitems(config, items):
    for item in items:
        for name, active, what in _PASS_MARKERS:
            mark = item.get_closest_marker(name)
            if mark is None or not active:
                continue
            reason = mark.kwargs.get("reason") or (mark.args[0] if mark.args else None)
            if not reason:
                raise pytest.UsageError(f"{item.nodeid}: @pytest.mark.{name} needs a reason")
            item.add_marker(pytest.mark.skip(reason=f"not under {what}: {reason}"))
