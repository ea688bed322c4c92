"""A real systemd user manager for tests and benchmarks.

The machines here do not run systemd as PID 1, and starting `systemd --user`
in the cgroup we are in would move every process of that cgroup (here: the
root cgroup, so every process on the machine) into its init.scope. So, as
/work/shared/ENVIRONMENT.md prescribes, each manager gets:
  - its own cgroup, `muster-test-<pid>-<n>`, in both hierarchies
    (/sys/fs/cgroup/unified and /sys/fs/cgroup/systemd); the shell that
    becomes the manager moves itself there before it execs systemd;
  - a private mount namespace (`unshare -m`) with a tmpfs on /run/systemd,
    where it creates /run/systemd/system (the manager wants it; the host's
    /run is never touched);
  - its own XDG_RUNTIME_DIR and HOME (and XDG_* dirs) under a directory of
    the caller's.

Teardown always runs in full, even after a failure: `systemctl --user exit`
and a wait; if the manager is still alive, or was killed, whatever is left
in its cgroup is killed through cgroup.kill; then the cgroups are removed
depth-first (init.scope and the other children first) in both hierarchies,
and the runtime directory is deleted. `leftover_cgroups()` lists what a
session left behind (the conftest checks it at the end of the session).

Commands (`systemctl --user`, `systemd-run --user`) run with XDG_RUNTIME_DIR
pointing at the manager; DBUS_SESSION_BUS_ADDRESS is removed from their
environment, since setting it breaks systemd-run's --wait and --pipe and
systemctl finds $XDG_RUNTIME_DIR/systemd/private by itself. Clients that
speak D-Bus themselves (the agent) connect to `manager.address`.

Usable without pytest (bench/systemd_freshness.py imports it)."""

import atexit
import errno
import itertools
import os
import shlex
import shutil
import signal
import subprocess
import tempfile
import time

CGROUP_ROOTS = ("/sys/fs/cgroup/unified", "/sys/fs/cgroup/systemd")
CGROUP_PREFIX = "muster-test-"
SYSTEMD = "/lib/systemd/systemd"
SOCKET_PATH_MAX = 100          # sun_path holds 108 bytes; keep a margin

_counter = itertools.count(1)
_live = set()                  # managers not yet torn down (atexit safety net)


def session_cgroup_prefix():
    """The prefix of every cgroup this process creates."""
    return f"{CGROUP_PREFIX}{os.getpid()}-"


def leftover_cgroups(prefix=None):
    """Cgroups named prefix* (default: this process's) in either hierarchy."""
    prefix = prefix or session_cgroup_prefix()
    left = []
    for root in CGROUP_ROOTS:
        try:
            names = os.listdir(root)
        except OSError:
            continue
        left += [os.path.join(root, n) for n in names if n.startswith(prefix)]
    return sorted(left)


class ManagerError(AssertionError):
    pass


def _tail(path, lines=40):
    try:
        with open(path, "rb") as f:
            return "\n".join(f.read().decode("utf-8", "replace").splitlines()[-lines:])
    except OSError as e:
        return f"<cannot read {path}: {e}>"


class SystemdManager:
    """One `systemd --user` in its own cgroup and mount namespace.

    base_dir holds the runtime directory, HOME and the manager's log. When
    base_dir would make the private socket's path too long for a unix socket
    address, the runtime directory goes to a short temporary directory
    instead (and is removed the same way)."""

    def __init__(self, base_dir, timeout_scale=1.0):
        self.base_dir = os.path.abspath(base_dir)
        self.scale = timeout_scale
        os.makedirs(self.base_dir, exist_ok=True)
        runtime = os.path.join(self.base_dir, "run")
        if len(runtime) + len("/systemd/private") > SOCKET_PATH_MAX:
            runtime = tempfile.mkdtemp(prefix="mst-sd-")
        self.runtime_dir = runtime
        os.makedirs(self.runtime_dir, exist_ok=True)
        os.chmod(self.runtime_dir, 0o700)
        self.home = os.path.join(self.base_dir, "home")
        self.unit_dir = os.path.join(self.home, ".config", "systemd", "user")
        os.makedirs(self.unit_dir, exist_ok=True)
        self.address = f"unix:path={self.runtime_dir}/systemd/private"
        self.env = {k: v for k, v in os.environ.items()
                    if k not in ("DBUS_SESSION_BUS_ADDRESS", "NOTIFY_SOCKET", "LISTEN_FDS",
                                 "LISTEN_PID", "SYSTEMD_EXEC_PID", "INVOCATION_ID")}
        self.env.update({
            "XDG_RUNTIME_DIR": self.runtime_dir,
            "HOME": self.home,
            "XDG_CONFIG_HOME": os.path.join(self.home, ".config"),
            "XDG_DATA_HOME": os.path.join(self.home, ".local", "share"),
            "XDG_STATE_HOME": os.path.join(self.home, ".local", "state"),
            "XDG_CACHE_HOME": os.path.join(self.home, ".cache"),
            "SYSTEMD_PAGER": "",
            "SYSTEMD_COLORS": "0",
            "LC_ALL": "C",
        })
        self.proc = None
        self.cgroup = None
        self.generation = 0
        self.log_path = None
        self._log = None
        self._torn_down = False

    # ------------------------------------------------------------ life cycle

    def start(self, timeout=10.0):
        """Starts a manager (a new one after kill9()) and waits until its
        SystemState is running. Raises ManagerError with its log otherwise."""
        assert self.proc is None or self.proc.poll() is not None, "a manager is already running"
        self._cleanup_cgroups()           # what a killed predecessor left
        if self.generation > 0:
            # A killed manager leaves its runtime state behind (the stale
            # socket, transient unit files): a new one starts clean.
            shutil.rmtree(os.path.join(self.runtime_dir, "systemd"), ignore_errors=True)
        self.generation += 1
        self.cgroup = f"{session_cgroup_prefix()}{next(_counter)}"
        made = []
        try:
            for root in CGROUP_ROOTS:
                path = os.path.join(root, self.cgroup)
                os.mkdir(path)
                made.append(path)
        except OSError:
            for path in reversed(made):
                os.rmdir(path)
            self.cgroup = None
            raise
        _live.add(self)
        self._torn_down = False

        uni, v1 = (os.path.join(r, self.cgroup) for r in CGROUP_ROOTS)
        script = (f"echo $$ > {uni}/cgroup.procs && echo $$ > {v1}/cgroup.procs && "
                  "mkdir -p /run/systemd && mount -t tmpfs tmpfs /run/systemd && "
                  f"mkdir /run/systemd/system && exec {SYSTEMD} --user")
        self.log_path = os.path.join(self.base_dir, f"systemd-{self.generation}.log")
        self._log = open(self.log_path, "wb")
        # unshare -m execs sh, which execs systemd: the pid stays the manager's.
        self.proc = subprocess.Popen(["unshare", "-m", "sh", "-c", script],
                                     stdin=subprocess.DEVNULL, stdout=self._log,
                                     stderr=subprocess.STDOUT, env=self.env,
                                     start_new_session=True)
        deadline = time.monotonic() + timeout * self.scale
        while True:
            if self.proc.poll() is not None:
                raise ManagerError(f"systemd --user exited with {self.proc.returncode} while "
                                   f"starting:\n{_tail(self.log_path)}")
            if self.system_state() == "running":
                return self
            if time.monotonic() > deadline:
                raise ManagerError(f"systemd --user not running after {timeout}s "
                                   f"(state {self.system_state()!r}):\n{_tail(self.log_path)}")
            time.sleep(0.01)

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def kill9(self):
        """SIGKILLs the manager alone. Its units' processes stay in its
        cgroup until start() or teardown() clears it."""
        if self.alive():
            os.kill(self.proc.pid, signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait()

    def stop(self, timeout=10.0):
        """`systemctl --user exit`, then the wait; kills what is left."""
        if self.alive():
            self.systemctl("exit", check=False, timeout=timeout)
            try:
                self.proc.wait(timeout * self.scale)
            except subprocess.TimeoutExpired:
                self.kill9()
        elif self.proc is not None:
            self.proc.wait()
        if self._log and not self._log.closed:
            self._log.close()
        self._cleanup_cgroups()

    def teardown(self):
        """Stops the manager and removes its cgroups and runtime directory.
        Safe to call more than once, and after any failure."""
        if self._torn_down:
            return
        errors = []
        try:
            self.stop()
        except Exception as e:          # go on: the cgroups must go anyway
            errors.append(f"stopping the manager: {e}")
            try:
                self.kill9()
            except Exception:
                pass
            try:
                self._cleanup_cgroups()
            except Exception as e2:
                errors.append(f"removing its cgroups: {e2}")
        shutil.rmtree(self.runtime_dir, ignore_errors=True)
        self._torn_down = True
        _live.discard(self)
        if errors:
            raise ManagerError("; ".join(errors))

    def _cgroup_pids(self, path):
        pids = []
        for dirpath, _dirs, _files in os.walk(path):
            try:
                with open(os.path.join(dirpath, "cgroup.procs")) as f:
                    pids += [int(x) for x in f.read().split()]
            except OSError:
                pass
        return pids

    def _cleanup_cgroups(self, timeout=5.0):
        """Kills whatever is left in the current cgroup (cgroup.kill) and
        removes it depth-first in both hierarchies."""
        if not self.cgroup:
            return
        uni = os.path.join(CGROUP_ROOTS[0], self.cgroup)
        if os.path.isdir(uni) and self._cgroup_pids(uni):
            with open(os.path.join(uni, "cgroup.kill"), "w") as f:
                f.write("1")
        deadline = time.monotonic() + timeout * self.scale
        for root in CGROUP_ROOTS:
            top = os.path.join(root, self.cgroup)
            while os.path.isdir(top):
                busy = None
                for dirpath, _dirs, _files in os.walk(top, topdown=False):
                    try:
                        os.rmdir(dirpath)
                    except FileNotFoundError:
                        pass
                    except OSError as e:
                        if e.errno != errno.EBUSY:
                            raise
                        busy = dirpath
                if busy is None:
                    break
                if time.monotonic() > deadline:
                    raise ManagerError(f"cannot remove cgroup {busy}: still busy (pids "
                                       f"{self._cgroup_pids(top)})")
                if os.path.isdir(uni):      # a process may have escaped the first kill
                    try:
                        with open(os.path.join(uni, "cgroup.kill"), "w") as f:
                            f.write("1")
                    except OSError:
                        pass
                time.sleep(0.01)
        self.cgroup = None

    # ------------------------------------------------------------ commands

    def run(self, argv, check=True, timeout=10.0):
        """Runs a command in the manager's environment."""
        try:
            r = subprocess.run(argv, env=self.env, stdin=subprocess.DEVNULL, capture_output=True,
                               text=True, timeout=timeout * self.scale)
        except subprocess.TimeoutExpired as e:
            raise ManagerError(f"{shlex.join(argv)} did not finish in {timeout}s: {e.stderr}")
        if check and r.returncode != 0:
            raise ManagerError(f"{shlex.join(argv)} exited with {r.returncode}: "
                               f"{r.stderr.strip() or r.stdout.strip()}")
        return r

    def systemctl(self, *args, check=True, timeout=10.0):
        return self.run(["systemctl", "--user", *args], check=check, timeout=timeout)

    def system_state(self):
        try:
            r = subprocess.run(["systemctl", "--user", "show", "-p", "SystemState", "--value"],
                               env=self.env, stdin=subprocess.DEVNULL, capture_output=True,
                               text=True, timeout=5 * self.scale)
        except subprocess.TimeoutExpired:
            return None
        return r.stdout.strip() if r.returncode == 0 else None

    def run_unit(self, name, cmd, *props, no_block=False, check=True):
        """Starts cmd (a string, split like a shell would, or a list) as the
        transient service `name` with `systemd-run --user`; props are
        "Key=value" unit properties. no_block returns without waiting for
        the start job (for units that stay activating)."""
        argv = ["systemd-run", "--user", "--quiet", f"--unit={name}"]
        if no_block:
            argv.append("--no-block")
        for p in props:
            argv += ["-p", p]
        argv += ["--"] + (shlex.split(cmd) if isinstance(cmd, str) else list(cmd))
        return self.run(argv, check=check)

    def write_unit(self, name, text, reload=True):
        """Writes a unit file into the user unit directory (a unit that stays
        after it stops, unlike a transient one) and reloads the manager."""
        with open(os.path.join(self.unit_dir, name), "w") as f:
            f.write(text)
        if reload:
            self.systemctl("daemon-reload")

    def show(self, unit, *props):
        """Properties of a unit as a dict of strings."""
        r = self.systemctl("show", unit, "-p", ",".join(props))
        out = {}
        for line in r.stdout.splitlines():
            k, _, v = line.partition("=")
            out[k] = v
        return out

    def wait_unit(self, unit, pred, timeout=10.0, props=("ActiveState", "SubState")):
        """Polls `systemctl show` until pred(dict) holds; returns the dict."""
        deadline = time.monotonic() + timeout * self.scale
        last = None
        while True:
            last = self.show(unit, *props)
            if pred(last):
                return last
            if time.monotonic() > deadline:
                raise ManagerError(f"unit {unit}: condition not met in {timeout}s; last {last}")
            time.sleep(0.01)


@atexit.register
def _teardown_forgotten():
    for m in list(_live):
        try:
            m.teardown()
        except Exception:
            pass
