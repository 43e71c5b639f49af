#!/usr/bin/env python3
"""make demo, part 2: a whole local node, spore pods (VMs) against runc containers.

Usage: python3 scripts/demo_node.py BUILD_DIR [--pods N] [--workdir PARENT] [--skip-status N]

Run by scripts/demo after its first part. Everything is started here and
stopped here, on success, on failure and on Ctrl-C (SIGINT, SIGTERM, SIGHUP):
a docker-registry on loopback, spore-snapshotter, a private containerd 1.6
(tests/containerd/ctrd.py) whose CRI uses the snapshotter, and the pods.
Exit status: 0 (done, or skipped with the reason when the machine lacks
something), 1 (a step failed; the message says which), 130 (interrupted).
"""

import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CTRD_DIR = os.path.join(ROOT, "tests", "containerd")
sys.path.insert(0, CTRD_DIR)
sys.path.insert(0, os.path.join(ROOT, "tests", "registry"))
import ctrd  # noqa: E402
from ctrd import CRI_NAMESPACE, HarnessError, Skip  # noqa: E402

# The CRI client needs grpcio: a python3 without it (a pyenv one first on
# PATH) is swapped for Debian's.
ctrd.ensure_python_with_grpc()

RUNC_SHIM = "containerd-shim-runc-v2"
SPORE_SHIM = "containerd-shim-spore-v2"
MIB = 2 ** 20


class Interrupted(Exception):
    pass


def step(text):
    print("\n== %s" % text, flush=True)


def say(text):
    print("  " + text, flush=True)


def ms(secs):
    return secs * 1000.0


def mib(nbytes):
    return nbytes / MIB


# ---- processes and their memory ---------------------------------------------------

def proc_table():
    """{pid: (ppid, argv)} of every process now."""
    res = {}
    for e in os.listdir("/proc"):
        if not e.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % e) as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        res[int(e)] = (ppid, ctrd._proc_cmdline(e) or [])
    return res


def descendants(table, pid):
    kids = {}
    for p, (pp, _argv) in table.items():
        kids.setdefault(pp, []).append(p)
    out, todo = [], list(kids.get(pid, []))
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(kids.get(p, []))
    return out


def pss_bytes(pid):
    """Proportional set size: each shared page divided among the processes
    mapping it (so the spore's page-cache pages, shared by every VM, count
    once in a sum over all of them)."""
    try:
        with open("/proc/%d/smaps_rollup" % pid) as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def arg_after(argv, flag):
    return argv[argv.index(flag) + 1] if flag in argv and argv.index(flag) + 1 < len(argv) else None


def shim_pids(c, namespace, shim_name, table=None):
    """The shim daemons containerd started for this namespace (their argv
    is the `start` action's: -namespace NS -address SOCK ...)."""
    table = table or proc_table()
    return [p for p, (_pp, argv) in table.items()
            if argv and os.path.basename(argv[0]) == shim_name and arg_after(argv, "-address") == c.address
            and arg_after(argv, "-namespace") == namespace]


def side_memory(c, namespace, shim_name):
    """PSS of one side's shims and of everything under them (the VMMs, or
    the containers' processes), with their counts."""
    table = proc_table()
    shims = shim_pids(c, namespace, shim_name, table)
    work = sorted({d for s in shims for d in descendants(table, s)})
    return {"shims": len(shims), "shim_pss": sum(pss_bytes(p) for p in shims),
            "procs": len(work), "proc_pss": sum(pss_bytes(p) for p in work),
            "proc_names": sorted({os.path.basename(table[p][1][0]) for p in work if table[p][1]})}


def du_bytes(*paths):
    """du -s -B1 -c: hard-linked inodes counted once across all the paths."""
    p = subprocess.run(["du", "-s", "-B1", "-c"] + list(paths), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       text=True, timeout=120)
    if p.returncode != 0:
        raise HarnessError("du %s: %s" % (" ".join(paths), p.stderr.strip()))
    return int(p.stdout.strip().splitlines()[-1].split()[0])


# ---- the node ---------------------------------------------------------------------

class Node:
    """What the demo starts, so that one teardown stops all of it."""

    def __init__(self, build, parent, npods):
        self.build = os.path.abspath(build)
        self.spore = os.path.join(self.build, "vmm", "spore")
        self.guest = os.path.join(self.build, "guest", "testguest.elf")
        self.shim_dir = os.path.join(self.build, "shim")
        self.snap_bin = os.path.join(self.build, "snapshotter", "spore-snapshotter")
        self.parent = parent
        self.npods = npods
        self.work = None
        self.env = None      # spore_tests.Env: scratch dir, registry, shim config
        self.snap = None     # snapshotter_tests.Snapshotter
        self.c = None        # ctrd.Containerd
        self.k = None        # cri.CriClient
        self.child = None    # a ctr run in flight (killed on interrupt)
        self.spore_ids = []
        self.runc_ids = []
        self.result = {}

    # -- what the machine lacks --
    def missing(self):
        if os.geteuid() != 0:
            return "not root: containerd, runc, mounts and cgroups need root"
        if not os.path.exists("/dev/kvm"):
            return "no /dev/kvm: the pods are KVM microVMs"
        why = ctrd.containerd_missing()
        if why:
            return why
        import harness as regh   # tests/registry/harness.py
        why = regh.registry_tools_missing()
        if why:
            return why
        for path, what in ((self.spore, "spore"), (self.guest, "the test guest"),
                           (os.path.join(self.shim_dir, SPORE_SHIM), "the containerd shim"),
                           (self.snap_bin, "spore-snapshotter")):
            if not os.path.exists(path):
                return "%s is not built (%s missing; make release builds it)" % (what, path)
        try:
            import google.protobuf  # noqa: F401
            import grpc  # noqa: F401
        except ImportError as e:
            return "%s: the CRI client needs python3-grpcio and python3-protobuf (scripts/setup installs them)" % e
        return None

    # -- ctr, timed and interruptible --
    def ctr_timed(self, args, namespace, timeout=120):
        """Runs `ctr ...` (own session, as the harness does); returns
        (seconds, rc, stdout, stderr). On Ctrl-C it is killed before the
        interrupt goes on, so no ctr is left creating a container while the
        teardown deletes them."""
        argv = [ctrd.CTR_BIN, "--address", self.c.address, "--namespace", namespace] + [str(a) for a in args]
        t0 = time.monotonic()
        self.child = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      env=self.c.env(), start_new_session=True, text=True, errors="replace")
        try:
            out, err = self.child.communicate(timeout=timeout)
            rc = self.child.returncode
        except subprocess.TimeoutExpired:
            os.killpg(self.child.pid, signal.SIGKILL)
            out, err = self.child.communicate()
            rc = "timeout"
        except BaseException:
            try:
                os.killpg(self.child.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.child.wait()
            raise
        finally:
            self.child = None
        return time.monotonic() - t0, rc, out, err

    def start_pods(self, kind, ref, ids, extra, namespace):
        """`ctr run -d --null-io` one after the other, each timed; prints the
        times ten to a line."""
        times = []
        for i, cid in enumerate(ids):
            args = self.c.ctr_run_args(ref, ["sleep", "600000"], cid=cid, rm=False,
                                       extra=("-d", "--null-io") + tuple(extra), **kind)
            secs, rc, out, err = self.ctr_timed(args, namespace)
            if rc != 0:
                raise HarnessError("ctr run of %s failed (rc %r): %s" % (cid, rc, " ".join((err or out).split())[-1500:]))
            times.append(ms(secs))
            if i % 10 == 9 or i == len(ids) - 1:
                say("%-8s %s ms" % ("%d-%d:" % (i // 10 * 10 + 1, i + 1),
                                    " ".join("%.0f" % t for t in times[i // 10 * 10:])))
        running = [x for x in ids if self.c.task_status(x, namespace=namespace) == "RUNNING"]
        if len(running) != len(ids):
            raise HarnessError("%d of %d running after the starts: %s" % (
                len(running), len(ids), sorted(set(ids) - set(running))))
        return times

    def stop_pods(self, ids, namespace):
        """SIGKILL, wait until stopped, delete task and container (as a
        node does when the pods go); returns the seconds it took."""
        t0 = time.monotonic()
        for cid in ids:
            self.c.ctr("tasks", "kill", "-s", "SIGKILL", cid, namespace=namespace, timeout=20)
        for cid in ids:
            deadline = time.monotonic() + 20
            while self.c.task_status(cid, namespace=namespace) not in ("STOPPED", None) and \
                    time.monotonic() < deadline:
                time.sleep(0.05)
            self.c.ctr("tasks", "delete", cid, namespace=namespace, timeout=20)
            self.c.ctr("containers", "delete", cid, namespace=namespace, timeout=20)
        left = self.c.ctr("containers", "ls", "-q", namespace=namespace, timeout=20).out.split()
        left = [x for x in left if x in ids]
        if left:
            raise HarnessError("containers left after deleting them: %s" % left)
        # A shim exits once its last task is deleted, on its own: wait for
        # that, so the teardown never has to kill one.
        shim = {CRI_NAMESPACE: SPORE_SHIM}.get(namespace, RUNC_SHIM)
        deadline = time.monotonic() + 15
        while shim_pids(self.c, namespace, shim) and time.monotonic() < deadline:
            time.sleep(0.1)
        left = shim_pids(self.c, namespace, shim)
        if left:
            raise HarnessError("%s %s still running 15 s after their pods were deleted" % (shim, left))
        return time.monotonic() - t0

    # -- the demo --
    def run(self):
        import snapshotter_tests
        import spore_tests
        from cri import CriClient
        n = self.npods
        # A short name: the shim's state dir inside it must stay under 80
        # bytes (unix socket paths, docs/shim.md).
        self.work = tempfile.mkdtemp(prefix="node.", dir=self.parent)

        step("node 1/7 capture the demo spore (test guest with its agent, 64 MiB, mode=idle) and push it to "
             "a docker-registry on loopback")
        self.env = spore_tests.Env(self.spore, self.guest, self.shim_dir, parent=self.work)
        t0 = time.monotonic()
        d = self.env.agent_spore("demo")
        t_capture = time.monotonic() - t0
        spore_bytes = du_bytes(os.path.join(d, "chunks"))
        self.env.start_registry()
        t0 = time.monotonic()
        ref = self.env.push(d, "sporelet/demo")
        t_push = time.monotonic() - t0
        import harness as regh
        manifest = regh.Client(self.env.reg.url).get_manifest("sporelet/demo", "v1")[0]
        layers = [x["digest"] for x in json.loads(manifest)["layers"]]
        say("captured in %.0f ms: %.1f MiB of chunks; spore push %s in %.0f ms (%d layers)" % (
            ms(t_capture), mib(spore_bytes), ref, ms(t_push), len(layers)))

        step("node 2/7 start spore-snapshotter and a private containerd (proxy_plugins.spore, runtime "
             "io.containerd.spore.v2, CRI with snapshotter \"spore\")")
        cache = os.path.join(self.work, "cache")
        snap_work = os.path.join(self.work, "snap")
        os.makedirs(snap_work)
        cfg = os.path.join(self.work, "snapshotter.yaml")
        with open(cfg, "w") as f:
            f.write("spore: %s\ncache_dir: %s\npull_timeout_s: 120\n" % (self.spore, cache))
        self.snap = snapshotter_tests.Snapshotter(self.snap_bin, snap_work, config=cfg)
        self.snap.start()
        say("spore-snapshotter: socket %s, root %s, node cache %s" % (self.snap.address, self.snap.root, cache))
        self.c = ctrd.Containerd(workdir=os.path.join(self.work, "ctrd"),
                                 runtimes=[ctrd.Runtime.spore(config_path=self.env.config)],
                                 proxy_plugins={"spore": self.snap.address}, snapshotter="spore",
                                 shim_dirs=[self.shim_dir], insecure_registries=[self.env.reg.host])
        t0 = time.monotonic()
        self.c.start()
        self.k = CriClient(self.c)
        say("containerd %s up in %.0f ms: socket %s, config %s" % (
            self.k.version().runtime_version, ms(time.monotonic() - t0), self.c.address, self.c.config_path))

        step("node 3/7 CRI PullImage %s (kubelet's path: the snapshotter answers remote snapshots)" % ref)
        t0 = time.monotonic()
        self.k.pull_image(ref)
        t_pull = time.monotonic() - t0
        content = self.c.ctr_ok("content", "ls", "-q", namespace=CRI_NAMESPACE).out.split()
        fetched = [x for x in layers if x in content]
        snaps = self.c.ctr_ok("snapshots", "--snapshotter", "spore", "ls", namespace=CRI_NAMESPACE).out
        if fetched:
            raise HarnessError("CRI PullImage downloaded %d of the spore's %d layers: the pull was not lazy" % (
                len(fetched), len(layers)))
        say("pulled in %.0f ms: %d layers committed as remote snapshots, none of the %d layer blobs "
            "downloaded (containerd's content store: %d blobs, the manifest and config)" % (
                ms(t_pull), snaps.count("Committed"), len(layers), len(content)))

        step("node 4/7 %d pods from the spore: ctr run -d --null-io --runtime io.containerd.spore.v2 "
             "--snapshotter spore ... sleep (namespace k8s.io, one after the other, start time each)" % n)
        self.spore_ids = ["spore-%02d" % (i + 1) for i in range(n)]
        spore_kind = {"runtime": spore_tests.RUNTIME, "snapshotter": "spore"}
        spore_times = self.start_pods(spore_kind, ref, self.spore_ids,
                                      ("--runtime-config-path", self.env.config), CRI_NAMESPACE)
        gens = set()
        for cid in self.spore_ids:
            for _attempt in range(2):  # a FIFO opened late may lose a fast exec's output: ask again
                # (FIFOs in containerd's workdir, not the shared /run/containerd/fifo.)
                r = self.c.ctr("tasks", "exec", "--fifo-dir", os.path.join(self.c.workdir, "fifo"), "--exec-id",
                               "gen", cid, "generation", namespace=CRI_NAMESPACE, timeout=60)
                if r.rc == 0 and re.match(r"^[0-9a-f]{32}\n$", r.out):
                    gens.add(r.out.strip())
                    break
            else:
                raise HarnessError("exec of `generation` in %s: %s" % (cid, r.describe()))
        if len(gens) != n:
            raise HarnessError("%d pods, only %d distinct generation ids" % (n, len(gens)))
        mem_spore = side_memory(self.c, CRI_NAMESPACE, SPORE_SHIM)
        disk_spore = du_bytes(self.snap.root, cache)
        daemons = {"containerd": pss_bytes(self.c.proc.pid), "spore-snapshotter": pss_bytes(self.snap.proc.pid)}
        say("all %d running, one VMM each (%s); `ctr tasks exec ... generation` in each: %d distinct "
            "generation ids" % (n, ", ".join(mem_spore["proc_names"]), len(gens)))

        step("node 5/7 one pod through CRI (the kubelet's calls): RunPodSandbox (runtime handler spore), "
             "CreateContainer, StartContainer")
        self.c.ensure_pause_image()
        t0 = time.monotonic()
        pod = self.k.run_pod("demo-cri", runtime_handler="spore")
        t1 = time.monotonic()
        ctr = self.k.create_container(pod, ref, args=["sleep", "600000"], name="sleeper")
        t2 = time.monotonic()
        self.k.start_container(ctr)
        t3 = time.monotonic()
        rc, out, _err = self.k.exec_sync(ctr, ["generation"])
        if rc != 0 or not re.match(rb"^[0-9a-f]{32}\n$", out):
            raise HarnessError("ExecSync `generation` in the CRI pod: rc %d, %r" % (rc, out))
        rc, host, _err = self.k.exec_sync(ctr, ["hostname"])
        cri = {"run_pod": ms(t1 - t0), "create": ms(t2 - t1), "start": ms(t3 - t2), "total": ms(t3 - t0)}
        say("RunPodSandbox %.0f ms, CreateContainer %.0f ms, StartContainer %.0f ms: %.0f ms in all; ExecSync: "
            "generation %s, hostname %s" % (cri["run_pod"], cri["create"], cri["start"], cri["total"],
                                            out.decode().strip()[:12] + "...", host.decode().strip()))
        self.k.stop_pod(pod)
        self.k.remove_pod(pod)
        t_stop_spore = self.stop_pods(self.spore_ids, CRI_NAMESPACE)
        say("CRI pod stopped and removed; the %d ctr pods killed and deleted in %.1f s" % (n, t_stop_spore))

        step("node 6/7 %d busybox containers under runc: ctr run -d --null-io --snapshotter overlayfs ... "
             "sleep (one after the other, start time each)" % n)
        busy = ctrd.busybox_image()
        self.c.import_image(busy, snapshotter="overlayfs")
        self.runc_ids = ["runc-%02d" % (i + 1) for i in range(n)]
        runc_times = self.start_pods({"snapshotter": "overlayfs"}, busy.ref, self.runc_ids, (), self.c.namespace)
        mem_runc = side_memory(self.c, self.c.namespace, RUNC_SHIM)
        overlay_root = os.path.join(self.c.root, "io.containerd.snapshotter.v1.overlayfs")
        disk_runc = du_bytes(overlay_root)
        say("all %d running (%s)" % (n, ", ".join(mem_runc["proc_names"])))
        t_stop_runc = self.stop_pods(self.runc_ids, self.c.namespace)
        say("killed and deleted in %.1f s" % t_stop_runc)

        self.result = {"spore_times": spore_times, "runc_times": runc_times, "mem_spore": mem_spore,
                       "mem_runc": mem_runc, "disk_spore": disk_spore, "disk_runc": disk_runc,
                       "spore_bytes": spore_bytes, "busybox_bytes": len(busy.blobs[busy.layers[0]["digest"]]),
                       "daemons": daemons, "cri": cri, "t_pull": t_pull, "snap_root": self.snap.root,
                       "cache": cache, "overlay_root": overlay_root}

    # -- teardown --
    def teardown(self):
        """Stops everything in reverse order, each stage even if one before
        it failed; returns what it had to force or found left."""
        problems = []

        def stage(what, fn):
            try:
                problems.extend(fn() or [])
            except Exception as e:
                problems.append("%s: %s" % (what, e))
        if self.k is not None:
            stage("CRI cleanup", lambda: self.k.cleanup(timeout=60))
            self.k.close()
        # Tasks and containers of every namespace, containerd, shims, runc
        # state, shim sockets, mounts and cgroups (ctrd.py).
        if self.c is not None:
            stage("containerd teardown", self.c.stop)
        if self.snap is not None:
            stage("spore-snapshotter", lambda: [] if self.snap.stop() == 0 else
                  ["spore-snapshotter did not exit 0 on SIGTERM"])
        if self.env is not None:
            # VMMs, shims, state entries or mounts of the shim's state dir
            # (the shims end their VMs as they go: a short wait).
            import spore_tests
            stage("shim state", lambda: spore_tests.wait_gone(self.env, 15))
            stage("registry", self.env.close)   # the registry, the spore, the shim's state dir
        if self.work:
            stage("scratch dir", lambda: subprocess.run(["rm", "-rf", "--one-file-system", self.work],
                                                        timeout=120) and None)
            stage("leftovers", lambda: leftovers(self.work, self.c))
        return problems


def leftovers(work, c):
    found = []
    for pid, (_pp, argv) in proc_table().items():
        if any(work in a for a in argv):
            found.append("process %d %s" % (pid, " ".join(argv[:3])))
    found += ["mount %s" % m for m in ctrd._mountpoints() if m.startswith(work)]
    if os.path.exists(work):
        found.append("directory %s" % work)
    if c is not None:
        for croot in ctrd._cgroup_roots():
            d = os.path.join(croot, c.cgroup_parent.lstrip("/"))
            if os.path.isdir(d):
                found.append("cgroup %s" % d)
    return found


# ---- the table -----------------------------------------------------------------------

def summary(r, n):
    st, rt = r["spore_times"], r["runc_times"]
    step("node 7/7 summary: %d spore pods (KVM microVMs) against %d runc containers (processes), one node" % (n, n))
    print("  start time per pod: wall time of `ctr run -d --null-io ... sleep`, started one after the other")
    print("    %-9s %14s    %16s" % ("#", "spore pod ms", "runc container ms"))
    for i in range(n):
        print("    %-9d %14.1f%-3s %16.1f" % (i + 1, st[i], " *" if i == 0 else "", rt[i]))
    print("    %-9s %14.1f    %16.1f" % ("p50", statistics.median(st), statistics.median(rt)))
    print("    %-9s %14.1f    %16.1f" % ("max", max(st), max(rt)))
    if n > 2:
        print("    %-9s %14.1f    %16.1f" % ("p50 2-%d" % n, statistics.median(st[1:]), statistics.median(rt[1:])))
    print("    * the first spore pod also fetched the spore's chunks from the registry into the node cache;")
    print("      every spore pod's snapshot is materialised by hard-linking them from the cache")
    c = r["cri"]
    print("    one more pod through CRI: RunPodSandbox %.0f + CreateContainer %.0f + StartContainer %.0f = %.0f ms"
          % (c["run_pod"], c["create"], c["start"], c["total"]))
    ms_, mr = r["mem_spore"], r["mem_runc"]
    print()
    print("  node memory with all %d running: sum of Pss from /proc/PID/smaps_rollup (MiB)" % n)
    print("    %-44s %10s %10s" % ("", "spore", "runc"))
    print("    %-44s %10.1f %10.1f" % ("pods' processes (%d VMMs / %d busybox sleep)" % (ms_["procs"], mr["procs"]),
                                      mib(ms_["proc_pss"]), mib(mr["proc_pss"])))
    print("    %-44s %10.1f %10.1f" % ("shims (%d spore-v2 / %d runc-v2)" % (ms_["shims"], mr["shims"]),
                                      mib(ms_["shim_pss"]), mib(mr["shim_pss"])))
    print("    %-44s %10.1f %10.1f" % ("total", mib(ms_["proc_pss"] + ms_["shim_pss"]),
                                      mib(mr["proc_pss"] + mr["shim_pss"])))
    print("    %-44s %10.2f %10.2f" % ("per pod", mib(ms_["proc_pss"] + ms_["shim_pss"]) / n,
                                      mib(mr["proc_pss"] + mr["shim_pss"]) / n))
    print("    not in the totals: containerd %.1f MiB (serves both), spore-snapshotter %.1f MiB (spore side)" % (
        mib(r["daemons"]["containerd"]), mib(r["daemons"]["spore-snapshotter"])))
    print()
    print("  node disk with all %d running: du -s -B1 (hard links counted once) (MiB)" % n)
    print("    %-44s %10.1f" % ("spore: snapshotter root + node cache", mib(r["disk_spore"])))
    print("    %-44s %10.1f" % ("runc: overlayfs snapshots", mib(r["disk_runc"])))
    print("    the spore is %.1f MiB of chunks (%d copies would be %.0f MiB); busybox's layer %.1f MiB gzipped" % (
        mib(r["spore_bytes"]), n, n * mib(r["spore_bytes"]), mib(r["busybox_bytes"])))
    print()
    print("  notes")
    for line in (
            "- A spore pod is a whole VM resumed from a snapshot; a runc container is a process on the host's",
            "  kernel. Each VM here is the 64 MiB test guest (a small freestanding kernel, idle): a Linux guest",
            "  would add what its kernel and workload touch after the fork (its pages are shared until written).",
            "- Pss splits a shared page among the processes mapping it: the spore's memory, mapped copy-on-write",
            "  from the node cache by every VMM, counts once over all of them. Kernel memory is in neither",
            "  column: KVM's per-VM state and page tables, runc's namespaces and cgroups.",
            "- Shims: ctr starts one per container on both sides; containerd-shim-runc-v2 is Go, the spore",
            "  shim is C. Under CRI a pod's containers share its shim (and its VM).",
            "- Start times are ctr's wall time (ctr itself, containerd, the shim, then the VM's restore or",
            "  runc's create) on this machine, one pod at a time, the shim spawning `spore resume` per pod",
            "  (its warm pool, docs/shim.md, is off here).",
            "- Disk: the spore side holds the VM's memory image once (cache chunks hard-linked into every",
            "  pod's snapshot), the runc side busybox unpacked once plus an empty upper dir per container.",
            "  containerd's content store is in neither: the lazy CRI pull left only the spore's manifest",
            "  and config in it, busybox's import its gzipped layer."):
        print("  " + line)


def main():
    ap = argparse.ArgumentParser(description="make demo, part 2: a whole local node")
    ap.add_argument("build", help="the build directory (build/release)")
    ap.add_argument("--pods", type=int, default=20, help="spore pods and runc containers each (default 20)")
    ap.add_argument("--workdir", default=None, help="parent of the scratch directory (default $TMPDIR or /tmp)")
    ap.add_argument("--skip-status", type=int, default=0,
                    help="exit status when the machine lacks something (default 0; ctest's demo-node: 77)")
    a = ap.parse_args()
    if a.pods < 1 or a.pods > 100:
        ap.error("--pods must be 1..100")
    node = Node(a.build, a.workdir, a.pods)
    why = node.missing()
    if why:
        print("\n== node: skipped, the machine lacks something: %s" % why, flush=True)
        print("   (the first part ran; the node part needs root, /dev/kvm, containerd, runc, docker-registry,"
              " python3-grpcio: scripts/setup installs the packages)", flush=True)
        return a.skip_status

    def interrupt(signum, _frame):
        raise Interrupted(signal.Signals(signum).name)
    for s in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, interrupt)

    status, failure = 0, None
    t0 = time.monotonic()
    try:
        node.run()
    except (KeyboardInterrupt, Interrupted) as e:
        status, failure = 130, "interrupted (%s)" % (str(e) or "SIGINT")
    except Skip as e:
        status, failure = a.skip_status, "skipped: %s" % e
    except (HarnessError, AssertionError, OSError, subprocess.SubprocessError) as e:
        status, failure = 1, "%s" % (e or type(e).__name__)
        if node.c is not None and node.c.proc is not None:
            sys.stderr.write("---- containerd log (tail) ----\n%s\n" % node.c.log_tail(2500))
        if node.snap is not None:
            sys.stderr.write("---- spore-snapshotter log (tail) ----\n%s\n" % node.snap.log()[-2500:])
    finally:
        # The teardown must finish: further Ctrl-Cs wait for it.
        for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(s, signal.SIG_IGN)
        if failure:
            print("\n== node: %s; stopping everything it started" % (failure if status != 1 else "failed"),
                  flush=True)
        else:
            print("\n== node: stopping the registry, containerd and spore-snapshotter", flush=True)
        t1 = time.monotonic()
        problems = node.teardown()
    if problems:
        print("  the teardown found: %s" % "; ".join(problems), flush=True)
        status = status or 1
    else:
        print("  done in %.1f s: no process, mount, cgroup or file of the node is left" % (time.monotonic() - t1),
              flush=True)
    if status == 0 and node.result:
        summary(node.result, node.npods)
        print("\n  node part: %.0f s" % (time.monotonic() - t0), flush=True)
    if status == 1:
        print("demo: node part failed: %s" % failure, file=sys.stderr, flush=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
