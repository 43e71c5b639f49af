#!/usr/bin/env python3
"""Builds the virtual KVM host (tests/kvmhost/README.md): Debian's cloud kernel plus an initramfs.

usage: build_host.py CACHE_DIR SPORE_BINARY TESTGUEST_ELF [--spore-init FILE] [--out FILE]
                     [--shim CONTAINERD_SHIM]

Fetches linux-image-<ver>-cloud-amd64 and busybox-static with `apt-get download`
into CACHE_DIR (once; reused while the package stays the same), extracts them with
`dpkg -x`, and writes a gzipped newc cpio holding: init (tests/kvmhost/init.sh),
busybox and its applet links, irqbypass/kvm/kvm-amd modules, the spore binary with
the shared libraries ldd lists (and the dynamic loader), testguest.elf, the
scenario scripts (tests/kvmhost/scenarios/*.sh) and the guests' payload under
/payload: Debian's generic kernel (linux-image-<ver>-amd64, also fetched),
a busybox initramfs, the agent initramfs built by scripts/guest-image (spore-init,
the kernel's virtio/vsock/ext4 modules, busybox) and a small ext4 disk image.
--spore-init defaults to guest/spore-init/bin/spore-init next to TESTGUEST_ELF.
--shim (containerd-shim-spore-v2) adds a second, separately cached archive for
the containerd scenarios (containerd, ctr, docker-registry from this machine,
the shim, spore-oci from next to SPORE_BINARY, their
libraries, overlay.ko), appended to the initramfs as host-initrd-ctr.gz.
Prints the paths as JSON.

Set SPORE_KVMHOST_KERNEL_PKG to pin the host kernel package (default: what
linux-image-cloud-amd64 depends on). Exit status: 0 built, 1 error, 77 cannot
fetch (no apt, no registry, nothing cached).
"""

import gzip
import hashlib
import json
import lzma
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
GUEST_IMAGE = os.path.join(os.path.dirname(os.path.dirname(HERE)), "scripts", "guest-image")
SKIP = 77
XFS_MODULES = ("loop", "libcrc32c", "xfs")  # load order: xfs needs libcrc32c
MKFS_XFS = "/usr/sbin/mkfs.xfs"
KVM_MODULES = ("irqbypass", "kvm", "kvm-amd")  # load order: kvm needs irqbypass, kvm-amd needs kvm
MODULE_PATHS = {
    "irqbypass": "kernel/virt/lib/irqbypass",
    "kvm": "kernel/arch/x86/kvm/kvm",
    "kvm-amd": "kernel/arch/x86/kvm/kvm-amd",
    "overlay": "kernel/fs/overlayfs/overlay",
    # XFS with reflink on a loop device (linux_guest: disks reflinked at restore)
    "loop": "kernel/drivers/block/loop",
    "libcrc32c": "kernel/lib/libcrc32c",
    "xfs": "kernel/fs/xfs/xfs",
}
# The containerd scenarios' extra programs, taken from this machine's Debian
# packages (they are Go programs linked only against libc).
CONTAINERD_PROGRAMS = (("/usr/bin/containerd", "containerd"), ("/usr/bin/ctr", "containerd"),
                       ("/usr/bin/docker-registry", "docker-registry"))


class Unavailable(Exception):
    """The host kernel or busybox cannot be fetched: the test is skipped (77)."""


class BuildError(Exception):
    pass


def log(msg):
    print("kvmhost: " + msg, file=sys.stderr, flush=True)


def run(argv, cwd=None, timeout=600):
    p = subprocess.run(argv, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, text=True, errors="replace", timeout=timeout)
    return p.returncode, p.stdout, p.stderr


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for blk in iter(lambda: f.read(1 << 20), b""):
            h.update(blk)
    return h.hexdigest()


# ---- fetching ----

def resolve_kernel_package(meta="linux-image-cloud-amd64", env="SPORE_KVMHOST_KERNEL_PKG"):
    """The ABI-versioned kernel package a meta package depends on, e.g.
    linux-image-6.1.0-56-cloud-amd64 (the host's) or linux-image-6.1.0-56-amd64
    (the guests': Debian's generic kernel, with VMGenID and virtio modules)."""
    pinned = os.environ.get(env)
    if pinned:
        return pinned
    if not shutil.which("apt-cache"):
        return None
    try:
        rc, out, _ = run(["apt-cache", "depends", meta], timeout=120)
    except subprocess.TimeoutExpired:
        return None
    if rc != 0:
        return None
    flavour = meta[len("linux-image-"):]
    m = re.search(r"Depends:\s*(linux-image-\S+-%s)\b" % re.escape(flavour), out)
    return m.group(1) if m else None


def fetch_deb(cache, pkg):
    """Returns the cached .deb of pkg, downloading it with apt-get once."""
    debs = os.path.join(cache, "debs")
    os.makedirs(debs, exist_ok=True)
    have = sorted(f for f in os.listdir(debs) if f.startswith(pkg + "_") and f.endswith(".deb"))
    if have:
        return os.path.join(debs, have[-1]), 0.0
    if not shutil.which("apt-get"):
        raise Unavailable("apt-get is not installed, cannot download %s" % pkg)
    t0 = time.monotonic()
    tmp = tempfile.mkdtemp(prefix=".dl-", dir=debs)
    try:
        # apt-get warns that it downloads unsandboxed as root: harmless here.
        try:
            rc, out, err = run(["apt-get", "download", pkg], cwd=tmp, timeout=300)
        except subprocess.TimeoutExpired:
            raise Unavailable("apt-get download %s timed out" % pkg)
        got = [f for f in os.listdir(tmp) if f.endswith(".deb")]
        if rc != 0 or len(got) != 1:
            raise Unavailable("apt-get download %s failed (status %d): %s" % (pkg, rc, (err or out).strip()[-600:]))
        dst = os.path.join(debs, got[0])
        os.rename(os.path.join(tmp, got[0]), dst)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dst, time.monotonic() - t0


def extract_deb(cache, deb):
    """dpkg -x into CACHE/tree-<deb name>, once (a .complete marker makes it idempotent)."""
    dst = os.path.join(cache, "tree-" + os.path.basename(deb)[:-4])
    if os.path.exists(dst + ".complete"):
        return dst
    shutil.rmtree(dst, ignore_errors=True)
    rc, out, err = run(["dpkg", "-x", deb, dst])
    if rc != 0:
        raise BuildError("dpkg -x %s failed: %s" % (deb, err.strip()))
    open(dst + ".complete", "w").close()
    return dst


def deb_version(deb):
    rc, out, _ = run(["dpkg-deb", "-f", deb, "Version"])
    return out.strip() if rc == 0 else "?"


def fetch(cache):
    """Kernel + busybox in the cache; returns a dict of paths and the versions used."""
    os.makedirs(cache, exist_ok=True)
    vfile = os.path.join(cache, "versions.json")
    old = {}
    if os.path.exists(vfile):
        with open(vfile) as f:
            old = json.load(f)
    pkg = resolve_kernel_package()
    if pkg is None:
        # Offline: reuse what a previous run recorded, if it is still there.
        pkg = old.get("kernel_package")
        if not pkg:
            raise Unavailable("cannot resolve linux-image-cloud-amd64 with apt-cache and nothing is cached in %s" % cache)
        log("apt-cache unavailable; using cached %s" % pkg)
    kdeb, kdl = fetch_deb(cache, pkg)
    bdeb, bdl = fetch_deb(cache, "busybox-static")
    gpkg = resolve_kernel_package("linux-image-amd64", "SPORE_KVMHOST_GUEST_KERNEL_PKG") or old.get(
        "guest_kernel_package")
    if not gpkg:
        raise Unavailable("cannot resolve linux-image-amd64 (the guest kernel) with apt-cache")
    gdeb, gdl = fetch_deb(cache, gpkg)
    kdl += gdl
    gtree = extract_deb(cache, gdeb)
    grelease = gpkg[len("linux-image-"):]
    guest_vmlinuz = os.path.join(gtree, "boot", "vmlinuz-" + grelease)
    if not os.path.isfile(guest_vmlinuz):
        raise BuildError("%s has no boot/vmlinuz-%s" % (gdeb, grelease))
    ktree = extract_deb(cache, kdeb)
    btree = extract_deb(cache, bdeb)

    release = pkg[len("linux-image-"):]
    vmlinuz = os.path.join(ktree, "boot", "vmlinuz-" + release)
    moddir = os.path.join(ktree, "lib", "modules", release)
    if not os.path.isfile(vmlinuz) or not os.path.isdir(moddir):
        raise BuildError("%s has no boot/vmlinuz-%s or lib/modules/%s" % (kdeb, release, release))
    busybox = os.path.join(btree, "bin", "busybox")
    if not os.path.isfile(busybox):
        raise BuildError("%s has no bin/busybox" % bdeb)
    info = {
        "kernel_package": pkg,
        "kernel_version": deb_version(kdeb),
        "kernel_release": release,
        "kernel_deb": os.path.basename(kdeb),
        "kernel_deb_sha256": sha256(kdeb),
        "busybox_version": deb_version(bdeb),
        "busybox_deb": os.path.basename(bdeb),
        "guest_kernel_package": gpkg,
        "guest_kernel_version": deb_version(gdeb),
    }
    return {"info": info, "vmlinuz": vmlinuz, "moddir": moddir, "busybox": busybox, "guest_vmlinuz": guest_vmlinuz,
            "guest_tree": gtree, "download_s": kdl + bdl}


def record_versions(cache, info):
    """CACHE/versions.json: what the host and its payload were built from (rewritten only on change)."""
    vfile = os.path.join(cache, "versions.json")
    old = None
    if os.path.exists(vfile):
        with open(vfile) as f:
            old = json.load(f)
    if info != old:
        with open(vfile + ".tmp", "w") as f:
            json.dump(info, f, indent=1, sort_keys=True)
        os.replace(vfile + ".tmp", vfile)


# ---- the newc cpio ----

class Cpio:
    """A minimal newc ("070701") writer: directories, files, symlinks, device nodes.
    Owner root, mtime 0: the archive only depends on its inputs."""

    def __init__(self):
        self.parts = []
        self.names = set()
        self.ino = 1

    def _add(self, name, mode, data=b"", rdev=(0, 0)):
        name = name.strip("/")
        if name in self.names:
            raise BuildError("duplicate initramfs entry %s" % name)
        self.names.add(name)
        nb = name.encode() + b"\0"
        fields = (self.ino, mode, 0, 0, 2 if stat.S_ISDIR(mode) else 1, 0, len(data), 0, 0,
                  rdev[0], rdev[1], len(nb), 0)
        self.ino += 1
        hdr = b"070701" + b"".join(b"%08x" % v for v in fields) + nb
        self.parts.append(hdr + b"\0" * (-len(hdr) % 4))
        self.parts.append(data + b"\0" * (-len(data) % 4))

    def dir(self, name):
        """Adds name and its missing parents."""
        path = ""
        for part in name.strip("/").split("/"):
            path = path + "/" + part if path else part
            if path not in self.names:
                self._add(path, stat.S_IFDIR | 0o755)

    def _parent(self, name):
        parent = os.path.dirname(name.strip("/"))
        if parent:
            self.dir(parent)

    def file(self, name, data, mode=0o644):
        self._parent(name)
        self._add(name, stat.S_IFREG | mode, data)

    def symlink(self, name, target):
        self._parent(name)
        self._add(name, stat.S_IFLNK | 0o777, target.encode())

    def chardev(self, name, major, minor, mode=0o600):
        self._parent(name)
        self._add(name, stat.S_IFCHR | mode, rdev=(major, minor))

    def bytes(self):
        trailer = Cpio()
        trailer._add("TRAILER!!!", 0)
        return b"".join(self.parts + trailer.parts)


def read_module(moddir, rel):
    """A module's bytes, decompressed if Debian shipped it compressed (.ko.xz / .ko.zst)."""
    base = os.path.join(moddir, rel)
    if os.path.exists(base + ".ko"):
        with open(base + ".ko", "rb") as f:
            return f.read()
    if os.path.exists(base + ".ko.xz"):
        with open(base + ".ko.xz", "rb") as f:
            return lzma.decompress(f.read())
    if os.path.exists(base + ".ko.zst"):
        rc = subprocess.run(["zstd", "-dc", base + ".ko.zst"], stdout=subprocess.PIPE, check=False)
        if rc.returncode == 0:
            return rc.stdout
    raise BuildError("kernel module %s(.ko|.ko.xz|.ko.zst) not found" % base)


def shared_libs(binary):
    """Absolute paths ldd lists for binary (libraries and the dynamic loader)."""
    rc, out, err = run(["ldd", binary])
    if rc != 0:
        if "not a dynamic executable" in out + err:
            return []
        raise BuildError("ldd %s failed: %s" % (binary, (err or out).strip()))
    libs = []
    for ln in out.splitlines():
        if "not found" in ln:
            raise BuildError("ldd %s: %s" % (binary, ln.strip()))
        m = re.search(r"(/\S+)\s+\(0x", ln)
        if m:
            libs.append(m.group(1))
    return libs


def add_host_file(cpio, src, dst=None, mode=None):
    """Copies a build-machine file (following symlinks) to the same or a given path."""
    with open(src, "rb") as f:
        data = f.read()
    if mode is None:
        mode = os.stat(src).st_mode & 0o777
    cpio.file(dst or src, data, mode)


GUEST_INIT = b"""#!/bin/sh
# PID 1 of the Linux guest under our VMM: prove user space runs, then power
# off through ACPI. Each marker goes both to the kernel log (/dev/kmsg, level
# 2 so `quiet` keeps it: printed by polling the UART) and to the tty (which
# needs COM1's interrupt, described to Linux in the DSDT as PNP0501).
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
say() { echo "<2>$*" > /dev/kmsg; echo "$*"; }
say "GUEST-HELLO pid=$$ kernel=$(uname -r) cpus=$(grep -c ^processor /proc/cpuinfo)"
say "GUEST-CMDLINE $(cat /proc/cmdline)"
say "GUEST-POWEROFF"
sleep 1
poweroff -f
"""


def guest_initramfs(busybox):
    """The Linux guest's initramfs (gzip'd newc cpio): busybox and GUEST_INIT."""
    g = Cpio()
    for d in ("dev", "proc", "sys", "tmp", "bin", "sbin"):
        g.dir(d)
    g.chardev("dev/console", 5, 1)
    add_host_file(g, busybox, "bin/busybox", 0o755)
    for applet in ("sh", "mount", "echo", "cat", "grep", "uname", "sleep", "poweroff"):
        g.symlink("bin/" + applet, "/bin/busybox")
    g.file("init", GUEST_INIT, 0o755)
    return gzip.compress(g.bytes(), compresslevel=6, mtime=0)


def agent_initramfs(cache, fetched, spore_init):
    """/payload/agent-initrd.gz: scripts/guest-image with spore-init as /init, the modules of
    the same guest kernel package as /payload/vmlinuz (its dpkg -x tree) and our busybox.
    guest-image skips the work when nothing changed. Returns (path, provenance)."""
    info = fetched["info"]
    out = os.path.join(cache, "agent-initrd.gz")
    argv = [sys.executable, GUEST_IMAGE, "--spore-init", spore_init, "--kernel-tree", fetched["guest_tree"],
            "--kernel-package", info["guest_kernel_package"], "--kernel-version", info["guest_kernel_version"],
            "--busybox", fetched["busybox"], "--cache", os.path.join(cache, "guest-image"), "--out", out]
    try:
        rc, _, err = run(argv, timeout=300)
    except subprocess.TimeoutExpired:
        raise BuildError("scripts/guest-image timed out")
    if rc != 0:
        raise BuildError("scripts/guest-image failed (status %d): %s" % (rc, err.strip()[-800:]))
    with open(out + ".json") as f:
        rec = json.load(f)
    return out, {
        "sha256": rec["output"]["sha256"], "bytes": rec["output"]["bytes"],
        "kernel_release": rec["kernel"]["release"],
        "modules": [m["name"] for m in rec["modules"]],
        "spore_init_sha256": rec["spore_init"]["sha256"],
        "busybox_version": rec["busybox"]["version"] if rec["busybox"] else None,
    }


# /payload/disk.ext4: a data disk for the guests (spore run --disk). Fixed UUID,
# hash seed and times (E2FSPROGS_FAKE_TIME, debugfs) make the image reproducible.
DISK_UUID = "5f0e1d2c-5b0a-4e1d-9c3a-000000000001"
ROOT_UUID = "5f0e1d2c-5b0a-4e1d-9c3a-000000000003"


def ext4_mkfs(label, uuid):
    return ["-q", "-F", "-t", "ext4", "-L", label, "-U", uuid,
            "-E", "hash_seed=5f0e1d2c-5b0a-4e1d-9c3a-000000000002,root_owner=0:0"]


# The data disk: one file the scenarios read.
DATA_DISK = {"name": "disk.ext4", "size": "16M", "label": "spore-data", "uuid": DISK_UUID,
             "files": {"hello.txt": b"disk-hello\n"}}


def root_disk_spec(busybox):
    """A root file system for spore.root=: busybox, its shell and cat, a marker."""
    return {"name": "root.ext4", "size": "16M", "label": "spore-root", "uuid": ROOT_UUID,
            "files": {"etc/root-marker": b"spore-root-disk\n", "bin/busybox": ("copy", busybox, 0o755),
                      "bin/sh": ("symlink", "busybox"), "bin/cat": ("symlink", "busybox"),
                      "proc/": None, "sys/": None, "dev/": None, "tmp/": None, "run/": None}}


def disk_image(cache, spec):
    """Builds CACHE/<spec name> without root (mkfs.ext4 -d) once per recipe; returns (path, provenance).
    spec files: path -> bytes, ("copy", source, mode), ("symlink", target) or None (a directory)."""
    out = os.path.join(cache, spec["name"])
    files = spec["files"]
    # The recipe names copied files by content, so a new busybox rebuilds the image.
    desc = {n: (("copy", sha256(v[1]), v[2]) if isinstance(v, tuple) and v[0] == "copy" else v)
            for n, v in files.items()}
    mkfs_args = ext4_mkfs(spec["label"], spec["uuid"])
    recipe = hashlib.sha256(json.dumps([desc, spec["size"], mkfs_args], default=repr, sort_keys=True)
                            .encode()).hexdigest()
    meta = out + ".json"
    if os.path.exists(out) and os.path.exists(meta):
        with open(meta) as f:
            rec = json.load(f)
        if rec.get("recipe_sha256") == recipe and rec.get("sha256") == sha256(out):
            return out, rec
    mkfs = shutil.which("mkfs.ext4") or shutil.which("mkfs.ext4", path="/usr/sbin:/sbin")
    debugfs = shutil.which("debugfs") or shutil.which("debugfs", path="/usr/sbin:/sbin")
    if not mkfs or not debugfs:
        raise BuildError("mkfs.ext4 or debugfs not found (Debian package e2fsprogs; scripts/setup installs it)")
    env = dict(os.environ, E2FSPROGS_FAKE_TIME="1")
    tmp = tempfile.mkdtemp(prefix=".disk-", dir=cache)
    try:
        root = os.path.join(tmp, "root")
        os.mkdir(root)
        paths = []
        for name in sorted(files):
            v, dst = files[name], os.path.join(root, name.rstrip("/"))
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            if v is None:
                os.makedirs(dst, exist_ok=True)
            elif isinstance(v, tuple) and v[0] == "symlink":
                os.symlink(v[1], dst)
            elif isinstance(v, tuple):
                shutil.copyfile(v[1], dst)
                os.chmod(dst, v[2])
            else:
                with open(dst, "wb") as f:
                    f.write(v)
            paths.append("/" + name.rstrip("/"))
        img = os.path.join(tmp, spec["name"])
        p = subprocess.run([mkfs] + mkfs_args + ["-d", root, img, spec["size"]], env=env,
                           stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           timeout=120)
        if p.returncode != 0:
            raise BuildError("mkfs.ext4 -d failed (status %d): %s" % (p.returncode, p.stdout.strip()[-400:]))
        # mkfs.ext4 -d copies the source files' times; zero every timestamp
        # (the parent directories first, then what is in them).
        dirs = sorted({os.path.dirname(x) for x in paths} - {"/"})
        cmds = os.path.join(tmp, "debugfs.cmds")
        with open(cmds, "w") as f:
            for path in ["/", "/lost+found"] + dirs + paths:
                for field in ("atime", "mtime", "ctime", "crtime"):
                    f.write("sif %s %s 0\n" % (path, field))
        p = subprocess.run([debugfs, "-w", "-f", cmds, img], env=env, stdin=subprocess.DEVNULL,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=120)
        if p.returncode != 0:
            raise BuildError("debugfs -w failed (status %d): %s" % (p.returncode, p.stdout.strip()[-400:]))
        _, ver, verr = run([mkfs, "-V"])
        shown = {"/" + n: (v.decode() if isinstance(v, bytes) else repr(desc[n])) for n, v in files.items()}
        rec = {"recipe_sha256": recipe, "sha256": sha256(img), "bytes": os.path.getsize(img),
               "size": spec["size"], "label": spec["label"], "uuid": spec["uuid"], "files": shown,
               "mke2fs": ((ver or verr).splitlines() or ["?"])[0].strip()}
        os.replace(img, out)
        with open(meta + ".tmp", "w") as f:
            json.dump(rec, f, indent=1, sort_keys=True)
        os.replace(meta + ".tmp", meta)
        return out, rec
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def build_initramfs(fetched, spore, testguest, out):
    c = Cpio()
    for d in ("dev", "proc", "sys", "tmp", "run", "root", "etc", "bin", "sbin", "usr/bin", "usr/sbin"):
        c.dir(d)
    # The kernel opens /dev/console for init's stdio before init can mount devtmpfs.
    c.chardev("dev/console", 5, 1)
    c.chardev("dev/null", 1, 3, 0o666)
    add_host_file(c, fetched["busybox"], "bin/busybox", 0o755)
    rc, out_list, err = run([fetched["busybox"], "--list-full"])
    if rc != 0:
        raise BuildError("busybox --list-full failed: %s" % err.strip())
    for applet in out_list.split():
        if applet.strip("/") not in c.names:
            c.symlink(applet, "/bin/busybox")
    with open(os.path.join(HERE, "init.sh"), "rb") as f:
        c.file("init", f.read(), 0o755)
    add_host_file(c, os.path.join(HERE, "lib.sh"), "lib/kvmhost/lib.sh", 0o644)
    for m in KVM_MODULES:
        c.file("lib/kvmhost/%s.ko" % m, read_module(fetched["moddir"], MODULE_PATHS[m]))
    for m in XFS_MODULES:
        c.file("lib/kvmhost/%s.ko" % m, read_module(fetched["moddir"], MODULE_PATHS[m]))
    add_host_file(c, spore, "usr/bin/spore", 0o755)
    for lib in shared_libs(spore):
        if lib.strip("/") not in c.names:
            add_host_file(c, lib)
    # mkfs.xfs (xfsprogs, from the build machine) for a reflink filesystem.
    if os.access(MKFS_XFS, os.X_OK):
        add_host_file(c, MKFS_XFS, "usr/sbin/mkfs.xfs", 0o755)
        for lib in shared_libs(MKFS_XFS):
            if lib.strip("/") not in c.names:
                add_host_file(c, lib)
    add_host_file(c, testguest, "payload/testguest.elf", 0o644)
    # A Linux guest for our VMM: Debian's generic kernel and a busybox
    # initramfs whose init runs GUEST_INIT (scenarios/linux_boot.sh).
    add_host_file(c, fetched["guest_vmlinuz"], "payload/vmlinuz", 0o644)
    c.file("payload/guest-initrd.gz", guest_initramfs(fetched["busybox"]), 0o644)
    # The agent initramfs (scripts/guest-image) and a data disk (see build()).
    add_host_file(c, fetched["agent_initrd"], "payload/agent-initrd.gz", 0o644)
    add_host_file(c, fetched["disk"], "payload/disk.ext4", 0o644)
    add_host_file(c, fetched["root_disk"], "payload/root.ext4", 0o644)
    sdir = os.path.join(HERE, "scenarios")
    for name in sorted(os.listdir(sdir)):
        if name.endswith(".sh"):
            add_host_file(c, os.path.join(sdir, name), "scenarios/" + name, 0o755)
    c.file("etc/kvmhost-versions.json", json.dumps(fetched["info"], sort_keys=True).encode() + b"\n")
    raw = c.bytes()
    tmp = out + ".tmp"
    with open(tmp, "wb") as f:
        # mtime=0: identical inputs give an identical file.
        with gzip.GzipFile(fileobj=f, mode="wb", compresslevel=6, mtime=0) as g:
            g.write(raw)
    os.replace(tmp, out)
    return len(raw), os.path.getsize(out)


def program_version(path, pkg):
    """The Debian version of pkg, which installed path (for the record)."""
    rc, out, _ = run(["dpkg-query", "-W", "-f", "${Version}", pkg])
    return out.strip() if rc == 0 and out.strip() else "?"


def containerd_extras(cache, fetched, spore, shim):
    """CACHE/ctr-extra.cpio.gz: what the containerd scenarios add to the host
    (a gzipped newc cpio the kernel unpacks after the base archive, so the
    other scenarios do not pay for ~100 MB of Go programs): containerd, ctr and
    docker-registry from this machine, containerd-shim-spore-v2 (shim) and
    spore-oci (next to spore: `spore push` execs it) as /usr/bin/<name>, their
    libraries that spore does not already bring, and overlay.ko of the host
    kernel (containerd's overlayfs snapshotter). Rebuilt only when an input
    changed. Returns (path, provenance)."""
    for path, pkg in CONTAINERD_PROGRAMS:
        if not os.access(path, os.X_OK):
            raise Unavailable("%s is not installed (Debian package %s; scripts/setup installs it)" % (path, pkg))
    spore_oci = os.path.join(os.path.dirname(os.path.abspath(spore)), "spore-oci")
    for p, what in ((shim, "containerd-shim-spore-v2"), (spore_oci, "spore-oci (built next to spore)")):
        if not os.path.isfile(p):
            raise BuildError("%s %s does not exist" % (what, p))
    progs = [(path, "usr/bin/" + os.path.basename(path)) for path, _ in CONTAINERD_PROGRAMS]
    progs += [(shim, "usr/bin/containerd-shim-spore-v2"), (spore_oci, "usr/bin/spore-oci")]
    have = set(shared_libs(spore))
    libs = []
    for src, _ in progs:
        for lib in shared_libs(src):
            if lib not in have:
                have.add(lib)
                libs.append(lib)
    overlay = read_module(fetched["moddir"], MODULE_PATHS["overlay"])
    inputs = [(dst, sha256(src)) for src, dst in progs] + [(lib.lstrip("/"), sha256(lib)) for lib in libs]
    inputs.append(("lib/kvmhost/overlay.ko", hashlib.sha256(overlay).hexdigest()))
    versions = {pkg: program_version(path, pkg) for path, pkg in CONTAINERD_PROGRAMS}
    recipe = hashlib.sha256(json.dumps([inputs, versions], sort_keys=True).encode()).hexdigest()
    out = os.path.join(cache, "ctr-extra.cpio.gz")
    meta = out + ".json"
    if os.path.exists(out) and os.path.exists(meta):
        with open(meta) as f:
            rec = json.load(f)
        if rec.get("recipe_sha256") == recipe:
            return out, rec
    c = Cpio()
    for src, dst in progs:
        add_host_file(c, src, dst, 0o755)
    for lib in libs:
        add_host_file(c, lib)
    c.file("lib/kvmhost/overlay.ko", overlay)
    rec = {"recipe_sha256": recipe, "packages": versions, "files": dict(inputs)}
    c.file("etc/kvmhost-ctr-versions.json", json.dumps(rec, sort_keys=True).encode() + b"\n")
    raw = c.bytes()
    with open(out + ".tmp", "wb") as f:
        with gzip.GzipFile(fileobj=f, mode="wb", compresslevel=6, mtime=0) as g:
            g.write(raw)
    os.replace(out + ".tmp", out)
    rec.update(bytes=len(raw), gz_bytes=os.path.getsize(out))
    with open(meta + ".tmp", "w") as f:
        json.dump(rec, f, indent=1, sort_keys=True)
    os.replace(meta + ".tmp", meta)
    return out, rec


def default_spore_init(testguest):
    """The build's static guest agent: <build>/guest/spore-init/bin/spore-init, next to <build>/guest/testguest.elf."""
    return os.path.join(os.path.dirname(os.path.abspath(testguest)), "spore-init", "bin", "spore-init")


def guest_payload(cache, spore, testguest, spore_init):
    """Checks the inputs, fetches (cached) and builds the guests' payload: the
    agent initramfs and the data disk. Returns the fetch record and the cache's
    absolute path."""
    spore_init = spore_init or default_spore_init(testguest)
    for p, what in ((spore, "spore binary"), (testguest, "testguest.elf"),
                    (spore_init, "spore-init (build the spore-init target, or pass --spore-init)")):
        if not os.path.isfile(p):
            raise BuildError("%s %s does not exist" % (what, p))
    cache = os.path.abspath(cache)
    fetched = fetch(cache)
    fetched["fetched_at"] = time.monotonic()
    fetched["agent_initrd"], fetched["info"]["agent_initrd"] = agent_initramfs(cache, fetched, spore_init)
    fetched["disk"], disk = disk_image(cache, DATA_DISK)
    fetched["info"]["disk_ext4"] = {k: disk[k] for k in ("sha256", "bytes", "label", "uuid", "files", "mke2fs")}
    fetched["root_disk"], rdisk = disk_image(cache, root_disk_spec(fetched["busybox"]))
    fetched["info"]["root_ext4"] = {k: rdisk[k] for k in ("sha256", "bytes", "label", "uuid", "mke2fs")}
    record_versions(cache, fetched["info"])
    return fetched, cache


def build(cache, spore, testguest, out=None, spore_init=None, shim=None):
    """Fetches (cached) and builds; returns a dict with vmlinuz, initrd, versions and timings.
    With shim (containerd-shim-spore-v2), the initrd is host-initrd-ctr.gz: the
    base archive followed by containerd_extras() (the kernel unpacks
    concatenated archives in order)."""
    t0 = time.monotonic()
    fetched, cache = guest_payload(cache, spore, testguest, spore_init)
    t1 = fetched["fetched_at"]
    t2 = time.monotonic()
    out = out or os.path.join(cache, "host-initrd.gz")
    raw, gz = build_initramfs(fetched, spore, testguest, out)
    extra = None
    if shim:
        epath, extra = containerd_extras(cache, fetched, spore, shim)
        base, out = out, os.path.join(os.path.dirname(out), "host-initrd-ctr.gz")
        with open(out + ".tmp", "wb") as f:
            for part in (base, epath):
                with open(part, "rb") as src:
                    shutil.copyfileobj(src, f, 1 << 20)
        os.replace(out + ".tmp", out)
        raw += extra["bytes"]
        gz = os.path.getsize(out)
    t3 = time.monotonic()
    return {"vmlinuz": fetched["vmlinuz"], "initrd": out, "versions": fetched["info"],
            "agent_initrd": fetched["agent_initrd"], "disk": fetched["disk"],
            "download_s": round(fetched["download_s"], 2), "fetch_s": round(t1 - t0, 2),
            "payload_s": round(t2 - t1, 2), "initramfs_s": round(t3 - t2, 2), "initramfs_bytes": raw,
            "initramfs_gz_bytes": gz,
            "containerd_extras": {k: extra[k] for k in ("packages", "bytes", "gz_bytes")} if extra else None}


def direct_payload(cache, spore, testguest, top, spore_init=None, shim=None):
    """For direct mode (a machine whose KVM runs Linux): under TOP, which the
    caller made, the guests' payload as TOP/payload (what /payload holds in the
    virtual host), `spore` as TOP/bin/spore, and the runner with its scenarios
    (TOP/kvmhost). Copies, not links: direct.sh hides /tmp behind a private
    tmpfs, and the build tree may live under /tmp."""
    fetched, cache = guest_payload(cache, spore, testguest, spore_init)
    payload, bindir, runner = (os.path.join(top, d) for d in ("payload", "bin", "kvmhost"))
    os.makedirs(payload)
    os.makedirs(bindir)
    for src, name in ((testguest, "testguest.elf"), (fetched["guest_vmlinuz"], "vmlinuz"),
                      (fetched["agent_initrd"], "agent-initrd.gz"), (fetched["disk"], "disk.ext4"),
                      (fetched["root_disk"], "root.ext4")):
        shutil.copyfile(src, os.path.join(payload, name))
    with open(os.path.join(payload, "guest-initrd.gz"), "wb") as f:
        f.write(guest_initramfs(fetched["busybox"]))
    shutil.copy2(spore, os.path.join(bindir, "spore"))
    if shim:
        # The containerd scenarios: the shim and spore-oci beside spore;
        # containerd, ctr and docker-registry are this machine's own.
        shutil.copy2(shim, os.path.join(bindir, "containerd-shim-spore-v2"))
        shutil.copy2(os.path.join(os.path.dirname(os.path.abspath(spore)), "spore-oci"),
                     os.path.join(bindir, "spore-oci"))
    shutil.copytree(os.path.join(HERE, "scenarios"), os.path.join(runner, "scenarios"))
    for name in ("lib.sh", "direct.sh"):
        shutil.copy2(os.path.join(HERE, name), os.path.join(runner, name))
    return {"payload": payload, "bin": bindir, "runner": os.path.join(runner, "direct.sh"),
            "versions": fetched["info"]}


def main(argv):
    args = argv[1:]
    opts = {"--out": None, "--spore-init": None, "--shim": None}
    for opt in opts:
        if opt in args:
            i = args.index(opt)
            if i + 1 >= len(args):
                print(__doc__, file=sys.stderr)
                return 2
            opts[opt] = args[i + 1]
            del args[i:i + 2]
    if len(args) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    try:
        res = build(args[0], args[1], args[2], opts["--out"], opts["--spore-init"], opts["--shim"])
    except Unavailable as e:
        log("SKIP: " + str(e))
        return SKIP
    except BuildError as e:
        log("error: " + str(e))
        return 1
    print(json.dumps(res, indent=1, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
