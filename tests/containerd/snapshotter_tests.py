#!/usr/bin/env python3
"""spore-snapshotter under a private containerd 1.6 (proxy_plugins.spore) and
through its own gRPC API (grpcio, our snapshots.proto compiled at run time).

Usage: snapshotter_tests.py <test> SNAPSHOTTER_BIN PROTO_DIR   (exit 0 pass, 1 fail, 77 skip)
Tests:
  busybox  an ordinary two-layer image imported and run under runc with the
           snapshotter: overlay mounts, writes stay in the container's
           snapshot, containerd's GC removes everything through the proxy
  api      the Snapshots service's rules and error codes, bad input
           (malformed protobuf, unknown methods), List filters as
           containerd sends them
  kill     kill -9 of the snapshotter while it prepares and commits, then a
           restart: every snapshot is whole or absent, containerd carries on
  peer     who may call: the socket's directories (made 0700, others refused
           if anyone but root could change them), mode 0600, and only root
           and the daemon's uid served even with the socket opened to all
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ctrd  # noqa: E402
from ctrd import CRI_NAMESPACE, Containerd, HarnessError  # noqa: E402
from ctrd import Timer, check  # noqa: E402

ctrd.ensure_python_with_grpc()

SVC = "/containerd.services.snapshots.v1.Snapshots/"


def load_api(proto_dir):
    """snapshots_pb2 compiled from our proto/ with protoc (python_out)."""
    from cri import protoc_import
    files = ["containerd/types/mount.proto", "containerd/services/snapshots/v1/snapshots.proto"]
    return protoc_import([proto_dir, "/usr/include"], files, "containerd.services.snapshots.v1.snapshots_pb2"), None


class Snapshotter:
    """spore-snapshotter on a private root and socket; stop() SIGTERMs it."""

    def __init__(self, binary, workdir, config=None, env=None):
        self.binary = binary
        self.config = config
        self.env = env
        self.root = os.path.join(workdir, "root")
        self.address = os.path.join(workdir, "snap.sock")
        self.log_path = os.path.join(workdir, "snapshotter.log")
        self.proc = None

    def start(self, timeout=20):
        self._log = open(self.log_path, "a")
        argv = [self.binary, "--root", self.root, "--address", self.address, "--log-level", "debug"]
        if self.config:
            argv += ["--config", self.config]
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=self._log, stderr=self._log,
                                     start_new_session=True, env=self.env)
        # Ready once the socket answers: a killed predecessor leaves its
        # socket file behind, which the daemon replaces.
        deadline = time.monotonic() + timeout
        while True:
            check(self.proc.poll() is None, "spore-snapshotter exited %s:\n%s" % (self.proc.returncode, self.log()))
            check(time.monotonic() < deadline, "spore-snapshotter did not listen within %ds" % timeout)
            probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                probe.connect(self.address)
                break
            except OSError:
                time.sleep(0.02)
            finally:
                probe.close()

    def kill9(self):
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)
        self._log.close()

    def stop(self, timeout=15):
        if not self.proc or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
            rc = "killed"
        self._log.close()
        return rc

    def log(self):
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()[-6000:]
        except OSError:
            return ""

    def owned_dirs(self):
        d = os.path.join(self.root, "snapshots")
        return sorted(os.listdir(d)) if os.path.isdir(d) else []


class Api:
    """Unary and streaming calls on the snapshotter's socket."""

    def __init__(self, pb, address):
        import grpc
        self.grpc = grpc
        self.pb = pb
        self.ch = grpc.insecure_channel("unix:" + address)

    def call(self, method, req, resp_type):
        f = self.ch.unary_unary(SVC + method, request_serializer=lambda m: m.SerializeToString(),
                                response_deserializer=resp_type.FromString)
        return f(req, timeout=20, metadata=(("containerd-namespace", "t"),))

    def code(self, method, req, resp_type=None):
        """The gRPC status code name of a call ("OK" when it succeeds)."""
        from google.protobuf import empty_pb2
        try:
            self.call(method, req, resp_type or empty_pb2.Empty)
            return "OK"
        except self.grpc.RpcError as e:
            return e.code().name

    def raw(self, method, data):
        f = self.ch.unary_unary(SVC + method, request_serializer=lambda b: b, response_deserializer=lambda b: b)
        try:
            f(data, timeout=20)
            return "OK"
        except self.grpc.RpcError as e:
            return e.code().name

    def list(self, *filters):
        f = self.ch.unary_stream(SVC + "List", request_serializer=lambda m: m.SerializeToString(),
                                 response_deserializer=self.pb.ListSnapshotsResponse.FromString)
        infos = []
        for r in f(self.pb.ListSnapshotsRequest(snapshotter="spore", filters=list(filters)), timeout=20):
            infos.extend(r.info)
        return infos

    def close(self):
        self.ch.close()


def t_busybox(binary, proto_dir, work):
    tm = Timer()
    s = Snapshotter(binary, work)
    s.start()
    tm.mark("spore-snapshotter up (%s)" % s.address)
    c = Containerd(cri=False, proxy_plugins={"spore": s.address}, snapshotter="spore")
    try:
        c.start()
        tm.mark("containerd up with proxy_plugins.spore")
        plugins = c.ctr_ok("plugins", "ls").out
        check(any(" spore " in (" %s " % l) and "ok" in l for l in plugins.splitlines() if "snapshotter" in l),
              "proxy snapshotter spore is not listed ok:\n%s" % plugins)
        layer2 = ctrd.layer_tar([("etc", "dir", None, 0o755), ("etc/layer2", "file", b"from-layer-2\n", 0o644)])
        img2 = ctrd.busybox_image(ref="sporelet.test/busybox2:snap", extra_layers=[layer2])
        c.import_image(img2, snapshotter="spore")
        tm.mark("two-layer busybox imported (unpacked by spore-snapshotter)")
        snaps = c.ctr_ok("snapshots", "--snapshotter", "spore", "ls").out
        check(snaps.count("Committed") == 2, "want 2 committed snapshots (one per layer):\n%s" % snaps)

        r = c.ctr_run(img2.ref, ["sh", "-c", "cat /etc/layer2; echo written >/etc/mine; cat /etc/mine; exit 4"],
                      snapshotter="spore")
        check(r.rc == 4 and r.out == "from-layer-2\nwritten\n", "ctr run on the spore snapshotter:\n%s" % r.describe())
        tm.mark("ctr run --snapshotter spore under runc: both layers seen, a write, exit 4 (%.3fs)" % r.secs)

        r = c.ctr_run(img2.ref, ["sh", "-c", "test -e /etc/mine && echo LEAK || echo clean"], snapshotter="spore")
        check(r.rc == 0 and r.out == "clean\n", "a second container saw the first one's write:\n%s" % r.describe())
        tm.mark("writes stay in each container's own snapshot")

        pb, out = load_api(proto_dir)
        api = Api(pb, s.address)
        try:
            # containerd removes a deleted container's snapshot in its
            # garbage collection, which runs shortly after.
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and len(api.list()) != 2:
                time.sleep(0.2)
            before = api.list()
            check(len(before) == 2 and all(i.kind == pb.COMMITTED for i in before),
                  "after --rm runs the store should hold the 2 layers: %s" % [(i.name, i.kind) for i in before])
            c.ctr_ok("images", "rm", "--sync", img2.ref)
            deadline = time.monotonic() + 20
            while api.list() and time.monotonic() < deadline:
                time.sleep(0.2)
            left = api.list()
            check(not left, "containerd's GC left snapshots in the store: %s" % [i.name for i in left])
        finally:
            api.close()
        deadline = time.monotonic() + 10
        while s.owned_dirs() and time.monotonic() < deadline:
            time.sleep(0.2)
        check(not s.owned_dirs(), "directories left under %s/snapshots: %s" % (s.root, s.owned_dirs()))
        tm.mark("image removed: containerd's GC removed every snapshot through the proxy, no directory left")
    except BaseException:
        print("---- containerd log (tail) ----\n%s\n---- snapshotter log ----\n%s" % (c.log_tail(), s.log()),
              flush=True)
        c.stop()
        s.stop()
        raise
    problems = c.stop()
    check(not problems, "containerd teardown had to clean up: %s" % problems)
    rc = s.stop()
    check(rc == 0, "spore-snapshotter exited %r on SIGTERM:\n%s" % (rc, s.log()))
    check(not os.path.exists(s.address), "the socket %s is left after SIGTERM" % s.address)


def t_api(binary, proto_dir, work):
    tm = Timer()
    pb, out = load_api(proto_dir)  # before the daemon: a failure here leaves nothing running
    s = Snapshotter(binary, work)
    s.start()
    api = Api(pb, s.address)
    try:
        from google.protobuf import field_mask_pb2
        P = lambda k, parent="", **labels: pb.PrepareSnapshotRequest(snapshotter="spore", key=k, parent=parent,
                                                                     labels=labels)
        mounts = api.call("Prepare", P("a"), pb.PrepareSnapshotResponse).mounts
        check(len(mounts) == 1 and mounts[0].type == "bind" and "rw" in mounts[0].options,
              "Prepare without a parent: want one rw bind mount, got %s" % mounts)
        check(api.code("Prepare", P("a")) == "ALREADY_EXISTS", "Prepare of a taken key")
        check(api.code("Prepare", P("b", "nope")) == "NOT_FOUND", "Prepare on a missing parent")
        check(api.code("Prepare", P("b", "a")) in ("INVALID_ARGUMENT", "FAILED_PRECONDITION"),
              "Prepare on an active (uncommitted) parent")
        check(api.code("Commit", pb.CommitSnapshotRequest(snapshotter="spore", name="A", key="a")) == "OK", "Commit")
        check(api.code("Commit", pb.CommitSnapshotRequest(snapshotter="spore", name="A2", key="a")) == "NOT_FOUND",
              "Commit of a key already committed")
        m = api.call("Prepare", P("b", "A", **{"containerd.io/snapshot/x": "1"}), pb.PrepareSnapshotResponse).mounts
        check(len(m) == 1 and m[0].type == "overlay" and any(o.startswith("lowerdir=") for o in m[0].options) and
              any(o.startswith("upperdir=") for o in m[0].options), "Prepare on a parent: want overlay, got %s" % m)
        v = api.call("View", pb.ViewSnapshotRequest(snapshotter="spore", key="v", parent="A"),
                     pb.ViewSnapshotResponse).mounts
        check(len(v) == 1 and v[0].type == "bind" and "ro" in v[0].options, "View of one parent: ro bind, got %s" % v)
        check(api.code("Commit", pb.CommitSnapshotRequest(snapshotter="spore", name="V", key="v")) ==
              "FAILED_PRECONDITION", "Commit of a view")
        check(api.code("Remove", pb.RemoveSnapshotRequest(snapshotter="spore", key="A")) == "FAILED_PRECONDITION",
              "Remove of a snapshot with children")
        check(api.code("Remove", pb.RemoveSnapshotRequest(snapshotter="spore", key="zz")) == "NOT_FOUND",
              "Remove of a missing key")
        info = api.call("Stat", pb.StatSnapshotRequest(snapshotter="spore", key="b"), pb.StatSnapshotResponse).info
        check(info.name == "b" and info.parent == "A" and info.kind == pb.ACTIVE and
              dict(info.labels) == {"containerd.io/snapshot/x": "1"}, "Stat of b: %s" % info)
        check(api.code("Stat", pb.StatSnapshotRequest(snapshotter="spore", key="zz"), pb.StatSnapshotResponse) ==
              "NOT_FOUND", "Stat of a missing key")
        up = pb.UpdateSnapshotRequest(snapshotter="spore", info=pb.Info(name="b", labels={"y": "2"}),
                                      update_mask=field_mask_pb2.FieldMask(paths=["labels.y"]))
        info = api.call("Update", up, pb.UpdateSnapshotResponse).info
        check(dict(info.labels) == {"containerd.io/snapshot/x": "1", "y": "2"}, "Update labels.y: %s" % info)
        up.update_mask.paths[:] = ["parent"]
        check(api.code("Update", up, pb.UpdateSnapshotResponse) == "INVALID_ARGUMENT", "Update of the parent field")
        big = pb.PrepareSnapshotRequest(snapshotter="spore", key="big", labels={"k": "x" * 5000})
        check(api.code("Prepare", big, pb.PrepareSnapshotResponse) == "INVALID_ARGUMENT", "a label over 4096 bytes")
        tm.mark("kinds, parents, labels and their error codes")

        names = sorted(i.name for i in api.list())
        check(names == ["A", "b", "v"], "List: %s" % names)
        f = api.list('kind==committed')
        check([i.name for i in f] == ["A"], "List kind==committed: %s" % [i.name for i in f])
        f = api.list('labels."containerd.io/snapshot/x"==1,parent=="A"')
        check([i.name for i in f] == ["b"], "List with containerd's label+parent filter: %s" % [i.name for i in f])
        f = api.list('kind==view', 'name==A')
        check(sorted(i.name for i in f) == ["A", "v"], "List with two filters (either): %s" % [i.name for i in f])
        try:
            api.list('labels.=="x')
            check(False, "a malformed filter was accepted")
        except api.grpc.RpcError as e:
            check(e.code().name == "INVALID_ARGUMENT", "malformed filter: %s" % e.code().name)
        u = api.call("Usage", pb.UsageRequest(snapshotter="spore", key="A"), pb.UsageResponse)
        check(u.inodes >= 1 and u.size >= 0, "Usage of A: %s" % u)
        tm.mark("List (filters, alternatives) and Usage")

        for method in ("Prepare", "Commit", "Stat", "List", "Update", "Remove"):
            if method == "List":
                f = api.ch.unary_stream(SVC + "List", request_serializer=lambda b: b, response_deserializer=lambda b: b)
                try:
                    list(f(b"\x0a\xff\xff\xff\xff\x0f", timeout=10))
                    code = "OK"
                except api.grpc.RpcError as e:
                    code = e.code().name
            else:
                code = api.raw(method, b"\x12\xff\xff\xff\xff\x0fxx")
            check(code == "INVALID_ARGUMENT", "malformed %s request answered %s" % (method, code))
        check(api.raw("Nope", b"") == "UNIMPLEMENTED", "unknown method")
        check(api.code("Cleanup", pb.CleanupRequest(snapshotter="spore")) == "OK", "Cleanup")
        tm.mark("malformed protobuf: INVALID_ARGUMENT; unknown method: UNIMPLEMENTED; the server lives on")

        for k in ("b", "v", "A"):
            check(api.code("Remove", pb.RemoveSnapshotRequest(snapshotter="spore", key=k)) == "OK", "Remove %s" % k)
        check(api.list() == [] and s.owned_dirs() == [], "store not empty after removing everything: %s" %
              s.owned_dirs())
    except BaseException:
        print("---- snapshotter log ----\n%s" % s.log(), flush=True)
        raise
    finally:
        api.close()
        rc = s.stop()
    check(rc == 0, "spore-snapshotter exited %r on SIGTERM" % rc)


def t_kill(binary, proto_dir, work):
    """kill -9 at many points of a Prepare/Commit/Remove stream, restart,
    check: every listed snapshot is whole (Stat, Mounts work; its directory
    exists), no directory without a snapshot, and the stream goes on."""
    tm = Timer()
    pb, out = load_api(proto_dir)
    s = Snapshotter(binary, work)
    try:
        kill_rounds(s, pb, tm)
    except BaseException:
        print("---- snapshotter log ----\n%s" % s.log(), flush=True)
        raise
    finally:
        s.stop()


PEER_CALL = r"""
import sys
import grpc
try:
    grpc.insecure_channel("unix:" + sys.argv[1]).unary_unary(sys.argv[2])(b"", timeout=10)
    print("OK")
except grpc.RpcError as e:
    print(e.code().name)
"""


def call_as(uid, address):
    """One gRPC call (Stat, empty request) on address from a process running
    as uid: the status code name, or the connect error."""
    def drop():
        os.setgroups([])
        os.setresgid(uid, uid, uid)
        os.setresuid(uid, uid, uid)
    r = subprocess.run([sys.executable, "-c", PEER_CALL, address, SVC + "Stat"], preexec_fn=drop,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=60)
    return r.stdout.strip().splitlines()[-1] if r.stdout.strip() else "rc=%d" % r.returncode


def t_peer(binary, proto_dir, work):
    if os.geteuid() != 0:
        print("SKIP: needs root (calls are made as other uids)", flush=True)
        sys.exit(ctrd.SKIP)
    tm = Timer()
    pb, out = load_api(proto_dir)
    # --address in directories that do not exist yet: made 0700.
    s = Snapshotter(binary, work)
    s.address = os.path.join(work, "run", "sub", "snap.sock")
    s.start()
    try:
        for d in (os.path.join(work, "run"), os.path.join(work, "run", "sub")):
            check(os.stat(d).st_mode & 0o7777 == 0o700, "%s: mode %o, want 0700" % (d, os.stat(d).st_mode))
        check(os.stat(s.address).st_mode & 0o777 == 0o600, "socket mode %o, want 0600" %
              (os.stat(s.address).st_mode & 0o777))
        api = Api(pb, s.address)
        check(api.code("Stat", pb.StatSnapshotRequest(snapshotter="spore", key="zz"),
                       pb.StatSnapshotResponse) == "NOT_FOUND", "root is served")
        got = call_as(65534, s.address)
        check(got != "NOT_FOUND" and got != "OK", "uid 65534 through a 0700 directory: %s" % got)
        # Opened up to everyone: the daemon's own rule must still refuse.
        for d in (work, os.path.join(work, "run"), os.path.join(work, "run", "sub")):
            os.chmod(d, 0o755)
        os.chmod(s.address, 0o666)
        got = call_as(65534, s.address)
        check(got == "UNAVAILABLE", "uid 65534 with the socket open to all: %s" % got)
        check(api.code("Stat", pb.StatSnapshotRequest(snapshotter="spore", key="zz"),
                       pb.StatSnapshotResponse) == "NOT_FOUND", "root is still served")
        deadline = time.monotonic() + 10
        while 'msg="grpc: refused peer uid 65534"' not in s.log():
            check(time.monotonic() < deadline, "the refusal was not logged:\n%s" % s.log())
            time.sleep(0.05)
        api.close()
        tm.mark("0700 directories, 0600 socket; uid 65534 refused (UNAVAILABLE) and logged; root served")
    except BaseException:
        print("---- snapshotter log ----\n%s" % s.log(), flush=True)
        raise
    finally:
        rc = s.stop()
    check(rc == 0, "spore-snapshotter exited %r on SIGTERM" % rc)

    # A socket directory others could change: the daemon will not start.
    for mode, owner, want in ((0o777, 0, "is writable by others (mode 0777) and not sticky"),
                              (0o770, 0, "is writable by its group (mode 0770)"),
                              (0o755, 65534, "belongs to uid 65534, not to root or uid 0")):
        d = tempfile.mkdtemp(dir=work)
        os.chmod(d, mode)
        os.chown(d, owner, owner)
        r = subprocess.run([binary, "--root", os.path.join(work, "root2"), "--address", os.path.join(d, "s.sock")],
                           stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           timeout=30)
        check(r.returncode != 0 and want in r.stdout and d in r.stdout,
              "--address in a %o directory of uid %d: exit %d\n%s" % (mode, owner, r.returncode, r.stdout))
        check(not os.listdir(d), "a refused start left %s" % os.listdir(d))
    tm.mark("--address in group/other-writable or foreign directories refused")


def kill_rounds(s, pb, tm):
    committed = []
    for round_ in range(12):
        s.start()
        api = Api(pb, s.address)
        stop = threading.Event()

        def churn():
            i = 0
            while not stop.is_set():
                k = "r%d-%d" % (round_, i)
                parent = committed[-1] if committed else ""
                if api.code("Prepare", pb.PrepareSnapshotRequest(snapshotter="spore", key=k, parent=parent),
                            pb.PrepareSnapshotResponse) != "OK":
                    return
                name = "c-" + k
                if api.code("Commit", pb.CommitSnapshotRequest(snapshotter="spore", name=name, key=k)) == "OK":
                    committed.append(name)
                i += 1
        t = threading.Thread(target=churn)
        t.start()
        time.sleep(0.05 + 0.037 * round_)
        s.kill9()
        stop.set()
        t.join(timeout=30)
        api.close()
        s.start()
        api = Api(pb, s.address)
        infos = api.list()
        names = {i.name for i in infos}
        for i in infos:
            check(i.parent == "" or i.parent in names, "round %d: %s has a missing parent %s" % (round_, i.name,
                                                                                               i.parent))
            if i.kind != pb.COMMITTED:
                code = api.code("Mounts", pb.MountsRequest(snapshotter="spore", key=i.name), pb.MountsResponse)
                check(code == "OK", "round %d: Mounts of %s after restart: %s" % (round_, i.name, code))
        dirs = s.owned_dirs()
        check(len(dirs) == len(infos), "round %d: %d directories for %d snapshots: %s" %
              (round_, len(dirs), len(infos), dirs))
        # Commits the client saw succeed must have survived.
        lost = [n for n in committed if n not in names]
        check(not lost, "round %d: acknowledged commits lost by kill -9: %s" % (round_, lost))
        api.close()
        s.stop()
    tm.mark("12 kill -9 rounds: %d commits survived, store consistent after every restart" % len(committed))


def after_restart(call, limit=15):
    """call() (a ctr command) until it stops failing with UNAVAILABLE:
    containerd's gRPC client backs off after its connection to a restarted
    snapshotter broke (at most 3 s, reference/containerd_protocols.md 4.1)
    and fails calls fast meanwhile. Returns (result, seconds waited)."""
    t0 = time.monotonic()
    while True:
        r = call()
        if r.rc == 0 or time.monotonic() - t0 > limit or "unavailable" not in r.err:
            return r, time.monotonic() - t0
        time.sleep(0.2)


def stop_node(c, s, k=None):
    """Stops a test node: the CRI client, containerd, the snapshotter.
    Returns (containerd's teardown problems, the snapshotter's status)."""
    if k:
        k.close()
    return c.stop(), s.stop()


def check_stopped(stopped, s, env):
    problems, rc = stopped
    check(not problems, "containerd teardown had to clean up: %s" % problems)
    check(rc == 0, "spore-snapshotter exited %r on SIGTERM:\n%s" % (rc, s.log()))
    reports = env.sanitizer_reports()
    check(not reports, "sanitizer reports:\n%s" % "\n".join(reports))


def t_spore(binary, proto_dir, work, spore, guest, shim_dir):
    """A spore image pulled through the snapshotter: containerd downloads no
    layer (remote snapshots), `ctr run` with the spore runtime resumes the
    materialised spore; with the registry gone and the cache empty, the run
    fails naming the image and the registry, and nothing half-made stays."""
    import spore_tests
    tm = Timer()
    env = spore_tests.Env(spore, guest, shim_dir)
    px = None
    try:
        d = env.agent_spore("tg")
        env.start_registry()
        px = env.regh.Proxy(env.reg)
        px.start()
        ref = "%s/spores/tg:v1" % px.host
        p = env.run(spore, "push", d, ref, timeout=300)
        check(p.returncode == 0, "spore push: %s" % p.stderr[-2000:])
        layers = [x["digest"] for x in json.loads(env.regh.Client(env.reg.url).get_manifest("spores/tg", "v1")[0])["layers"]]
        tm.mark("test-guest spore captured and pushed: %d layers" % len(layers))
        cache = os.path.join(work, "nodecache")
        cfg = os.path.join(work, "snap.yaml")
        with open(cfg, "w") as f:
            f.write("spore: %s\ncache_dir: %s\npull_timeout_s: 120\n" % (spore, cache))
        s = Snapshotter(binary, work, config=cfg, env=dict(os.environ, **env.san_env))
        s.start()
        c = Containerd(cri=True, proxy_plugins={"spore": s.address}, snapshotter="spore", shim_dirs=[shim_dir],
                       insecure_registries=[px.host], extra_env=env.san_env)
        k = None
        try:
            c.start()
            # kubelet's way: CRI PullImage unpacks while it fetches, so a
            # layer whose Prepare answers ALREADY_EXISTS is never downloaded.
            from cri import CriClient
            k = CriClient(c)
            n0 = len(px.records())
            t0 = time.monotonic()
            k.pull_image(ref)
            pull_s = time.monotonic() - t0
            recs = px.records()[n0:]
            blob_gets = [r.path.rsplit("/", 1)[1] for r in recs if r.method == "GET" and "/blobs/" in r.path]
            fetched = [b for b in blob_gets if b in layers]
            check(not fetched, "CRI PullImage fetched spore layers: %s" % fetched)
            tm.mark("CRI PullImage via the snapshotter: %.3fs, %d requests, blobs fetched %s (config only, no layer)" %
                    (pull_s, len(recs), [b[:19] for b in blob_gets]))
            snaps = c.ctr_ok("snapshots", "--snapshotter", "spore", "ls", namespace=CRI_NAMESPACE).out
            check(snaps.count("Committed") == len(layers), "want %d committed remote snapshots:\n%s" %
                  (len(layers), snaps))
            ns = CRI_NAMESPACE

            # An ordinary 3-layer image pulled through CRI on this node: CRI
            # labels each layer's Prepare like a spore's, so the snapshotter
            # asks the registry whether the image is a spore, once, and
            # remembers the answer for the other layers.
            extra = [ctrd.layer_tar([("etc", "dir", None, 0o755), ("etc/l%d" % i, "file", b"%d\n" % i, 0o644)])
                     for i in (2, 3)]
            plain = ctrd.busybox_image(ref="unused", extra_layers=extra)
            plain_ref = plain.push(px.host, "plain/busybox", "v1")
            n0 = len(px.records())
            k.pull_image(plain_ref)
            recs = px.records()[n0:]
            ours = [r for r in recs if "/manifests/" in r.path and
                    r.headers.get("user-agent", "").startswith("sporelet-oci/")]
            check(len(ours) == 1, "want the snapshotter to fetch the ordinary image's manifest once for its "
                  "3 layers, saw %d: %s" % (len(ours), [(r.method, r.path) for r in ours]))
            snaps = c.ctr_ok("snapshots", "--snapshotter", "spore", "ls", namespace=ns).out
            check(snaps.count("Committed") == len(layers) + 3, "want %d committed snapshots after the ordinary "
                  "image:\n%s" % (len(layers) + 3, snaps))
            tm.mark("ordinary 3-layer image through CRI: unpacked by the snapshotter, its manifest asked once")

            def run(argv, cid=None):
                return c.ctr_run(ref, argv, cid=cid, runtime=spore_tests.RUNTIME, namespace=ns,
                                 extra=("--runtime-config-path", env.config))
            r = run(["echo", "hello", "from", "a", "lazy", "spore"])
            check(r.rc == 0 and r.out == "hello from a lazy spore\n", "ctr run on the materialised spore: %s" %
                  r.describe())
            tm.mark("ctr run --snapshotter spore --runtime io.containerd.spore.v2: output ok (%.3fs)" % r.secs)
            r = run(["exit", "5"])
            check(r.rc == 5, "second run, exit 5: %s" % r.describe())
            tm.mark("a second pod from the cache: exit 5 (%.3fs)" % r.secs)
            chunks = [os.path.join(dp, f) for dp, _, fs in os.walk(os.path.join(cache, "chunks")) for f in fs]
            check(chunks, "no chunk entered the node cache %s" % cache)

            # ctr 1.6's own pull fetches every blob before it unpacks
            # (cmd/ctr/commands/content/fetch.go) and unpacks with
            # image.Unpack, which passes no snapshot.ref label: the eager
            # path. The layers are applied as ordinary snapshots and the
            # spore runs from them all the same.
            c.pull(ref, snapshotter="spore")
            r = c.ctr_run(ref, ["echo", "via", "ctr"], runtime=spore_tests.RUNTIME,
                          extra=("--runtime-config-path", env.config))
            check(r.rc == 0 and r.out == "via ctr\n", "ctr images pull, then ctr run: %s" % r.describe())
            tm.mark("ctr images pull (ctr 1.6: blobs fetched, layers applied eagerly) + ctr run: output ok")

            # The registry gone, every chunk cached: the pod starts from the
            # node cache's copy of the image's metadata (spore pull offline).
            gone = px.host
            px.stop()
            r = run(["echo", "offline"])
            check(r.rc == 0 and r.out == "offline\n", "a pod with the registry gone, every chunk cached: %s" %
                  r.describe())
            tm.mark("registry gone, chunks cached: the pod starts from the node cache (%.3fs)" % r.secs)

            # The registry gone and the cache empty: the pod cannot start,
            # the error names the image and the registry, nothing is left.
            shutil.rmtree(os.path.join(cache, "chunks"))
            r = run(["echo", "x"], cid="unreachable")
            check(r.rc not in (0, "timeout") and "materialising spore" in r.err and gone in r.err,
                  "with the registry gone: want an error naming the spore and %s: %s" % (gone, r.describe()))
            tm.mark("registry gone: %s" % r.err.strip().splitlines()[-1][:200])
            pb, out = load_api(proto_dir)
            api = Api(pb, s.address)
            try:
                infos = api.list()
                kinds = sorted(i.kind for i in infos)
                remote = [i for i in infos if dict(i.labels).get("containerd.io/snapshot/remote") == "spore"]
                check(kinds == [pb.COMMITTED] * len(infos) and len(remote) == len(layers),
                      "want only committed snapshots (%d remote) after the failed materialisation: %s" %
                      (len(layers), [(i.name, i.kind) for i in infos]))
            finally:
                api.close()
            check(len(s.owned_dirs()) == len(infos), "directories left: %s" % s.owned_dirs())
            c.ctr("containers", "rm", "unreachable", namespace=ns)
            check(not c.wait_no_shims(10), "shims left")

            # A mirror holding a byte-for-byte copy, behind Basic auth, named
            # with its credentials in the snapshotter's config: the pod that
            # failed now starts from the mirror.
            mreg = env.regh.Registry(auth="basic", user="mirror-user", password="mirror-pw").start()
            try:
                src = env.regh.Client(env.reg.url)
                dst = env.regh.Client(mreg.url, user="mirror-user", password="mirror-pw")
                body, _, mdig = src.get_manifest("spores/tg", "v1")
                m = json.loads(body)
                for dsc in [m["config"]] + m["layers"]:
                    dst.push_blob("spores/tg", src.get_blob("spores/tg", dsc["digest"]))
                dst.put_manifest("spores/tg", mdig, body)
                s.stop()
                with open(cfg, "a") as f:
                    f.write('registries:\n  "%s":\n    mirrors: ["%s"]\n  "%s":\n    username: mirror-user\n'
                            '    password: mirror-pw\n' % (gone, mreg.host, mreg.host))
                s.start()
                r, _ = after_restart(lambda: run(["echo", "via", "mirror"]))
                check(r.rc == 0 and r.out == "via mirror\n", "a pod from the mirror: %s" % r.describe())
                scratch = os.path.join(s.root, "tmp")
                check(not os.listdir(scratch), "credentials left in %s: %s" % (scratch, os.listdir(scratch)))
                tm.mark("registry gone, its mirror (Basic auth, credentials from the YAML config) serves the pod")
            finally:
                mreg.stop()

        except BaseException:
            print("---- containerd log (tail) ----\n%s\n---- snapshotter log ----\n%s" % (c.log_tail(), s.log()),
                  flush=True)
            raise
        finally:
            stopped = stop_node(c, s, k)
        check_stopped(stopped, s, env)
    finally:
        if px:
            px.stop()
        env.close()


class Xfs:
    """A loop-mounted XFS with reflink (mkfs.xfs -m reflink=1), for the node's
    cache and snapshots; umount() detaches it."""

    def __init__(self, work, size="2G"):
        self.img = os.path.join(work, "xfs.img")
        self.mnt = os.path.join(work, "xfs")
        os.makedirs(self.mnt)
        for argv in (["truncate", "-s", size, self.img], ["mkfs.xfs", "-q", "-m", "reflink=1", self.img],
                     ["mount", "-o", "loop", self.img, self.mnt]):
            p = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=60)
            if p.returncode != 0:
                raise HarnessError("%s: %s" % (" ".join(argv), p.stdout))
        self.mounted = True

    def used(self):
        st = os.statvfs(self.mnt)
        return (st.f_blocks - st.f_bfree) * st.f_frsize

    def umount(self):
        if self.mounted:
            subprocess.run(["umount", self.mnt], timeout=60)
            self.mounted = False


def du_bytes(*paths):
    """Disk usage with each hard-linked inode counted once (du -s -B1 -c)."""
    p = subprocess.run(["du", "-s", "-B1", "-c"] + list(paths), stdout=subprocess.PIPE, text=True, timeout=60)
    return int(p.stdout.strip().splitlines()[-1].split()[0])


def proc_cmdlines():
    """argv of every process still there."""
    out = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open("/proc/%s/cmdline" % pid, "rb") as f:
                    out.append([a.decode(errors="replace") for a in f.read().split(b"\0")[:-1]])
            except OSError:
                pass
    return out


def delete_pods(c, cids, ns=CRI_NAMESPACE):
    """SIGKILL, then delete the tasks and containers cids (those still there)."""
    for cid in cids:
        c.ctr("tasks", "kill", "-s", "SIGKILL", cid, namespace=ns)
    for cid in cids:
        deadline = time.monotonic() + 20
        while c.task_status(cid, namespace=ns) not in ("STOPPED", None) and time.monotonic() < deadline:
            time.sleep(0.05)
        c.ctr("tasks", "delete", cid, namespace=ns)
        c.ctr("containers", "delete", cid, namespace=ns)
    del cids[:]


def t_pods(binary, proto_dir, work, spore, guest, shim_dir, npods=20):
    """20 pods from one spore on a node whose cache and snapshots live on
    one XFS: the disk grows by about one spore, not twenty (statvfs of the
    filesystem and du of the cache and snapshot directories)."""
    import spore_tests
    from cri import CriClient
    tm = Timer()
    env = spore_tests.Env(spore, guest, shim_dir)
    fs = None
    try:
        d = env.agent_spore("tg", cmdline="mode=demo work_mib=24 hz=10", mem=64)
        spore_bytes = du_bytes(os.path.join(d, "chunks"))
        env.start_registry()
        ref = env.push(d, "spores/tg")
        fs = Xfs(work)
        cache = os.path.join(fs.mnt, "cache")
        cfg = os.path.join(work, "snap.yaml")
        with open(cfg, "w") as f:
            # The node cache's GC every second, keeping nothing unreferenced:
            # chunks go once no pod's snapshot links them.
            f.write("spore: %s\ncache_dir: %s\ncache_gc: {interval_s: 1, max_mib: 0}\n" % (spore, cache))
        # The pods' private disks (a Linux spore's; the test guest has
        # none) go beside the cache on the same XFS: the shim hands the
        # directory to every VMM (spore resume --disk-dir).
        disks = os.path.join(fs.mnt, "disks")
        os.mkdir(disks)
        with open(env.config, "a") as f:
            f.write("disk_dir: %s\n" % disks)
        s = Snapshotter(binary, fs.mnt, config=cfg, env=dict(os.environ, **env.san_env))
        s.start()
        c = Containerd(cri=True, proxy_plugins={"spore": s.address}, snapshotter="spore", shim_dirs=[shim_dir],
                       insecure_registries=[env.reg.host], extra_env=env.san_env)
        k = None
        cids = []
        try:
            c.start()
            used0 = fs.used()
            k = CriClient(c)
            k.pull_image(ref)
            used1 = fs.used()
            tm.mark("spore of %.1f MiB of chunks pulled through CRI: the XFS grew %.2f MiB" %
                    (spore_bytes / 2**20, (used1 - used0) / 2**20))

            def start(i):
                cid = "pod%02d" % i
                r = c.ctr_run(ref, ["sleep", "600000"], cid=cid, rm=False, runtime=spore_tests.RUNTIME,
                              namespace=CRI_NAMESPACE, extra=("-d", "--runtime-config-path", env.config))
                check(r.rc == 0, "pod %s: %s" % (cid, r.describe()))
                cids.append(cid)
            t0 = time.monotonic()
            threads = [threading.Thread(target=lambda b=b: [start(i) for i in range(b, npods, 4)]) for b in range(4)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(timeout=240)
            check(len(cids) == npods, "%d of %d pods started" % (len(cids), npods))
            running = [x for x in cids if c.task_status(x, namespace=CRI_NAMESPACE) == "RUNNING"]
            check(len(running) == npods, "pods running: %d of %d" % (len(running), npods))
            vmms = [a for a in proc_cmdlines() if len(a) > 1 and a[1] == "resume" and "--disk-dir" in a]
            with_dir = [a for a in vmms if a[a.index("--disk-dir") + 1] == disks]
            check(len(with_dir) == npods, "want %d VMMs given --disk-dir %s by the shim, found %d" %
                  (npods, disks, len(with_dir)))
            used2 = fs.used()
            du = du_bytes(cache, os.path.join(fs.mnt, "root"))
            growth = used2 - used0
            tm.mark("%d pods running (%.1fs): XFS grew %.1f MiB for a %.1f MiB spore (%d copies would be %.0f MiB); "
                    "du of cache + snapshots %.1f MiB" % (npods, time.monotonic() - t0, growth / 2**20,
                                                         spore_bytes / 2**20, npods, npods * spore_bytes / 2**20,
                                                         du / 2**20))
            # One spore's chunks in the cache, hard links in every pod's
            # directory, plus metadata: far from twenty copies.
            check(growth < spore_bytes + 24 * 2**20, "the XFS grew %.1f MiB for %d pods of a %.1f MiB spore" %
                  (growth / 2**20, npods, spore_bytes / 2**20))
            check(du < spore_bytes + 16 * 2**20, "du of cache and snapshots %.1f MiB for a %.1f MiB spore" %
                  (du / 2**20, spore_bytes / 2**20))
            print("RESULT pods=%d spore_mib=%.1f xfs_growth_mib=%.1f du_mib=%.1f copies_mib=%.0f" %
                  (npods, spore_bytes / 2**20, growth / 2**20, du / 2**20, npods * spore_bytes / 2**20), flush=True)
            chunks = lambda: [f for _, _, fs_ in os.walk(os.path.join(cache, "chunks")) for f in fs_]
            check(chunks(), "the node cache lost its chunks while %d pods use them (cache_gc)" % npods)
            delete_pods(c, cids)
            # containerd removes the pods' snapshots in its GC; then no
            # chunk is linked from a snapshot and the cache's GC takes them.
            deadline = time.monotonic() + 30
            while chunks() and time.monotonic() < deadline:
                time.sleep(0.2)
            check(not chunks(), "cache_gc {max_mib: 0} left %d unreferenced chunks in %s" % (len(chunks()), cache))
            check('msg="cache gc" removed=' in s.log(), "no cache gc line in the snapshotter's log")
            tm.mark("pods deleted: the cache's GC removed every chunk no snapshot links (XFS back to %.1f MiB)" %
                    ((fs.used() - used0) / 2**20))
        except BaseException:
            print("---- containerd log (tail) ----\n%s\n---- snapshotter log ----\n%s" % (c.log_tail(), s.log()),
                  flush=True)
            raise
        finally:
            delete_pods(c, cids)
            stopped = stop_node(c, s, k)
        check_stopped(stopped, s, env)
    finally:
        if fs:
            fs.umount()
        env.close()


def t_bench(binary, proto_dir, work, spore, guest, shim_dir, work_mib=1024, runs=3):
    """bench-snapshot-prepare: from the start of the image pull (CRI
    PullImage, kubelet's way) to the pod's output (`ctr run` with the spore
    runtime) for a 1 GiB spore image whose chunks are in the node cache,
    through spore-snapshotter; beside it, in the same run, the same image
    through containerd's overlayfs snapshotter (downloaded and unpacked).
    Each side starts from a containerd that has never seen the image (a
    fresh instance per run); best of runs. Ends with
    RESULT spore_ms=.. overlayfs_ms=.. ratio=.. (overlayfs / spore)."""
    import spore_tests
    from cri import CriClient
    env = spore_tests.Env(spore, guest, shim_dir)
    px = None
    try:
        mem = work_mib + 64
        t0 = time.monotonic()
        d = env.agent_spore("big", cmdline="mode=demo work_mib=%d hz=10" % work_mib, mem=mem)
        size = du_bytes(os.path.join(d, "chunks"))
        env.start_registry()
        # Through a recording proxy: what each pull moves is counted.
        px = env.regh.Proxy(env.reg)
        px.start()
        ref = "%s/spores/big:v1" % px.host
        p = env.run(spore, "push", d, ref, timeout=600)
        check(p.returncode == 0, "spore push: %s" % p.stderr[-2000:])
        layers = {x["digest"] for x in json.loads(env.regh.Client(env.reg.url).get_manifest("spores/big", "v1")[0])[
            "layers"]}
        print("  spore of %.0f MiB of chunks captured and pushed (%.1fs)" % (size / 2**20, time.monotonic() - t0),
              flush=True)
        cache = os.path.join(work, "nodecache")
        cfg = os.path.join(work, "snap.yaml")
        with open(cfg, "w") as f:
            f.write("spore: %s\ncache_dir: %s\n" % (spore, cache))
        # Warm the node cache once (what "cached" means for the spore side).
        p = env.run(spore, "pull", ref, "--out", os.path.join(work, "warm"), timeout=600)
        check(p.returncode == 0, "warming the node cache: %s" % p.stderr[-2000:])
        shutil.rmtree(os.path.join(work, "warm"))

        def side(snapshotter):
            root = os.path.join(work, "side-" + snapshotter)
            os.makedirs(root)
            s = None
            if snapshotter == "spore":
                s = Snapshotter(binary, root, config=cfg)
                s.start()
            c = Containerd(cri=True, proxy_plugins={"spore": s.address} if s else None, snapshotter=snapshotter,
                           shim_dirs=[shim_dir], insecure_registries=[px.host])
            k = None
            try:
                c.start()
                k = CriClient(c)
                n0 = len(px.records())
                t0 = time.monotonic()
                k.pull_image(ref, timeout=600)
                t_pull = time.monotonic() - t0
                recs = px.records()[n0:]
                moved = sum(r.resp_bytes for r in recs)
                got = [r.path.rsplit("/", 1)[1] for r in recs if r.method == "GET" and r.path.rsplit("/", 1)[1] in layers]
                if snapshotter == "spore":
                    # The criterion: only the manifest and the config cross.
                    check(not got, "the pull through spore-snapshotter fetched layers: %s" % got)
                pulled[snapshotter] = moved
                r = c.ctr_run(ref, ["echo", "ready"], runtime=spore_tests.RUNTIME, namespace=CRI_NAMESPACE,
                              extra=("--runtime-config-path", env.config), timeout=600)
                total = time.monotonic() - t0
                check(r.rc == 0 and r.out == "ready\n", "%s: ctr run: %s" % (snapshotter, r.describe()))
                return total * 1000, t_pull * 1000
            finally:
                if k:
                    k.close()
                problems = c.stop()
                if s:
                    s.stop()
                shutil.rmtree(root, ignore_errors=True)
                check(not problems, "teardown had to clean up: %s" % problems)

        best, pulled = {}, {}
        for i in range(runs):
            for name in ("spore", "overlayfs"):
                ms, pull_ms = side(name)
                print("  run %d %-9s pull %8.1f ms  pull+run %8.1f ms" % (i + 1, name, pull_ms, ms), flush=True)
                best[name] = min(best.get(name, ms), ms)
        print("  bytes moved by one pull: spore %d, overlayfs %d" % (pulled["spore"], pulled["overlayfs"]), flush=True)
        print("RESULT spore_ms=%.1f overlayfs_ms=%.1f ratio=%.1f image_mib=%.0f spore_pull_kib=%.1f "
              "overlayfs_pull_mib=%.0f" % (best["spore"], best["overlayfs"], best["overlayfs"] / best["spore"],
                                           size / 2**20, pulled["spore"] / 1024, pulled["overlayfs"] / 2**20),
              flush=True)
    finally:
        if px:
            px.stop()
        env.close()


def t_crash(binary, proto_dir, work, spore, guest, shim_dir, rounds=6):
    """kill -9 of the snapshotter while containerd drives it: during an
    image's unpack (Prepare, applying, Commit) and during a spore's chunk
    fetch; after each restart containerd works again (the same import and
    run succeed), no snapshot is left that containerd does not know (after
    its GC), and every chunk in the node cache is verified."""
    import random
    import spore_tests
    from cri import CriClient
    tm = Timer()
    env = spore_tests.Env(spore, guest, shim_dir)
    try:
        d = env.agent_spore("tg", cmdline="mode=demo work_mib=48 hz=10", mem=128)
        env.start_registry()
        ref = env.push(d, "spores/tg")
        cache = os.path.join(work, "nodecache")
        cfg = os.path.join(work, "snap.yaml")
        with open(cfg, "w") as f:
            f.write("spore: %s\ncache_dir: %s\n" % (spore, cache))
        pb, out = load_api(proto_dir)
        s = Snapshotter(binary, work, config=cfg, env=dict(os.environ, **env.san_env))
        s.start()
        c = Containerd(cri=True, proxy_plugins={"spore": s.address}, snapshotter="spore", shim_dirs=[shim_dir],
                       insecure_registries=[env.reg.host], extra_env=env.san_env)
        k = None
        rng = random.Random(7)
        try:
            c.start()
            # An ordinary image with a 24 MiB layer: unpacking it takes a while.
            blob = os.urandom(24 << 20)
            big = ctrd.layer_tar([("data", "dir", None, 0o755), ("data/blob", "file", blob, 0o644)])
            img = ctrd.busybox_image(ref="sporelet.test/busybox-big:1", extra_layers=[big])
            tar = os.path.join(work, "img.tar")
            img.write_tar(tar)
            back = []
            for i in range(rounds):
                p = c.ctr_popen("images", "import", "--snapshotter", "spore", tar)
                time.sleep(rng.uniform(0.05, 0.6))
                s.kill9()
                p.communicate(timeout=120)
                s.start()
                r, waited = after_restart(lambda: c.ctr("images", "import", "--snapshotter", "spore", tar,
                                                        timeout=120))
                check(r.rc == 0, "round %d: import after the restart: %s" % (i, r.describe()))
                back.append(waited)
                r = c.ctr_run(img.ref, ["sh", "-c", "wc -c </data/blob"], snapshotter="spore")
                check(r.rc == 0 and r.out.strip() == str(len(blob)), "round %d: run after the restart: %s" %
                      (i, r.describe()))
                c.ctr_ok("images", "rm", "--sync", img.ref)
            tm.mark("%d rounds of kill -9 during unpack: import and run work after every restart (containerd "
                    "back within %.1f s at most)" % (rounds, max(back)))

            # A spore's chunk fetch, killed: the VMM's pod start fails, the
            # restarted snapshotter serves the next one.
            k = CriClient(c)
            k.pull_image(ref)
            for i in range(2):
                shutil.rmtree(os.path.join(cache, "chunks"), ignore_errors=True)
                p = c.ctr_popen(*c.ctr_run_args(ref, ["echo", "x"], cid="fetch%d" % i, runtime=spore_tests.RUNTIME,
                                                extra=("--runtime-config-path", env.config)), namespace=CRI_NAMESPACE)
                # Wait for the materialisation (a spore pull child) to start.
                deadline = time.monotonic() + 30
                def pulling():
                    for x in os.listdir("/proc"):
                        a = ctrd._proc_cmdline(x) if x.isdigit() else None
                        if a and len(a) > 2 and a[1] == "pull" and "/spores/tg@sha256:" in a[2]:
                            return True
                    return False
                while time.monotonic() < deadline and not pulling():
                    time.sleep(0.01)
                time.sleep(rng.uniform(0.0, 0.2))
                s.kill9()
                p.communicate(timeout=120)
                c.ctr("containers", "rm", "fetch%d" % i, namespace=CRI_NAMESPACE)
                s.start()
                r, _ = after_restart(lambda: c.ctr_run(ref, ["echo", "after"], runtime=spore_tests.RUNTIME,
                                                       namespace=CRI_NAMESPACE, timeout=120,
                                                       extra=("--runtime-config-path", env.config)))
                check(r.rc == 0 and r.out == "after\n", "spore run after a kill during the fetch: %s" % r.describe())
            tm.mark("kill -9 during chunk fetches: the next pod starts")
            v_env = dict(env.env, SPORE_CACHE_DIR=cache)
            v = subprocess.run([spore, "cache", "verify"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env=v_env, timeout=300)
            check(v.returncode == 0 and " removed 0 bad" in v.stdout, "spore cache verify: %s %s" % (v.stdout, v.stderr))
            tm.mark("node cache: %s" % v.stdout.strip())

            # containerd's GC removes what it does not know; then every
            # snapshot left is one containerd refers to. (CRI names an image
            # three ways: tag, repo digest, image id.)
            names = c.images(namespace=CRI_NAMESPACE)
            c.ctr_ok("images", "rm", "--sync", *names, namespace=CRI_NAMESPACE)
            api = Api(pb, s.address)
            try:
                deadline = time.monotonic() + 30
                while api.list() and time.monotonic() < deadline:
                    time.sleep(0.2)
                left = [(i.name, i.kind) for i in api.list()]
            finally:
                api.close()
            check(not left, "snapshots left after the images were removed (orphans): %s" % left)
            check(not s.owned_dirs(), "directories left: %s" % s.owned_dirs())
            tm.mark("images removed: no snapshot and no directory left")
        except BaseException:
            print("---- containerd log (tail) ----\n%s\n---- snapshotter log ----\n%s" % (c.log_tail(), s.log()),
                  flush=True)
            raise
        finally:
            if k:
                k.close()
            problems = c.stop()
            s.stop()
        check(not problems, "containerd teardown had to clean up: %s" % problems)
    finally:
        env.close()


TESTS = {"busybox": t_busybox, "api": t_api, "kill": t_kill, "peer": t_peer, "spore": t_spore, "pods": t_pods,
         "bench": t_bench, "crash": t_crash}


def main():
    n = 7 if len(sys.argv) > 1 and sys.argv[1] in ("spore", "pods", "bench", "crash") else 4
    if len(sys.argv) != n or sys.argv[1] not in TESTS:
        sys.stderr.write("usage: %s {%s} SNAPSHOTTER_BIN PROTO_DIR [SPORE_BIN TESTGUEST SHIM_DIR (spore)]\n" %
                         (sys.argv[0], "|".join(TESTS)))
        sys.exit(2)
    if sys.argv[1] in ("busybox", "spore", "pods", "bench", "crash"):
        why = ctrd.containerd_missing()
        if why:
            print("SKIP: %s" % why, flush=True)
            sys.exit(ctrd.SKIP)

    def run():
        work = tempfile.mkdtemp(prefix="snap-t-", dir="/tmp")
        try:
            TESTS[sys.argv[1]](*[os.path.abspath(a) for a in sys.argv[2:4]], work,
                               *[os.path.abspath(a) for a in sys.argv[4:]])
        finally:
            subprocess.run(["rm", "-rf", "--one-file-system", work])
    ctrd.main_wrapper(run)


if __name__ == "__main__":
    main()
