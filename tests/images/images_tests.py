#!/usr/bin/env python3
"""The chart's images (scripts/build-images) built from this build's binaries, checked as OCI archives and run under a private containerd with runc.

Usage: images_tests.py BUILD_DIR --spore P --spore-oci P --shim P --snapshotter P
                       --sporelet-node P --operator P      (exit 0 pass, 1 fail, 77 skip)

Asserts:
- build-images run twice gives byte-identical archives and the same printed
  manifest digests; each archive is an OCI layout with one linux/amd64
  manifest whose digest is the printed one, every blob matches its digest,
  the config's diff_ids are the layers' uncompressed digests, and the
  config has the labels, Env PATH, and (operator) Entrypoint, User
  65532:65532, WorkingDir /.
- skopeo reads both archives and copies them (blobs checked) with the same
  manifest digests.
- `ctr images import` takes both; with `ctr run` (runc):
  operator: `--help` exits 0 with its usage, `--version` names the build's
  version; started as in a pod (service account files mounted, a read-only
  root, host network) it keeps running as uid/gid 65532, serves /healthz,
  and its root has the CA bundle;
  node: `sporelet-node --help`; `/bin/sh -c 'mkdir -p /tmp/x && test -d
  /tmp/x'`; `nsenter --help` (busybox's), and the chart's restart command's
  nsenter options work through /bin/sh (privileged, into PID 1's
  namespaces); `spore-snapshotter --help` from PATH; the four binaries under
  /sporelet/bin are executable files with the build's exact bytes, and spore
  and spore-oci run inside the image (the snapshotter runs them for pulls).
"""

import gzip
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(SRC, "tests", "containerd"))
import ctrd  # noqa: E402
from ctrd import Containerd, HarnessError, Skip  # noqa: E402

BUILD_IMAGES = os.path.join(SRC, "scripts", "build-images")
NODE_BINS = ("spore", "spore-oci", "containerd-shim-spore-v2", "spore-snapshotter")
OPTS = {"--spore": "spore", "--spore-oci": "spore-oci", "--shim": "containerd-shim-spore-v2",
        "--snapshotter": "spore-snapshotter", "--sporelet-node": "sporelet-node", "--operator": "sporelet-operator"}
SA_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"


def check(cond, msg):
    if not cond:
        raise HarnessError(msg)


def expect(r, rc, what, contains=()):
    if r.rc != rc:
        raise HarnessError("%s: expected exit status %r, got:\n%s" % (what, rc, r.describe()))
    for s in contains:
        if s not in r.out + r.err:
            raise HarnessError("%s: %r not in its output:\n%s" % (what, s, r.describe()))


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def build(build_dir, bins, out):
    argv = [sys.executable, BUILD_IMAGES, build_dir, "-o", out, "--source", "https://example.invalid/sporelet"]
    for opt, name in OPTS.items():
        argv += [opt, bins[name]]
    r = ctrd.run(argv, timeout=300)
    expect(r, 0, "scripts/build-images")
    images = {}
    for ln in r.out.splitlines():
        f = ln.split()
        check(len(f) == 5, "build-images printed %r, want NAME DIGEST REF PATH SIZE" % ln)
        images[f[0]] = {"digest": f[1], "ref": f[2], "path": f[3], "size": int(f[4])}
    check(set(images) == {"sporelet-node", "sporelet-operator"}, "build-images built %s" % sorted(images))
    for name, im in images.items():
        check(im["path"] == os.path.join(out, name + ".oci.tar") and os.path.getsize(im["path"]) == im["size"],
              "%s: printed path/size %s %d do not match the file" % (name, im["path"], im["size"]))
    return images


def read_layout(path):
    """The archive's files, each blob checked against its name."""
    files = {}
    with tarfile.open(path) as t:
        for m in t.getmembers():
            if m.isfile():
                files[m.name] = t.extractfile(m).read()
    check(json.loads(files.get("oci-layout", b"{}")).get("imageLayoutVersion") == "1.0.0", "%s: no oci-layout" % path)
    for name, data in files.items():
        if name.startswith("blobs/sha256/"):
            check(hashlib.sha256(data).hexdigest() == name.rsplit("/", 1)[1], "%s: blob %s is corrupt" % (path, name))
    return files


def blob(files, digest):
    d = files.get("blobs/sha256/" + digest.split(":", 1)[1])
    check(d is not None, "blob %s missing" % digest)
    return d


def check_archive(name, im, version, revision):
    files = read_layout(im["path"])
    index = json.loads(files["index.json"])
    check(len(index["manifests"]) == 1, "%s: %d manifests" % (name, len(index["manifests"])))
    md = index["manifests"][0]
    check(md["digest"] == im["digest"], "%s: index names %s, build-images printed %s" % (name, md["digest"], im["digest"]))
    check(md.get("platform") == {"architecture": "amd64", "os": "linux"}, "%s: platform %r" % (name, md.get("platform")))
    check(md["annotations"]["io.containerd.image.name"] == im["ref"], "%s: image name annotation" % name)
    manifest = json.loads(blob(files, md["digest"]))
    config = json.loads(blob(files, manifest["config"]["digest"]))
    check(config["os"] == "linux" and config["architecture"] == "amd64", "%s: config platform" % name)
    diff_ids = []
    for layer in manifest["layers"]:
        data = blob(files, layer["digest"])
        check(len(data) == layer["size"], "%s: layer size" % name)
        if layer["mediaType"].endswith("+gzip"):
            data = gzip.decompress(data)
        diff_ids.append("sha256:" + hashlib.sha256(data).hexdigest())
    check(config["rootfs"]["diff_ids"] == diff_ids, "%s: diff_ids %r are not the layers' %r"
          % (name, config["rootfs"]["diff_ids"], diff_ids))
    c = config["config"]
    labels = c.get("Labels", {})
    want = {"org.opencontainers.image.title": name, "org.opencontainers.image.version": version,
            "org.opencontainers.image.source": "https://example.invalid/sporelet"}
    if revision:
        want["org.opencontainers.image.revision"] = revision
    for k, v in want.items():
        check(labels.get(k) == v, "%s: label %s is %r, want %r" % (name, k, labels.get(k), v))
    check(any(e.startswith("PATH=") and "/usr/bin" in e and "/bin" in e for e in c.get("Env", [])),
          "%s: Env has no PATH: %r" % (name, c.get("Env")))
    if name == "sporelet-operator":
        check(c.get("Entrypoint") == ["/usr/bin/sporelet-operator"], "operator Entrypoint %r" % c.get("Entrypoint"))
        check(c.get("User") == "65532:65532", "operator User %r" % c.get("User"))
        check(c.get("WorkingDir") == "/", "operator WorkingDir %r" % c.get("WorkingDir"))
    return sum(x["size"] for x in manifest["layers"])


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def task_pid(c, cid, timeout=20):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = c.ctr("tasks", "ls", timeout=15)
        for line in r.out.splitlines()[1:]:
            f = line.split()
            if len(f) >= 3 and f[0] == cid and f[2] == "RUNNING":
                return int(f[1])
        time.sleep(0.2)
    raise HarnessError("task %s is not running: %s" % (cid, c.ctr("tasks", "ls").describe()))


def status_ids(pid, key):
    with open("/proc/%d/status" % pid) as f:
        for ln in f:
            if ln.startswith(key + ":"):
                return [int(x) for x in ln.split()[1:]]
    return []


def operator_checks(c, ref, version, tmp):
    # ctr replaces the whole argv (as a pod's command does): by name, from
    # PATH, as the chart's command: ["sporelet-operator"].
    r = c.ctr_run(ref, ["sporelet-operator", "--help"])
    expect(r, 0, "sporelet-operator --help", ["usage: sporelet-operator", "--kubeconfig"])
    r = c.ctr_run(ref, ["sporelet-operator", "--version"])
    expect(r, 0, "sporelet-operator --version", ["sporelet-operator %s" % version])
    # No argv: the image's Entrypoint, which outside a pod finds no service account.
    r = c.ctr_run(ref, [])
    expect(r, 1, "the operator image's Entrypoint", ["KUBERNETES_SERVICE_HOST"])
    print("  operator: --help, --version, the Entrypoint", flush=True)

    # As the Deployment runs it: the service account's files, a read-only
    # root; an API server that refuses connections, so it keeps retrying.
    sa = os.path.join(tmp, "sa")
    os.makedirs(sa)
    os.chmod(tmp, 0o755)
    os.chmod(sa, 0o755)
    for fname, data in (("token", "t0ken\n"), ("namespace", "sporelet-system\n")):
        with open(os.path.join(sa, fname), "w") as f:
            f.write(data)
    shutil.copyfile("/etc/ssl/certs/ca-certificates.crt", os.path.join(sa, "ca.crt"))
    for fname in os.listdir(sa):
        os.chmod(os.path.join(sa, fname), 0o644)
    port = free_port()
    cid = "operator-%d" % port
    r = c.ctr_run(ref, ["sporelet-operator", "--http-addr=127.0.0.1:%d" % port, "--log-level=debug"], cid=cid, rm=False,
                  env=["KUBERNETES_SERVICE_HOST=127.0.0.1", "KUBERNETES_SERVICE_PORT=1", "POD_NAME=op-0"],
                  extra=["-d", "--net-host", "--read-only",
                         "--mount", "type=bind,src=%s,dst=%s,options=rbind:ro" % (sa, SA_DIR)])
    expect(r, 0, "ctr run -d sporelet-operator")
    try:
        pid = task_pid(c, cid)
        body, deadline = None, time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen("http://127.0.0.1:%d/healthz" % port, timeout=2) as resp:
                    body = (resp.status, resp.read())
                    break
            except OSError:
                time.sleep(0.2)
        check(body is not None and body[0] == 200, "operator's /healthz did not answer 200: %r" % (body,))
        uids, gids = status_ids(pid, "Uid"), status_ids(pid, "Gid")
        check(uids == [65532] * 4 and gids == [65532] * 4,
              "operator runs as Uid %r Gid %r, want 65532 (the chart's runAsUser)" % (uids, gids))
        check(c.task_status(cid) == "RUNNING", "operator stopped: %s" % c.ctr("tasks", "ls").describe())
        ca = "/proc/%d/root/etc/ssl/certs/ca-certificates.crt" % pid
        check(os.path.isfile(ca) and os.path.getsize(ca) > 1000, "operator image has no CA bundle")
        with open("/proc/%d/root/etc/passwd" % pid) as f:
            check(any(ln.split(":")[2] == "65532" for ln in f if ln.count(":") >= 6), "no uid 65532 in /etc/passwd")
        print("  operator: runs as 65532:65532 on a read-only root, /healthz 200, CA bundle present", flush=True)
    finally:
        c.ctr("tasks", "kill", "-s", "SIGKILL", cid, timeout=15)
        deadline = time.monotonic() + 15
        while c.task_status(cid) not in (None, "STOPPED") and time.monotonic() < deadline:
            time.sleep(0.1)
        c.ctr("tasks", "delete", cid, timeout=15)
        c.ctr("containers", "delete", cid, timeout=15)


def node_checks(c, ref, bins):
    r = c.ctr_run(ref, ["sporelet-node", "--help"])
    expect(r, 0, "sporelet-node --help", ["usage: sporelet-node install"])
    r = c.ctr_run(ref, ["/bin/sh", "-c", "mkdir -p /tmp/x && test -d /tmp/x && echo MKDIR-OK"])
    expect(r, 0, "sh -c mkdir && test", ["MKDIR-OK"])
    # The probes' exec (test -S SOCKET) and the tools by name without a
    # shell: the runtime finds them on PATH, so the applet links must exist
    # (busybox's sh would run its applets without them).
    for argv, rc in ((["test", "-d", "/sporelet/bin"], 0), (["test", "-S", "/run/sporelet/none.sock"], 1),
                     (["mkdir", "-p", "/tmp/y"], 0), (["sh", "-c", "exit 7"], 7)):
        expect(c.ctr_run(ref, argv), rc, " ".join(argv) + " (no shell)")
    r = c.ctr_run(ref, ["nsenter", "--help"])
    expect(r, 0, "nsenter --help", ["Usage: nsenter", "Target process", "Enter pid namespace"])
    # The chart's restart command's nsenter, into PID 1's namespaces (here the
    # container's own sh; on a node, the host's init): privileged, as the DaemonSet.
    r = c.ctr_run(ref, ["/bin/sh", "-c",
                        "nsenter --target 1 --mount --uts --ipc --net --pid -- test -d /sporelet/bin && echo NSENTER-OK"],
                  extra=["--privileged"])
    expect(r, 0, "nsenter --target 1 ... --", ["NSENTER-OK"])
    r = c.ctr_run(ref, ["spore-snapshotter", "--help"])
    expect(r, 0, "spore-snapshotter --help", ["usage: spore-snapshotter"])
    r = c.ctr_run(ref, ["/bin/sh", "-c", "readlink /usr/bin/spore-snapshotter"])
    expect(r, 0, "readlink /usr/bin/spore-snapshotter", ["/sporelet/bin/spore-snapshotter"])
    print("  node: sporelet-node, sh/mkdir/test, nsenter, spore-snapshotter", flush=True)

    script = "; ".join("if test -f /sporelet/bin/%s && test -x /sporelet/bin/%s; then sha256sum /sporelet/bin/%s; "
                       "else echo MISSING %s; fi" % (b, b, b, b) for b in NODE_BINS)
    r = c.ctr_run(ref, ["/bin/sh", "-c", script])
    expect(r, 0, "the four binaries under /sporelet/bin")
    check("MISSING" not in r.out, "node image lacks binaries:\n%s" % r.out)
    got = {ln.split()[1].rsplit("/", 1)[1]: ln.split()[0] for ln in r.out.splitlines() if len(ln.split()) == 2}
    for b in NODE_BINS:
        check(got.get(b) == sha256_file(bins[b]), "/sporelet/bin/%s is not the build's %s (%r)" % (b, bins[b], got.get(b)))
    r = c.ctr_run(ref, ["/sporelet/bin/spore", "--version"])
    expect(r, 0, "spore --version in the image", ["spore "])
    r = c.ctr_run(ref, ["/sporelet/bin/spore-oci", "--help"])
    expect(r, 0, "spore-oci --help in the image", ["usage:"])
    r = c.ctr_run(ref, ["/sporelet/bin/containerd-shim-spore-v2", "--version"])
    expect(r, 0, "containerd-shim-spore-v2 --version in the image", ["io.containerd.spore.v2"])
    print("  node: /sporelet/bin/{%s} executable, the build's bytes, run in the image" % ",".join(NODE_BINS), flush=True)


def main():
    if len(sys.argv) < 2:
        raise HarnessError("usage: images_tests.py BUILD_DIR --spore P ... (see the docstring)")
    build_dir = sys.argv[1]
    bins, args = {}, sys.argv[2:]
    check(len(args) % 2 == 0, "options come in pairs")
    for opt, val in zip(args[::2], args[1::2]):
        check(opt in OPTS, "unknown option %s" % opt)
        bins[OPTS[opt]] = val
    check(set(bins) == set(OPTS.values()), "want all of %s" % sorted(OPTS))
    why = ctrd.containerd_missing()
    if why:
        raise Skip(why)
    for p in ("/bin/busybox", "/etc/ssl/certs/ca-certificates.crt", "/usr/bin/skopeo"):
        if not os.path.exists(p):
            raise Skip("%s is missing (scripts/setup: busybox-static, ca-certificates, skopeo)" % p)

    tmp = tempfile.mkdtemp(prefix="sporelet-images-")
    try:
        t0 = time.monotonic()
        a = build(build_dir, bins, os.path.join(tmp, "a"))
        secs = time.monotonic() - t0
        b = build(build_dir, bins, os.path.join(tmp, "b"))
        for name in a:
            check(a[name]["digest"] == b[name]["digest"], "%s: digest %s then %s: not reproducible"
                  % (name, a[name]["digest"], b[name]["digest"]))
            with open(a[name]["path"], "rb") as fa, open(b[name]["path"], "rb") as fb:
                check(fa.read() == fb.read(), "%s: the two archives differ" % name)
        print("  build-images twice: same digests and bytes (%.1f s a run)" % secs, flush=True)

        with open(os.path.join(build_dir, "CMakeCache.txt")) as f:
            version = [ln.split("=", 1)[1].strip() for ln in f if ln.startswith("CMAKE_PROJECT_VERSION:")][0]
        rev = subprocess.run(["git", "-C", SRC, "rev-parse", "HEAD"], stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL, text=True).stdout.strip()
        for name, im in sorted(a.items()):
            packed = check_archive(name, im, version, rev)
            print("RESULT image-size %s archive=%d layers_gzip=%d digest=%s"
                  % (name, im["size"], packed, im["digest"]), flush=True)

        # What the docs tell admins to push with: skopeo reads the archive
        # (the manifest it sees is the printed digest) and copies it, checking
        # every blob, into another layout with the same manifest digest.
        for name, im in sorted(a.items()):
            r = ctrd.run(["skopeo", "inspect", "--raw", "oci-archive:" + im["path"]], timeout=60)
            expect(r, 0, "skopeo inspect --raw %s" % name)
            check("sha256:" + hashlib.sha256(r.out.encode()).hexdigest() == im["digest"],
                  "%s: skopeo sees another manifest than %s" % (name, im["digest"]))
            dest = "oci:%s:%s" % (os.path.join(tmp, "skopeo"), name)
            expect(ctrd.run(["skopeo", "copy", "--quiet", "oci-archive:" + im["path"], dest], timeout=120), 0,
                   "skopeo copy oci-archive: %s" % name)
            r = ctrd.run(["skopeo", "inspect", "--format", "{{.Digest}}", dest], timeout=60)
            expect(r, 0, "skopeo inspect " + dest, [im["digest"]])
        print("  skopeo: reads and copies both archives", flush=True)

        with Containerd(cri=False) as c:
            for name in sorted(a):
                c.import_tar(a[name]["path"])
            have = c.images()
            for name in a:
                check(a[name]["ref"] in have, "ctr images import: %s not in %r" % (a[name]["ref"], have))
            operator_checks(c, a["sporelet-operator"]["ref"], version, os.path.join(tmp, "op"))
            node_checks(c, a["sporelet-node"]["ref"], bins)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    ctrd.main_wrapper(main)
