#!/usr/bin/env python3
"""containerd-tier tests of sporelet-node (docs/node-install.md): the config
the installer writes is loaded by a real private containerd 1.6, and the CRI
runtime handler `spore` reaches the installed shim.

Usage: node_tests.py <test> SPORELET_NODE SPORE_DIR SHIM_DIR SNAPSHOTTER_DIR [TESTGUEST_ELF]
       node_tests.py label SPORELET_NODE
Tests:
  config  install into a scratch root whose config.toml is a node's (runc
          only); containerd loads it (config dump: runtime, proxy plugin,
          disable_snapshot_annotations, the node's runc kept); the proxy
          plugin reaches spore-snapshotter; runc pods still run; a pod with
          runtime handler spore starts the installed shim; uninstall gives
          back the config byte for byte. Then the chart's options
          (--cri-snapshotter spore: config dump has the CRI plugin's
          snapshotter = spore; --shim-link-dir, --shim-config-src) and an
          uninstall that leaves the root as it was. Also measures why the
          installer does not use an `imports` drop-in on containerd 1.6.
  label   (label unit) label / unlabel through a loopback stand-in API server.
  cri     (needs /dev/kvm) a pod with handler spore and a spore by
          annotation runs a container in its VM, all from the installed files.
"""

import hashlib
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import time
import tomllib

HERE = os.path.dirname(os.path.abspath(__file__))
CTRD_DIR = os.path.join(HERE, "..", "..", "tests", "containerd")
sys.path.insert(0, CTRD_DIR)
sys.path.insert(0, os.path.join(CTRD_DIR, "..", "registry"))
import ctrd  # noqa: E402
from ctrd import CRI_NAMESPACE, CRI_PLUGIN, Containerd, HarnessError, Skip  # noqa: E402
from ctrd import Timer, check  # noqa: E402

ctrd.ensure_python_with_grpc()

BINARIES = ["spore", "spore-oci", "containerd-shim-spore-v2", "spore-snapshotter"]
INSTALL_DIR = "/bin-sporelet"          # host path inside the scratch root
CONFIG = "/config.toml"                # the harness's containerd reads <workdir>/config.toml


class NodeContainerd(Containerd):
    """A private containerd whose workdir is the scratch node root: its
    config.toml starts as the harness's own (a node's config: runc only,
    disable_snapshot_annotations = true as containerd's default has it) and
    is then edited by `sporelet-node install`."""

    def __init__(self, node, workdir, install_args, **kw):
        super().__init__(workdir=workdir, shim_dirs=[workdir + INSTALL_DIR], **kw)
        self.node = node
        self.install_args = list(install_args)
        self.original = None
        self.install_out = None

    def config(self):
        c = super().config()
        c["plugins"][CRI_PLUGIN]["containerd"]["disable_snapshot_annotations"] = True
        return c

    def write_config(self):
        super().write_config()
        with open(self.config_path, "rb") as f:
            self.original = f.read()
        r = self.sporelet_node("install", *self.install_args)
        check(r.returncode == 0, "sporelet-node install failed (%s):\n%s%s" % (r.returncode, r.stdout, r.stderr))
        check("changed=yes" in r.stdout.splitlines(), "first install must change the config:\n%s" % r.stdout)
        self.install_out = r.stdout
        return self.config_path

    def sporelet_node(self, cmd, *args):
        argv = [self.node, cmd, "--root", self.workdir, "--install-dir", INSTALL_DIR, "--containerd-config", CONFIG]
        return subprocess.run(argv + list(args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=120)


def tree(root):
    """path -> (mode, sha256 or link target) of everything beneath root."""
    out = {}
    for dirpath, dirs, files in os.walk(root):
        for name in dirs + files:
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            if stat.S_ISLNK(st.st_mode):
                what = "-> " + os.readlink(p)
            elif stat.S_ISREG(st.st_mode):
                with open(p, "rb") as f:
                    what = hashlib.sha256(f.read()).hexdigest()
            else:
                what = ""
            out[os.path.relpath(p, root)] = (st.st_mode, what)
    return out


def config_dump(path):
    r = subprocess.run([ctrd.CONTAINERD_BIN, "--config", path, "config", "dump"], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, text=True, timeout=60)
    check(r.returncode == 0, "containerd config dump of %s failed: %s" % (path, r.stderr[-2000:]))
    return tomllib.loads(r.stdout)


def stage_sources(tmp, spore_dir, shim_dir, snap_dir):
    """The four binaries in one directory, as the chart's image ships them."""
    src = os.path.join(tmp, "src")
    os.makedirs(src)
    for name, d in (("spore", spore_dir), ("spore-oci", spore_dir), ("containerd-shim-spore-v2", shim_dir),
                    ("spore-snapshotter", snap_dir)):
        p = os.path.join(d, name)
        if not os.path.isfile(p):
            raise HarnessError("%s is not built (%s)" % (name, p))
        shutil.copy2(p, os.path.join(src, name))
    return src


def start_snapshotter(binary, workdir, address):
    log = open(os.path.join(workdir, "snapshotter.log"), "a")
    p = subprocess.Popen([binary, "--root", os.path.join(workdir, "snaproot"), "--address", address],
                         stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
    deadline = time.monotonic() + 20
    while not os.path.exists(address):
        check(p.poll() is None, "spore-snapshotter exited %s" % p.returncode)
        check(time.monotonic() < deadline, "spore-snapshotter did not listen")
        time.sleep(0.02)
    return p


def stop_proc(p):
    if p and p.poll() is None:
        p.terminate()
        try:
            p.wait(timeout=15)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(timeout=5)


def shim_exes(c):
    res = []
    for pid in c.shim_pids():
        try:
            res.append(os.readlink("/proc/%d/exe" % pid))
        except OSError:
            pass
    return res


def why_not_imports(tmp):
    """The measurement behind editing config.toml in place: containerd 1.6
    merges an `imports` file by replacing whole plugin tables, so a drop-in
    naming only our runtime drops the node's CRI settings (here: its runc
    runtime and sandbox_image)."""
    main = os.path.join(tmp, "imports-main.toml")
    drop = os.path.join(tmp, "imports-dropin.toml")
    with open(main, "w") as f:
        f.write('version = 2\nimports = ["%s"]\n[plugins."io.containerd.grpc.v1.cri"]\n'
                '  sandbox_image = "example.test/pause:node"\n'
                '[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]\n'
                '  runtime_type = "io.containerd.runc.v2"\n'
                '[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]\n'
                '  SystemdCgroup = true\n' % drop)
    with open(drop, "w") as f:
        f.write('version = 2\n[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.spore]\n'
                '  runtime_type = "io.containerd.spore.v2"\n')
    d = config_dump(main)
    cri = d["plugins"][CRI_PLUGIN]
    return sorted(cri["containerd"]["runtimes"]), cri["sandbox_image"]


def t_config(args):
    node, spore_dir, shim_dir, snap_dir = args[:4]
    why = ctrd.containerd_missing()
    if why:
        raise Skip(why)
    tm = Timer()
    tmp = tempfile.mkdtemp(prefix="sn-", dir="/tmp")
    snap = None
    c = None
    k = None
    try:
        runtimes, sandbox = why_not_imports(tmp)
        check(runtimes == ["spore"] and sandbox != "example.test/pause:node",
              "containerd's imports merge changed (runtimes %s, sandbox_image %s): revisit the in-place edit "
              "(docs/node-install.md)" % (runtimes, sandbox))
        tm.mark("imports drop-in measured: the node's runc and sandbox_image are lost (runtimes %s)" % runtimes)

        src = stage_sources(tmp, spore_dir, shim_dir, snap_dir)
        workdir = os.path.join(tmp, "n")
        sock = os.path.join(tmp, "snap.sock")
        shim_yaml = os.path.join(tmp, "shim.yaml")
        with open(shim_yaml, "w") as f:
            f.write("state_dir: %s\n" % os.path.join(tmp, "st"))
        c = NodeContainerd(node, workdir, ["--src", src, "--snapshotter-socket", sock, "--shim-config", shim_yaml])
        snap = start_snapshotter(os.path.join(src, "spore-snapshotter"), tmp, sock)
        c.start()
        tm.mark("sporelet-node install; containerd started with the edited config, CRI loaded")
        for b in BINARIES:
            p = os.path.join(workdir + INSTALL_DIR, b)
            check(os.stat(p).st_mode & 0o7777 == 0o755, "%s mode %o" % (p, os.stat(p).st_mode))

        d = config_dump(c.config_path)
        cri = d["plugins"][CRI_PLUGIN]["containerd"]
        sp = cri["runtimes"].get("spore")
        check(sp is not None, "no runtime spore in config dump: %s" % sorted(cri["runtimes"]))
        check(sp["runtime_type"] == "io.containerd.spore.v2", "runtime_type %r" % sp["runtime_type"])
        check(sp["pod_annotations"] == ["sporelet.ai/*"], "pod_annotations %r" % sp["pod_annotations"])
        check(sp["options"].get("ConfigPath") == shim_yaml, "options %r" % sp["options"])
        check(cri["disable_snapshot_annotations"] is False, "disable_snapshot_annotations is still true")
        check(cri["runtimes"]["runc"]["options"]["Root"] == c.runc_root, "the node's runc options were lost")
        check(d["proxy_plugins"].get("spore") == {"type": "snapshot", "address": sock},
              "proxy_plugins: %r" % d.get("proxy_plugins"))
        tm.mark("config dump: runtime spore, proxy plugin spore, disable_snapshot_annotations = false, runc kept")

        r = c.ctr("snapshots", "--snapshotter", "spore", "ls", namespace=CRI_NAMESPACE)
        check(r.rc == 0, "ctr snapshots --snapshotter spore ls: %s" % r.describe())
        tm.mark("the proxy plugin reaches spore-snapshotter on %s" % sock)

        # A second install changes nothing (and says so).
        r = c.sporelet_node("install", "--src", src, "--snapshotter-socket", sock, "--shim-config", shim_yaml,
                            "--restart-cmd", "echo restarted-for-nothing")
        check(r.returncode == 0 and "changed=no" in r.stdout.splitlines() and "restarted" not in r.stdout,
              "second install: %s %s" % (r.stdout, r.stderr))
        tm.mark("second install: changed=no, no restart")

        from cri import CriClient
        c.ensure_pause_image()
        busy = ctrd.busybox_image()
        c.import_image(busy, namespace=CRI_NAMESPACE)
        k = CriClient(c)
        pod = k.run_pod("plain", runtime_handler="runc")
        _ctr, st, log = k.run_container(pod, busy.ref, args=["echo", "runc", "still", "works"], name="echo")
        check(st.exit_code == 0 and log == "runc still works\n", "runc pod: exit %d log %r" % (st.exit_code, log))
        k.stop_pod(pod)
        k.remove_pod(pod)
        tm.mark("a runc pod through CRI: the default runtime still works")

        try:
            k.run_pod("nosuch", runtime_handler="nosuch")
            raise HarnessError("RunPodSandbox with an unknown handler succeeded")
        except ctrd.HarnessError as e:
            check("nosuch" in str(e), "unknown handler error: %s" % e)
        pod = k.run_pod("spore-handler", runtime_handler="spore")
        exes = shim_exes(c)
        want = os.path.join(workdir + INSTALL_DIR, "containerd-shim-spore-v2")
        check(want in exes, "RunPodSandbox (handler spore) did not start the installed shim: shims %s" % exes)
        tm.mark("RunPodSandbox with handler spore: the installed shim runs the pod (%s)" % want)
        k.stop_pod(pod)
        k.remove_pod(pod)
        problems = k.cleanup()
        check(not problems, "CRI cleanup: %s" % problems)
        k.close()
        k = None
        check(not c.wait_no_shims(10), "shims left")
        problems = c.stop()
        check(not problems, "teardown had to clean up: %s" % problems)
        original = c.original
        c = None

        r = subprocess.run([node, "uninstall", "--root", workdir, "--install-dir", INSTALL_DIR,
                            "--containerd-config", CONFIG], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True, timeout=60)
        check(r.returncode == 0 and "changed=yes" in r.stdout.splitlines(), "uninstall: %s %s" % (r.stdout, r.stderr))
        with open(os.path.join(workdir, CONFIG.lstrip("/")), "rb") as f:
            check(f.read() == original, "uninstall did not give back the config byte for byte")
        check(not os.path.exists(workdir + INSTALL_DIR), "the install dir is left")
        tm.mark("uninstall: config byte for byte as before, binaries and their directory gone")

        # The chart's options: the CRI plugin's global snapshotter (containerd
        # 1.6 ignores the runtime's), the shim linked onto containerd's PATH,
        # the shim's YAML written from a source file. containerd loads the
        # result; uninstall leaves the scratch root as it was.
        os.makedirs(os.path.join(workdir, "usr/local/bin"))
        before = tree(workdir)
        shim_src = os.path.join(tmp, "shim-src.yaml")
        with open(shim_src, "w") as f:
            f.write("state_dir: /run/sporelet/shim\ndisk_dir: /var/lib/sporelet/disks\n")
        chart_args = ["--root", workdir, "--install-dir", INSTALL_DIR, "--containerd-config", CONFIG,
                      "--snapshotter-socket", sock, "--shim-config", "/etc/sporelet/shim.yaml",
                      "--shim-config-src", shim_src, "--shim-link-dir", "/usr/local/bin", "--cri-snapshotter", "spore"]
        r = subprocess.run([node, "install", "--src", src] + chart_args, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True, timeout=60)
        check(r.returncode == 0 and "changed=yes" in r.stdout.splitlines(), "install (chart options): %s %s"
              % (r.stdout, r.stderr))
        check("shim-link /usr/local/bin/containerd-shim-spore-v2 created" in r.stdout.splitlines() and
              "shim-config /etc/sporelet/shim.yaml created" in r.stdout.splitlines(), "report: %s" % r.stdout)
        d = config_dump(os.path.join(workdir, CONFIG.lstrip("/")))
        cri = d["plugins"][CRI_PLUGIN]["containerd"]
        check(cri.get("snapshotter") == "spore", "CRI snapshotter in config dump: %r" % cri.get("snapshotter"))
        check(cri["runtimes"]["spore"]["options"].get("ConfigPath") == "/etc/sporelet/shim.yaml",
              "ConfigPath: %r" % cri["runtimes"]["spore"]["options"])
        check(cri["runtimes"]["runc"]["options"]["Root"], "the node's runc options were lost")
        link = os.path.join(workdir, "usr/local/bin/containerd-shim-spore-v2")
        check(os.readlink(link) == INSTALL_DIR + "/containerd-shim-spore-v2", "link -> %s" % os.readlink(link))
        with open(os.path.join(workdir, "etc/sporelet/shim.yaml")) as f, open(shim_src) as g:
            check(f.read() == g.read(), "the shim config is not the source's bytes")
        tm.mark("install --cri-snapshotter spore --shim-link-dir --shim-config-src: config dump has "
                "snapshotter = spore; link and shim.yaml in place")
        r = subprocess.run([node, "uninstall"] + chart_args, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True, timeout=60)
        check(r.returncode == 0, "uninstall (chart options): %s %s" % (r.stdout, r.stderr))
        after = tree(workdir)
        check(before == after, "uninstall left the root changed:\n%s" %
              "\n".join(sorted(set(before.items()) ^ set(after.items()), key=str)))
        with open(os.path.join(workdir, CONFIG.lstrip("/")), "rb") as f:
            check(f.read() == original, "uninstall did not give back the config byte for byte")
        tm.mark("uninstall: root as before (config bytes, link, shim.yaml and /etc/sporelet gone)")
    except BaseException:
        if c is not None:
            print("---- containerd log (tail) ----\n%s" % c.log_tail(), flush=True)
        raise
    finally:
        if k is not None:
            k.cleanup()
        if c is not None:
            c.stop()
        stop_proc(snap)
        shutil.rmtree(tmp, ignore_errors=True)


def t_cri(args):
    node, spore_dir, shim_dir, snap_dir = args[:4]
    if len(args) < 5:
        raise HarnessError("cri needs TESTGUEST_ELF")
    guest = args[4]
    why = ctrd.containerd_missing()
    if why:
        raise Skip(why)
    if not os.path.exists("/dev/kvm"):
        raise Skip("no /dev/kvm: the shim resumes real VMs")
    from spore_tests import Env, wait_gone
    tm = Timer()
    tmp = tempfile.mkdtemp(prefix="sn-", dir="/tmp")
    src = stage_sources(tmp, spore_dir, shim_dir, snap_dir)
    workdir = os.path.join(tmp, "n")
    env = Env(os.path.join(src, "spore"), guest, workdir + INSTALL_DIR)
    c = None
    k = None
    try:
        d = env.agent_spore("tg")
        tm.mark("captured a test-guest spore with its agent")
        # state_dir private to the test (env.config); spore next to the shim
        c = NodeContainerd(node, workdir, ["--src", src, "--shim-config", env.config,
                                           "--snapshotter-socket", os.path.join(tmp, "snap.sock")],
                           extra_env=dict(env.san_env, SPORE_CACHE_DIR=env.env["SPORE_CACHE_DIR"],
                                          SPORE_STATE_DIR=env.env["SPORE_STATE_DIR"],
                                          DOCKER_CONFIG=env.env["DOCKER_CONFIG"]))
        c.start()
        c.ensure_pause_image()
        busy = ctrd.busybox_image()
        c.import_image(busy, namespace=CRI_NAMESPACE)
        from cri import CriClient
        k = CriClient(c)
        tm.mark("installed; containerd up with the installer's config")
        pod = k.run_pod("installed", runtime_handler="spore", annotations={"sporelet.ai/spore": d})
        _ctr, st, log = k.run_container(pod, busy.ref, args=["echo", "from", "an", "installed", "node"], name="e")
        check(st.exit_code == 0 and log == "from an installed node\n", "exit %d log %r" % (st.exit_code, log))
        exes = shim_exes(c)
        check(os.path.join(workdir + INSTALL_DIR, "containerd-shim-spore-v2") in exes, "shims %s" % exes)
        tm.mark("pod (handler spore, sporelet.ai/spore annotation) ran a container in its VM")
        k.stop_pod(pod)
        k.remove_pod(pod)
        problems = k.cleanup()
        check(not problems, "CRI cleanup: %s" % problems)
        k.close()
        k = None
        check(not c.wait_no_shims(10), "shims left")
        left = wait_gone(env)
        check(not left, "left behind: %s" % left)
        check(not env.sanitizer_reports(), "sanitizer reports:\n%s" % "\n".join(env.sanitizer_reports()))
        tm.mark("nothing left")
    except BaseException:
        if c is not None:
            print("---- containerd log (tail) ----\n%s" % c.log_tail(), flush=True)
        raise
    finally:
        if k is not None:
            k.cleanup()
        if c is not None:
            problems = c.stop()
        env.close()
        shutil.rmtree(tmp, ignore_errors=True)


def t_label(args):
    """label / unlabel against a loopback stand-in for the API server's
    PATCH /api/v1/nodes/<name>: method, path, bearer token, merge-patch
    content type and body; HTTP errors are reported with their status."""
    import http.server
    import json
    import threading
    node = args[0]
    seen = []

    class H(http.server.BaseHTTPRequestHandler):
        def do_PATCH(self):
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            seen.append((self.path, self.headers.get("Authorization"), self.headers.get("Content-Type"),
                         json.loads(body)))
            if self.headers.get("Authorization") != "Bearer tok-123":
                code, reply = 401, b'{"kind":"Status","code":401,"message":"Unauthorized"}'
            elif self.path != "/api/v1/nodes/node-a":
                code, reply = 404, b'{"kind":"Status","code":404,"message":"nodes \\"x\\" not found"}'
            else:
                code, reply = 200, b'{"kind":"Node"}'
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, *a):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
    th = threading.Thread(target=srv.serve_forever, daemon=True)
    th.start()
    tmp = tempfile.mkdtemp(prefix="sn-label-")
    try:
        tok = os.path.join(tmp, "token")
        with open(tok, "w") as f:
            f.write("tok-123\n")
        api = "http://127.0.0.1:%d" % srv.server_address[1]

        def run(*a):
            return subprocess.run([node] + list(a) + ["--api-server", api, "--token-file", tok, "--ca-file", ""],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=60)
        r = run("label", "--node-name", "node-a")
        check(r.returncode == 0, "label: %s %s" % (r.stdout, r.stderr))
        check(seen[-1] == ("/api/v1/nodes/node-a", "Bearer tok-123", "application/merge-patch+json",
                           {"metadata": {"labels": {"sporelet.ai/runtime": "true"}}}), "request %r" % (seen[-1],))
        r = run("unlabel", "--node-name", "node-a", "--label", "sporelet.ai/runtime")
        check(r.returncode == 0 and seen[-1][3] == {"metadata": {"labels": {"sporelet.ai/runtime": None}}},
              "unlabel: %r %s" % (seen[-1], r.stderr))
        r = run("label", "--node-name", "node-b", "--label", "example.com/x=y")
        check(r.returncode == 1 and "HTTP 404" in r.stderr, "404: %s" % r.stderr)
        r = run("unlabel", "--node-name", "node-b")
        check(r.returncode == 0, "unlabel of a node that is gone is done: %s" % r.stderr)
        with open(tok, "w") as f:
            f.write("wrong\n")
        r = run("label", "--node-name", "node-a")
        check(r.returncode == 1 and "HTTP 401" in r.stderr and "wrong" not in r.stderr, "401: %s" % r.stderr)
        n = len(seen)
        for bad in (["--node-name", "Node_A"], ["--node-name", "node-a", "--label", "-x=y"],
                    ["--node-name", "node-a", "--label", "k=" + "v" * 64]):
            r = run("label", *bad)
            check(r.returncode == 1 and len(seen) == n, "%s must be refused before any request: %s" % (bad, r.stderr))
        print("  label, unlabel, 404, 401 and bad names checked (%d requests)" % len(seen))
    finally:
        srv.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)


TESTS = {"config": t_config, "cri": t_cri, "label": t_label}


def main():
    if len(sys.argv) < (3 if sys.argv[1:2] == ["label"] else 6) or sys.argv[1] not in TESTS:
        print(__doc__, file=sys.stderr)
        return 2
    try:
        TESTS[sys.argv[1]](sys.argv[2:])
    except Skip as e:
        print("SKIP: %s" % e, flush=True)
        return 77
    print("PASS %s" % sys.argv[1], flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
