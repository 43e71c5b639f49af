"""Reproducible single-platform OCI images built in memory (stdlib only): layer tars, the image layout, the archive.

Used by scripts/build-images (the chart's node and operator images) and by
tests/containerd/ctrd.py (the test images). The same inputs give the same
bytes: entries owned by root with mtime 0 in the order given, gzip with
mtime 0, JSON with fixed separators, so digests are stable across runs.
"""

import gzip
import hashlib
import io
import json
import os
import re
import subprocess
import tarfile

MT_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MT_INDEX = "application/vnd.oci.image.index.v1+json"
MT_CONFIG = "application/vnd.oci.image.config.v1+json"
MT_LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"
MT_LAYER_TGZ = "application/vnd.oci.image.layer.v1.tar+gzip"
ANN_REF_NAME = "org.opencontainers.image.ref.name"
ANN_CTRD_NAME = "io.containerd.image.name"   # ctr import names images from it

EPOCH = "1970-01-01T00:00:00Z"


class ImageError(Exception):
    pass


def sha256_digest(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


def layer_tar(entries):
    """An uncompressed tar: entries are (path, kind, value, mode) with kind
    "file" (value bytes), "dir" (value None), "symlink" (value target),
    owned by root, mtime 0, written in the order given (the same input gives
    the same bytes; see tree_entries for a sorted, complete list)."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as t:
        for path, kind, value, mode in entries:
            ti = tarfile.TarInfo(path.lstrip("/"))
            ti.mtime, ti.uid, ti.gid, ti.uname, ti.gname = 0, 0, 0, "root", "root"
            if kind == "file":
                ti.type, ti.size, ti.mode = tarfile.REGTYPE, len(value), mode or 0o644
                t.addfile(ti, io.BytesIO(value))
            elif kind == "dir":
                ti.type, ti.mode = tarfile.DIRTYPE, mode or 0o755
                t.addfile(ti)
            elif kind == "symlink":
                ti.type, ti.linkname, ti.mode = tarfile.SYMTYPE, value, 0o777
                t.addfile(ti)
            else:
                raise ValueError("unknown entry kind %r" % kind)
    return out.getvalue()


def tree_entries(entries):
    """entries (as for layer_tar) made complete and canonical: every parent
    directory present (0755 unless listed), duplicates refused unless
    identical, sorted by path so that a directory precedes its contents and
    the order does not depend on how the list was built."""
    by_path = {}
    for path, kind, value, mode in entries:
        p = path.strip("/")
        if not p or ".." in p.split("/"):
            raise ImageError("bad path in image: %r" % path)
        e = (p, kind, value, mode)
        if p in by_path and by_path[p] != e:
            raise ImageError("two different entries for /%s" % p)
        by_path[p] = e
    for p in list(by_path):
        parts = p.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            d = "/".join(parts[:i])
            if d not in by_path:
                by_path[d] = (d, "dir", None, 0o755)
            elif by_path[d][1] != "dir":
                raise ImageError("/%s is both a directory and a %s" % (d, by_path[d][1]))
    return [by_path[p] for p in sorted(by_path, key=lambda s: s.split("/"))]


class OciImage:
    """A single-platform (linux/amd64) OCI image built in memory.

    ref: the full name containerd gives it on import (e.g. sporelet.test/busybox:1).
    layers: a list of uncompressed layer tars (bytes); gzip_layers=True stores
      them as tar+gzip (mtime 0, reproducible).
    config: the image config's "config" object (Entrypoint, Cmd, Env, User,
      Labels, ...). manifest_annotations: for spore images. created: the
      config's and history's timestamp (default the epoch, for reproducibility).
    created_by: the history entries' created_by."""

    def __init__(self, ref, layers, config, gzip_layers=True, manifest_annotations=None, created=None,
                 created_by="scripts/ociimage.py"):
        self.ref = ref
        self.blobs = {}
        descs, diff_ids = [], []
        for raw in layers:
            diff_ids.append(sha256_digest(raw))
            if gzip_layers:
                blob = gzip.compress(raw, compresslevel=6, mtime=0)
                mt = MT_LAYER_TGZ
            else:
                blob, mt = raw, MT_LAYER_TAR
            d = sha256_digest(blob)
            self.blobs[d] = blob
            descs.append({"mediaType": mt, "digest": d, "size": len(blob)})
        created = created or EPOCH
        cfg = {"created": created, "architecture": "amd64", "os": "linux",
               "config": config, "rootfs": {"type": "layers", "diff_ids": diff_ids},
               "history": [{"created": created, "created_by": created_by} for _ in layers]}
        self.config_bytes = json.dumps(cfg, separators=(",", ":"), sort_keys=True).encode()
        self.config_digest = sha256_digest(self.config_bytes)
        self.blobs[self.config_digest] = self.config_bytes
        m = {"schemaVersion": 2, "mediaType": MT_MANIFEST,
             "config": {"mediaType": MT_CONFIG, "digest": self.config_digest, "size": len(self.config_bytes)},
             "layers": descs}
        if manifest_annotations:
            m["annotations"] = dict(manifest_annotations)
        self.manifest_bytes = json.dumps(m, separators=(",", ":")).encode()
        self.manifest_digest = sha256_digest(self.manifest_bytes)
        self.blobs[self.manifest_digest] = self.manifest_bytes
        self.layers = descs

    def tag(self):
        return self.ref.rsplit(":", 1)[1] if ":" in self.ref.rsplit("/", 1)[-1] else "latest"

    def index(self):
        return {"schemaVersion": 2, "mediaType": MT_INDEX,
                "manifests": [{"mediaType": MT_MANIFEST, "digest": self.manifest_digest,
                               "size": len(self.manifest_bytes),
                               "platform": {"architecture": "amd64", "os": "linux"},
                               "annotations": {ANN_CTRD_NAME: self.ref, ANN_REF_NAME: self.tag()}}]}

    def layout_files(self):
        files = [("oci-layout", json.dumps({"imageLayoutVersion": "1.0.0"}).encode()),
                 ("index.json", json.dumps(self.index(), separators=(",", ":")).encode())]
        for d in sorted(self.blobs):
            files.append(("blobs/sha256/" + d.split(":", 1)[1], self.blobs[d]))
        return files

    def write_layout(self, directory):
        """Writes an OCI image layout directory."""
        for name, data in self.layout_files():
            p = os.path.join(directory, name)
            os.makedirs(os.path.dirname(p), exist_ok=True)
            with open(p, "wb") as f:
                f.write(data)
        return directory

    def tar_bytes(self):
        """The OCI image layout as a tar (what `ctr images import` and
        skopeo's oci-archive: take), byte for byte reproducible."""
        out = io.BytesIO()
        with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as t:
            for dname in ("blobs", "blobs/sha256"):
                ti = tarfile.TarInfo(dname)
                ti.type, ti.mode = tarfile.DIRTYPE, 0o755
                t.addfile(ti)
            for name, data in self.layout_files():
                ti = tarfile.TarInfo(name)
                ti.size, ti.mode = len(data), 0o644
                t.addfile(ti, io.BytesIO(data))
        return out.getvalue()

    def write_tar(self, path):
        """Writes the layout tar to path (temp + fsync + rename)."""
        data = self.tar_bytes()
        tmp = "%s.tmp.%d" % (path, os.getpid())
        try:
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.rename(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return path


# ---- building blocks from the build machine's Debian files ----------------------

def busybox_applets(busybox):
    """The applet names of a busybox binary (`busybox --list`)."""
    try:
        r = subprocess.run([busybox, "--list"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           timeout=10, check=False, text=True)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise ImageError("%s --list: %s" % (busybox, e))
    if r.returncode != 0:
        raise ImageError("%s --list failed (status %d): %s" % (busybox, r.returncode, r.stderr.strip()))
    return sorted(set(r.stdout.split()) - {"busybox"})


def shared_libs(binary):
    """Absolute paths ldd lists for binary (the libraries and the dynamic
    loader), [] for a static binary. A library ldd cannot find is an error."""
    try:
        r = subprocess.run(["ldd", binary], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           timeout=30, check=False, text=True)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise ImageError("ldd %s: %s" % (binary, e))
    if r.returncode != 0:
        if "not a dynamic executable" in r.stdout + r.stderr:
            return []
        raise ImageError("ldd %s failed: %s" % (binary, (r.stderr or r.stdout).strip()))
    libs = []
    for ln in r.stdout.splitlines():
        if "not found" in ln:
            raise ImageError("ldd %s: %s" % (binary, ln.strip()))
        m = re.search(r"(/\S+)\s+\(0x", ln)
        if m:
            libs.append(m.group(1))
    return libs


def read_file(path):
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise ImageError("cannot read %s: %s" % (path, e.strerror))


def lib_entries(binaries):
    """Layer entries for the ldd closure of binaries: each library and the
    loader at the path ldd names (the path the binary's PT_INTERP and the
    loader's default search directories use), content read through symlinks."""
    seen = {}
    for b in binaries:
        for lib in shared_libs(b):
            if lib not in seen:
                seen[lib] = ("file", read_file(lib), 0o755)
    return [(p, k, v, m) for p, (k, v, m) in sorted(seen.items())]
