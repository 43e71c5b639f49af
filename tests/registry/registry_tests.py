#!/usr/bin/env python3
"""registry-tier tests: `spore push`, `spore pull` and `spore cache` against a
real docker-registry 2.8 on loopback, through the harness proxy (request
log, fault injection, Bearer auth), with test-guest spores (issue #3).

usage: registry_tests.py NAME SPORE_BINARY TESTGUEST_ELF

Every test starts and stops its own registry and proxy, and sets
SPORE_STATE_DIR, SPORE_CACHE_DIR and DOCKER_CONFIG into its scratch dir.
Exit status: 0 pass, 1 fail, 77 skip (no usable /dev/kvm, no docker-registry).
Set SPORE_TEST_KEEP=1 to keep the scratch directory (and registry data) of a
failed test.
"""

import base64
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as H  # noqa: E402

SKIP = 77
EXIT_SPORE_FAILED = 125
CHUNK = H.CHUNK_SIZE
REPO = "spores/app"
META_TITLE = "spore-meta.tar"

GEN_RE = re.compile(r"^tg: gen counter=(\d+) id=([0-9a-f]{32})$", re.M)
DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
FETCH_RE = re.compile(r"^layer=(sha256:[0-9a-f]{64}) offset=(\d+) size=(\d+)$")


class Fail(Exception):
    pass


def check(cond, msg):
    if not cond:
        raise Fail(msg)


def indent(s, limit=6000):
    if len(s) > limit:
        s = "...[%d bytes cut]...\n" % (len(s) - limit) + s[-limit:]
    return "\n".join("    | " + ln for ln in s.splitlines())


class Result:
    def __init__(self, argv, rc, out, err, secs):
        self.argv, self.rc, self.out, self.err, self.secs = argv, rc, out, err, secs

    def describe(self):
        return "$ %s\n  exit status %s after %.1fs\n  stdout:\n%s\n  stderr:\n%s" % (
            " ".join(self.argv), self.rc, self.secs, indent(self.out), indent(self.err))

    def last_line(self):
        lines = [ln for ln in self.out.splitlines() if ln.strip()]
        return lines[-1].strip() if lines else ""


class Ctx:
    def __init__(self, spore, guest, tmp):
        self.spore_bin, self.guest, self.tmp = spore, guest, tmp
        self.docker_empty = os.path.join(tmp, ".docker-empty")
        os.makedirs(self.docker_empty)
        # The user's own ~/.docker/config.json must not leak credentials in.
        self.env = dict(os.environ, SPORE_LOG="info", SPORE_STATE_DIR=os.path.join(tmp, ".state"),
                        SPORE_CACHE_DIR=os.path.join(tmp, "cache"), DOCKER_CONFIG=self.docker_empty)
        self.registries, self.proxies = [], []

    def path(self, *parts):
        return os.path.join(self.tmp, *parts)

    @property
    def cache(self):
        return self.env["SPORE_CACHE_DIR"]

    # -- peers

    def registry(self, auth="none", **kw):
        reg = H.Registry(auth=auth, parent_dir=self.tmp, **kw)
        self.registries.append(reg)
        reg.start()
        return reg

    def proxy(self, reg, auth="none", **kw):
        px = H.Proxy(reg, auth=auth, **kw)
        self.proxies.append(px)
        px.start()
        return px

    def stop_peers(self, keep=False):
        for px in self.proxies:
            px.stop()
        for reg in self.registries:
            reg.stop(keep=keep)

    def describe_peers(self):
        parts = []
        for px in self.proxies:
            parts.append(px.describe(last=40))
        for reg in self.registries:
            parts.append("registry %s (auth %s) log:\n%s" % (reg.url if reg.port else "?", reg.auth,
                                                             indent(reg.log(), 3000)))
        return "\n".join(parts)

    def docker_config(self, host, user, password, name="docker"):
        """A DOCKER_CONFIG directory with Basic credentials for host."""
        d = self.path(".%s-%s" % (name, host.replace(":", "_")))
        os.makedirs(d, exist_ok=True)
        auth = base64.b64encode(("%s:%s" % (user, password)).encode()).decode()
        with open(os.path.join(d, "config.json"), "w") as f:
            json.dump({"auths": {host: {"auth": auth}}}, f)
        return d

    # -- running spore

    def spore(self, *args, timeout=120, expect=None, env=None):
        """Runs spore with a hard timeout (the whole process group is
        killed); with expect set, fails unless spore exited with it."""
        argv = [self.spore_bin] + [str(a) for a in args]
        t0 = time.monotonic()
        p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             env=env or self.env, cwd=self.tmp, start_new_session=True, text=True,
                             errors="replace")
        try:
            out, err = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            out, err = p.communicate()
            r = Result(argv, "timeout", out, err, time.monotonic() - t0)
            raise Fail("timed out after %ds\n%s" % (timeout, r.describe()))
        r = Result(argv, p.returncode, out, err, time.monotonic() - t0)
        print("$ %s  -> %d (%.2fs)" % (" ".join(argv), r.rc, r.secs), flush=True)
        if expect is not None and r.rc != expect:
            raise Fail("expected exit status %d\n%s" % (expect, r.describe()))
        return r


# ---- spore helpers -----------------------------------------------------------

def capture(ctx, name, mem=64, work_mib=None, warm_ms=50):
    """A test-guest spore captured at 'tg: ready' (bench mode)."""
    args = ["mode=bench", "warm_ms=%d" % warm_ms]
    if work_mib is not None:
        args.append("work_mib=%d" % work_mib)
    try:
        return H.capture_spore(ctx.spore_bin, ctx.guest, ctx.path(name), mem=mem, args=args, env=ctx.env)
    except H.HarnessError as e:
        raise Fail(str(e))


def spore_chunks(d):
    """The distinct chunk digests a spore's manifest lists."""
    return {c["digest"] for c in H.read_manifest(d)["memory"]["chunks"]}


def tree(d):
    """{relative path: bytes} of every file under d."""
    res = {}
    for root, _dirs, files in os.walk(d):
        for f in files:
            p = os.path.join(root, f)
            with open(p, "rb") as fh:
                res[os.path.relpath(p, d)] = fh.read()
    return res


def same_spore(want_dir, got_dir):
    """got_dir holds exactly want_dir's files, byte for byte."""
    a, b = tree(want_dir), tree(got_dir)
    missing, extra = sorted(set(a) - set(b)), sorted(set(b) - set(a))
    check(not missing and not extra, "%s vs %s: missing %s, extra %s" % (got_dir, want_dir, missing, extra))
    differ = [p for p in a if a[p] != b[p]]
    check(not differ, "%s: files differ from %s: %s" % (got_dir, want_dir, differ))


def resume_ok(ctx, d):
    r = ctx.spore("resume", d, "--for", "300ms", timeout=120, expect=0)
    check(GEN_RE.search(r.out), "resume of %s printed no 'tg: gen' line\n%s" % (d, r.describe()))
    check(not re.search(r"^tg: (fault|error)|FAIL", r.out, re.M), "guest reported a failure\n%s" % r.describe())


def rmtree(d):
    """rm -rf that also copes with read-only directories."""
    for root, dirs, _files in os.walk(d):
        for x in dirs:
            try:
                os.chmod(os.path.join(root, x), 0o755)
            except OSError:
                pass
    shutil.rmtree(d, ignore_errors=True)


def events(r):
    """The --json output: one JSON object with an "event" per line."""
    evs = []
    for ln in r.out.splitlines():
        if not ln.strip():
            continue
        try:
            e = json.loads(ln)
        except ValueError:
            raise Fail("--json printed a line that is not JSON: %r\n%s" % (ln, r.describe()))
        check(isinstance(e, dict) and isinstance(e.get("event"), str),
              "--json line without an \"event\": %r\n%s" % (ln, r.describe()))
        evs.append(e)
    check(evs, "--json printed nothing\n%s" % r.describe())
    return evs


class Op:
    """A push or pull: its Result, digest, events (--json) and final event."""

    def __init__(self, r, digest, evs=None):
        self.r, self.digest, self.events = r, digest, evs or []
        self.final = self.events[-1] if self.events else {}

    def count(self, kind):
        return sum(1 for e in self.events if e["event"] == kind)


def _op(ctx, verb, args, final_event, json_out, expect, timeout, env):
    r = ctx.spore(*(args + (["--json"] if json_out else [])), timeout=timeout, env=env)
    if expect is not None and r.rc != expect:
        raise Fail("spore %s: expected exit status %d\n%s" % (verb, expect, r.describe()))
    if r.rc != 0:
        return Op(r, None)
    if json_out:
        evs = events(r)
        last = evs[-1]
        check(last["event"] == final_event, "the last --json event is %r, want %r\n%s" %
              (last["event"], final_event, r.describe()))
        dg = last.get("digest")
        check(isinstance(dg, str) and DIGEST_RE.match(dg), "%s event without a digest\n%s" %
              (final_event, r.describe()))
        return Op(r, dg, evs)
    dg = r.last_line()
    check(DIGEST_RE.match(dg), "the last stdout line of spore %s is %r, want sha256:<64 hex>\n%s" %
          (verb, dg, r.describe()))
    return Op(r, dg)


def push(ctx, src, ref, *extra, json_out=False, expect=0, timeout=180, env=None):
    return _op(ctx, "push", ["push", src, ref] + list(extra), "pushed", json_out, expect, timeout, env)


def pull(ctx, ref, out, *extra, json_out=False, expect=0, timeout=180, env=None):
    return _op(ctx, "pull", ["pull", ref, "--out", out] + list(extra), "pulled", json_out, expect, timeout, env)


def spore_error(r, *patterns):
    """The failed command said `spore: <message>` on stderr matching every
    pattern."""
    msgs = [ln for ln in r.err.splitlines() if ln.startswith("spore: ")]
    check(msgs, "no 'spore: <message>' line on stderr\n%s" % r.describe())
    text = "\n".join(msgs)
    for p in patterns:
        check(re.search(p, text), "the error does not match /%s/\n%s" % (p, r.describe()))


# ---- cache checks ------------------------------------------------------------

def check_cache(ctx, where, tmp_empty=True):
    """Every cache entry is a read-only regular 2 MiB file whose sha256 is its
    name; SPORE_CACHE_DIR/tmp is empty. Returns {digest: stat}."""
    entries = {}
    cdir = os.path.join(ctx.cache, "chunks", "sha256")
    if os.path.isdir(cdir):
        for name in os.listdir(cdir):
            p = os.path.join(cdir, name)
            st = os.lstat(p)
            check(re.fullmatch(r"[0-9a-f]{64}", name), "%s: cache holds a stray entry %r" % (where, name))
            check(os.path.isfile(p) and not os.path.islink(p), "%s: cache entry %s is not a regular file" %
                  (where, name))
            check(st.st_size == CHUNK, "%s: cache entry %s is %d bytes" % (where, name, st.st_size))
            check(H.file_digest(p) == "sha256:" + name, "%s: cache entry %s does not hash to its name" %
                  (where, name))
            check(st.st_mode & 0o222 == 0, "%s: cache entry %s is writable (mode %o)" % (where, name, st.st_mode))
            entries["sha256:" + name] = st
    tdir = os.path.join(ctx.cache, "tmp")
    if tmp_empty and os.path.isdir(tdir):
        left = os.listdir(tdir)
        check(not left, "%s: SPORE_CACHE_DIR/tmp is not empty: %s" % (where, left))
    return entries


def check_links(ctx, d, chunks, min_links=2):
    """d's chunk files are hard links of the cache entries."""
    for dg in chunks:
        p = os.path.join(d, "chunks", "sha256", dg[7:])
        c = os.path.join(ctx.cache, "chunks", "sha256", dg[7:])
        check(os.path.isfile(c), "chunk %s is not in the cache %s" % (dg, ctx.cache))
        a, b = os.stat(p), os.stat(c)
        check((a.st_dev, a.st_ino) == (b.st_dev, b.st_ino),
              "%s is not a hard link of the cache entry (inode %d vs %d)" % (p, a.st_ino, b.st_ino))
        check(a.st_nlink >= min_links, "%s has %d links, want >= %d" % (p, a.st_nlink, min_links))


def check_nothing_written(out):
    """A refused pull left neither --out nor a temp sibling of it."""
    check(not os.path.exists(out) or (os.path.isdir(out) and not os.listdir(out)),
          "a refused pull wrote into %s: %s" % (out, os.listdir(out) if os.path.isdir(out) else "a file"))
    parent, base = os.path.split(out)
    left = [e for e in os.listdir(parent) if e != base and base in e and "tmp" in e]
    check(not left, "a refused pull left temporary files next to %s: %s" % (out, left))


def tmp_leftovers(d):
    bad = []
    for root, dirs, files in os.walk(d):
        for x in dirs + files:
            if ".tmp" in x or x.endswith(".part") or x.startswith(".tmp"):
                bad.append(os.path.relpath(os.path.join(root, x), d))
    return bad


def cache_ls(ctx):
    """{digest: (size, links)} from `spore cache ls` (digest size links)."""
    r = ctx.spore("cache", "ls", timeout=60, expect=0)
    res = {}
    for ln in r.out.splitlines():
        f = ln.split()
        if not f:
            continue
        check(len(f) == 3 and DIGEST_RE.match(f[0]) and f[1].isdigit() and f[2].isdigit(),
              "cache ls line %r is not 'digest size links'\n%s" % (ln, r.describe()))
        res[f[0]] = (int(f[1]), int(f[2]))
    return res


# ---- image checks ------------------------------------------------------------

class Image:
    def __init__(self, client, name, ref):
        self.body, self.content_type, self.digest = client.get_manifest(name, ref)
        self.m = json.loads(self.body)
        self.layers = self.m.get("layers", [])
        self.config = self.m.get("config", {})

    def title(self, layer):
        return (layer.get("annotations") or {}).get(H.ANN_TITLE)

    def by_title(self, title):
        ls = [x for x in self.layers if self.title(x) == title]
        return ls[0] if ls else None

    def chunk_layers(self):
        return [x for x in self.layers if H.ANN_CHUNKS in (x.get("annotations") or {})]

    def chunk_table(self):
        """{chunk digest: [(layer digest, offset)]} over all chunk layers."""
        res = {}
        for x in self.chunk_layers():
            for dg, off in H.parse_chunk_table(x["annotations"][H.ANN_CHUNKS]):
                res.setdefault(dg, []).append((x["digest"], off))
        return res


def check_image_shape(c, name, ref, spore_dir):
    """The image `spore push` wrote (oci-artifact/include/oci/image.h):
    artifactType, image config naming the layers, titled uncompressed tar
    layers, spore-meta.tar with the manifest and state files, chunk tables
    whose offsets hold the chunks' bytes."""
    img = Image(c, name, ref)
    m = img.m
    check(m.get("schemaVersion") == 2 and m.get("mediaType") == H.MT_MANIFEST and
          img.content_type == H.MT_MANIFEST, "not an OCI image manifest: %s" % img.body[:300])
    check(m.get("artifactType") == H.SPORE_ARTIFACT_TYPE, "artifactType %r" % m.get("artifactType"))
    check(img.config.get("mediaType") == H.MT_CONFIG, "config mediaType %r" % img.config.get("mediaType"))
    sm = H.file_digest(os.path.join(spore_dir, "spore", "manifest.json"))
    check((m.get("annotations") or {}).get(H.ANN_SPORE_MANIFEST) == sm,
          "manifest annotation %s is %r, want the spore manifest digest %s" %
          (H.ANN_SPORE_MANIFEST, (m.get("annotations") or {}).get(H.ANN_SPORE_MANIFEST), sm))
    titles = [img.title(x) for x in img.layers]
    check(all(titles) and len(set(titles)) == len(titles), "layer titles missing or repeated: %s" % titles)
    check(all(x["mediaType"] == H.MT_LAYER_TAR for x in img.layers),
          "layer media types %s" % [x["mediaType"] for x in img.layers])
    cfg = json.loads(c.get_blob(name, img.config["digest"]))
    check(cfg.get("os") == "linux" and cfg.get("architecture") == "amd64", "config os/arch %s/%s" %
          (cfg.get("os"), cfg.get("architecture")))
    check(cfg.get("rootfs", {}).get("diff_ids") == [x["digest"] for x in img.layers],
          "config rootfs.diff_ids %s are not the layer digests" % cfg.get("rootfs"))
    meta = img.by_title(META_TITLE)
    check(meta is not None, "no layer titled %s: %s" % (META_TITLE, titles))
    ents = {e[0]: e for e in H.tar_entries(c.get_blob(name, meta["digest"]))}
    for rel in ["spore/manifest.json"] + ["spore/" + f for f in os.listdir(os.path.join(spore_dir, "spore"))]:
        with open(os.path.join(spore_dir, rel), "rb") as f:
            want = f.read()
        check(rel in ents and ents[rel][1] == "0" and ents[rel][4] == want,
              "%s: entry %s missing or different (entries %s)" % (META_TITLE, rel, sorted(ents)))
    table = img.chunk_table()
    want = spore_chunks(spore_dir)
    twice = sorted(d for d, where in table.items() if len(where) > 1)
    check(not twice, "a fresh push stores chunks in two layers: %s" % twice[:3])
    check(set(table) == want, "chunk tables list %d chunks, the spore has %d (missing %s, extra %s)" %
          (len(table), len(want), sorted(want - set(table))[:3], sorted(set(table) - want)[:3]))
    for x in img.chunk_layers():
        blob = c.get_blob(name, x["digest"])
        offs = {e[2]: e for e in H.tar_entries(blob)}
        for dg, off in H.parse_chunk_table(x["annotations"][H.ANN_CHUNKS]):
            check(off % 512 == 0, "chunk %s offset %d is not 512-aligned" % (dg, off))
            check(H.sha256_digest(blob[off:off + CHUNK]) == dg,
                  "layer %s bytes at %d do not hash to chunk %s" % (x["digest"], off, dg))
            e = offs.get(off)
            check(e and e[0] == "chunks/sha256/" + dg[7:] and e[3] == CHUNK,
                  "layer %s: the tar entry at %d is %s, want chunks/sha256/%s" %
                  (x["digest"], off, e[:4] if e else None, dg[7:]))
    return img


# ---- round_trip --------------------------------------------------------------

def test_round_trip(ctx):
    reg = ctx.registry()
    px = ctx.proxy(reg)
    c = H.Client(reg.url)
    s = capture(ctx, "S", work_mib=24)
    chunks = spore_chunks(s)
    check(len(chunks) >= 8, "the test spore has only %d chunks" % len(chunks))
    ref = "%s/%s:v1" % (px.host, REPO)

    p = push(ctx, s, ref)
    check(c.get_manifest(REPO, "v1")[2] == p.digest, "spore push printed %s, the tag resolves to %s" %
          (p.digest, c.get_manifest(REPO, "v1")[2]))
    img = check_image_shape(c, REPO, "v1", s)
    # Every layer names where the spore was pushed, under the annotation
    # prefix containerd passes to snapshotters (docs/spore-format.md).
    refs = {(x.get("annotations") or {}).get("containerd.io/snapshot/sporelet.ref") for x in img.layers}
    check(refs == {ref}, "layers' containerd.io/snapshot/sporelet.ref annotations %s, want all %s" % (refs, ref))
    chunk_layers = {x["digest"] for x in img.chunk_layers()}

    out = ctx.path("P")
    q = pull(ctx, ref, out, json_out=True)
    check(q.digest == p.digest, "pulled %s, pushed %s" % (q.digest, p.digest))
    f = q.final
    check(f.get("chunks_fetched") == len(chunks) and f.get("chunks_cached") == 0,
          "pull into an empty cache: %s, want chunks_fetched=%d chunks_cached=0" % (f, len(chunks)))
    check(f.get("bytes_downloaded", 0) >= len(chunks) * CHUNK, "bytes_downloaded %s < %d chunks" %
          (f.get("bytes_downloaded"), len(chunks)))
    same_spore(s, out)
    check_links(ctx, out, chunks, 2)
    check_cache(ctx, "after the first pull")
    check(not tmp_leftovers(out), "temp files in %s: %s" % (out, tmp_leftovers(out)))
    resume_ok(ctx, out)

    # Warm cache: no chunk layer is fetched again.
    px.reset_log()
    out2 = ctx.path("P2")
    q = pull(ctx, ref, out2, "--insecure-registry", json_out=True)
    check(q.final.get("chunks_fetched") == 0 and q.final.get("chunks_cached") == len(chunks),
          "pull with every chunk cached: %s, want chunks_fetched=0 chunks_cached=%d" % (q.final, len(chunks)))
    again = [r for r in px.records(method="GET", path=r"/blobs/sha256:") if r.path.rsplit("/", 1)[1] in chunk_layers]
    check(not again, "a pull with a warm cache fetched chunk layers again: %s" % again)
    same_spore(s, out2)
    check_links(ctx, out2, chunks, 3)

    # By digest, plain output.
    out3 = ctx.path("P3")
    q = pull(ctx, "%s/%s@%s" % (px.host, REPO, p.digest), out3)
    check(q.digest == p.digest, "pull by digest printed %s" % q.digest)
    same_spore(s, out3)

    ls = cache_ls(ctx)
    check(set(ls) == chunks, "cache ls lists %d entries, want the %d chunks" % (len(ls), len(chunks)))
    check(all(sz == CHUNK and links >= 4 for sz, links in ls.values()),
          "cache ls: want size %d and >= 4 links (cache + 3 pulls): %s" % (CHUNK, ls))
    ctx.spore("cache", "verify", timeout=120, expect=0)

    rmtree(out2)
    rmtree(out3)
    ctx.spore("cache", "gc", timeout=60, expect=0)
    check(set(check_cache(ctx, "after gc with P referencing every chunk")) == chunks,
          "cache gc removed entries still linked from %s" % out)
    rmtree(out)
    ctx.spore("cache", "gc", "--max-mib", 4096, timeout=60, expect=0)
    check(set(check_cache(ctx, "after gc --max-mib 4096")) == chunks,
          "cache gc --max-mib 4096 removed entries from a %d MiB cache" % (2 * len(chunks)))
    ctx.spore("cache", "gc", timeout=60, expect=0)
    left = check_cache(ctx, "after the final gc")
    check(not left, "cache gc left %d unreferenced entries" % len(left))


# ---- deltas ------------------------------------------------------------------

def test_deltas(ctx):
    reg = ctx.registry()
    px = ctx.proxy(reg)
    c = H.Client(reg.url)
    parent = capture(ctx, "parent", work_mib=24)
    p = push(ctx, parent, "%s/%s:parent" % (px.host, REPO), json_out=True)
    parent_bytes = px.upload_bytes()
    pimg = Image(c, REPO, "parent")
    parent_chunk_layers = {x["digest"] for x in pimg.chunk_layers()}
    check(parent_chunk_layers, "the parent image has no chunk layer")
    check(p.final.get("bytes_uploaded") == parent_bytes,
          "parent push: bytes_uploaded %s, the registry received %d" % (p.final.get("bytes_uploaded"), parent_bytes))
    print("  parent: %d blobs, %d bytes uploaded" % (len(px.uploads()), parent_bytes), flush=True)

    kids = H.fork_spore(ctx.spore_bin, parent, 10, ctx.path("kids"), env=ctx.env)
    total = 0
    for i, kid in enumerate(kids, start=1):
        px.reset_log()
        tag = "child-%02d" % i
        k = push(ctx, kid, "%s/%s:%s" % (px.host, REPO, tag), json_out=True)
        img = Image(c, REPO, tag)
        check(img.digest == k.digest, "%s: pushed %s, tag resolves to %s" % (tag, k.digest, img.digest))
        meta = img.by_title(META_TITLE)
        check(meta is not None, "%s has no %s layer" % (tag, META_TITLE))
        want = {img.config["digest"], meta["digest"]}
        got = [d for d, _r in px.uploads()]
        check(sorted(got) == sorted(want),
              "%s: uploaded %s, want only its meta layer and config %s\n%s" % (tag, got, sorted(want), px.describe()))
        ckl = {x["digest"] for x in img.chunk_layers()}
        check(ckl and ckl <= parent_chunk_layers,
              "%s: chunk layers %s are not the parent's %s" % (tag, sorted(ckl), sorted(parent_chunk_layers)))
        sent = px.upload_bytes()
        size = img.config["size"] + meta["size"]
        check(sent == size, "%s: %d bytes went to upload endpoints, want %d (config + meta)" % (tag, sent, size))
        f = k.final
        check(f.get("blobs_uploaded") == 2 and f.get("bytes_uploaded") == size and
              f.get("blobs_skipped", 0) >= len(ckl),
              "%s: pushed event %s, want blobs_uploaded=2 bytes_uploaded=%d blobs_skipped>=%d" %
              (tag, f, size, len(ckl)))
        total += sent
    print("  10 children uploaded %d bytes in all, the parent %d" % (total, parent_bytes), flush=True)
    check(total * 10 < parent_bytes, "the 10 children uploaded %d bytes, not far below the parent's %d" %
          (total, parent_bytes))

    # A child pulled after its parent reuses every cached chunk.
    pull(ctx, "%s/%s:parent" % (px.host, REPO), ctx.path("P"))
    out = ctx.path("C3")
    q = pull(ctx, "%s/%s:child-03" % (px.host, REPO), out, json_out=True)
    check(q.final.get("chunks_fetched") == 0, "child pulled after its parent fetched chunks: %s" % q.final)
    same_spore(kids[2], out)
    resume_ok(ctx, out)


# ---- lazy_chunk --------------------------------------------------------------

def test_lazy_chunk(ctx):
    reg = ctx.registry()
    px = ctx.proxy(reg)
    c = H.Client(reg.url)
    s = capture(ctx, "S", mem=128, work_mib=48)
    chunks = spore_chunks(s)
    ref = "%s/%s:v1" % (px.host, REPO)
    push(ctx, s, ref, "--layer-mib", 16)
    img = Image(c, REPO, "v1")
    layers = img.chunk_layers()
    check(len(layers) >= 3, "--layer-mib 16 with %d chunks gave %d chunk layers" % (len(chunks), len(layers)))
    for x in layers:
        check(x["size"] <= (16 << 20) + 64 * 1024, "layer %s is %d bytes with --layer-mib 16" %
              (x["digest"], x["size"]))
    table = img.chunk_table()
    check(set(table) == chunks, "chunk tables cover %d of %d chunks" % (len(set(table) & chunks), len(chunks)))
    # The table itself, independently of spore: bytes at each offset hash to the chunk.
    for x in layers:
        blob = c.get_blob(REPO, x["digest"])
        for dg, off in H.parse_chunk_table(x["annotations"][H.ANN_CHUNKS]):
            check(H.sha256_digest(blob[off:off + CHUNK]) == dg, "layer %s at %d is not chunk %s" %
                  (x["digest"], off, dg))
    layer_digests = {x["digest"] for x in layers}
    picks = []
    for x in (layers[0], layers[len(layers) // 2], layers[-1]):
        t = H.parse_chunk_table(x["annotations"][H.ANN_CHUNKS])
        dg, off = t[0] if x is layers[0] else t[-1] if x is layers[-1] else t[len(t) // 2]
        picks.append((dg, x["digest"], off))

    for dg, layer, off in picks:
        px.reset_log()
        r = ctx.spore("cache", "fetch", ref, dg, timeout=60, expect=0)
        m = FETCH_RE.match(r.last_line())
        check(m, "cache fetch printed %r, want 'layer=sha256:<hex> offset=<n> size=<n>'\n%s" %
              (r.last_line(), r.describe()))
        check((m.group(1), int(m.group(2)), int(m.group(3))) == (layer, off, CHUNK),
              "cache fetch %s: %s, the chunk table says layer=%s offset=%d size=%d" % (dg, r.last_line(), layer,
                                                                                      off, CHUNK))
        rg = px.range_gets()
        check(len(rg) == 1, "cache fetch %s made %d Range GETs, want 1\n%s" % (dg, len(rg), px.describe()))
        g = rg[0]
        check(g.path == "/v2/%s/blobs/%s" % (REPO, layer) and g.range == "bytes=%d-%d" % (off, off + CHUNK - 1)
              and g.status == 206, "cache fetch %s: Range GET %r, want %s bytes=%d-%d -> 206" %
              (dg, g, layer, off, off + CHUNK - 1))
        whole = [x for x in px.records(method="GET", path=r"/blobs/sha256:")
                 if not x.range and x.path.rsplit("/", 1)[1] in layer_digests]
        check(not whole, "cache fetch downloaded whole layers: %s" % whole)
        p = os.path.join(ctx.cache, "chunks", "sha256", dg[7:])
        check(os.path.isfile(p) and H.file_digest(p) == dg, "cache fetch %s: %s missing or wrong" % (dg, p))
    got = check_cache(ctx, "after cache fetch")
    check(set(got) == {x[0] for x in picks}, "the cache holds %s, want exactly the %d fetched chunks" %
          (sorted(got), len(picks)))

    # A pull then fetches only what is missing.
    q = pull(ctx, ref, ctx.path("P"), json_out=True)
    check(q.final.get("chunks_cached") == len(picks) and q.final.get("chunks_fetched") == len(chunks) - len(picks),
          "pull after 3 lazy fetches: %s, want chunks_cached=3 chunks_fetched=%d" % (q.final, len(chunks) - 3))
    same_spore(s, ctx.path("P"))

    # --max-layers with --layer-mib: a bound that 24 MiB layers can meet...
    need = -(-len(chunks) // (24 // 2 - 1)) + 1  # chunk layers of <= 11 chunks, plus the meta layer
    push(ctx, s, "%s/%s:few" % (px.host, REPO), "--layer-mib", 24, "--max-layers", need)
    few = Image(c, REPO, "few")
    check(len(few.layers) <= need, "--max-layers %d gave %d layers" % (need, len(few.layers)))
    check(set(few.chunk_table()) == chunks, "--max-layers %d: the chunk tables lost chunks" % need)
    q = pull(ctx, "%s/%s:few" % (px.host, REPO), ctx.path("F"))
    same_spore(s, ctx.path("F"))
    # ... and one 4 MiB layers cannot: refused before anything is uploaded.
    px.reset_log()
    r = push(ctx, s, "%s/%s:cannot" % (px.host, REPO), "--layer-mib", 4, "--max-layers", 4,
             expect=EXIT_SPORE_FAILED).r
    spore_error(r, r"(?i)layers")
    check(not px.records(method="POST"), "a refused push uploaded blobs: %s" % px.records(method="POST"))


# ---- oras_compat -------------------------------------------------------------

def test_oras_compat(ctx):
    reg = ctx.registry()
    px = ctx.proxy(reg)
    c = H.Client(reg.url)
    s = capture(ctx, "S", work_mib=16)
    chunks = spore_chunks(s)

    # oras push shape (empty config, one raw file per titled layer) -> spore pull.
    for tag, mt in (("oras", H.MT_LAYER_TAR), ("oras-mt", H.MT_SPORE_FILE)):
        dg, _body = H.oras_push(c, REPO, tag, s, layer_media_type=mt)
        out = ctx.path("P-" + tag)
        q = pull(ctx, "%s/%s:%s" % (px.host, REPO, tag), out, json_out=True)
        check(q.digest == dg, "pulled %s, oras pushed %s" % (q.digest, dg))
        same_spore(s, out)
        check_links(ctx, out, chunks, 2)
        check_cache(ctx, "after pulling the oras-shaped image")
        resume_ok(ctx, out)

    # spore push -> oras pull: titled tar layers that untar to the spore.
    p = push(ctx, s, "%s/%s:v1" % (px.host, REPO))
    o = ctx.path("O")
    titles = H.oras_pull(c, REPO, p.digest, o)
    img = Image(c, REPO, p.digest)
    check(len(titles) == len(img.layers), "oras pull wrote %d of %d layers (untitled layers are skipped): %s" %
          (len(titles), len(img.layers), titles))
    check(META_TITLE in titles, "no %s among the oras-pulled files %s" % (META_TITLE, titles))
    x = ctx.path("X")
    os.mkdir(x)
    for t in titles:
        with open(os.path.join(o, t), "rb") as f:
            ents = H.tar_entries(f.read())
        check(ents, "oras-pulled %s is not a tar" % t)
        for name, typ, _off, _size, data in ents:
            check(typ in ("0", "5") and H.safe_title(name), "%s: unexpected entry %s type %s" % (t, name, typ))
            if typ == "0":
                dst = os.path.join(x, name)
                check(not os.path.exists(dst), "%s: %s appears in two layers" % (t, name))
                os.makedirs(os.path.dirname(dst), exist_ok=True)
                with open(dst, "wb") as f:
                    f.write(data)
    with open(os.path.join(o, META_TITLE), "rb") as f:
        meta = {e[0]: e[4] for e in H.tar_entries(f.read())}
    with open(os.path.join(s, "spore", "manifest.json"), "rb") as f:
        check(meta.get("spore/manifest.json") == f.read(), "%s has no spore/manifest.json equal to the spore's" %
              META_TITLE)
    same_spore(s, x)
    resume_ok(ctx, x)


# ---- auth --------------------------------------------------------------------

AUTH_ERR = r"(?i)401|unauthori[sz]ed|authenticat|credential|denied"


def test_auth_basic(ctx):
    if not os.access(H.HTPASSWD_BIN, os.X_OK):
        raise Skip("%s is not installed (Debian package apache2-utils)" % H.HTPASSWD_BIN)
    reg = ctx.registry(auth="basic", user="sporelet", password="s3cret-pw")
    s = capture(ctx, "S", work_mib=8)
    ref = "%s/%s:v1" % (reg.host, REPO)
    r = push(ctx, s, ref, expect=EXIT_SPORE_FAILED).r
    spore_error(r, AUTH_ERR)
    wrong = dict(ctx.env, DOCKER_CONFIG=ctx.docker_config(reg.host, "sporelet", "wrong", name="wrong"))
    r = push(ctx, s, ref, expect=EXIT_SPORE_FAILED, env=wrong).r
    spore_error(r, AUTH_ERR)
    ctx.env["DOCKER_CONFIG"] = ctx.docker_config(reg.host, "sporelet", "s3cret-pw")
    p = push(ctx, s, ref)
    out = ctx.path("P")
    q = pull(ctx, ref, out)
    check(q.digest == p.digest, "pulled %s, pushed %s" % (q.digest, p.digest))
    same_spore(s, out)
    # Pulling needs credentials too.
    r = pull(ctx, ref, ctx.path("P-anon"), expect=EXIT_SPORE_FAILED, env=dict(ctx.env, DOCKER_CONFIG=ctx.docker_empty)).r
    spore_error(r, AUTH_ERR)
    check_nothing_written(ctx.path("P-anon"))
    resume_ok(ctx, out)


def test_auth_bearer(ctx):
    reg = ctx.registry()
    px = ctx.proxy(reg, auth="bearer", user="sporelet", password="hunter2")
    c = H.Client(reg.url)
    s = capture(ctx, "S", work_mib=8)
    ref = "%s/%s:v1" % (px.host, REPO)
    r = push(ctx, s, ref, expect=EXIT_SPORE_FAILED).r
    spore_error(r, AUTH_ERR)
    check(not px.records(method="PUT", path=r"/manifests/", status=201), "a push without credentials got in")

    ctx.env["DOCKER_CONFIG"] = ctx.docker_config(px.host, "sporelet", "hunter2")
    px.reset_log()
    p = push(ctx, s, ref)
    toks = px.tokens_issued()
    check(toks, "push with credentials fetched no token")
    check(any(("repository:%s:" % REPO) in sc and "push" in sc.split(":")[-1] for t in toks for sc in t[1]),
          "no token request asked for push on %s: %s" % (REPO, [t[1] for t in toks]))
    check(all(t[2] == "sporelet-test" for t in toks), "token requests without service=sporelet-test: %s" %
          [t[2] for t in toks])
    out = ctx.path("P")
    q = pull(ctx, ref, out)
    check(q.digest == p.digest == c.get_manifest(REPO, "v1")[2], "digests differ: push %s pull %s" %
          (p.digest, q.digest))
    same_spore(s, out)

    # Tokens that live 1 s, uploads slowed past that: the client must take a
    # new token when one is refused (expires_in below 60 counts as 60).
    s2 = capture(ctx, "S2", work_mib=8)
    px.set_token_lifetime(1.0)
    px.reset_log()
    px.add_fault("delay", method="PUT", path=r"/blobs/uploads/", seconds=1.5)
    p2 = push(ctx, s2, "%s/%s:v2" % (px.host, REPO), timeout=240)
    issued = len(px.tokens_issued())
    expired = [x for x in px.auth_rejections if x[0] == "expired"]
    print("  slow push: %d tokens issued, %d requests refused with an expired token" % (issued, len(expired)))
    check(issued >= 2, "a push that outlived its 1 s token fetched only %d token(s)\n%s" % (issued, px.describe()))
    check(c.get_manifest(REPO, "v2")[2] == p2.digest, "slow push did not land")
    px.clear_faults()
    px.reset_log()
    px.add_fault("delay", method="GET", path=r"/blobs/sha256:", seconds=1.2)
    out2 = ctx.path("P2")
    pull(ctx, "%s/%s:v2" % (px.host, REPO), out2, "--parallel", 1, timeout=240)
    issued = len(px.tokens_issued())
    check(issued >= 2, "a slow pull with 1 s tokens fetched only %d token(s)\n%s" % (issued, px.describe()))
    same_spore(s2, out2)
    px.clear_faults()
    px.set_token_lifetime(60)
    resume_ok(ctx, out2)


# ---- faults ------------------------------------------------------------------

def retried(px, what):
    """Every faulted request was asked again and then answered: the same
    request (method, path and range; for an upload PUT, which may start a
    new upload session: the digest it completes) reappears after it,
    unfaulted, without a 5xx or 429. Pull promises no retry events, so the
    log is the evidence."""
    def key(r):
        if r.method == "PUT" and "/blobs/uploads/" in r.path:
            return ("upload", r.param("digest"))
        if r.method == "POST" and r.path.endswith("/blobs/uploads/"):
            return ("post", r.path)
        return (r.method, r.path, r.range)
    recs = px.records()
    for i, r in enumerate(recs):
        if not r.fault or r.fault in ("delay", "throttle"):
            continue
        ok = any(key(x) == key(r) and x.status and x.status < 500 and x.status != 429 and not x.fault
                 for x in recs[i + 1:])
        check(ok, "%s: %r was never retried successfully\n%s" % (what, r, px.describe()))


def test_faults(ctx):
    reg = ctx.registry()
    px = ctx.proxy(reg)
    c = H.Client(reg.url)
    s = capture(ctx, "S", work_mib=16)
    ref = "%s/%s:v1" % (px.host, REPO)
    n = [0]

    def fresh_cache(case):
        n[0] += 1
        ctx.env["SPORE_CACHE_DIR"] = ctx.path("cache-%02d-%s" % (n[0], case))
        return ctx.path("out-%02d-%s" % (n[0], case))

    def after(case):
        px.clear_faults()
        px.reset_log()
        check_cache(ctx, case)
        ctx.spore("cache", "verify", timeout=120, expect=0)
        check_cache(ctx, case + " (after cache verify)")

    # 1. Push: 5xx and 429 on the first requests of each kind.
    fs = [px.add_fault("status", method="HEAD", path=r"/blobs/sha256:", count=2, status=502),
          px.add_fault("status", method="POST", path=r"/blobs/uploads/$", count=2, status=503),
          px.add_fault("status", method="PUT", path=r"/blobs/uploads/.", count=2, status=500),
          px.add_fault("status", method="PUT", path=r"/manifests/", count=2, status=429)]
    p = push(ctx, s, ref, json_out=True)
    check(all(f.remaining == 0 for f in fs), "push did not meet every fault: %s" % fs)
    check(p.count("retry") >= 1, "push --json reported no retry event\n%s" % p.r.describe())
    check(c.get_manifest(REPO, "v1")[2] == p.digest, "the push with retries did not land")
    retried(px, "push with 5xx/429")
    px.clear_faults()
    px.reset_log()

    # 2. Pull: 503 on manifests, 429 and 500 on blobs.
    out = fresh_cache("status")
    fs = [px.add_fault("status", method="GET", path=r"/manifests/", count=2, status=503),
          px.add_fault("status", method="GET", path=r"/blobs/sha256:", count=2, status=429),
          px.add_fault("status", method="GET", path=r"/blobs/sha256:", count=2, status=500)]
    pull(ctx, ref, out, json_out=True)
    check(all(f.remaining == 0 for f in fs), "pull did not meet every fault: %s" % fs)
    retried(px, "pull with 5xx/429")
    same_spore(s, out)
    after("pull with 5xx/429")

    # 3. Truncated blob bodies, then 4. flipped bytes: retried, never cached.
    for kind in ("truncate", "corrupt"):
        out = fresh_cache(kind)
        f = px.add_fault(kind, method="GET", path=r"/blobs/sha256:", count=3)
        pull(ctx, ref, out, json_out=True)
        check(f.remaining == 0, "pull met only %d of 3 %s faults" % (f.hits, kind))
        retried(px, "pull over %s bodies" % kind)
        same_spore(s, out)
        after("pull with %s bodies" % kind)

    img = Image(c, REPO, "v1")
    chunk_layers = [x["digest"] for x in img.chunk_layers()]
    # 5. Every chunk-layer GET corrupted: the pull fails, nothing bad is cached.
    out = fresh_cache("corrupt-all")
    px.add_fault("corrupt", method="GET", path="|".join(re.escape(d) for d in chunk_layers))
    r = pull(ctx, ref, out, expect=EXIT_SPORE_FAILED).r
    spore_error(r, r"(?i)digest|mismatch|integrity|sha256")
    check_nothing_written(out)
    after("pull with every chunk corrupted")

    # 6. A tag whose manifest comes with a wrong Docker-Content-Digest (on
    # HEAD and GET, by tag or digest).
    out = fresh_cache("dcd")
    px.add_fault("digest", path=r"/manifests/")
    r = pull(ctx, ref, out, expect=EXIT_SPORE_FAILED).r
    spore_error(r, r"(?i)digest|sha256")
    check_nothing_written(out)
    after("wrong Docker-Content-Digest")

    # 7. A by-digest GET answered with another (valid) manifest, with a
    # matching Docker-Content-Digest and with none.
    s2 = capture(ctx, "S2", work_mib=4)
    p2 = push(ctx, s2, "%s/%s:other" % (px.host, REPO))
    other = c.get_manifest(REPO, p2.digest)[0]
    for fix in (True, None):
        out = fresh_cache("swap-%s" % fix)
        px.add_fault("body", path=r"/manifests/%s$" % re.escape(p.digest), value=other, fix_digest=fix)
        r = pull(ctx, "%s/%s@%s" % (px.host, REPO, p.digest), out, expect=EXIT_SPORE_FAILED).r
        spore_error(r, r"(?i)digest")
        check_nothing_written(out)
        after("by-digest manifest swapped (Docker-Content-Digest %s)" % ("matching" if fix else "absent"))


# ---- kill_resume -------------------------------------------------------------

def test_kill_resume(ctx):
    reg = ctx.registry()
    px = ctx.proxy(reg)
    s = capture(ctx, "S", mem=128, work_mib=64)
    chunks = spore_chunks(s)
    ref = "%s/%s:v1" % (px.host, REPO)
    push(ctx, s, ref)
    total = len(chunks) * CHUNK
    px.reset_log()
    px.add_fault("throttle", method="GET", path=r"/blobs/sha256:", rate=4 << 20)
    out = ctx.path("P")
    argv = [ctx.spore_bin, "pull", ref, "--out", out, "--parallel", "2"]
    t0 = time.monotonic()
    with open(ctx.path(".pull-killed.err"), "w") as e:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=e, env=ctx.env,
                                cwd=ctx.tmp, start_new_session=True)
    killed_at = None
    try:
        while time.monotonic() - t0 < 60:
            if proc.poll() is not None:
                break
            if px.body_bytes_sent >= 6 << 20:
                killed_at = px.body_bytes_sent
                os.killpg(proc.pid, signal.SIGKILL)
                break
            time.sleep(0.02)
    finally:
        if proc.poll() is None and killed_at is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    with open(ctx.path(".pull-killed.err")) as e:
        err = e.read()
    check(killed_at is not None, "the throttled pull %s before it was killed (exit %s, %d bytes sent)\n%s" %
          ("ended" if proc.returncode is not None else "did not start", proc.returncode, px.body_bytes_sent,
           indent(err)))
    print("  killed the pull after %.1fs, %d of %d chunk bytes sent" % (time.monotonic() - t0, killed_at, total),
          flush=True)
    check(killed_at < total, "the pull had everything before it was killed")
    check_cache(ctx, "right after the kill", tmp_empty=False)
    px.clear_faults()

    q = pull(ctx, ref, out, json_out=True)
    same_spore(s, out)
    check_cache(ctx, "after the re-run")
    ctx.spore("cache", "verify", timeout=120, expect=0)
    check(len(check_cache(ctx, "after cache verify")) == len(chunks), "cache verify dropped good entries")
    check_links(ctx, out, chunks, 2)
    left = tmp_leftovers(out)
    check(not left, "temp leftovers in %s after the re-run: %s" % (out, left))
    # The killed pull's own temp directory (next to --out) is gone too.
    sib = [e for e in os.listdir(ctx.tmp) if e != "P" and (e.startswith("P.") or e.startswith(".P"))]
    check(not sib, "the killed pull's leftovers next to %s survived the re-run: %s" % (out, sib))
    print("  re-run: %s" % q.final)
    resume_ok(ctx, out)


# ---- bad_input ---------------------------------------------------------------

def test_bad_input(ctx):
    reg = ctx.registry()
    px = ctx.proxy(reg)
    c = H.Client(reg.url)
    s = capture(ctx, "S", work_mib=4)
    good = push(ctx, s, "%s/%s:good" % (px.host, REPO))
    gimg = Image(c, REPO, "good")
    meta_layer = gimg.by_title(META_TITLE)
    check(meta_layer is not None, "spore push wrote no %s layer" % META_TITLE)
    meta_entries = [{"name": n, "type": t, "data": d} for n, t, _o, _s, d in
                    H.tar_entries(c.get_blob(REPO, meta_layer["digest"]))]
    cases = []  # (name, ref, [regexes], paths that must not appear)

    def tagref(tag):
        return "%s/%s:%s" % (px.host, REPO, tag)

    # Malformed manifest JSON (the registry would refuse it: the proxy serves it,
    # with a Docker-Content-Digest that matches the bytes).
    gbody = gimg.body
    cases.append(("json-cut", "json-cut", [r"(?i)manifest", r"(?i)json|pars|invalid|malformed|truncat"], [],
                  gbody[:len(gbody) // 2]))
    cases.append(("json-garbage", "json-garbage", [r"(?i)manifest", r"(?i)json|pars|invalid|malformed"], [],
                  b"this is not JSON\n"))

    # oras shape with unsafe titles.
    for i, title in enumerate(("../evil-rel", ctx.path("evil-abs"), "spore/../../evil-mid")):
        H.oras_push(c, REPO, "trav-%d" % i, s, extra_layers=[(H.MT_LAYER_TAR, b"evil\n", title)])
        cases.append(("title %s" % title, "trav-%d" % i, [re.escape(title)],
                      [ctx.path("evil-rel"), ctx.path("evil-abs"), ctx.path("evil-mid")], None))

    # spore push shape: the meta tar with a symlink entry, with a ../ entry.
    evil = H.build_tar(meta_entries + [{"name": "spore/evil-link", "type": "2", "linkname": "/etc/passwd"}])
    H.rebuild_image(c, REPO, "good", "tar-symlink", {META_TITLE: evil})
    cases.append(("tar symlink entry", "tar-symlink", [r"spore/evil-link", r"(?i)link|type"], [], None))
    evil = H.build_tar(meta_entries + [{"name": "../evil-tar", "data": b"evil\n"}])
    H.rebuild_image(c, REPO, "good", "tar-dotdot", {META_TITLE: evil})
    cases.append(("tar ../ entry", "tar-dotdot", [r"\.\./evil-tar"], [ctx.path("evil-tar")], None))

    # A chunk table pointing past the end of its layer.
    def past_end(m):
        x = [layer for layer in m["layers"] if H.ANN_CHUNKS in (layer.get("annotations") or {})][0]
        t = H.parse_chunk_table(x["annotations"][H.ANN_CHUNKS])
        t[0] = (t[0][0], (x["size"] + 4095) // 512 * 512)
        x["annotations"][H.ANN_CHUNKS] = ",".join("%s@%d" % (d[7:], o) for d, o in t)
    H.rebuild_image(c, REPO, "good", "table-past-end", mutate=past_end)
    cases.append(("chunk table past the layer's end", "table-past-end", [r"(?i)chunk"], [], None))

    failures = []
    for i, (name, tag, patterns, forbidden, body) in enumerate(cases):
        out = ctx.path("out-%02d" % i)
        px.clear_faults()
        if body is not None:
            # Every manifest request (HEAD, GET by tag or digest) gets the bad
            # bytes, whatever order the client asks in.
            px.add_fault("body", path=r"/manifests/", value=body)
            ref = tagref("good")
        else:
            ref = tagref(tag)
        r = ctx.spore("pull", ref, "--out", out, timeout=120)
        try:
            check(r.rc == EXIT_SPORE_FAILED, "want exit status %d" % EXIT_SPORE_FAILED)
            spore_error(r, *patterns)
            check_nothing_written(out)
            for f in forbidden:
                check(not os.path.lexists(f), "the pull wrote %s" % f)
            check_cache(ctx, name)
        except Fail as e:
            failures.append("case %s: %s\n%s" % (name, e, r.describe()))
    px.clear_faults()
    check(not failures, "%d of %d cases failed:\n\n%s" % (len(failures), len(cases), "\n\n".join(failures)))
    # The good image still pulls after all that.
    q = pull(ctx, tagref("good"), ctx.path("P"))
    check(q.digest == good.digest, "good image pulled as %s" % q.digest)
    same_spore(s, ctx.path("P"))


class Skip(Exception):
    pass


def run_on_tty(ctx, argv, timeout=120):
    """Runs argv with stderr on a pseudo-terminal; returns (status, stdout, what the terminal showed)."""
    import pty
    import select
    master, slave = pty.openpty()
    p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=slave, env=ctx.env,
                         cwd=ctx.tmp, start_new_session=True)
    os.close(slave)
    shown = b""
    deadline = time.monotonic() + timeout
    while True:
        r, _, _ = select.select([master], [], [], 0.2)
        if r:
            try:
                b = os.read(master, 65536)
            except OSError:  # EIO: the other side is closed
                b = b""
            if not b and p.poll() is not None:
                break
            shown += b
        elif p.poll() is not None:
            break
        if time.monotonic() > deadline:
            os.killpg(p.pid, signal.SIGKILL)
            raise Fail("timed out on a terminal: %s" % " ".join(argv))
    out = p.stdout.read().decode(errors="replace")
    p.wait()
    os.close(master)
    return p.returncode, out, shown.decode(errors="replace")


def test_progress(ctx):
    """On a terminal, push and pull draw progress on stderr (per transfer and
    in total: bytes, rate, ETA); with --json they print only JSON lines; and
    otherwise (stderr not a terminal) only the digest on stdout."""
    reg = ctx.registry()
    s = capture(ctx, "S", work_mib=24)
    ref = "%s/%s:tty" % (reg.host, REPO)
    rc, out, shown = run_on_tty(ctx, [ctx.spore_bin, "push", s, ref])
    check(rc == 0, "push on a terminal exited %d:\n%s" % (rc, shown))
    check(re.search(r"push: \d+/\d+ blobs\s+[\d.]+ / [\d.]+ MiB\s+[\d.]+ MiB/s", shown),
          "push drew no total progress line on the terminal:\n%r" % shown[-2000:])
    check(re.fullmatch(r"sha256:[0-9a-f]{64}\n", out), "push stdout on a terminal: %r" % out)
    rc, out, shown = run_on_tty(ctx, [ctx.spore_bin, "pull", ref, "--out", ctx.path("P")])
    check(rc == 0, "pull on a terminal exited %d:\n%s" % (rc, shown))
    check(re.search(r"pull: \d+/\d+ blobs", shown) and "MiB/s" in shown,
          "pull drew no progress on the terminal:\n%r" % shown[-2000:])
    check(re.search(r"^  [0-9a-f]{12}\s+[\d.]+ /\s+[\d.]+ MiB", shown, re.M) or "ETA" in shown or
          re.search(r"[0-9a-f]{12}", shown), "no per-transfer line on the terminal:\n%r" % shown[-2000:])
    # Not a terminal: quiet (no progress), just the digest.
    r = ctx.spore("pull", ref, "--out", ctx.path("Q"), expect=0)
    check("MiB/s" not in r.err and re.fullmatch(r"sha256:[0-9a-f]{64}\n", r.out),
          "pull without a terminal must be quiet but for the digest:\nstdout %r\nstderr %r" % (r.out, r.err))


def test_offline(ctx):
    """A pinned pull while the registry is unreachable: from the node
    cache's copy of the image's metadata when every chunk is cached; a clear
    error, and nothing left, when something is missing or was tampered
    with; never for a tag, another repository, or the registry's own no."""
    reg = ctx.registry()
    px = ctx.proxy(reg)
    s = capture(ctx, "S", mem=64)
    ref = "%s/%s:v1" % (px.host, REPO)
    dg = push(ctx, s, ref).digest
    host = px.host
    pinned = "%s/%s@%s" % (host, REPO, dg)
    pull(ctx, ref, ctx.path("P1"))
    rec = os.path.join(ctx.cache, "images", "pinned", dg[7:])
    check(os.path.isfile(os.path.join(rec, "image.json")) and os.path.isfile(os.path.join(rec, "spore",
                                                                                          "manifest.json")),
          "no record of the pulled image under %s" % rec)

    # The registry answers 404 for an unknown digest: its word, no fallback.
    other = "%s/%s@sha256:%s" % (px.host, REPO, "0" * 64)
    r = pull(ctx, other, ctx.path("X404"), expect=None)
    check(r.r.rc != 0 and not os.path.exists(ctx.path("X404")), "a pull of an unknown digest: %s" % r.r.describe())

    px.stop()  # the registry is now unreachable at px.host
    q = pull(ctx, pinned, ctx.path("P2"), json_out=True)
    same_spore(s, ctx.path("P2"))
    check(q.final.get("chunks_fetched") == 0, "offline pull fetched chunks: %s" % q.final)
    check("registry unreachable" in q.r.err, "no log line says the cache's copy was used:\n%s" % q.r.describe())
    resume_ok(ctx, ctx.path("P2"))

    r = pull(ctx, ref, ctx.path("X1"), expect=None)
    check(r.r.rc != 0 and not os.path.exists(ctx.path("X1")), "a pull by tag with the registry gone: %s" %
          r.r.describe())
    spore_error(r.r, re.escape(host))
    r = pull(ctx, "%s/elsewhere/repo@%s" % (host, dg), ctx.path("X2"), expect=None)
    check(r.r.rc != 0 and not os.path.exists(ctx.path("X2")),
          "another repository's pull used this one's record: %s" % r.r.describe())

    # A tampered state file in the record: refused, nothing written.
    vm = os.path.join(rec, "spore", "vm.state")
    good = open(vm, "rb").read()
    os.chmod(vm, 0o600)
    with open(vm, "r+b") as f:
        f.seek(16)
        f.write(bytes([good[16] ^ 0xFF]))
    r = pull(ctx, pinned, ctx.path("X3"), expect=None)
    check(r.r.rc != 0 and not os.path.exists(ctx.path("X3")), "a tampered record was used: %s" % r.r.describe())
    spore_error(r.r, "vm.state does not match")
    with open(vm, "wb") as f:
        f.write(good)

    # A chunk gone from the cache: the pull cannot finish offline.
    cdir = os.path.join(ctx.cache, "chunks", "sha256")
    victim = sorted(os.listdir(cdir))[0]
    os.unlink(os.path.join(cdir, victim))
    r = pull(ctx, pinned, ctx.path("X4"), expect=None)
    check(r.r.rc != 0 and not os.path.exists(ctx.path("X4")), "offline pull without a chunk: %s" % r.r.describe())
    spore_error(r.r, "registry is unreachable and not every chunk is in the node cache")
    left = [n for n in os.listdir(ctx.tmp) if ".tmp." in n]
    check(not left, "half-made pulls left: %s" % left)


TESTS = {
    "offline": test_offline,
    "round_trip": test_round_trip,
    "deltas": test_deltas,
    "lazy_chunk": test_lazy_chunk,
    "oras_compat": test_oras_compat,
    "auth_basic": test_auth_basic,
    "auth_bearer": test_auth_bearer,
    "faults": test_faults,
    "kill_resume": test_kill_resume,
    "bad_input": test_bad_input,
    "progress": test_progress,
}


def kvm_usable():
    if not os.path.exists("/dev/kvm"):
        return "/dev/kvm does not exist"
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return "/dev/kvm is not readable and writable by uid %d" % os.getuid()
    try:
        os.close(os.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC))
    except OSError as e:
        return "cannot open /dev/kvm: %s" % e
    return None


def main(argv):
    if len(argv) != 4 or argv[1] not in TESTS:
        print("usage: %s {%s} SPORE TESTGUEST_ELF" % (argv[0], ",".join(TESTS)), file=sys.stderr)
        return 2
    name, spore, guest = argv[1], os.path.abspath(argv[2]), os.path.abspath(argv[3])
    why = kvm_usable() or H.registry_tools_missing()
    if why:
        print("SKIP registry-%s: %s" % (name, why))
        return SKIP
    for p in (spore, guest):
        if not os.path.isfile(p):
            print("FAIL registry-%s: %s does not exist (build it first)" % (name, p))
            return 1
    tmp = tempfile.mkdtemp(prefix="spore-registry-%s-" % name)
    t0 = time.monotonic()
    ok = False
    keep = bool(os.environ.get("SPORE_TEST_KEEP"))
    ctx = Ctx(spore, guest, tmp)
    try:
        TESTS[name](ctx)
        ok = True
        print("PASS registry-%s (%.1fs)" % (name, time.monotonic() - t0))
        return 0
    except Skip as e:
        ok = True
        print("SKIP registry-%s: %s" % (name, e))
        return SKIP
    except (Fail, H.HarnessError) as e:
        print("FAIL registry-%s: %s" % (name, e))
        print("peers:\n%s" % ctx.describe_peers())
        return 1
    except Exception:  # a bug in the test or an answer it did not expect
        import traceback
        print("FAIL registry-%s: unexpected exception\n%s" % (name, traceback.format_exc()))
        print("peers:\n%s" % ctx.describe_peers())
        return 1
    finally:
        ctx.stop_peers(keep=keep and not ok)
        if ok or not keep:
            rmtree(tmp)
        else:
            print("kept %s" % tmp)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
