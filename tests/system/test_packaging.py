"""Install and packaging: the systemd units verify, the example configs pass
--check-config, `cmake --install` and `cpack -G DEB` put every file in its
FHS place, and the .deb depends on the Debian runtime libraries.

Everything is written to pytest's temporary directories: nothing is left in
the source or build tree except what CMake itself keeps there. The build
packaged is the tests' (MUSTER_BUILD_DIR, or the source tree's build/, as
muster_harness.py chooses it).
"""

import os
import shutil
import subprocess

import pytest

import muster_harness as mh

pytestmark = pytest.mark.no_valgrind(
    reason="builds and installs packages: no daemon code it alone reaches, and the most time")

SRC = mh.REPO
BUILD = os.path.abspath(mh.BUILD_DIR)
UNITS = ("muster-aggregatord", "muster-agentd")
BINARIES = ("muster-agentd", "muster-aggregatord", "musterctl")
PROFILES = ("master.ini", "agent.ini", "agent_public.ini")
RUNTIME_LIBS = ("libmicrohttpd12", "libsqlite3-0", "libzookeeper-mt2", "libsystemd0",
                "libprotobuf-c1", "libcurl4", "libjansson4")


def run(cmd, **kw):
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, **kw)


def need(tool):
    if shutil.which(tool) is None:
        pytest.skip(f"{tool} is not installed (deploy/install-deps)")


@pytest.mark.parametrize("unit", UNITS)
def test_unit_verifies(tmp_path, unit):
    """`systemd-analyze verify` on a copy whose ExecStart= names the built
    binary (verify checks that it is executable). It prints nothing and exits
    0 for a clean unit; unknown keys or bad values are printed (and still exit
    0), so any output is a failure."""
    need("systemd-analyze")
    with open(os.path.join(SRC, "deploy", "systemd", unit + ".service")) as f:
        text = f.read()
    assert f"ExecStart=/usr/bin/{unit} --config /etc/muster/" in text
    for key in ("Type=notify", "WatchdogSec=", "User=muster", "Group=muster", "StateDirectory=muster",
                "NoNewPrivileges=yes", "ProtectSystem=strict", "ProtectHome=yes", "PrivateTmp=yes",
                "CapabilityBoundingSet=\n", "MemoryDenyWriteExecute=yes", "Restart=on-failure",
                "ExecReload=/bin/kill -HUP $MAINPID"):
        assert key in text, key
    copy = tmp_path / (unit + ".service")
    copy.write_text(text.replace(f"ExecStart=/usr/bin/{unit}", f"ExecStart={BUILD}/{unit}"))
    r = run(["systemd-analyze", "verify", str(copy)])
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.strip() == "" and r.stderr.strip() == "", r.stdout + r.stderr


def test_sysusers_entry():
    with open(os.path.join(SRC, "deploy", "systemd", "muster.sysusers")) as f:
        lines = [l for l in f.read().splitlines() if l.strip() and not l.startswith("#")]
    assert lines == ['u muster - "muster health aggregation" /var/lib/muster']


@pytest.mark.parametrize("daemon,conf", [("muster-aggregatord", "aggregator.conf"),
                                         ("muster-agentd", "agent.conf")])
def test_example_config_checks(tmp_path, daemon, conf):
    """The three-master examples pass --check-config against the shipped
    profiles (the examples name /etc/muster/profiles; a temp copy points at
    deploy/profiles)."""
    with open(os.path.join(SRC, "deploy", "examples", conf)) as f:
        text = f.read()
    assert "/etc/muster/profiles" in text
    copy = tmp_path / conf
    copy.write_text(text.replace("/etc/muster/profiles", os.path.join(SRC, "deploy", "profiles")))
    r = run([os.path.join(BUILD, daemon), "--config", str(copy), "--check-config"])
    assert r.returncode == 0, r.stdout + r.stderr
    if conf == "aggregator.conf":
        assert "hosts = 10.0.0.1:2181,10.0.0.2:2181,10.0.0.3:2181" in text
        assert "expected_masters = master-1, master-2, master-3" in text


def expected_files(root):
    files = [f"usr/bin/{b}" for b in BINARIES]
    files += [f"usr/lib/systemd/system/{u}.service" for u in UNITS]
    files += ["usr/lib/sysusers.d/muster.conf", "etc/muster/agent.conf", "etc/muster/aggregator.conf",
              "usr/share/doc/muster/runbook.md", "usr/share/doc/muster/configuration.md"]
    files += [f"etc/muster/profiles/{p}" for p in PROFILES]
    return [os.path.join(root, f) for f in files]


def check_tree(root):
    for path in expected_files(root):
        assert os.path.isfile(path), path
    for b in BINARIES:
        assert os.access(os.path.join(root, "usr", "bin", b), os.X_OK)
    for p in PROFILES:
        with open(os.path.join(root, "etc/muster/profiles", p), "rb") as a, \
                open(os.path.join(SRC, "deploy/profiles", p), "rb") as b:
            assert a.read() == b.read(), p


def test_cmake_install(tmp_path):
    root = tmp_path / "root"
    env = dict(os.environ, DESTDIR=str(root))
    r = run(["cmake", "--install", BUILD, "--prefix", "/usr"], env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    check_tree(str(root))


@pytest.fixture(scope="module")
def deb(tmp_path_factory):
    need("dpkg-deb")
    need("dpkg-shlibdeps")
    out = tmp_path_factory.mktemp("cpack")
    r = run(["cpack", "-G", "DEB", "-B", str(out)], cwd=BUILD)
    assert r.returncode == 0, r.stdout + r.stderr
    debs = [f for f in os.listdir(out) if f.endswith(".deb")]
    assert len(debs) == 1, debs
    yield os.path.join(out, debs[0])
    shutil.rmtree(out, ignore_errors=True)


def test_deb_contents(deb):
    r = run(["dpkg-deb", "-c", deb])
    assert r.returncode == 0, r.stderr
    listed = {line.split()[-1].lstrip(".") for line in r.stdout.splitlines()}
    for path in expected_files("/"):
        assert path in listed, path


def test_deb_control(deb, tmp_path):
    r = run(["dpkg-deb", "-f", deb, "Package", "Depends"])
    assert r.returncode == 0, r.stderr
    assert "Package: muster" in r.stdout
    depends = r.stdout.split("Depends:", 1)[1]
    for lib in RUNTIME_LIBS:
        assert lib in depends, (lib, depends)
    ctl = tmp_path / "control"
    r = run(["dpkg-deb", "-e", deb, str(ctl)])
    assert r.returncode == 0, r.stderr
    conffiles = (ctl / "conffiles").read_text().split()
    assert "/etc/muster/agent.conf" in conffiles and "/etc/muster/aggregator.conf" in conffiles
    for p in PROFILES:
        assert f"/etc/muster/profiles/{p}" in conffiles
    assert os.access(ctl / "postinst", os.X_OK)


def test_deb_extracts(deb, tmp_path):
    """`dpkg -x` into a scratch root: every file where it belongs, and the
    installed binary runs (--check-config on the installed example, against
    the installed profiles)."""
    root = tmp_path / "root"
    r = run(["dpkg", "-x", deb, str(root)])
    assert r.returncode == 0, r.stderr
    check_tree(str(root))
    conf = tmp_path / "agent.conf"
    conf.write_text((root / "etc/muster/agent.conf").read_text()
                    .replace("/etc/muster/profiles", str(root / "etc/muster/profiles")))
    r = run([str(root / "usr/bin/muster-agentd"), "--config", str(conf), "--check-config"])
    assert r.returncode == 0, r.stdout + r.stderr
