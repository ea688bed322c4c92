"""pytest glue for muster's system tests.

Run: /usr/bin/python3 -m pytest -v tests/system
     MUSTER_BUILD_DIR=/path/to/build  (default /work/main/build)
     MUSTER_TEST_WRAPPER="valgrind --error-exitcode=99 -q"  (optional)
"""

import os
import shutil
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))

import muster_harness as mh  # noqa: E402

_metrics = []


@pytest.fixture(scope="session", autouse=True)
def protobuf_module():
    """Google protobuf code generated from proto/muster.proto for the session."""
    mod = mh.load_pb()
    yield mod
    mh.unload_pb()


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
