#!/usr/bin/env python3
"""containerd-tier tests: a private containerd 1.6 with runc, driven through
ctr and through CRI (the kubelet stand-in). They prove the harness before
the spore shim and snapshotter exist; see README.md.

Usage: containerd_tests.py <test name>     (exit 0 pass, 1 fail, 77 skip)
Tests: harness, runc-ctr, runc-cri, registry-pull
"""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ctrd  # noqa: E402
from ctrd import CRI_NAMESPACE, Containerd, HarnessError, Runtime, Skip  # noqa: E402
from ctrd import Timer, check  # noqa: E402

ctrd.ensure_python_with_grpc()


def expect_rc(r, rc, what):
    if r.rc != rc:
        raise HarnessError("%s: expected exit status %r, got:\n%s" % (what, rc, r.describe()))


def finish(c, tm):
    """Stops the instance and fails on anything its cleanup had to force, then
    checks that nothing of it is left (processes, workdir, cgroups)."""
    workdir, address, cg = c.workdir, c.address, c.cgroup_parent
    problems = c.stop()
    tm.mark("containerd stopped")
    check(not problems, "teardown had to clean up: %s" % "; ".join(problems))
    check(not os.path.exists(workdir), "workdir %s still exists" % workdir)
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            argv = ctrd._proc_cmdline(pid) or []
            check(not any(address in a for a in argv),
                  "process %s still refers to %s: %r" % (pid, address, argv))
    for root in ctrd._cgroup_roots():
        check(not os.path.exists(os.path.join(root, cg.lstrip("/"))), "cgroup %s left in %s" % (cg, root))


# ---- harness: config, pause image, proxy plugin and spore runtime tables ------

FAKE_SHIM = """#!/bin/sh
# A stand-in for containerd-shim-spore-v2 that records how containerd runs it
# (argv, cwd, TTRPC_ADDRESS, stdin) and refuses to start.
d=%s
n=$(date +%%s%%N)
{ printf '%%s\\n' "$@" > $d/$n.argv; pwd > $d/$n.cwd; printf '%%s' "$TTRPC_ADDRESS" > $d/$n.ttrpc; }
timeout 5 cat > $d/$n.stdin
echo "fake shim refuses" >&2
exit 1
"""


def pb_fields(data):
    """{field number: [bytes]} of a protobuf message's length-delimited fields."""
    out, i = {}, 0
    while i < len(data):
        key, i = _varint(data, i)
        if key & 7 != 2:
            raise HarnessError("unexpected wire type %d in %r" % (key & 7, data))
        n, i = _varint(data, i)
        out.setdefault(key >> 3, []).append(data[i:i + n])
        i += n
    return out


def _varint(data, i):
    v = shift = 0
    while True:
        b = data[i]
        i += 1
        v |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return v, i


def t_harness():
    """The config the harness writes is what containerd loads: a spore
    runtime handler and a proxy snapshotter are visible through CRI's
    verbose Status; containerd finds containerd-shim-spore-v2 in shim_dirs and
    runs it as documented (argv, cwd, TTRPC_ADDRESS, runtime options on
    stdin); the pause image exits 0 promptly on SIGTERM."""
    import json
    import shutil
    import tempfile
    import tomllib
    tm = Timer()
    shim_dir = tempfile.mkdtemp(prefix="fakeshim-")
    rec = os.path.join(shim_dir, "rec")
    os.mkdir(rec)
    shim = os.path.join(shim_dir, "containerd-shim-spore-v2")
    with open(shim, "w") as f:
        f.write(FAKE_SHIM % rec)
    os.chmod(shim, 0o755)
    spore = Runtime.spore(shim_path=shim, config_path="/etc/sporelet/shim.toml")
    c = Containerd(runtimes=[spore], proxy_plugins={"spore": "/run/sporelet-test/none.sock"}, shim_dirs=[shim_dir])
    try:
        c.start()
        tm.mark("containerd up (%s)" % c.workdir)
        with open(c.config_path, "rb") as f:
            cfg = tomllib.load(f)
        check(cfg == c.config(), "config.toml does not parse back to what the harness meant")
        check(len(c.ttrpc_address) <= ctrd.SOCK_MAX, "socket path too long")
        cri_cfg = cfg["plugins"][ctrd.CRI_PLUGIN]
        check(cri_cfg["containerd"]["disable_snapshot_annotations"] is False, "snapshot annotations disabled")

        r = c.ctr_ok("plugins", "ls", namespace=None)
        check(any(l.split()[:2] == ["io.containerd.snapshotter.v1", "spore"] and l.split()[-1] == "ok"
                  for l in r.out.splitlines()), "proxy snapshotter 'spore' not listed ok:\n%s" % r.out)
        check(c.env()["PATH"].split(":")[0] == shim_dir, "shim dir not first on containerd's PATH")

        from cri import CriClient
        k = CriClient(c)
        tm.mark("CRI ready")
        st = k.status(verbose=True)
        info = json.loads(st.info["config"])
        rts = info["containerd"]["runtimes"]
        check("spore" in rts and "runc" in rts, "CRI runtimes: %s" % sorted(rts))
        s = rts["spore"]
        check(s["runtimeType"] == "io.containerd.spore.v2", "spore runtimeType %r" % s.get("runtimeType"))
        check(s["runtimePath"] == spore.path, "spore runtimePath %r" % s.get("runtimePath"))
        check(s["PodAnnotations"] == ["sporelet.ai/*"], "spore pod annotations %r" % s.get("PodAnnotations"))
        check(s["options"] == {"ConfigPath": "/etc/sporelet/shim.toml"}, "spore options %r" % s.get("options"))
        check(rts["runc"]["options"]["Root"] == c.runc_root, "runc root %r" % rts["runc"]["options"])
        check(info["sandboxImage"] == c.sandbox_image, "sandbox image %r" % info.get("sandboxImage"))
        conds = k.conditions()
        print("  CRI conditions: %s" % conds)
        check(conds.get("RuntimeReady", (False,))[0], "RuntimeReady is false: %s" % (conds,))

        # A pod under the spore handler: containerd runs our fake shim.
        c.ensure_pause_image()
        try:
            k.run_pod("spore", runtime_handler="spore")
            raise HarnessError("RunPodSandbox succeeded with a shim that refuses to start")
        except ctrd.HarnessError as e:
            check("fake shim refuses" in str(e), "RunPodSandbox failed otherwise: %s" % e)
        starts = sorted(x[:-5] for x in os.listdir(rec) if x.endswith(".argv"))
        check(len(starts) >= 1, "the fake shim was not run")
        with open(os.path.join(rec, starts[0] + ".argv")) as f:
            argv = f.read().split("\n")[:-1]
        check(argv[:6] == ["-namespace", CRI_NAMESPACE, "-address", c.address, "-publish-binary",
                           ctrd.CONTAINERD_BIN] and argv[6] == "-id" and argv[-1] == "start",
              "shim argv %r" % argv)
        with open(os.path.join(rec, starts[0] + ".cwd")) as f:
            cwd = f.read().strip()
        check(cwd == os.path.join(c.bundle_root(), CRI_NAMESPACE, argv[7]), "shim cwd %r" % cwd)
        with open(os.path.join(rec, starts[0] + ".ttrpc")) as f:
            check(f.read() == c.ttrpc_address, "TTRPC_ADDRESS not %s" % c.ttrpc_address)
        with open(os.path.join(rec, starts[0] + ".stdin"), "rb") as f:
            anyf = pb_fields(f.read())
        check(anyf.get(1) == [b"runtimeoptions.v1.Options"], "stdin Any type_url %r" % anyf.get(1))
        opts = pb_fields(anyf[2][0])
        check(opts.get(2) == [b"/etc/sporelet/shim.toml"], "runtime options ConfigPath %r" % opts)
        check(k.list_pods() == [], "a failed RunPodSandbox left pods: %s" % k.list_pods())
        tm.mark("spore handler ran containerd-shim-spore-v2 from shim_dirs: %s" % " ".join(argv[:2] + argv[-1:]))
        k.close()

        # The pause image: `ctr run` in the foreground exits with the task's
        # status, which must be 0 within 2 s of a SIGTERM.
        c.ensure_pause_image(namespace="")
        p = c.ctr_popen(*c.ctr_run_args(c.sandbox_image, cid="pause1"))
        try:
            deadline = time.monotonic() + 20
            while c.task_status("pause1") != "RUNNING":
                check(time.monotonic() < deadline and p.poll() is None,
                      "pause task did not start (rc %r)" % p.poll())
                time.sleep(0.05)
            expect_rc(c.ctr("tasks", "kill", "-s", "SIGTERM", "pause1"), 0, "SIGTERM to pause")
            t0 = time.monotonic()
            try:
                rc = p.wait(timeout=5)
            except Exception:
                rc = "timeout"
            took = time.monotonic() - t0
            check(rc == 0 and took < 2, "pause after SIGTERM: rc %r after %.2fs" % (rc, took))
        finally:
            if p.poll() is None:
                os.killpg(p.pid, 9)
                p.wait(timeout=10)
        tm.mark("pause exited 0 %.2fs after SIGTERM" % took)
        check(not c.wait_no_shims(10), "shims left after the pause run")
    except BaseException:
        print("---- containerd log (tail) ----\n%s" % c.log_tail(), flush=True)
        c.stop()
        raise
    finally:
        shutil.rmtree(shim_dir, ignore_errors=True)
    finish(c, tm)


def t_runc_ctr():
    """busybox imported with ctr, `ctr run --rm` under runc: output and exit
    statuses (normal and by signal) are propagated; nothing is left."""
    tm = Timer()
    c = Containerd(cri=False)
    try:
        c.start()
        tm.mark("containerd up (%s)" % c.workdir)
        img = ctrd.busybox_image()
        tm.mark("busybox image built (%d bytes, layer %s)" % (img.layers[0]["size"], img.layers[0]["digest"][:19]))
        c.import_image(img)
        check(img.ref in c.images(), "imported image %s not listed: %s" % (img.ref, c.images()))
        tm.mark("imported")

        r = c.ctr_run(img.ref, ["sh", "-c", "echo hello from busybox; echo to-stderr >&2; id -u"])
        expect_rc(r, 0, "ctr run echo")
        check(r.out == "hello from busybox\n0\n", "stdout %r" % r.out)
        check("to-stderr" in r.err, "stderr %r" % r.err)
        tm.mark("ctr run --rm echo: rc 0, output ok (%.3fs)" % r.secs)

        r = c.ctr_run(img.ref, ["sh", "-c", "exit 3"])
        expect_rc(r, 3, "ctr run exit 3")
        tm.mark("ctr run --rm sh -c 'exit 3': rc 3 (%.3fs)" % r.secs)

        # Death by signal (sent from outside: a container's pid 1 ignores
        # signals it has no handler for when they come from inside).
        p = c.ctr_popen(*c.ctr_run_args(img.ref, ["sleep", "60"], cid="sleeper"))
        try:
            deadline = time.monotonic() + 20
            while c.task_status("sleeper") != "RUNNING":
                check(time.monotonic() < deadline and p.poll() is None, "sleeper did not start (rc %r)" % p.poll())
                time.sleep(0.05)
            expect_rc(c.ctr("tasks", "kill", "-s", "SIGKILL", "sleeper"), 0, "SIGKILL to sleeper")
            try:
                rc = p.wait(timeout=10)
            except Exception:
                rc = "timeout"
            check(rc == 137, "ctr run of a SIGKILLed task returned %r, not 137" % rc)
        finally:
            if p.poll() is None:
                os.killpg(p.pid, 9)
                p.wait(timeout=10)
        tm.mark("ctr run --rm sleep 60, SIGKILLed: rc 137")

        r = c.ctr_run(img.ref, ["/bin/does-not-exist"])
        check(r.rc not in (0, "timeout"), "running a missing binary succeeded: %s" % r.describe())
        tm.mark("missing binary: rc %r" % r.rc)

        check(c.ctr_ok("containers", "ls", "-q").out.strip() == "", "containers left after --rm")
        check(c.ctr_ok("tasks", "ls", "-q").out.strip() == "", "tasks left after --rm")
        left = c.wait_no_shims(10)
        check(not left, "shims still running after the runs: %s" % left)
    except BaseException:
        print("---- containerd log (tail) ----\n%s" % c.log_tail(), flush=True)
        c.stop()
        raise
    finish(c, tm)


def cri_instance(tm, **kw):
    c = Containerd(**kw)
    c.start()
    tm.mark("containerd up (%s)" % c.workdir)
    c.ensure_pause_image()
    tm.mark("pause image built and imported")
    return c


def t_runc_cri():
    """Through CRI (kubelet stand-in): a host-network pod under the runc
    handler, `echo hello` (exit 0, "hello" in the CRI log), a second container
    exiting 5; stop/remove; no shim of this instance left."""
    from cri import CriClient
    tm = Timer()
    c = None
    k = None
    try:
        c = cri_instance(tm)
        img = ctrd.busybox_image()
        c.import_image(img, namespace=CRI_NAMESPACE)
        tm.mark("busybox imported into %s" % CRI_NAMESPACE)
        k = CriClient(c)
        v = k.version()
        check(v.runtime_name == "containerd" and v.runtime_api_version == "v1",
              "CRI version %s/%s" % (v.runtime_name, v.runtime_api_version))
        conds = k.conditions()
        print("  CRI conditions: %s" % conds)
        check(conds["RuntimeReady"][0], "RuntimeReady false: %s" % (conds,))
        check(k.image_status(img.ref) is not None, "CRI does not see %s" % img.ref)
        check(k.image_status("sporelet.test/absent:0") is None, "CRI sees an absent image")
        tm.mark("CRI ready: %s %s, image visible" % (v.runtime_name, v.runtime_version))

        pod = k.run_pod("hello", runtime_handler="runc", annotations={"sporelet.ai/test": "runc-cri"})
        tm.mark("RunPodSandbox %s" % pod.id[:12])
        ps = k.pod_status(pod).status
        check(ps.state == k.api.SANDBOX_READY, "pod state %s" % ps.state)
        check(ps.runtime_handler == "runc", "pod runtime handler %r" % ps.runtime_handler)
        check(ps.annotations.get("sporelet.ai/test") == "runc-cri", "pod annotations %r" % dict(ps.annotations))
        check(len(c.shim_pids()) == 1, "expected one shim for the pod, found %s" % c.shim_pids())

        ctr1, st, log = k.run_container(pod, img.ref, args=["echo", "hello"], name="echo")
        check(st.exit_code == 0, "echo exited %d (%s %s)" % (st.exit_code, st.reason, st.message))
        check(log == "hello\n", "echo's CRI log is %r" % log)
        check(k.read_log(ctr1)[0][1] == "stdout", "echo's line is not on stdout: %r" % k.read_log(ctr1))
        tm.mark("container echo: exit 0, log 'hello' (%s)" % ctr1.log_path)

        ctr2, st, log = k.run_container(pod, img.ref, command=["sh", "-c"], args=["echo bye >&2; exit 5"],
                                        name="five", env={"GREETING": "x"})
        check(st.exit_code == 5, "second container exited %d, not 5" % st.exit_code)
        check(k.log_text(ctr2, "stderr") == "bye\n", "second container's log %r" % k.read_log(ctr2))
        tm.mark("container five: exit 5, stderr 'bye'")

        check({x.id for x in k.list_containers(pod)} == {ctr1.id, ctr2.id}, "ListContainers mismatch")
        check(len(c.shim_pids()) == 1, "containers did not share the pod's shim: %s" % c.shim_pids())

        k.stop_pod(pod)
        tm.mark("StopPodSandbox")
        check(k.pod_status(pod).status.state == k.api.SANDBOX_NOTREADY, "pod still ready after stop")
        k.remove_pod(pod)
        tm.mark("RemovePodSandbox")
        check(k.list_pods() == [], "pods left: %s" % k.list_pods())
        check(k.list_containers() == [], "containers left: %s" % k.list_containers())
        left = c.wait_no_shims(10)
        check(not left, "shim processes of this instance still running: %s" % left)
        tm.mark("no shim left")
        problems = k.cleanup()
        check(not problems, "CRI cleanup: %s" % problems)
        k.close()
        k = None
    except BaseException:
        if c is not None:
            print("---- containerd log (tail) ----\n%s" % c.log_tail(), flush=True)
            if k is not None:
                k.cleanup()
            c.stop()
        raise
    finish(c, tm)


def t_registry_pull():
    """busybox pushed to a real docker-registry on loopback, pulled with
    `ctr images pull --plain-http` and with CRI PullImage (hosts.toml), then
    run from each."""
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "registry"))
    import harness as regh
    why = regh.registry_tools_missing()
    if why:
        raise Skip(why)
    from cri import CriClient
    tm = Timer()
    reg = regh.Registry().start()
    c = k = None
    try:
        tm.mark("docker-registry on %s" % reg.host)
        img = ctrd.busybox_image(ref="%s/test/busybox:pull" % reg.host)
        ref = img.push(reg.host, "test/busybox", "pull")
        check(ref == img.ref, "pushed ref %s" % ref)
        tm.mark("pushed %s" % ref)
        c = cri_instance(tm, insecure_registries=[reg.host])
        c.pull(ref)
        tm.mark("ctr images pull --plain-http")
        r = c.ctr_run(ref, ["sh", "-c", "echo pulled; exit 4"])
        expect_rc(r, 4, "ctr run of the pulled image")
        check(r.out == "pulled\n", "stdout %r" % r.out)
        tm.mark("ran the ctr-pulled image")
        k = CriClient(c)
        image_ref = k.pull_image(ref)
        check(image_ref.startswith("sha256:"), "PullImage answered %r" % image_ref)
        check(k.image_status(ref) is not None, "CRI does not see the pulled image")
        tm.mark("CRI PullImage: %s" % image_ref[:19])
        pod = k.run_pod("pulled", runtime_handler="runc")
        _ctr, st, log = k.run_container(pod, ref, args=["sh", "-c", "echo cri-pulled"])
        check(st.exit_code == 0 and log == "cri-pulled\n", "exit %d, log %r" % (st.exit_code, log))
        tm.mark("ran the CRI-pulled image in a pod")
        problems = k.cleanup()
        check(not problems, "CRI cleanup: %s" % problems)
        check(not c.wait_no_shims(10), "shims left")
        k.close()
        k = None
    except BaseException:
        if c is not None:
            print("---- containerd log (tail) ----\n%s" % c.log_tail(), flush=True)
            if k is not None:
                k.cleanup()
            c.stop()
        reg.stop()
        raise
    reg.stop()
    finish(c, tm)


TESTS = {"harness": t_harness, "runc-ctr": t_runc_ctr, "runc-cri": t_runc_cri, "registry-pull": t_registry_pull}


def main():
    if len(sys.argv) != 2 or sys.argv[1] not in TESTS:
        sys.stderr.write("usage: %s {%s}\n" % (sys.argv[0], "|".join(TESTS)))
        sys.exit(2)
    why = ctrd.containerd_missing()
    if why:
        print("SKIP: %s" % why, flush=True)
        sys.exit(ctrd.SKIP)
    ctrd.main_wrapper(TESTS[sys.argv[1]])


if __name__ == "__main__":
    main()
