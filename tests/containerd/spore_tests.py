#!/usr/bin/env python3
"""containerd-tier tests of containerd-shim-spore-v2 (docs/shim.md): a private
containerd 1.6, a real docker-registry, test-guest spores with the agent
(docs/testguest.md), driven through ctr and through CRI (the kubelet stand-in).

Usage: spore_tests.py <test> SPORE_BIN TESTGUEST_ELF SHIM_DIR   (exit 0 / 1 / 77)
Tests: ctr, cri, lifecycle, pool, bench
"""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "registry"))
import ctrd  # noqa: E402
from ctrd import CRI_NAMESPACE, Containerd, HarnessError, Runtime, Skip  # noqa: E402
from ctrd import Timer, check  # noqa: E402

ctrd.ensure_python_with_grpc()

RUNTIME = "io.containerd.spore.v2"


class Env:
    """The spore binary, test guest and shim; a scratch dir (under parent,
    default /var/tmp); a registry; a shim configuration whose state directory
    is private to the test."""

    def __init__(self, spore, guest, shim_dir, parent="/var/tmp"):
        self.spore, self.guest, self.shim_dir = spore, guest, shim_dir
        if not os.path.exists("/dev/kvm"):
            raise Skip("no /dev/kvm: the shim resumes real VMs")
        import harness as regh
        why = regh.registry_tools_missing()
        if why:
            raise Skip(why)
        self.regh = regh
        self.tmp = tempfile.mkdtemp(prefix="spore-shim-", dir=parent)
        self.state = os.path.join(self.tmp, "st")
        self.config = os.path.join(self.tmp, "shim.yaml")
        with open(self.config, "w") as f:
            f.write("spore: %s\nstate_dir: %s\nready_timeout_ms: 20000\n" % (spore, self.state))
        self.env = dict(os.environ, SPORE_LOG="info", SPORE_STATE_DIR=os.path.join(self.tmp, "spore-state"),
                        SPORE_CACHE_DIR=os.path.join(self.tmp, "cache"), DOCKER_CONFIG=os.path.join(self.tmp, "docker"))
        os.makedirs(self.env["DOCKER_CONFIG"])
        self.reg = None
        # Sanitizer builds: the shim daemon and its VMMs run detached from
        # any terminal, so their reports go to files that fail the test.
        self.san_dir = os.path.join(self.tmp, "san")
        os.makedirs(self.san_dir)
        self.san_env = {"ASAN_OPTIONS": "log_path=%s/asan" % self.san_dir,
                        "UBSAN_OPTIONS": "log_path=%s/ubsan:print_stacktrace=1" % self.san_dir}

    def sanitizer_reports(self):
        out = []
        for e in sorted(os.listdir(self.san_dir)):
            with open(os.path.join(self.san_dir, e), errors="replace") as f:
                out.append("%s:\n%s" % (e, f.read()[-4000:]))
        return out

    def run(self, *argv, timeout=120):
        p = subprocess.run([str(a) for a in argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=self.env,
                           timeout=timeout, text=True, errors="replace")
        return p

    def agent_spore(self, name, cmdline="mode=idle", mem=64):
        """A test-guest spore captured with its agent ready (a vsock device)."""
        d = os.path.join(self.tmp, name)
        p = self.run(self.spore, "run", "--kernel", self.guest, "--mem", mem, "--vsock", os.path.join(self.tmp, name + ".v"),
                     "--cmdline", cmdline, "--capture", d, "--capture-on", "ready")
        check(p.returncode == 0 and os.path.isfile(os.path.join(d, "spore", "manifest.json")),
              "capture of %s failed (%s):\n%s" % (name, p.returncode, p.stderr[-3000:]))
        return d

    def start_registry(self):
        # Its data dir inside the scratch dir: close() removes it either way.
        self.reg = self.regh.Registry(parent_dir=self.tmp).start()
        return self.reg

    def push(self, d, repo, tag="v1"):
        ref = "%s/%s:%s" % (self.reg.host, repo, tag)
        p = self.run(self.spore, "push", d, ref, timeout=300)
        check(p.returncode == 0, "spore push %s failed:\n%s" % (ref, p.stderr[-3000:]))
        return ref

    def leftovers(self):
        """Anything the shims left: VMMs, shims, entries in the state dir, mounts."""
        found = []
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            argv = ctrd._proc_cmdline(pid) or []
            if any(self.state in a for a in argv):
                found.append("process %s %r" % (pid, argv[:4]))
        if os.path.isdir(self.state):
            found += ["state entry %s" % e for e in os.listdir(self.state)]
        with open("/proc/self/mountinfo") as f:
            found += ["mount %s" % ln.split()[4] for ln in f if self.tmp in ln]
        return found

    def close(self):
        if self.reg:
            self.reg.stop()
        shutil.rmtree(self.tmp, ignore_errors=True)


def wait_gone(env, timeout=15):
    deadline = time.monotonic() + timeout
    while True:
        left = env.leftovers()
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.1)


def ctr_spore(c, env, ref, argv, cid=None, extra=(), timeout=60):
    return c.ctr_run(ref, argv, cid=cid, runtime=RUNTIME, extra=("--runtime-config-path", env.config) + tuple(extra),
                     timeout=timeout)


def t_ctr(env):
    """`ctr run --runtime io.containerd.spore.v2 <spore image> id cmd` forks a
    VM from the spore and runs cmd in it: output, exit status, a fresh
    generation per run; a non-spore image gets an error naming it; nothing
    is left behind."""
    tm = Timer()
    d = env.agent_spore("tg")
    tm.mark("captured a test-guest spore with its agent")
    env.start_registry()
    ref = env.push(d, "spores/tg")
    tm.mark("pushed %s" % ref)
    c = Containerd(cri=False, shim_dirs=[env.shim_dir], insecure_registries=[env.reg.host], extra_env=env.san_env)
    try:
        c.start()
        c.pull(ref)
        tm.mark("ctr images pull (unpacked by overlayfs)")
        r = ctr_spore(c, env, ref, ["echo", "hello", "from", "a", "spore"])
        check(r.rc == 0 and r.out == "hello from a spore\n", "ctr run echo: %s" % r.describe())
        tm.mark("echo: rc 0, output ok (%.3fs)" % r.secs)
        r = ctr_spore(c, env, ref, ["exit", "7"])
        check(r.rc == 7, "ctr run exit 7: %s" % r.describe())
        tm.mark("exit 7: rc 7")
        gens = []
        for i in range(2):
            r = ctr_spore(c, env, ref, ["generation"])
            check(r.rc == 0 and re.match(r"^[0-9a-f]{32}\n$", r.out), "generation: %s" % r.describe())
            gens.append(r.out.strip())
        check(gens[0] != gens[1], "two pods forked from one spore share a generation id %s" % gens[0])
        tm.mark("two runs, two generation ids")
        # More than a FIFO holds (64 KiB): ctr learns the task's CloseIO
        # only after Create returns, so a stdin that ends before that would
        # never be closed (a ctr race, runc's shim has it too).
        data = "".join("line %d of stdin\n" % i for i in range(12000))
        r = c.ctr(*c.ctr_run_args(ref, ["cat"], runtime=RUNTIME, extra=("--runtime-config-path", env.config)),
                  input=data, timeout=60)
        check(r.rc == 0 and r.out == data, "cat of %d bytes of stdin (CloseIO at its end): rc %r, %d bytes back" %
              (len(data), r.rc, len(r.out)))
        tm.mark("cat: %d bytes of stdin back, ended by CloseIO" % len(data))
        r = ctr_spore(c, env, ref, ["env"], extra=("--env", "GREETING=from-ctr"))
        check(r.rc == 0 and "GREETING=from-ctr\n" in r.out, "the OCI process env reaches the guest: %s" % r.describe())
        r = ctr_spore(c, env, ref, ["no-such-command"], cid="nosuch")
        check(r.rc not in (0, "timeout") and "no-such-command" in r.err, "unknown command: %s" % r.describe())
        # A failed Start stops the task (127) so `ctr run --rm` can remove it.
        check(c.ctr_ok("containers", "ls", "-q").out.strip() == "", "the container of a failed start was left")
        tm.mark("the OCI env reaches the guest; an unknown command is refused by name")

        busy = ctrd.busybox_image()
        c.import_image(busy)
        r = ctr_spore(c, env, busy.ref, ["sh", "-c", "true"])
        check(r.rc != 0 and "is not a spore" in r.err, "a non-spore image must be refused clearly: %s" % r.describe())
        tm.mark("busybox under the spore runtime: refused (%s)" % r.err.strip().splitlines()[-1][:120])
        check(c.ctr_ok("containers", "ls", "-q").out.strip() == "", "containers left")
        left = wait_gone(env)
        check(not left, "left behind: %s" % left)
        check(not c.wait_no_shims(10), "shims left")
        tm.mark("nothing left: no VMM, shim, socket or mount")
    except BaseException:
        print("---- containerd log (tail) ----\n%s" % c.log_tail(), flush=True)
        raise
    finally:
        problems = c.stop()
        check(not problems, "teardown had to clean up: %s" % problems)


def t_cri(env):
    """Through CRI: a pod with runtime handler `spore`; containers from a
    spore image run in the pod's one VM; ExecSync; exit codes and logs; the
    pod's spore named by annotation; stop and remove leave nothing."""
    from cri import CriClient
    tm = Timer()
    d = env.agent_spore("tg")
    env.start_registry()
    ref = env.push(d, "spores/tg")
    tm.mark("spore captured and pushed: %s" % ref)
    c = Containerd(runtimes=[Runtime.spore(config_path=env.config)], shim_dirs=[env.shim_dir],
                   insecure_registries=[env.reg.host],
                   extra_env=dict(env.san_env, SPORE_CACHE_DIR=env.env["SPORE_CACHE_DIR"],
                                  SPORE_STATE_DIR=env.env["SPORE_STATE_DIR"], DOCKER_CONFIG=env.env["DOCKER_CONFIG"]))
    k = None
    try:
        c.start()
        c.ensure_pause_image()
        k = CriClient(c)
        k.pull_image(ref)
        tm.mark("CRI up, spore image pulled")
        pod = k.run_pod("spore-pod", runtime_handler="spore")
        tm.mark("RunPodSandbox (handler spore)")
        ctr1, st, log = k.run_container(pod, ref, args=["echo", "hello", "cri"], name="echo")
        check(st.exit_code == 0 and log == "hello cri\n", "echo: exit %d, log %r" % (st.exit_code, log))
        tm.mark("container echo: exit 0, CRI log ok")
        ctr2, st, log = k.run_container(pod, ref, args=["exit", "5"], name="five")
        check(st.exit_code == 5, "exit 5: got %d" % st.exit_code)
        tm.mark("container five: exit 5")
        vmms = [p for p in env.leftovers() if p.startswith("process") and " 'resume'" in p]
        check(len(vmms) == 1, "a pod is one VM: %s" % vmms)
        check_vmm_jailed(int(vmms[0].split()[1]), 0, "the pod's VMM")
        sleeper = k.create_container(pod, ref, args=["sleep", "60000"], name="sleeper")
        k.start_container(sleeper)
        rc, out, err = k.exec_sync(sleeper, ["echo", "exec", "ok"])
        check(rc == 0 and out == b"exec ok\n", "ExecSync: rc %d out %r err %r" % (rc, out, err))
        rc, out, err = k.exec_sync(sleeper, ["hostname"])
        check(rc == 0 and out == b"spore-pod\n", "the pod's name is its VM's hostname: %r" % out)
        tm.mark("ExecSync beside a running container; hostname spore-pod")
        k.stop_container(sleeper, grace=0)
        st = k.container_status(sleeper)
        check(st.exit_code == 128 + signal.SIGKILL or st.exit_code == 128 + signal.SIGTERM,
              "stopped sleeper exit code %d" % st.exit_code)
        tm.mark("StopContainer: exit %d" % st.exit_code)
        k.stop_pod(pod)
        k.remove_pod(pod)
        tm.mark("pod stopped and removed")
        check(not c.wait_no_shims(10), "shims left")
        left = wait_gone(env)
        check(not left, "left behind: %s" % left)

        # The pod's spore by annotation: a local directory; the pause
        # container resumes the VM, a busybox-free container runs in it.
        pod = k.run_pod("annotated", runtime_handler="spore", annotations={"sporelet.ai/spore": d})
        ctr3, st, log = k.run_container(pod, ref, args=["echo", "annotated"], name="a")
        check(st.exit_code == 0 and log == "annotated\n", "annotated pod: exit %d log %r" % (st.exit_code, log))
        tm.mark("pod with sporelet.ai/spore annotation")
        k.stop_pod(pod)
        k.remove_pod(pod)

        # ... or an image reference, pulled into the node cache by `spore pull`;
        # a busybox container then runs in that pod's VM.
        busy = ctrd.busybox_image()
        c.import_image(busy, namespace=CRI_NAMESPACE)
        pod = k.run_pod("by-ref", runtime_handler="spore", annotations={"sporelet.ai/spore": ref})
        ctr4, st, log = k.run_container(pod, busy.ref, args=["echo", "by", "reference"], name="r")
        check(st.exit_code == 0 and log == "by reference\n", "pod spore by reference: exit %d log %r" %
              (st.exit_code, log))
        tm.mark("pod with sporelet.ai/spore=%s (pulled by the shim)" % ref)
        k.stop_pod(pod)
        k.remove_pod(pod)

        # A non-spore image in a pod without the annotation: refused, naming it.
        pod = k.run_pod("plain", runtime_handler="spore")
        ctr5 = k.create_container(pod, busy.ref, args=["true"], name="plain")
        try:
            k.start_container(ctr5)
            raise HarnessError("a busybox container started under the spore runtime")
        except ctrd.HarnessError as e:
            check("is not a spore" in str(e) and busy.ref in str(e), "error must name the image: %s" % e)
        tm.mark("busybox without a pod spore: refused, naming %s" % busy.ref)
        problems = k.cleanup()
        check(not problems, "CRI cleanup: %s" % problems)
        check(not c.wait_no_shims(10), "shims left")
        left = wait_gone(env)
        check(not left, "left behind: %s" % left)
        tm.mark("nothing left")
        k.close()
        k = None
    except BaseException:
        print("---- containerd log (tail) ----\n%s" % c.log_tail(), flush=True)
        if k is not None:
            k.cleanup()
        raise
    finally:
        problems = c.stop()
        check(not problems, "teardown had to clean up: %s" % problems)


def t_lifecycle(env):
    """Events in order; pause and resume; a VMM killed under a running task is
    an exit with a non-zero status; containerd restarting while a pod runs
    reconnects through the bundle's address file."""
    tm = Timer()
    d = env.agent_spore("tg")
    env.start_registry()
    ref = env.push(d, "spores/tg")
    c = Containerd(cri=False, shim_dirs=[env.shim_dir], insecure_registries=[env.reg.host], extra_env=env.san_env)
    ev = None
    try:
        c.start()
        c.pull(ref)
        # `ctr events` prints "<date> <time> <zone> <zone name> <namespace>
        # <topic> <json>"; it subscribes once its first line would come, so
        # give it a moment before the run.
        ev = c.ctr_popen("events", namespace=None)
        time.sleep(0.5)
        r = ctr_spore(c, env, ref, ["echo", "evt"], cid="evt")
        check(r.rc == 0 and r.out == "evt\n", "echo: %s" % r.describe())
        time.sleep(1)
        os.killpg(ev.pid, signal.SIGKILL)
        out = ev.communicate(timeout=10)[0]
        topics = [f for ln in out.splitlines() if '"evt"' in ln for f in ln.split() if f.startswith("/tasks/")]
        want = ["/tasks/create", "/tasks/start", "/tasks/exit", "/tasks/delete"]
        check([t for t in topics if t in want] == want, "events of one run: %s" % topics)
        tm.mark("events: %s" % " ".join(topics))

        p = c.ctr_popen(*c.ctr_run_args(ref, ["sleep", "600000"], cid="long", runtime=RUNTIME,
                                        extra=("--runtime-config-path", env.config)))
        deadline = time.monotonic() + 30
        while c.task_status("long") != "RUNNING":
            check(time.monotonic() < deadline and p.poll() is None, "long did not start")
            time.sleep(0.05)
        r = c.ctr("tasks", "exec", "--exec-id", "e1", "long", "echo", "exec", "beside")
        check(r.rc == 0 and r.out == "exec beside\n", "ctr tasks exec: %s" % r.describe())
        r = c.ctr("tasks", "exec", "--exec-id", "e2", "long", "exit", "3")
        check(r.rc == 3, "ctr tasks exec exit 3: %s" % r.describe())
        tm.mark("exec beside the running task: output and exit status")
        r = c.ctr("tasks", "metrics", "long")
        vals = {f[0]: f[1] for f in (ln.split() for ln in r.out.splitlines()) if len(f) == 2 and f[1].isdigit()}
        # The VMM's own cgroup (the container's cgroupsPath), not the host's:
        # its few threads, its memory, seconds of CPU at most.
        check(r.rc == 0 and 1 <= int(vals.get("pids.current", 0)) < 64 and int(vals.get("memory.usage", 0)) > 0
              and int(vals.get("cpu.usage_usec", 1 << 62)) < 120 * 10**6, "metrics: %s" % r.describe())
        tm.mark("metrics of the VMM's cgroup: pids %s, memory %s, cpu %s us" %
                (vals["pids.current"], vals["memory.usage"], vals["cpu.usage_usec"]))
        ev = c.ctr_popen("events", namespace=None)
        time.sleep(0.5)
        check(c.ctr("tasks", "pause", "long").rc == 0, "pause")
        check(c.task_status("long") == "PAUSED", "status after pause: %s" % c.task_status("long"))
        check(c.ctr("tasks", "resume", "long").rc == 0, "resume")
        check(c.task_status("long") == "RUNNING", "status after resume: %s" % c.task_status("long"))
        time.sleep(0.5)
        os.killpg(ev.pid, signal.SIGKILL)
        out = ev.communicate(timeout=10)[0]
        ev = None
        topics = [f for ln in out.splitlines() if '"long"' in ln for f in ln.split() if f.startswith("/tasks/")]
        check(topics == ["/tasks/paused", "/tasks/resumed"], "pause/resume events: %s" % topics)
        tm.mark("pause / resume, with their events")

        # Checkpoint captures the running pod into a spore; containerd stores
        # it as a checkpoint image, and a task created from that checkpoint
        # resumes the captured VM (a new generation of it).
        cp = "sporelet.test/checkpoint/long:1"
        r = c.ctr("containers", "checkpoint", "--task", "--image", "long", cp, timeout=120)
        check(r.rc == 0, "ctr containers checkpoint --task: %s" % r.describe())
        check(c.task_status("long") == "RUNNING", "after the checkpoint: %s" % c.task_status("long"))
        gen_long = c.ctr("tasks", "exec", "--exec-id", "g0", "long", "generation").out.strip()
        r = c.ctr("containers", "restore", "--live", "fromcp", cp, timeout=60)
        check(r.rc == 0, "ctr containers restore --live: %s" % r.describe())
        check(c.task_status("fromcp") == "RUNNING", "restored task: %s" % c.task_status("fromcp"))
        r = c.ctr("tasks", "exec", "--exec-id", "g1", "fromcp", "generation")
        check(r.rc == 0 and re.match(r"^[0-9a-f]{32}\n$", r.out) and r.out.strip() != gen_long,
              "the restored pod must be a new generation of the captured one (%s): %s" % (gen_long, r.describe()))
        tm.mark("checkpoint %s; restored into a new task, generation %s (was %s)" %
                (cp, r.out.strip()[:8], gen_long[:8]))
        c.ctr_ok("tasks", "kill", "-s", "SIGKILL", "fromcp")
        deadline = time.monotonic() + 30
        while c.task_status("fromcp") != "STOPPED":
            check(time.monotonic() < deadline, "restored task did not stop: %s" % c.task_status("fromcp"))
            time.sleep(0.05)
        c.ctr("tasks", "delete", "fromcp")
        c.ctr_ok("containers", "delete", "fromcp")

        # containerd goes away and comes back: the pod keeps running and is
        # found again through <bundle>/address.
        c.restart()
        check(c.task_status("long") == "RUNNING", "after a containerd restart: %s" % c.task_status("long"))
        tm.mark("containerd restarted; the task is still RUNNING")

        vmm = [int(x.split()[1]) for x in env.leftovers() if x.startswith("process") and "'resume'" in x]
        check(len(vmm) == 1, "one VMM expected: %s" % env.leftovers())
        os.kill(vmm[0], signal.SIGKILL)
        deadline = time.monotonic() + 30
        while c.task_status("long") != "STOPPED":
            check(time.monotonic() < deadline, "the task of a killed VMM did not stop: %s" % c.task_status("long"))
            time.sleep(0.05)
        r = c.ctr("tasks", "delete", "long")
        check(r.rc == 0 and "exit code 255" in r.err,
              "a task whose VMM died must end with 255, `ctr tasks delete` says %s" % r.describe())
        tm.mark("VMM killed: the task stopped with status 255")
        c.ctr_ok("containers", "delete", "long")
        if p.poll() is None:  # its client lost containerd at the restart
            os.killpg(p.pid, signal.SIGKILL)
        p.wait(timeout=10)
        check(not c.wait_no_shims(10), "shims left")
        left = wait_gone(env)
        check(not left, "left behind: %s" % left)
        tm.mark("nothing left")
    except BaseException:
        print("---- containerd log (tail) ----\n%s" % c.log_tail(), flush=True)
        raise
    finally:
        if ev is not None and ev.poll() is None:
            os.killpg(ev.pid, signal.SIGKILL)
        problems = c.stop()
        check(not problems, "teardown had to clean up: %s" % problems)


def pool_config(env):
    """A shim configuration like env.config with a warm pool of the test
    spores' shape, whose VMMs run their guests as uid 65534."""
    path = os.path.join(env.tmp, "shim-pool.yaml")
    with open(path, "w") as f:
        f.write("spore: %s\nstate_dir: %s\nready_timeout_ms: 20000\npool: {size: 2, memory_mib: 64, vcpus: 1}\n"
                "jail_uid: \"65534:65534\"\n" % (env.spore, env.state))
    return path


def check_vmm_jailed(pid, uid, what):
    """A VMM the shim started runs jailed: every thread under the seccomp
    filter with no_new_privs and no capabilities, as uid; its root is the
    jail's read-only tmpfs with a few directories bound."""
    for tid in os.listdir("/proc/%d/task" % pid):
        st = {}
        with open("/proc/%d/task/%s/status" % (pid, tid)) as f:
            for ln in f:
                k, _, v = ln.partition(":")
                st[k] = v.split()
        if st["Name"][0].startswith("kvm-"):
            continue
        check(st["Seccomp"] == ["2"] and st["NoNewPrivs"] == ["1"] and int(st["CapEff"][0], 16) == 0 and
              int(st["CapBnd"][0], 16) == 0 and st["Uid"] == [str(uid)] * 4,
              "%s: VMM %d thread %s is not jailed as uid %d: %s" % (what, pid, tid, uid, st))
    with open("/proc/%d/mountinfo" % pid) as f:
        mounts = [ln.split(" - ") for ln in f]
    root = [m for m in mounts if m[0].split()[4] == "/"]
    check(len(root) == 1 and root[0][1].split()[0] == "tmpfs" and "ro" in root[0][0].split()[5].split(",")
          and len(mounts) <= 4, "%s: VMM %d's mounts are not the jail's: %s" % (what, pid, mounts))


def ppid_of(pid):
    with open("/proc/%d/stat" % pid) as f:
        return int(f.read().rsplit(")", 1)[1].split()[1])


def stop_pool(env, timeout=30):
    """SIGTERM to the pool named by <state>/pool.pid; waits until it is gone.
    Returns the pool's log (and removes it: it is the operator's file)."""
    pid_path = os.path.join(env.state, "pool.pid")
    log_path = os.path.join(env.state, "pool.log")
    if os.path.exists(pid_path):
        pid = int(open(pid_path).read())
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while os.path.exists("/proc/%d" % pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        check(not os.path.exists("/proc/%d" % pid), "the pool %d did not stop on SIGTERM" % pid)
        check(not os.path.exists(pid_path), "the pool left its pid file")
    log = ""
    if os.path.exists(log_path):
        with open(log_path, errors="replace") as f:
            log = f.read()
        os.unlink(log_path)
    return log


def t_pool(env):
    """With `pool: {size: 2, ...}` the shim starts the node's warm pool
    (`spore pool --vsock`, pid in <state>/pool.pid) and takes each pod's VM
    from it: the VMM is a pool worker (its parent is the pool, it sits in the
    pod's cgroup); output, exit status and generations are as with a spawned
    VMM; a spore of another shape falls back to spawning `spore resume` (the
    shim logs why) and still works; stopping the pool leaves nothing."""
    tm = Timer()
    d = env.agent_spore("tg")
    big = env.agent_spore("tg128", mem=128)
    env.start_registry()
    ref = env.push(d, "spores/tg")
    ref128 = env.push(big, "spores/tg128")
    tm.mark("captured and pushed %s and %s (128 MiB)" % (ref, ref128))
    cfg = pool_config(env)
    c = Containerd(cri=False, shim_dirs=[env.shim_dir], insecure_registries=[env.reg.host], extra_env=env.san_env)
    pool_log = ""
    try:
        c.start()
        c.pull(ref)
        c.pull(ref128)
        cfgx = ("--runtime-config-path", cfg)
        r = c.ctr_run(ref, ["echo", "pooled", "hello"], runtime=RUNTIME, extra=cfgx)
        check(r.rc == 0 and r.out == "pooled hello\n", "first run (starts the pool): %s" % r.describe())
        pid_path = os.path.join(env.state, "pool.pid")
        check(os.path.exists(pid_path), "no pool pid file %s after a run with pool.size 2" % pid_path)
        pool_pid = int(open(pid_path).read())
        argv = ctrd._proc_cmdline(str(pool_pid)) or []
        check(argv[1:2] == ["pool"] and "--vsock" in argv and "64" in argv, "pool argv %r" % argv)
        tm.mark("first run started the pool (pid %d): %s" % (pool_pid, " ".join(argv[1:])))
        for i in range(4):
            r = c.ctr_run(ref, ["echo", "run", str(i)], runtime=RUNTIME, extra=cfgx)
            check(r.rc == 0 and r.out == "run %d\n" % i, "pooled run %d: %s" % (i, r.describe()))
        r = c.ctr_run(ref, ["exit", "7"], runtime=RUNTIME, extra=cfgx)
        check(r.rc == 7, "pooled exit 7: %s" % r.describe())
        gens = []
        for i in range(2):
            r = c.ctr_run(ref, ["generation"], runtime=RUNTIME, extra=cfgx)
            check(r.rc == 0 and re.match(r"^[0-9a-f]{32}\n$", r.out), "generation: %s" % r.describe())
            gens.append(r.out.strip())
        check(gens[0] != gens[1], "two pooled pods share a generation id %s" % gens[0])
        r = c.ctr_run(ref, ["env"], runtime=RUNTIME, extra=cfgx + ("--env", "GREETING=pooled"))
        check(r.rc == 0 and "GREETING=pooled\n" in r.out, "env in a pooled pod: %s" % r.describe())
        tm.mark("5 echo runs, exit 7, two distinct generations, env")
        check(ctrd._proc_cmdline(str(pool_pid)) is not None, "the pool ended")

        # A long task: its VMM is a worker of the pool, in the pod's cgroup.
        p = c.ctr_popen(*c.ctr_run_args(ref, ["sleep", "600000"], cid="long", runtime=RUNTIME, extra=cfgx))
        deadline = time.monotonic() + 30
        while c.task_status("long") != "RUNNING":
            check(time.monotonic() < deadline and p.poll() is None, "long did not start")
            time.sleep(0.05)
        row = [ln.split() for ln in c.ctr_ok("tasks", "ls").out.splitlines() if ln.split()[:1] == ["long"]]
        vmm = int(row[0][1])
        check(ppid_of(vmm) == pool_pid, "the VMM %d of a pooled pod has parent %d, not the pool %d" %
              (vmm, ppid_of(vmm), pool_pid))
        with open("/proc/%d/cgroup" % vmm) as f:
            cg = f.read()
        check("%s/long" % c.cgroup_parent in cg, "the pooled VMM is not in the pod's cgroup:\n%s" % cg)
        check_vmm_jailed(vmm, 65534, "pooled VMM (jail_uid 65534:65534)")
        # (Its exit status, not its output: `ctr tasks exec` may open its
        # stdout FIFO after a fast process ended, losing the output with
        # any runtime that relays through FIFOs.)
        r = c.ctr("tasks", "exec", "--exec-id", "e1", "long", "exit", "3")
        check(r.rc == 3, "exec in a pooled pod: %s" % r.describe())
        c.ctr_ok("tasks", "kill", "-s", "SIGKILL", "long")
        p.wait(timeout=30)
        tm.mark("a running pod's VMM %d: parent the pool, in cgroup %s/long; exec works" % (vmm, c.cgroup_parent))

        # Another shape: the pool refuses, the shim spawns `spore resume`.
        r = c.ctr_run(ref128, ["echo", "big"], runtime=RUNTIME, extra=cfgx)
        check(r.rc == 0 and r.out == "big\n", "128 MiB spore with a 64 MiB pool: %s" % r.describe())
        log = c.log()
        check(log.count("pooled=1") >= 9, "the shim did not log pooled VMs:\n%s" % ctrd.tail(log, 4000))
        check("the warm pool did not serve the VM" in log and "spore needs 1 vcpus and 128 MiB" in log and
              "pooled=0" in log, "the fallback was not logged with its reason:\n%s" % ctrd.tail(log, 4000))
        tm.mark("128 MiB spore: refused by the pool (logged), spawned, ran")
        check(c.ctr_ok("containers", "ls", "-q").out.strip() == "", "containers left")
        check(not c.wait_no_shims(10), "shims left")
        pool_log = stop_pool(env)
        check("pool ready" in pool_log, "pool log:\n%s" % pool_log[-3000:])
        left = wait_gone(env)
        check(not left, "left behind: %s" % left)
        tm.mark("pool stopped by its pid file; nothing left")
    except BaseException:
        print("---- containerd log (tail) ----\n%s" % c.log_tail(), flush=True)
        pool_log = pool_log or stop_pool(env)
        print("---- pool log (tail) ----\n%s" % pool_log[-4000:], flush=True)
        raise
    finally:
        problems = c.stop()
        check(not problems, "teardown had to clean up: %s" % problems)


def p50(xs):
    xs = sorted(xs)
    return xs[len(xs) // 2] if len(xs) % 2 else (xs[len(xs) // 2 - 1] + xs[len(xs) // 2]) / 2


def t_bench(env, n=10):
    """Pod start through containerd: `ctr run --rm <spore> echo` with the
    shim spawning `spore resume`, with the warm pool, and runc's busybox
    `ctr run --rm echo`, n of each through the same harness (p50, ms)."""
    d = env.agent_spore("tg")
    env.start_registry()
    ref = env.push(d, "spores/tg")
    cfg = pool_config(env)
    c = Containerd(cri=False, shim_dirs=[env.shim_dir], insecure_registries=[env.reg.host], extra_env=env.san_env)
    try:
        c.start()
        c.pull(ref)
        busy = ctrd.busybox_image()
        c.import_image(busy)

        def series(what, run):
            run()  # warm: page cache, the pool's start
            t = []
            for _ in range(n):
                r = run()
                check(r.rc == 0 and r.out == "hi\n", "%s: %s" % (what, r.describe()))
                t.append(r.secs * 1000)
            print("  %-6s p50 %7.1f ms  min %7.1f  max %7.1f" % (what, p50(t), min(t), max(t)), flush=True)
            return p50(t)

        runc = series("runc", lambda: c.ctr_run(busy.ref, ["echo", "hi"]))
        shim = series("shim", lambda: c.ctr_run(ref, ["echo", "hi"], runtime=RUNTIME,
                                                extra=("--runtime-config-path", env.config)))
        pool = series("pool", lambda: c.ctr_run(ref, ["echo", "hi"], runtime=RUNTIME,
                                                extra=("--runtime-config-path", cfg)))
        check(c.log().count("pooled=1") >= n, "the pool did not serve the pooled series")
        stop_pool(env)
        check(not c.wait_no_shims(10), "shims left")
        left = wait_gone(env)
        check(not left, "left behind: %s" % left)
        # ratio = runc / spore: above 1 means the VM pod starts faster than the container.
        print("RESULT spore_p50_ms=%.1f spore_pool_p50_ms=%.1f runc_p50_ms=%.1f ratio=%.2f ratio_pool=%.2f" %
              (shim, pool, runc, runc / shim, runc / pool), flush=True)
    except BaseException:
        print("---- containerd log (tail) ----\n%s" % c.log_tail(), flush=True)
        stop_pool(env)
        raise
    finally:
        problems = c.stop()
        check(not problems, "teardown had to clean up: %s" % problems)


def t_parallel(env, n=20):
    """n pods started at once (`ctr run -d`, one thread each) from the same
    spore: all run side by side, one VMM each; each answers an exec with its
    own generation id; killed and deleted, nothing is left."""
    import threading
    tm = Timer()
    d = env.agent_spore("tg")
    env.start_registry()
    ref = env.push(d, "spores/tg")
    c = Containerd(cri=False, shim_dirs=[env.shim_dir], insecure_registries=[env.reg.host], extra_env=env.san_env)
    cids = ["par%02d" % i for i in range(n)]
    started = {}
    try:
        c.start()
        c.pull(ref)
        tm.mark("spore pulled")
        go = threading.Event()

        def pod(cid):
            go.wait()
            started[cid] = c.ctr_run(ref, ["sleep", "600000"], cid=cid, rm=False, runtime=RUNTIME, timeout=180,
                                     extra=("-d", "--null-io", "--runtime-config-path", env.config))
        threads = [threading.Thread(target=pod, args=(cid,)) for cid in cids]
        for t in threads:
            t.start()
        t0 = time.monotonic()
        go.set()
        for t in threads:
            t.join(timeout=200)
        secs = time.monotonic() - t0
        bad = {cid: r.describe() for cid, r in started.items() if r.rc != 0}
        check(len(started) == n and not bad, "%d of %d pods started; failures: %s" % (len(started), n, bad))
        running = [cid for cid in cids if c.task_status(cid) == "RUNNING"]
        vmms = [x for x in env.leftovers() if x.startswith("process") and "'resume'" in x]
        check(len(running) == n and len(vmms) == n, "%d tasks running, %d VMMs, want %d each" %
              (len(running), len(vmms), n))
        tm.mark("%d pods started at once in %.1fs: %d running, one VMM each" % (n, secs, n))
        gens = set()
        for cid in cids:
            r = c.ctr("tasks", "exec", "--exec-id", "g", cid, "generation", timeout=60)
            check(r.rc == 0 and re.match(r"^[0-9a-f]{32}\n$", r.out), "exec in %s: %s" % (cid, r.describe()))
            gens.add(r.out.strip())
        check(len(gens) == n, "%d pods, %d distinct generation ids" % (n, len(gens)))
        tm.mark("an exec in each: %d distinct generation ids" % len(gens))
    except BaseException:
        print("---- containerd log (tail) ----\n%s" % c.log_tail(), flush=True)
        raise
    finally:
        for cid in started:
            c.ctr("tasks", "kill", "-s", "SIGKILL", cid)
        for cid in started:
            deadline = time.monotonic() + 30
            while c.task_status(cid) not in ("STOPPED", None) and time.monotonic() < deadline:
                time.sleep(0.05)
            c.ctr("tasks", "delete", cid)
            c.ctr("containers", "delete", cid)
        left = c.wait_no_shims(15)
        gone = wait_gone(env)
        problems = c.stop()
    check(not left, "shims left: %s" % left)
    check(not gone, "left behind: %s" % gone)
    check(not problems, "teardown had to clean up: %s" % problems)
    tm.mark("all killed and deleted: nothing left")


TESTS = {"ctr": t_ctr, "cri": t_cri, "lifecycle": t_lifecycle, "pool": t_pool, "bench": t_bench,
         "parallel": t_parallel}


def main():
    if len(sys.argv) != 5 or sys.argv[1] not in TESTS:
        sys.stderr.write("usage: %s {%s} SPORE_BIN TESTGUEST_ELF SHIM_DIR\n" % (sys.argv[0], "|".join(TESTS)))
        sys.exit(2)
    why = ctrd.containerd_missing()
    if why:
        print("SKIP: %s" % why, flush=True)
        sys.exit(ctrd.SKIP)

    def run():
        env = Env(*[os.path.abspath(a) for a in sys.argv[2:5]])
        try:
            TESTS[sys.argv[1]](env)
            reports = env.sanitizer_reports()
            check(not reports, "sanitizer reports from the shim or its VMMs:\n%s" % "\n".join(reports))
        finally:
            env.close()
    ctrd.main_wrapper(run)


if __name__ == "__main__":
    main()
