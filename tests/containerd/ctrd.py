#!/usr/bin/env python3
"""containerd-tier test harness: a private containerd 1.6 (Debian's package)
started and stopped by the test, images built from Debian packages, and `ctr`.

    with Containerd(workdir_parent=None, runtimes=[Runtime.spore(...)]) as c:
        img = busybox_image()                     # an OciImage, built in memory
        c.import_image(img)                       # ctr images import (unpacked)
        r = c.ctr_run(img.ref, ["sh", "-c", "exit 3"])
        assert r.rc == 3
        # CRI (the kubelet stand-in): see cri.py
    # stop(): tasks and containers of every namespace killed and deleted,
    # containerd SIGTERMed, shims of this instance killed, runc state, shim
    # sockets, mounts, cgroups and the workdir removed.

Everything an instance owns is under its workdir (root, state, sockets, runc
root, CRI pod logs, CNI dirs), except what containerd and runc put in shared
places by design: shim sockets in /run/containerd/s/ (removed by stop() if a
shim did not), and the cgroups of its containers (a per-instance parent,
removed by stop()).

See README.md in this directory for the API and for adding the spore runtime.
"""

import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time

# Command running and output tails are the registry harness's (same rules:
# own process group, hard timeout, rc "timeout").
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "registry"))
from harness import RunResult, run, tail  # noqa: E402,F401
# OCI images (layer tars, layouts) are scripts/ociimage.py's, shared with
# scripts/build-images (the chart's images).
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "scripts"))
import ociimage  # noqa: E402
from ociimage import (ANN_CTRD_NAME, ANN_REF_NAME, MT_CONFIG, MT_INDEX, MT_LAYER_TAR,  # noqa: E402,F401
                      MT_LAYER_TGZ, MT_MANIFEST, layer_tar, sha256_digest)

CONTAINERD_BIN = "/usr/bin/containerd"
CTR_BIN = "/usr/bin/ctr"
RUNC_BIN = "/usr/sbin/runc"
RUNC_SHIM = "containerd-shim-runc-v2"
BUSYBOX_BIN = "/bin/busybox"   # Debian busybox-static
CRI_PLUGIN = "io.containerd.grpc.v1.cri"
CRI_NAMESPACE = "k8s.io"
SHIM_SOCKET_DIR = "/run/containerd/s"
SOCK_MAX = 100                 # sun_path is 108 bytes with the NUL; keep a margin


# Plugins that cannot work or are not wanted in a private test instance: the
# snapshotters needing their own filesystems or pools, and tracing. (The
# shim-v1 runtime io.containerd.runtime.v1.linux must stay: 1.6's tasks
# service, and so CRI, refuse to load without it.)
DISABLED_PLUGINS = [
    "io.containerd.snapshotter.v1.aufs",
    "io.containerd.snapshotter.v1.btrfs",
    "io.containerd.snapshotter.v1.devmapper",
    "io.containerd.snapshotter.v1.zfs",
    "io.containerd.tracing.processor.v1.otlp",
    "io.containerd.internal.v1.tracing",
]

SKIP = 77


class HarnessError(Exception):
    pass


def check(cond, msg):
    """Fails the test (HarnessError) with msg unless cond holds."""
    if not cond:
        raise HarnessError(msg)


class Timer:
    """Prints each step of a test with the seconds since it started."""

    def __init__(self):
        self.t0 = time.monotonic()
        self.marks = []

    def mark(self, what):
        t = time.monotonic()
        self.marks.append((what, t - self.t0))
        print("  [%6.2fs] %s" % (t - self.t0, what), flush=True)


class Skip(Exception):
    """The machine lacks something the test needs (exit status 77)."""


def containerd_missing():
    """Why a private containerd with runc cannot run here, or None."""
    if os.geteuid() != 0:
        return "containerd tests need root (containerd, runc, mounts, cgroups)"
    for path, pkg in ((CONTAINERD_BIN, "containerd"), (CTR_BIN, "containerd"), (RUNC_BIN, "runc")):
        if not os.access(path, os.X_OK):
            return "%s is not installed (Debian package %s; run scripts/setup)" % (path, pkg)
    if shutil.which(RUNC_SHIM, path=os.path.dirname(CONTAINERD_BIN) + ":" + os.environ.get("PATH", "")) is None:
        return "%s is not installed (Debian package containerd)" % RUNC_SHIM
    return None


# ---- TOML (the subset containerd's config needs) ------------------------------

def _toml_key(k):
    return k if re.fullmatch(r"[A-Za-z0-9_-]+", k) else json.dumps(k)


def _toml_value(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, str):
        return json.dumps(v)   # a JSON string is a valid TOML basic string
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError("no TOML form for %r" % (v,))


def toml_dumps(d, prefix=()):
    """Nested dicts -> TOML text: scalars and arrays first, then one [table]
    per nested dict (every table is written, even an empty one)."""
    lines = []
    for k, v in d.items():
        if not isinstance(v, dict):
            lines.append("%s = %s" % (_toml_key(k), _toml_value(v)))
    for k, v in d.items():
        if isinstance(v, dict):
            path = prefix + (k,)
            lines.append("")
            lines.append("[%s]" % ".".join(_toml_key(p) for p in path))
            lines.append(toml_dumps(v, path))
    return "\n".join(x for x in lines if x is not None).replace("\n\n\n", "\n\n")


# ---- the containerd peer ---------------------------------------------------------

class Runtime:
    """One CRI runtime handler ([...cri.containerd.runtimes.<name>]).

    runtime_type: e.g. "io.containerd.runc.v2" or "io.containerd.spore.v2"
      (the shim binary is containerd-shim-<x>-v2, looked up next to
      runtime_path, then on containerd's PATH: see Containerd(shim_dirs=)).
    path: an absolute shim binary path, written as runtime_path. containerd
      1.6.20 IGNORES it (its client's WithRuntimePath never reaches the task
      request), so a shim must also be findable by name: put its directory in
      Containerd(shim_dirs=...).
    options: the [options] table (e.g. {"ConfigPath": "..."}); for runc the
      harness adds Root (a private runc state dir) unless given.
    pod_annotations / container_annotations: glob patterns passed through
      into the OCI spec annotations."""

    def __init__(self, name, runtime_type, path=None, options=None, pod_annotations=(),
                 container_annotations=(), privileged_without_host_devices=False):
        self.name, self.runtime_type, self.path = name, runtime_type, path
        self.options = dict(options or {})
        self.pod_annotations = list(pod_annotations)
        self.container_annotations = list(container_annotations)
        self.privileged_without_host_devices = privileged_without_host_devices

    @classmethod
    def spore(cls, shim_path=None, config_path=None, name="spore", options=None):
        """The Sporelet runtime handler: io.containerd.spore.v2 with pod
        annotations sporelet.ai/* passed through. Pass the shim's directory
        as Containerd(shim_dirs=...) too (runtime_path is ignored by 1.6)."""
        opts = dict(options or {})
        if config_path:
            opts.setdefault("ConfigPath", config_path)
        return cls(name, "io.containerd.spore.v2", path=shim_path, options=opts,
                   pod_annotations=["sporelet.ai/*"], container_annotations=["sporelet.ai/*"])

    def table(self):
        t = {"runtime_type": self.runtime_type,
             "pod_annotations": self.pod_annotations,
             "container_annotations": self.container_annotations,
             "privileged_without_host_devices": self.privileged_without_host_devices}
        if self.path:
            t["runtime_path"] = self.path
        t["options"] = dict(self.options)
        return t


def _proc_cmdline(pid):
    try:
        with open("/proc/%s/cmdline" % pid, "rb") as f:
            return [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
    except OSError:
        return None


def _mountpoints():
    """Mount points from /proc/self/mountinfo (octal escapes decoded)."""
    res = []
    try:
        with open("/proc/self/mountinfo") as f:
            for line in f:
                parts = line.split()
                if len(parts) > 4:
                    res.append(re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), parts[4]))
    except OSError:
        pass
    return res


def _cgroup_roots():
    res = []
    try:
        with open("/proc/self/mountinfo") as f:
            for line in f:
                left, _, right = line.partition(" - ")
                fstype = right.split()[0] if right else ""
                if fstype in ("cgroup", "cgroup2"):
                    res.append(left.split()[4])
    except OSError:
        pass
    return res


class Containerd:
    """A private containerd: its own config, root, state, sockets and runc root.

    workdir: the directory to own (created if missing, removed by stop());
      by default a fresh mkdtemp under $SPORE_CTRD_TMPDIR, else /tmp
      (/var/tmp when /tmp is not usable); the socket path must stay under
      SOCK_MAX bytes.
    runtimes: extra Runtime handlers for CRI (runc is always there, and is
      the default handler).
    proxy_plugins: {name: address} or {name: {"type": ..., "address": ...}}
      ([proxy_plugins.<name>], type "snapshot" unless given).
    snapshotter: the snapshotter CRI uses and the harness's ctr helpers pass
      as --snapshotter (default overlayfs).
    shim_dirs: directories prepended to containerd's PATH, where it finds
      containerd-shim-<x>-v2 binaries (e.g. the build directory).
    cri: load the CRI plugin (default True); sandbox_image: the pause image
      ref CRI uses (the harness builds and imports it: ensure_pause_image()).
    insecure_registries: "host:port" registries CRI pulls from over plain
      HTTP (hosts.toml under the workdir; add_insecure_registry() later).
    log_level: containerd's log level (debug, info, ...)."""

    def __init__(self, workdir=None, runtimes=(), proxy_plugins=None, snapshotter=None, shim_dirs=(),
                 cri=True, sandbox_image="sporelet.test/pause:1", insecure_registries=(),
                 log_level="info", extra_env=None, namespace=None):
        self.requested_workdir = workdir
        self.runtimes = list(runtimes)
        self.proxy_plugins = dict(proxy_plugins or {})
        self.snapshotter = snapshotter
        self.shim_dirs = [os.path.abspath(d) for d in shim_dirs]
        self.cri = cri
        self.sandbox_image = sandbox_image
        self.insecure_registries = list(insecure_registries)
        self.log_level = log_level
        self.extra_env = dict(extra_env or {})
        self.instance = secrets.token_hex(4)
        # ctr's namespace for this instance: unique, so that runc state, shim
        # socket names and cgroups never meet another instance's.
        self.namespace = namespace or "spore-t%s" % self.instance
        # Cgroup parent of CRI pods (cri.py passes it as cgroup_parent) and of
        # ctr_run containers; removed by stop().
        self.cgroup_parent = "/sporelet-test-%s" % self.instance
        self.workdir = None
        self.proc = None
        self._owns_workdir = False
        self._logf = None
        self._pause_ready = set()

    # -- paths --
    def _p(self, *parts):
        wd = self.workdir or self.requested_workdir
        if not wd:
            raise HarnessError("no workdir yet (start() makes one, or pass workdir=)")
        return os.path.join(os.path.abspath(wd), *parts)

    @property
    def address(self):
        return self._p("c.sock")

    @property
    def ttrpc_address(self):
        return self._p("c.sock.ttrpc")

    @property
    def root(self):
        return self._p("root")

    @property
    def state(self):
        return self._p("state")

    @property
    def runc_root(self):
        return self._p("runc")

    @property
    def config_path(self):
        return self._p("config.toml")

    @property
    def log_path(self):
        return self._p("containerd.log")

    @property
    def pods_dir(self):
        return self._p("pods")

    @property
    def certs_dir(self):
        return self._p("certs.d")

    def bundle_root(self):
        return os.path.join(self.state, "io.containerd.runtime.v2.task")

    # -- config --
    def config(self):
        """The config.toml contents as nested dicts (containerd 1.6, version 2)."""
        cri_runtimes = {"runc": Runtime("runc", "io.containerd.runc.v2").table()}
        for rt in self.runtimes:
            cri_runtimes[rt.name] = rt.table()
        for name, t in cri_runtimes.items():
            if t["runtime_type"] == "io.containerd.runc.v2":
                t["options"].setdefault("Root", self.runc_root)
                t["options"].setdefault("BinaryName", RUNC_BIN)
        proxies = {}
        for name, v in self.proxy_plugins.items():
            if isinstance(v, str):
                v = {"type": "snapshot", "address": v}
            proxies[name] = dict(v)
        disabled = list(DISABLED_PLUGINS)
        if not self.cri:
            disabled.append(CRI_PLUGIN)
        cri = {
            "sandbox_image": self.sandbox_image,
            "disable_tcp_service": True,
            "stream_server_address": "127.0.0.1",
            "stream_server_port": "0",
            "enable_selinux": False,
            "disable_apparmor": True,
            # CRI gives the pause container oom_score_adj -998; lowering it
            # needs CAP_SYS_RESOURCE, which test machines (containers) may
            # lack (runc then fails: "can't get final child's PID from
            # pipe"). Restricted, CRI clamps it to containerd's own value.
            "restrict_oom_score_adj": True,
            "disable_cgroup": False,
            "tolerate_missing_hugetlb_controller": True,
            "disable_hugetlb_controller": True,
            "stats_collect_period": 10,
            "netns_mounts_under_state_dir": True,
            # No CNI here: host-network pods never call it; pod-network pods
            # fail with "cni plugin not initialized" (see README.md).
            "cni": {"bin_dir": self._p("cni", "bin"), "conf_dir": self._p("cni", "net.d"), "max_conf_num": 1},
            "containerd": {
                "snapshotter": self.snapshotter or "overlayfs",
                "default_runtime_name": "runc",
                "disable_snapshot_annotations": False,
                "discard_unpacked_layers": False,
                "runtimes": cri_runtimes,
            },
            "registry": {"config_path": self.certs_dir},
        }
        return {
            "version": 2,
            "root": self.root,
            "state": self.state,
            "temp": self._p("tmp"),
            "oom_score": 0,
            "disabled_plugins": disabled,
            "grpc": {"address": self.address, "uid": 0, "gid": 0},
            "ttrpc": {"address": self.ttrpc_address, "uid": 0, "gid": 0},
            "debug": {"address": "", "level": self.log_level},
            "metrics": {"address": ""},
            "plugins": {
                CRI_PLUGIN: cri,
                "io.containerd.internal.v1.opt": {"path": self._p("opt")},
                "io.containerd.runtime.v2.task": {"platforms": ["linux/amd64"]},
            },
            "proxy_plugins": proxies,
        }

    def write_config(self):
        text = "# written by tests/containerd/ctrd.py for one test run\n" + toml_dumps(self.config()) + "\n"
        with open(self.config_path, "w") as f:
            f.write(text)
        return self.config_path

    def add_insecure_registry(self, host):
        """CRI pulls from http://<host> (hosts.toml; read at every pull)."""
        d = os.path.join(self.certs_dir, host)
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, "hosts.toml"), "w") as f:
            f.write('server = "http://%s"\n\n[host."http://%s"]\n  capabilities = ["pull", "resolve"]\n'
                    '  skip_verify = true\n' % (host, host))

    # -- lifecycle --
    def _make_workdir(self):
        if self.requested_workdir:
            os.makedirs(self.requested_workdir, exist_ok=True)
            self.workdir = os.path.abspath(self.requested_workdir)
            self._owns_workdir = False
        else:
            parent = os.environ.get("SPORE_CTRD_TMPDIR")
            candidates = [parent] if parent else ["/tmp", "/var/tmp"]
            last = None
            for c in candidates:
                try:
                    self.workdir = tempfile.mkdtemp(prefix="ctrd-", dir=c)
                    break
                except OSError as e:
                    last = e
            else:
                raise HarnessError("cannot create a workdir in %s: %s" % (candidates, last))
            self._owns_workdir = True
        if len(self.ttrpc_address) > SOCK_MAX:
            raise HarnessError("socket path %s is longer than %d bytes (unix socket limit): use a shorter "
                               "workdir (SPORE_CTRD_TMPDIR)" % (self.ttrpc_address, SOCK_MAX))
        for d in ("root", "state", "runc", "tmp", "opt", "pods", "fifo", "certs.d", "cni/bin", "cni/net.d"):
            os.makedirs(self._p(d), exist_ok=True)

    def env(self):
        e = dict(os.environ)
        path = self.shim_dirs + [os.path.dirname(CONTAINERD_BIN), "/usr/local/sbin", "/usr/local/bin",
                                 "/usr/sbin", "/usr/bin", "/sbin", "/bin"]
        e["PATH"] = ":".join(path)
        e.update(self.extra_env)
        return e

    def start(self, timeout=30):
        why = containerd_missing()
        if why:
            raise Skip(why)
        self._make_workdir()
        for h in self.insecure_registries:
            self.add_insecure_registry(h)
        self.write_config()
        try:
            self._launch(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _launch(self, timeout):
        if self._logf is None:
            self._logf = open(self.log_path, "ab")
        self.proc = subprocess.Popen([CONTAINERD_BIN, "--config", self.config_path], stdin=subprocess.DEVNULL,
                                     stdout=self._logf, stderr=self._logf, env=self.env(),
                                     cwd=self.workdir, start_new_session=True)
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise HarnessError("containerd exited with status %s while starting; its log:\n%s"
                                   % (self.proc.returncode, self.log_tail()))
            if os.path.exists(self.address):
                last = run([CTR_BIN, "--address", self.address, "--timeout", "5s", "version"], timeout=10)
                if last.rc == 0 and "Server:" in last.out:
                    break
            time.sleep(0.05)
        else:
            raise HarnessError("containerd did not answer on %s within %ds (%s); its log:\n%s"
                               % (self.address, timeout, last.describe() if last else "no socket",
                                  self.log_tail()))
        self._check_plugins()

    def restart(self, timeout=30):
        """containerd goes away (SIGTERM) and comes back with the same config,
        root and state, as on a node; the shims it started keep running and
        must be found again through their bundles' address files."""
        if self.proc is None or self.proc.poll() is not None:
            raise HarnessError("restart: containerd is not running")
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            raise HarnessError("containerd did not stop within 20 s of SIGTERM")
        try:
            os.unlink(self.address)
        except OSError:
            pass
        self._launch(timeout)
        return self

    def _check_plugins(self):
        r = self.ctr("plugins", "ls", namespace=None)
        if r.rc != 0:
            raise HarnessError("ctr plugins ls failed: %s" % r.describe())
        want = {("io.containerd.runtime.v2", "task")}
        if self.cri:
            want.add(("io.containerd.grpc.v1", "cri"))
        status = {}
        for line in r.out.splitlines()[1:]:
            f = line.split()
            if len(f) >= 4:
                status[(f[0], f[1])] = f[-1]
        for key in want:
            if status.get(key) != "ok":
                raise HarnessError("containerd plugin %s.%s is %s; its log:\n%s"
                                   % (key[0], key[1], status.get(key, "missing"), self.log_tail()))

    def log(self):
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()
        except (OSError, TypeError):
            return ""

    def log_tail(self, limit=6000):
        return tail(self.log(), limit)

    def shim_pids(self):
        """Pids of shim processes started by this instance (their argv carries
        `-address <our socket>`)."""
        res = []
        if not self.workdir:
            return res
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            argv = _proc_cmdline(pid)
            if not argv or "-address" not in argv:
                continue
            i = argv.index("-address")
            if i + 1 < len(argv) and argv[i + 1] == self.address:
                res.append(int(pid))
        return sorted(res)

    def wait_no_shims(self, timeout=10):
        """Waits until no shim of this instance runs; returns the pids left."""
        deadline = time.monotonic() + timeout
        while True:
            pids = self.shim_pids()
            if not pids or time.monotonic() >= deadline:
                return pids
            time.sleep(0.05)

    def namespaces(self):
        r = self.ctr("namespaces", "ls", "-q", namespace=None, timeout=15)
        return r.out.split() if r.rc == 0 else []

    def _clean_namespace(self, ns, deadline):
        def left():
            return max(1, int(deadline - time.monotonic()))
        r = self.ctr("tasks", "ls", "-q", namespace=ns, timeout=min(15, left()))
        tasks = r.out.split() if r.rc == 0 else []
        for t in tasks:
            self.ctr("tasks", "kill", "-a", "-s", "SIGKILL", t, namespace=ns, timeout=min(10, left()))
        for t in tasks:
            self.ctr("tasks", "delete", "-f", t, namespace=ns, timeout=min(15, left()))
        r = self.ctr("containers", "ls", "-q", namespace=ns, timeout=min(15, left()))
        for c in (r.out.split() if r.rc == 0 else []):
            self.ctr("containers", "delete", c, namespace=ns, timeout=min(15, left()))

    def _shim_socket_files(self):
        """Shim socket paths named in our bundles' `address` files."""
        res = set()
        br = self.bundle_root()
        if not os.path.isdir(br):
            return res
        for ns in os.listdir(br):
            nsd = os.path.join(br, ns)
            for cid in (os.listdir(nsd) if os.path.isdir(nsd) else []):
                try:
                    with open(os.path.join(nsd, cid, "address")) as f:
                        a = f.read().strip()
                except OSError:
                    continue
                if a.startswith("unix://"):
                    a = a[len("unix://"):]
                if os.path.dirname(a) == SHIM_SOCKET_DIR:
                    res.add(a)
        return res

    def stop(self, timeout=45, keep=None):
        """Kills and deletes the tasks and containers of every namespace
        (bounded), stops containerd (SIGTERM, then SIGKILL), kills any shim of
        this instance still alive, deletes leftover runc containers, removes
        shim sockets, unmounts what is mounted under the workdir, removes our
        cgroups and the workdir (kept if keep, or SPORE_TEST_KEEP=1).
        Returns a list of problems found while cleaning (empty when clean)."""
        problems = []
        if keep is None:
            keep = os.environ.get("SPORE_TEST_KEEP") == "1"
        deadline = time.monotonic() + timeout
        sockets = set()
        if self.workdir:
            sockets = self._shim_socket_files()
        if self.proc is not None and self.proc.poll() is None:
            try:
                for ns in self.namespaces():
                    if time.monotonic() >= deadline:
                        problems.append("cleanup deadline reached in namespace %s" % ns)
                        break
                    self._clean_namespace(ns, deadline)
            except Exception as e:  # keep going: the process sweep below still runs
                problems.append("cleaning namespaces: %r" % e)
            sockets |= self._shim_socket_files()
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                problems.append("containerd ignored SIGTERM for 10 s")
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.proc = None
        if self._logf:
            self._logf.close()
            self._logf = None
        if not self.workdir:
            return problems
        # Shims still alive (containerd normally shuts them down when their
        # last task is deleted): SIGKILL them; then the runc containers they
        # left behind.
        for pid in self.shim_pids():
            problems.append("shim pid %d was still running" % pid)
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        left = self.wait_no_shims(timeout=5)
        if left:
            problems.append("shims %s survived SIGKILL" % left)
        if os.path.isdir(self.runc_root):
            for ns in os.listdir(self.runc_root):
                root = os.path.join(self.runc_root, ns)
                for cid in (os.listdir(root) if os.path.isdir(root) else []):
                    problems.append("runc container %s/%s was left behind" % (ns, cid))
                    run([RUNC_BIN, "--root", root, "delete", "--force", cid], timeout=15)
        for s in sockets:
            if os.path.exists(s):
                try:
                    os.unlink(s)
                except OSError as e:
                    problems.append("cannot remove shim socket %s: %s" % (s, e))
        # Mounts under the workdir (rootfs, shm, netns), deepest first.
        prefix = self.workdir.rstrip("/") + "/"
        for mp in sorted((m for m in _mountpoints() if m.startswith(prefix)), key=len, reverse=True):
            problems.append("%s was still mounted" % mp)
            r = run(["umount", "-l", mp], timeout=15)
            if r.rc != 0:
                problems.append("umount -l %s: %s" % (mp, r.err.strip()))
        # Our cgroups (empty ones only: rmdir never kills anything).
        for croot in _cgroup_roots():
            top = os.path.join(croot, self.cgroup_parent.lstrip("/"))
            if not os.path.isdir(top):
                continue
            for dirpath, _dirs, _files in sorted(os.walk(top), key=lambda w: len(w[0]), reverse=True):
                try:
                    os.rmdir(dirpath)
                except OSError as e:
                    problems.append("cannot remove cgroup %s: %s" % (dirpath, e))
        if keep:
            sys.stderr.write("ctrd: keeping %s (SPORE_TEST_KEEP=1)\n" % self.workdir)
        elif self._owns_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)
            if os.path.exists(self.workdir):
                problems.append("cannot remove %s" % self.workdir)
        self.workdir = None if not keep else self.workdir
        return problems

    def __enter__(self):
        return self.start()

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None and exc_type not in (Skip, KeyboardInterrupt):
            sys.stderr.write("---- containerd log (tail) ----\n%s\n---- end of containerd log ----\n"
                             % self.log_tail())
        problems = self.stop()
        if problems:
            sys.stderr.write("ctrd: cleanup found: %s\n" % "; ".join(problems))
        self.cleanup_problems = problems

    # -- ctr --
    def ctr(self, *args, namespace="", timeout=60, input=None):
        """Runs `ctr --address SOCK [--namespace NS] args...` (namespace ""
        means this instance's ctr namespace, None means no flag)."""
        argv = [CTR_BIN, "--address", self.address]
        ns = self.namespace if namespace == "" else namespace
        if ns is not None:
            argv += ["--namespace", ns]
        return run(argv + [str(a) for a in args], env=self.env(), timeout=timeout, input=input)

    def ctr_ok(self, *args, **kw):
        r = self.ctr(*args, **kw)
        if r.rc != 0:
            raise HarnessError("ctr failed: %s" % r.describe())
        return r

    def _snap_args(self, snapshotter):
        s = snapshotter if snapshotter is not None else self.snapshotter
        return ["--snapshotter", s] if s else []

    def import_tar(self, tar_path, namespace="", snapshotter=None, timeout=120):
        """ctr images import (unpacked for the snapshotter) of an OCI layout
        tar. Image names come from io.containerd.image.name annotations."""
        return self.ctr_ok("images", "import", *self._snap_args(snapshotter), tar_path,
                           namespace=namespace, timeout=timeout)

    def import_layout(self, layout_dir, namespace="", snapshotter=None, timeout=120):
        """Imports an OCI image layout directory (tarred on the fly)."""
        tar_path = self._p("tmp", "import-%s.tar" % secrets.token_hex(4))
        try:
            with tarfile.open(tar_path, "w") as t:
                for name in sorted(os.listdir(layout_dir)):
                    t.add(os.path.join(layout_dir, name), arcname=name)
            return self.import_tar(tar_path, namespace=namespace, snapshotter=snapshotter, timeout=timeout)
        finally:
            os.unlink(tar_path)

    def import_image(self, image, namespace="", snapshotter=None, timeout=120):
        """Imports an OciImage (see below) into a namespace ("" = ours; use
        CRI_NAMESPACE for CRI)."""
        tar_path = self._p("tmp", "import-%s.tar" % secrets.token_hex(4))
        try:
            image.write_tar(tar_path)
            return self.import_tar(tar_path, namespace=namespace, snapshotter=snapshotter, timeout=timeout)
        finally:
            os.unlink(tar_path)

    def pull(self, ref, namespace="", plain_http=True, snapshotter=None, timeout=180):
        """ctr images pull [--plain-http] (e.g. from the docker-registry of
        tests/registry/harness.py on loopback)."""
        args = ["images", "pull"] + (["--plain-http"] if plain_http else []) + self._snap_args(snapshotter)
        return self.ctr_ok(*args, ref, namespace=namespace, timeout=timeout)

    def images(self, namespace=""):
        r = self.ctr_ok("images", "ls", "-q", namespace=namespace, timeout=30)
        return r.out.split()

    def ctr_run_args(self, ref, argv=(), cid=None, runtime=None, rm=True, env=(), snapshotter=None, extra=()):
        """The ctr arguments of ctr_run (for callers running it themselves)."""
        cid = cid or "c-%s" % secrets.token_hex(4)
        args = ["run"] + (["--rm"] if rm else [])
        args += ["--runc-root", self.runc_root, "--cgroup", "%s/%s" % (self.cgroup_parent, cid),
                 "--fifo-dir", self._p("fifo")]
        if runtime:
            args += ["--runtime", runtime]
        for e in env:
            args += ["--env", e]
        return args + self._snap_args(snapshotter) + list(extra) + [ref, cid] + list(argv)

    def ctr_run(self, ref, argv=(), cid=None, runtime=None, rm=True, env=(), snapshotter=None,
                extra=(), namespace="", timeout=60):
        """`ctr run [--rm]` of image ref with argv; returns the RunResult
        (rc is the container's exit status). The container gets this
        instance's runc root, cgroup parent and fifo dir."""
        args = self.ctr_run_args(ref, argv, cid, runtime, rm, env, snapshotter, extra)
        return self.ctr(*args, namespace=namespace, timeout=timeout)

    def ctr_popen(self, *args, namespace=""):
        """Starts `ctr ...` in the background (own session, output piped);
        the caller waits with a timeout and kills it by pid."""
        argv = [CTR_BIN, "--address", self.address]
        ns = self.namespace if namespace == "" else namespace
        if ns is not None:
            argv += ["--namespace", ns]
        return subprocess.Popen(argv + [str(a) for a in args], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, env=self.env(), start_new_session=True, text=True,
                                errors="replace")

    def task_status(self, cid, namespace=""):
        """The STATUS column of `ctr tasks ls` for cid (RUNNING, STOPPED...), or None."""
        r = self.ctr("tasks", "ls", namespace=namespace, timeout=15)
        for line in r.out.splitlines()[1:]:
            f = line.split()
            if f and f[0] == cid:
                return f[-1]
        return None

    def ensure_pause_image(self, namespace=CRI_NAMESPACE):
        """Builds (gcc -static) and imports the CRI sandbox (pause) image."""
        if namespace in self._pause_ready:
            return
        self.import_image(pause_image(self._p("tmp"), ref=self.sandbox_image), namespace=namespace)
        self._pause_ready.add(namespace)


# ---- OCI images ------------------------------------------------------------------

class OciImage(ociimage.OciImage):
    """scripts/ociimage.py's OciImage (a single-platform image built in
    memory; see there) plus push() to the tests' registry."""

    def __init__(self, ref, layers, config, gzip_layers=True, manifest_annotations=None, created=None,
                 created_by="tests/containerd/ctrd.py"):
        super().__init__(ref, layers, config, gzip_layers=gzip_layers, manifest_annotations=manifest_annotations,
                         created=created, created_by=created_by)

    def push(self, registry_host, repo, tag):
        """Pushes blobs then the manifest to a registry over plain HTTP (the
        docker-registry of tests/registry/harness.py). Returns the ref
        <host>/<repo>:<tag> to pull."""
        import harness as regh   # tests/registry/harness.py (on sys.path above)
        client = regh.Client("http://" + registry_host)
        for d in [x["digest"] for x in self.layers] + [self.config_digest]:
            client.push_blob(repo, self.blobs[d], digest=d)
        client.put_manifest(repo, tag, self.manifest_bytes, MT_MANIFEST)
        return "%s/%s:%s" % (registry_host, repo, tag)


def busybox_applets(busybox=BUSYBOX_BIN):
    try:
        return ociimage.busybox_applets(busybox)
    except ociimage.ImageError as e:
        raise HarnessError(str(e))


def busybox_image(ref="sporelet.test/busybox:1", busybox=BUSYBOX_BIN, cmd=("sh",), gzip_layers=True, extra_layers=()):
    """busybox from Debian's busybox-static as an OCI image: /bin/busybox,
    a /bin/<applet> symlink per applet, /etc/passwd and group, /tmp; then
    extra_layers (uncompressed tars, e.g. from layer_tar) on top."""
    if not os.access(busybox, os.X_OK):
        raise HarnessError("%s is missing (Debian package busybox-static; run scripts/setup)" % busybox)
    with open(busybox, "rb") as f:
        bb = f.read()
    entries = [("bin", "dir", None, 0o755), ("etc", "dir", None, 0o755), ("tmp", "dir", None, 0o1777),
               ("proc", "dir", None, 0o555), ("sys", "dir", None, 0o555), ("dev", "dir", None, 0o755),
               ("root", "dir", None, 0o700), ("bin/busybox", "file", bb, 0o755),
               ("etc/passwd", "file", b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534::/:/bin/false\n", 0o644),
               ("etc/group", "file", b"root:x:0:\nnogroup:x:65534:\n", 0o644)]
    for a in busybox_applets(busybox):
        entries.append(("bin/" + a, "symlink", "busybox", None))
    cfg = {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"], "Cmd": list(cmd),
           "WorkingDir": "/"}
    return OciImage(ref, [layer_tar(entries)] + list(extra_layers), cfg, gzip_layers=gzip_layers)


PAUSE_C = r"""
/* The CRI sandbox's process: waits for SIGTERM or SIGINT and exits 0;
 * reaps children meanwhile. Written for the Sporelet tests. */
#include <signal.h>
#include <sys/wait.h>

int main(void)
{
    sigset_t block, none;
    int sig = 0;

    sigemptyset(&block);
    sigaddset(&block, SIGTERM);
    sigaddset(&block, SIGINT);
    sigaddset(&block, SIGCHLD);
    sigprocmask(SIG_BLOCK, &block, 0);
    sigemptyset(&none);
    for (;;) {
        if (sigwait(&block, &sig) != 0)
            return 2;
        if (sig == SIGCHLD) {
            while (waitpid(-1, 0, WNOHANG) > 0)
                ;
            continue;
        }
        return 0;
    }
}
"""


def build_pause(outdir, cc="gcc"):
    """Compiles the pause program statically; returns its path."""
    src = os.path.join(outdir, "pause.c")
    exe = os.path.join(outdir, "pause")
    with open(src, "w") as f:
        f.write(PAUSE_C)
    r = run([cc, "-static", "-Os", "-s", "-o", exe, src], timeout=120)
    if r.rc != 0:
        raise HarnessError("cannot build the pause program (gcc -static; build-essential): %s" % r.describe())
    return exe


def pause_image(tmpdir, ref="sporelet.test/pause:1"):
    """The CRI sandbox image: /pause, a static program that exits 0 on
    SIGTERM/SIGINT."""
    d = tempfile.mkdtemp(prefix="pause-", dir=tmpdir)
    try:
        with open(build_pause(d), "rb") as f:
            exe = f.read()
    finally:
        shutil.rmtree(d, ignore_errors=True)
    entries = [("pause", "file", exe, 0o755), ("etc", "dir", None, 0o755), ("proc", "dir", None, 0o555),
               ("sys", "dir", None, 0o555), ("dev", "dir", None, 0o755)]
    return OciImage(ref, [layer_tar(entries)], {"Entrypoint": ["/pause"], "WorkingDir": "/"})


# ---- test programs ----------------------------------------------------------------

SYSTEM_PYTHON = "/usr/bin/python3"


def ensure_python_with_grpc():
    """Re-executes the running test under Debian's python3 when the python3
    running it lacks grpc/protobuf (e.g. a pyenv interpreter first on PATH).
    A no-op when they import, or when there is nothing better to run."""
    try:
        import google.protobuf  # noqa: F401
        import grpc  # noqa: F401
        return
    except ImportError:
        pass
    if (os.environ.get("SPORE_PY_REEXEC") or not os.access(SYSTEM_PYTHON, os.X_OK)
            or os.path.realpath(sys.executable) == os.path.realpath(SYSTEM_PYTHON)):
        return
    os.environ["SPORE_PY_REEXEC"] = "1"
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(SYSTEM_PYTHON, [SYSTEM_PYTHON] + sys.argv)


def main_wrapper(fn):
    """Runs fn() as a test's main: exit 0 on success, 77 on Skip (reason
    printed), 1 on HarnessError/AssertionError (message printed)."""
    try:
        fn()
    except Skip as e:
        print("SKIP: %s" % e, flush=True)
        sys.exit(SKIP)
    except (HarnessError, AssertionError) as e:
        print("FAIL: %s" % (e or type(e).__name__), flush=True)
        sys.exit(1)
    print("PASS", flush=True)
    sys.exit(0)
