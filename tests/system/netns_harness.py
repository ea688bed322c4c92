"""A topology of real hosts on one machine, for partition tests: every
aggregator, ZooKeeper server and agent in its own network namespace, each
with its own IPv4 (198.18.0.0/24) and IPv6 (fd00:6d75::/64) address on one
bridge, nothing on loopback between them, and nftables rules in each
namespace for partitions (drops by source address) and loss (numgen).

The bridge lives in a namespace of its own ("hub"), so the machine's own
namespace gets no address and no route: veth pairs are made there and both
ends moved out at once. One more namespace, the observer, sits on the bridge
with no rules: the test's main thread enters it (setns) for the topology's
life, so the test's HTTP reads, ZooKeeper's four-letter words and every
thread it starts see every node, whatever the partition (Jepsen's control
node). Commands run in a node's namespace through `ip netns exec`.

Cleanup is guaranteed three ways: Topology.close() (fixture finalizers),
atexit, and sweep_leftovers(), which removes namespaces and links of earlier
runs whose creating process is gone (names carry its pid after PREFIX)."""

import atexit
import ctypes
import os
import re
import shutil
import subprocess
import threading

PREFIX = "mun"               # every namespace and link this harness makes
CLONE_NEWNET = 0x40000000
V4_NET = "198.18.0"          # RFC 2544 benchmarking space, never routed
V6_NET = "fd00:6d75:"        # a ULA prefix of our own ("mu")

_libc = ctypes.CDLL(None, use_errno=True)
_live = set()
_live_lock = threading.Lock()


def available():
    """None when the harness can run here, else why not."""
    if os.geteuid() != 0:
        return "needs root (network namespaces)"
    for tool in ("ip", "nft"):
        if not shutil.which(tool):
            return f"'{tool}' is not installed (deploy/install-deps installs iproute2 and nftables)"
    return None


def _run(*argv, check=True):
    r = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {r.returncode}: {r.stderr.strip()}")
    return r


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def sweep_leftovers():
    """Removes namespaces and root links named PREFIX<pid>... whose pid is
    gone (a run killed before it could clean up)."""
    for line in _run("ip", "netns", "list", check=False).stdout.splitlines():
        name = line.split()[0] if line.split() else ""
        m = re.match(rf"{PREFIX}(\d+)x", name)
        if m and not _pid_alive(int(m.group(1))):
            _run("ip", "netns", "del", name, check=False)
    for line in _run("ip", "-o", "link", "show", check=False).stdout.splitlines():
        m = re.match(rf"\d+: ({PREFIX}(\d+)x[^@:]*)", line)
        if m and not _pid_alive(int(m.group(2))):
            _run("ip", "link", "del", m.group(1), check=False)


class _Node:
    def __init__(self, name, ns, index):
        self.name = name
        self.ns = ns
        self.v4 = f"{V4_NET}.{10 + index}"
        self.v6 = f"{V6_NET}:{10 + index:x}"


class Topology:
    """Namespaces for hosts (names such as "zk1", "a1", "n1") on one bridge.
    Use as a context manager, or call close()."""

    _serial = 0

    def __init__(self, hosts):
        Topology._serial += 1
        self.tag = f"{PREFIX}{os.getpid()}x{Topology._serial}"
        self.hub = f"{self.tag}-hub"
        self.nodes = {}
        self.rules = {}          # ns -> list of rule texts now in place
        self._saved_ns = None
        self._closed = False
        with _live_lock:
            _live.add(self)
        try:
            _run("ip", "netns", "add", self.hub)
            _run("ip", "netns", "exec", self.hub, "ip", "link", "add", "br0", "type", "bridge")
            _run("ip", "netns", "exec", self.hub, "ip", "link", "set", "br0", "up")
            for i, name in enumerate(["observer", *hosts]):
                self._add_node(name, i)
        except Exception:
            self.close()
            raise

    def _add_node(self, name, index):
        ns = f"{self.tag}-{name}"
        node = _Node(name, ns, index)
        a, b = f"{self.tag}a{index}", f"{self.tag}b{index}"
        _run("ip", "netns", "add", ns)
        self.nodes[name] = node
        _run("ip", "link", "add", a, "type", "veth", "peer", "name", b)
        _run("ip", "link", "set", a, "netns", ns)
        _run("ip", "link", "set", b, "netns", self.hub)
        inns = ("ip", "netns", "exec", ns)
        _run(*inns, "ip", "link", "set", "lo", "up")
        _run(*inns, "ip", "link", "set", a, "name", "eth0")
        _run(*inns, "ip", "addr", "add", f"{node.v4}/24", "dev", "eth0")
        # nodad: usable at once, not "tentative" for a second.
        _run(*inns, "ip", "-6", "addr", "add", f"{node.v6}/64", "dev", "eth0", "nodad")
        _run(*inns, "ip", "link", "set", "eth0", "up")
        _run("ip", "netns", "exec", self.hub, "ip", "link", "set", b, "master", "br0")
        _run("ip", "netns", "exec", self.hub, "ip", "link", "set", b, "up")
        if name != "observer":
            _run(*inns, "nft", "add table inet nemesis { chain input { type filter hook input "
                 "priority 0; policy accept; }; }")
            self.rules[ns] = []

    def ns(self, host):
        return self.nodes[host].ns

    def v4(self, host):
        return self.nodes[host].v4

    def v6(self, host):
        return self.nodes[host].v6

    # --- the observer: the test's main thread lives there -----------------
    def enter_observer(self):
        """Moves the calling thread into the observer's namespace (threads
        it starts from now on are born there too)."""
        assert self._saved_ns is None
        self._saved_ns = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        fd = os.open(f"/run/netns/{self.ns('observer')}", os.O_RDONLY)
        try:
            if _libc.setns(fd, CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "setns into the observer namespace")
        finally:
            os.close(fd)

    def leave_observer(self):
        if self._saved_ns is None:
            return
        try:
            if _libc.setns(self._saved_ns, CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "setns back")
        finally:
            os.close(self._saved_ns)
            self._saved_ns = None

    # --- faults ------------------------------------------------------------
    def _nft(self, host, rule):
        ns = self.ns(host)
        _run("ip", "netns", "exec", ns, "nft", "add", "rule", "inet", "nemesis", "input", rule)
        self.rules[ns].append(rule)

    def drop(self, to_host, from_host, percent=100):
        """Packets from from_host to to_host are dropped (one way), all of
        them or percent% at random."""
        src = self.nodes[from_host]
        loss = "" if percent >= 100 else f" numgen random mod 100 < {int(percent)}"
        self._nft(to_host, f"ip saddr {src.v4}{loss} drop")
        self._nft(to_host, f"ip6 saddr {src.v6}{loss} drop")

    def cut(self, side_a, side_b, percent=100):
        """No traffic between any host of side_a and any of side_b (both ways)."""
        for x in side_a:
            for y in side_b:
                self.drop(x, y, percent)
                self.drop(y, x, percent)

    def heal(self):
        for ns, rules in self.rules.items():
            if rules:
                _run("ip", "netns", "exec", ns, "nft", "flush", "chain", "inet", "nemesis", "input")
                rules.clear()

    def close(self):
        if self._closed:
            return
        self._closed = True
        self.leave_observer()
        for node in self.nodes.values():
            _run("ip", "netns", "del", node.ns, check=False)
        _run("ip", "netns", "del", self.hub, check=False)
        with _live_lock:
            _live.discard(self)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


@atexit.register
def _close_all():
    with _live_lock:
        live = list(_live)
    for t in live:
        t.close()
