#!/usr/bin/env python3
"""kvm-tier tests of the spore CLI against the test guest (docs/testguest.md).

usage: spore_tests.py NAME SPORE_BINARY TESTGUEST_ELF

Each test boots testguest.elf under `spore`, captures, resumes and forks it,
and asserts on the guest's serial lines, spore's exit statuses and error text.
Exit status: 0 pass, 1 fail, 77 skip (no usable /dev/kvm).
Set SPORE_TEST_KEEP=1 to keep the scratch directory of a failed test.
"""

import hashlib
import json
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time

SKIP = 77
EXIT_SPORE_FAILED = 125
CHUNK_SIZE = 2 << 20

GEN_RE = re.compile(r"^tg: gen counter=(\d+) id=([0-9a-f]{32})$")
CHECK_RE = re.compile(r"^tg: check cpu=(\d+) ticks=(\d+) iter=(\d+) sum=([0-9a-f]{16}) ok$")
CAPTURED_RE = re.compile(
    r'msg="captured" dir=(\S+) ms=[\d.]+ chunks_written=(\d+) chunks_reused=(\d+) zero_chunks=(\d+)')
RESTORED_RE = re.compile(r'msg="restored" .* chunks=(\d+) chunks_hashed=(\d+) chunks_sealed=(\d+)')
BAD_LINE_RE = re.compile(r"^tg: (fault|error)|FAIL")


class Fail(Exception):
    pass


def check(cond, msg):
    if not cond:
        raise Fail(msg)


class Result:
    def __init__(self, argv, rc, out, err, secs):
        self.argv, self.rc, self.out, self.err, self.secs = argv, rc, out, err, secs

    def lines(self, prefix=""):
        """Guest serial lines (optionally only those carrying a fanout prefix)."""
        res = []
        for ln in self.out.splitlines():
            if prefix:
                if not ln.startswith(prefix):
                    continue
                ln = ln[len(prefix):]
            if ln.startswith("tg: "):
                res.append(ln)
        return res

    def describe(self):
        return "$ %s\n  exit status %s after %.1fs\n  stdout:\n%s\n  stderr:\n%s" % (
            " ".join(self.argv), self.rc, self.secs, indent(self.out), indent(self.err))


def indent(s, limit=6000):
    if len(s) > limit:
        s = "...[%d bytes cut]...\n" % (len(s) - limit) + s[-limit:]
    return "\n".join("    | " + ln for ln in s.splitlines())


class Ctx:
    def __init__(self, spore, guest, tmp):
        self.spore_bin, self.guest, self.tmp = spore, guest, tmp
        # Seals (vmm/src/seal.c) live with the test, not in /var/lib/sporelet.
        self.env = dict(os.environ, SPORE_LOG="info", SPORE_STATE_DIR=os.path.join(tmp, ".state"))
        self.cleanup = []  # extra directories to remove

    def path(self, *parts):
        return os.path.join(self.tmp, *parts)

    def spore(self, *args, timeout=120, expect=None, close_stdin=False):
        """Runs spore with a hard timeout (the whole process group is killed);
        with expect set, fails unless spore exited with that status. With
        close_stdin, spore starts with fd 0 closed (as from a daemon)."""
        argv = [self.spore_bin] + [str(a) for a in args]
        t0 = time.monotonic()
        p = subprocess.Popen(argv, stdin=None if close_stdin else subprocess.DEVNULL, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, env=self.env, cwd=self.tmp,
                             preexec_fn=(lambda: os.close(0)) if close_stdin else None,
                             start_new_session=True, text=True, errors="replace")
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
        return self._done(Result(argv, p.returncode, out, err, time.monotonic() - t0), expect)

    def _done(self, r, expect):
        print("$ %s  -> %d (%.2fs)" % (" ".join(r.argv), r.rc, r.secs), flush=True)
        if expect is not None and r.rc != expect:
            raise Fail("expected exit status %d\n%s" % (expect, r.describe()))
        return r

    def spore_watch(self, *args, timeout=120, expect=None, poll=None):
        """Like spore(), with output going to files; calls poll(pid, stdout so
        far) every 50 ms while spore runs."""
        argv = [self.spore_bin] + [str(a) for a in args]
        opath, epath = self.path(".stdout"), self.path(".stderr")
        t0 = time.monotonic()
        with open(opath, "w") as o, open(epath, "w") as e:
            p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=o, stderr=e, env=self.env,
                                 cwd=self.tmp, start_new_session=True)
        try:
            while p.poll() is None:
                if time.monotonic() - t0 > timeout:
                    os.killpg(p.pid, signal.SIGKILL)
                    p.wait()
                    r = Result(argv, "timeout", read(opath).decode(errors="replace"),
                               read(epath).decode(errors="replace"), time.monotonic() - t0)
                    raise Fail("timed out after %ds\n%s" % (timeout, r.describe()))
                if poll:
                    poll(p.pid, read(opath).decode(errors="replace"))
                time.sleep(0.05)
        finally:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
        r = Result(argv, p.returncode, read(opath).decode(errors="replace"),
                   read(epath).decode(errors="replace"), time.monotonic() - t0)
        os.unlink(opath)
        os.unlink(epath)
        return self._done(r, expect)


# ---- helpers on guest output -------------------------------------------------

def assert_clean(r, lines):
    bad = [ln for ln in lines if BAD_LINE_RE.search(ln)]
    check(not bad, "guest reported a failure: %s\n%s" % (bad, r.describe()))


def gens(lines):
    return [(int(m.group(1)), m.group(2)) for m in map(GEN_RE.match, lines) if m]


def one_gen(r, lines, counter):
    g = gens(lines)
    check(len(g) == 1 and g[0][0] == counter,
          "want exactly one 'tg: gen counter=%d id=<32 hex>' line, got %s\n%s" % (counter, g, r.describe()))
    return g[0][1]


def checks(r, lines, ncpus):
    """{cpu: (ticks, iter)} from the 'tg: check ... ok' lines; one per cpu."""
    seen = {}
    for ln in lines:
        m = CHECK_RE.match(ln)
        if m:
            cpu = int(m.group(1))
            check(cpu not in seen, "cpu %d checked twice in one round\n%s" % (cpu, r.describe()))
            seen[cpu] = (int(m.group(2)), int(m.group(3)))
    check(sorted(seen) == list(range(ncpus)),
          "want one 'tg: check cpu=<i> ... ok' for cpus 0..%d, got cpus %s\n%s" %
          (ncpus - 1, sorted(seen), r.describe()))
    return seen


def selfcheck_ok(r, lines, count=1):
    n = lines.count("tg: selfcheck ok")
    check(n == count, "want %d 'tg: selfcheck ok' line(s), got %d\n%s" % (count, n, r.describe()))


def captured(r, dest):
    ms = [m for m in map(CAPTURED_RE.search, r.err.splitlines()) if m]
    check(len(ms) == 1 and ms[0].group(1) == dest,
          "want one 'captured dir=%s' log line on stderr\n%s" % (dest, r.describe()))
    check(os.path.isfile(os.path.join(dest, "spore", "manifest.json")),
          "%s has no spore/manifest.json after a successful capture" % dest)
    m = ms[0]
    return {"written": int(m.group(2)), "reused": int(m.group(3)), "zero": int(m.group(4))}


def boot_capture(ctx, dest, vcpus=1, mem=128, args=("mode=bench", "warm_ms=100"), timeout=120):
    """spore run ... --capture DEST --capture-on ready; returns (result, guest lines)."""
    r = ctx.spore("run", "--kernel", ctx.guest, "--vcpus", vcpus, "--mem", mem, "--capture", dest,
                  "--capture-on", "ready", "--", *args, timeout=timeout, expect=0)
    lines = r.lines()
    assert_clean(r, lines)
    mode = next((a.split("=", 1)[1] for a in args if a.startswith("mode=")), "demo")
    hz = next((a.split("=", 1)[1] for a in args if a.startswith("hz=")), "100")
    want = "tg: boot cpus=%d mem_mib=%d mode=%s hz=%s" % (vcpus, mem, mode, hz)
    check(lines and lines[0] == want, "first line should be %r\n%s" % (want, r.describe()))
    for i in range(vcpus):
        check("tg: cpu=%d up" % i in lines, "no 'tg: cpu=%d up'\n%s" % (i, r.describe()))
    check(lines[-1] == "tg: ready", "capture-on ready: 'tg: ready' must be the last line\n%s" % r.describe())
    return r, lines


def inspect(ctx, d):
    r = ctx.spore("inspect", "--json", d, timeout=30, expect=0)
    try:
        j = json.loads(r.out)
    except ValueError as e:
        raise Fail("spore inspect --json printed no JSON (%s)\n%s" % (e, r.describe()))
    with open(os.path.join(d, "spore", "manifest.json"), "rb") as f:
        want = "sha256:" + hashlib.sha256(f.read()).hexdigest()
    check(j.get("manifest_digest") == want,
          "inspect manifest_digest %r is not the sha256 of %s/spore/manifest.json (%s)" %
          (j.get("manifest_digest"), d, want))
    return j


def manifest(d):
    with open(os.path.join(d, "spore", "manifest.json")) as f:
        return json.load(f)


def chunk_file(d, digest):
    check(digest.startswith("sha256:"), "bad chunk digest %r" % digest)
    return os.path.join(d, "chunks", "sha256", digest[len("sha256:"):])


def spore_files(d):
    """Every file a spore's manifest references (state files and chunks)."""
    m = manifest(d)
    files = [m["state"]["vm"]["path"]] + [v["path"] for v in m["state"]["vcpus"]]
    files += [os.path.relpath(chunk_file(d, c["digest"]), d) for c in m["memory"]["chunks"]]
    return files


# ---- continuity --------------------------------------------------------------

def test_continuity(ctx):
    warm_ms, hz = 500, 100
    for ncpu in (2, 1):
        a = ctx.path("A%d" % ncpu)
        r, before = boot_capture(ctx, a, vcpus=ncpu,
                                 args=("mode=demo", "warm_ms=%d" % warm_ms, "hz=%d" % hz))
        boot_id = one_gen(r, before, 0)
        pre = checks(r, before, ncpu)
        selfcheck_ok(r, before)
        check(before.index("tg: selfcheck ok") < before.index("tg: ready"),
              "'tg: ready' came before the first self-check finished\n%s" % r.describe())
        check(manifest(a)["generation"]["id"] == boot_id,
              "manifest generation.id differs from the id the guest saw at capture")

        seen_ids = {boot_id}
        for attempt in (1, 2):  # the same spore twice: each resume is a new generation
            r = ctx.spore("resume", a, "--for", "2s", timeout=120, expect=0)
            after = r.lines()
            assert_clean(r, after)
            check(not any(ln.startswith("tg: boot") or re.match(r"tg: cpu=\d+ up$", ln) for ln in after),
                  "the guest booted again instead of continuing\n%s" % r.describe())
            gid = one_gen(r, after, 1)
            check(gid not in seen_ids, "resume #%d reused generation id %s\n%s" % (attempt, gid, r.describe()))
            seen_ids.add(gid)
            post = checks(r, after, ncpu)
            selfcheck_ok(r, after)
            check(after.index("tg: gen counter=1 id=" + gid) < after.index("tg: selfcheck ok"),
                  "selfcheck ok printed before the new generation\n%s" % r.describe())
            for cpu in range(ncpu):
                (t0, i0), (t1, i1) = pre[cpu], post[cpu]
                check(t1 >= t0 and i1 >= i0,
                      "cpu %d counters went back: ticks %d -> %d, iter %d -> %d\n%s" %
                      (cpu, t0, t1, i0, i1, r.describe()))
                # The capture came warm_ms after boot, so the timer had ticked
                # about warm_ms*hz/1000 times; a reset restarts from ~0.
                floor = warm_ms * hz // 1000 // 4
                check(t1 >= floor,
                      "cpu %d ticks=%d right after resume: below %d, the tick count was reset\n%s" %
                      (cpu, t1, floor, r.describe()))

    # The guest ends a resumed run itself: its exit status is spore's.
    b = ctx.path("B")
    r, before = boot_capture(ctx, b, vcpus=2,
                             args=("mode=demo", "warm_ms=300", "exit_after_ms=2500", "exit=7"))
    boot_id = one_gen(r, before, 0)
    r = ctx.spore("resume", b, timeout=120, expect=7)
    after = r.lines()
    assert_clean(r, after)
    check(one_gen(r, after, 1) != boot_id, "resume kept the boot generation id")
    checks(r, after, 2)
    selfcheck_ok(r, after)
    check(after[-1] == "tg: exit code=7", "want 'tg: exit code=7' last\n%s" % r.describe())


# ---- chain -------------------------------------------------------------------

def test_chain(ctx):
    chain_lineage(ctx)
    chain_cross_fs(ctx, ctx.path("B"))
    chain_partly_dirty(ctx)


def chain_lineage(ctx):
    """bench mode: the workload region stays untouched after boot, so every
    later capture must reuse (hard-link) it."""
    a, b, c = ctx.path("A"), ctx.path("B"), ctx.path("C")
    r, lines = boot_capture(ctx, a, args=("mode=bench", "warm_ms=100"))
    ids = [one_gen(r, lines, 0)]
    checks(r, lines, 1)
    selfcheck_ok(r, lines)
    stats = {a: captured(r, a)}

    for counter, (src, dst) in enumerate(((a, b), (b, c)), start=1):
        r = ctx.spore("resume", src, "--capture", dst, "--capture-on", "after:700ms", timeout=120, expect=0)
        lines = r.lines()
        assert_clean(r, lines)
        ids.append(one_gen(r, lines, counter))
        checks(r, lines, 1)
        selfcheck_ok(r, lines)
        stats[dst] = captured(r, dst)
        check(stats[dst]["reused"] > 0,
              "capture of %s reused no chunk of its parent %s (chunks_reused=0)\n%s" % (dst, src, r.describe()))

    r = ctx.spore("resume", c, "--for", "1s", timeout=120, expect=0)
    lines = r.lines()
    assert_clean(r, lines)
    ids.append(one_gen(r, lines, 3))
    checks(r, lines, 1)
    selfcheck_ok(r, lines)
    check(len(set(ids)) == 4, "generation ids repeat along the chain: %s" % ids)

    ja, jb, jc = inspect(ctx, a), inspect(ctx, b), inspect(ctx, c)
    check(ja["manifest"]["parent"] is None and ja["generation"]["depth"] == 0 and
          ja["generation"].get("parent") is None and ja["generation"]["counter"] == 0,
          "first capture should have no parent, depth 0, counter 0: %s" % ja["generation"])
    for depth, (parent, child, pdir, cdir) in enumerate(((ja, jb, a, b), (jb, jc, b, c)), start=1):
        gen = child["generation"]
        check(child["manifest"]["parent"] == {"digest": parent["manifest_digest"]},
              "%s parent %s is not %s's manifest digest %s" %
              (cdir, child["manifest"]["parent"], pdir, parent["manifest_digest"]))
        check(gen["depth"] == depth and gen["counter"] == depth,
              "%s: want depth %d, counter %d, got %s" % (cdir, depth, depth, gen))
        check(gen.get("parent") == parent["generation"]["id"],
              "%s generation.parent %r is not %s's generation id %r" %
              (cdir, gen.get("parent"), pdir, parent["generation"]["id"]))
        check(gen["id"] == ids[depth],
              "%s generation.id %s is not the id its guest was running (%s)" % (cdir, gen["id"], ids[depth]))

        # Reused chunks are hard links of the parent's files (same inode).
        pdigests = {x["digest"] for x in manifest(pdir)["memory"]["chunks"]}
        linked = 0
        for ch in manifest(cdir)["memory"]["chunks"]:
            cst = os.stat(chunk_file(cdir, ch["digest"]))
            check(cst.st_size == CHUNK_SIZE and not (cst.st_mode & 0o222),
                  "%s: chunk files must be %d bytes and read-only" % (cdir, CHUNK_SIZE))
            if ch["digest"] in pdigests:
                pst = os.stat(chunk_file(pdir, ch["digest"]))
                if (pst.st_dev, pst.st_ino) == (cst.st_dev, cst.st_ino):
                    linked += 1
        check(linked >= stats[cdir]["reused"],
              "%s: capture reported chunks_reused=%d but only %d chunk files are hard links of %s's" %
              (cdir, stats[cdir]["reused"], linked, pdir))


def other_fs_dir(ctx):
    """A scratch directory on another filesystem than ctx.tmp (/dev/shm), or None."""
    base = "/dev/shm"
    try:
        if os.stat(base).st_dev == os.stat(ctx.tmp).st_dev or not os.access(base, os.W_OK):
            return None
    except OSError:
        return None
    d = tempfile.mkdtemp(prefix="spore-kvm-", dir=base)
    ctx.cleanup.append(d)
    return d


def chain_cross_fs(ctx, src):
    """Capturing a resumed spore onto another filesystem cannot hard-link:
    every chunk is hashed and written, and the result resumes."""
    other = other_fs_dir(ctx)
    if not other:
        print("  (no second filesystem: cross-filesystem capture not checked)")
        return
    dst = os.path.join(other, "X")
    r = ctx.spore("resume", src, "--capture", dst, "--capture-on", "after:500ms", timeout=120, expect=0)
    st = captured(r, dst)
    check(st["reused"] == 0 and st["written"] == len(manifest(dst)["memory"]["chunks"]),
          "cross-filesystem capture: %s, want every chunk written, none reused\n%s" % (st, r.describe()))
    r = ctx.spore("resume", dst, "--for", "1s", timeout=120, expect=0)
    lines = r.lines()
    assert_clean(r, lines)
    one_gen(r, lines, manifest(src)["generation"]["counter"] + 2)
    selfcheck_ok(r, lines)


def signal_after(line, delay, sig=signal.SIGUSR1):
    """A spore_watch poll: sends sig once, delay seconds after stdout first
    held the line."""
    seen = {}

    def poll(pid, out):
        if "sent" in seen or line not in out.splitlines():
            return
        seen.setdefault("at", time.monotonic())
        if time.monotonic() - seen["at"] >= delay:
            os.kill(pid, sig)
            seen["sent"] = True
    return poll


def chain_partly_dirty(ctx):
    """demo mode, 64 MiB workload, slow timer: between captures the guest
    rewrites words in some of its 32 workload chunks but not all, so each
    capture mixes reused and rewritten chunks; the guest's checksum over the
    whole workload after every resume proves the mix is right.

    Each capture is triggered by SIGUSR1 a moment after the guest printed its
    self-check, not after a fixed time: the check waits for a timer tick
    (100 ms at hz=10) and sums all 64 MiB, the first touch of every restored
    page (about 40 us a page on a PVM host, so up to 0.7 s). A fixed 400 ms
    once captured before the check was printed; a fixed 1.5 s leaves the guest
    time to rewrite every workload chunk, so no capture would reuse any."""
    dirs = [ctx.path("P%d" % i) for i in range(4)]
    r, lines = boot_capture(ctx, dirs[0], mem=256, args=("mode=demo", "work_mib=64", "hz=10", "warm_ms=200"),
                            timeout=300)
    checks(r, lines, 1)
    mixed = False
    for counter in range(1, len(dirs)):
        r = ctx.spore_watch("resume", dirs[counter - 1], "--capture", dirs[counter], "--capture-on", "SIGUSR1",
                            timeout=300, expect=0, poll=signal_after("tg: selfcheck ok", 0.2))
        lines = r.lines()
        assert_clean(r, lines)
        one_gen(r, lines, counter)
        checks(r, lines, 1)
        selfcheck_ok(r, lines)
        st = captured(r, dirs[counter])
        mixed |= st["reused"] > 0 and st["written"] > 0
        parent = inspect(ctx, dirs[counter])["manifest"]["parent"]
        check(parent == {"digest": inspect(ctx, dirs[counter - 1])["manifest_digest"]},
              "%s does not name %s as its parent" % (dirs[counter], dirs[counter - 1]))
    r = ctx.spore("resume", dirs[-1], "--for", "2s", timeout=300, expect=0)
    lines = r.lines()
    assert_clean(r, lines)
    one_gen(r, lines, len(dirs))
    checks(r, lines, 1)
    selfcheck_ok(r, lines)
    check(mixed, "no capture both reused and rewrote chunks; the workload did not exercise a mixed capture")


# ---- fork_identity -----------------------------------------------------------

def test_fork_identity(ctx):
    a, f = ctx.path("A"), ctx.path("F")
    n = 20
    r, lines = boot_capture(ctx, a, args=("mode=demo", "warm_ms=200"))
    boot_id = one_gen(r, lines, 0)
    ja = inspect(ctx, a)
    check(ja["generation"]["id"] == boot_id, "parent manifest id is not the boot generation id")

    r = ctx.spore("fork", a, "--count", n, "--out", f, timeout=60, expect=0)
    printed = {}
    for ln in r.out.splitlines():
        m = re.match(r"^(.*)/(child-\d+) generation ([0-9a-f]{32})$", ln)
        check(m and m.group(1) == f, "unexpected fork output line %r\n%s" % (ln, r.describe()))
        printed[m.group(2)] = m.group(3)
    names = ["child-%02d" % i for i in range(1, n + 1)]
    check(sorted(printed) == names, "fork printed children %s, want %s" % (sorted(printed), names))
    check(sorted(os.listdir(f)) == names, "fork left %s in --out" % sorted(os.listdir(f)))

    pfiles = spore_files(a)
    man_ids = set()
    for name in names:
        d = os.path.join(f, name)
        j = inspect(ctx, d)
        gen = j["generation"]
        check(gen["id"] == printed[name], "%s: inspect id %s, fork printed %s" % (name, gen["id"], printed[name]))
        check(gen["id"] != ja["generation"]["id"], "%s has its parent's generation id" % name)
        check(gen["id"] not in man_ids, "%s repeats a sibling's generation id %s" % (name, gen["id"]))
        man_ids.add(gen["id"])
        check(gen["counter"] == ja["generation"]["counter"],
              "%s: generation.counter %d, the parent's is %d (fork copies it)" %
              (name, gen["counter"], ja["generation"]["counter"]))
        check(gen.get("parent") == ja["generation"]["id"] and gen["depth"] == ja["generation"]["depth"] + 1,
              "%s: generation.parent/depth %s do not follow the parent %s" % (name, gen, ja["generation"]))
        check(j["manifest"]["parent"] == {"digest": ja["manifest_digest"]},
              "%s: parent digest is not the parent's manifest digest" % name)
        check(spore_files(d) == pfiles, "%s references other files than its parent" % name)
        for rel in pfiles:
            ps, cs = os.stat(os.path.join(a, rel)), os.stat(os.path.join(d, rel))
            check((ps.st_dev, ps.st_ino) == (cs.st_dev, cs.st_ino),
                  "%s/%s is a copy (inode %d), not the parent's inode %d" % (name, rel, cs.st_ino, ps.st_ino))
        check(os.stat(os.path.join(a, pfiles[-1])).st_nlink >= n + 1, "chunk link count below %d" % (n + 1))

    r = ctx.spore("fanout", f, "--parallel", "--for", "2s", timeout=300, expect=0)
    check(re.search(r"fanout: %d children \(parallel\) in [\d.]+ ms, 0 failed" % n, r.err),
          "fanout summary lacks '%d children (parallel) ... 0 failed'\n%s" % (n, r.describe()))
    run_ids = {}
    for name in names:
        lines = r.lines(name + "| ")
        assert_clean(r, lines)
        gid = one_gen(r, lines, 1)
        check(gid != boot_id, "%s resumed with the parent's boot id %s" % (name, gid))
        check(gid not in run_ids.values(), "%s and %s both run generation %s" %
              (name, [k for k, v in run_ids.items() if v == gid], gid))
        run_ids[name] = gid
        checks(r, lines, 1)
        selfcheck_ok(r, lines)


# ---- fanout_report -----------------------------------------------------------

def test_fanout_report(ctx):
    """Every fanout child reports its timings back over --report-fd 3, also
    when fanout itself was started with stdin closed (then pipe2() hands out
    fd 3 as the write end, and dup2(3, 3) would not clear its close-on-exec)."""
    a, f = ctx.path("A"), ctx.path("F")
    n = 3
    boot_capture(ctx, a, args=("mode=demo", "warm_ms=100"))
    ctx.spore("fork", a, "--count", n, "--out", f, timeout=60, expect=0)
    check("--summary-json" in ctx.spore("fanout", "--help", timeout=30, expect=0).out,
          "spore fanout has no --summary-json")
    failures = []
    runs = (("parallel", ["--parallel"], False), ("one at a time", [], False),
            ("parallel, stdin closed", ["--parallel"], True), ("one at a time, stdin closed", [], True))
    for k, (label, mode, close) in enumerate(runs):
        summary = ctx.path("summary-%d.json" % k)
        r = ctx.spore("fanout", f, *mode, "--for", "700ms", "--summary-json", summary, timeout=120, expect=0,
                      close_stdin=close)
        with open(summary) as fh:
            js = json.load(fh)
        for c in js["per_child"]:
            lines = r.lines(c["name"] + "| ")
            if c["status"] != 0 or c["restore_ms"] < 0 or c["first_output_ms"] < 0 or not gens(lines):
                failures.append("%s: %s: status %s, restore_ms %s, first_output_ms %s, %d guest lines" %
                                (label, c["name"], c["status"], c["restore_ms"], c["first_output_ms"], len(lines)))
        check(js["children"] == n and js["failed"] == 0, "%s: summary %s" % (label, js))
    check(not failures, "children whose report was lost or who failed:\n  " + "\n  ".join(failures))


# ---- fail_closed -------------------------------------------------------------

def replace_file(path, data, mode=0o444):
    """Swaps in new content without touching the (shared) old inode."""
    tmp = path + ".new"
    with open(tmp, "wb") as fh:
        fh.write(data)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def read(path):
    with open(path, "rb") as fh:
        return fh.read()


def write_manifest(d, m):
    replace_file(os.path.join(d, "spore", "manifest.json"), json.dumps(m, indent=2, sort_keys=True).encode() + b"\n")


def parse_state(buf):
    """(kind, [(tag, payload)]) of a TLV state file (vmm/src/state_file.c)."""
    magic, version, kind, nsec, _ = struct.unpack_from("<IHHII", buf, 0)
    check(magic == 0x54535053 and version == 1, "state file header: magic %#x version %d" % (magic, version))
    off, secs = 16, []
    for _ in range(nsec):
        tag, _, ln = struct.unpack_from("<IIQ", buf, off)
        off += 16
        secs.append((tag, buf[off:off + ln]))
        off += ln + (8 - ln % 8) % 8
    check(off == len(buf), "state file has %d trailing bytes" % (len(buf) - off))
    return kind, secs


def build_state(kind, secs):
    out = struct.pack("<IHHII", 0x54535053, 1, kind, len(secs), 0)
    for tag, data in secs:
        out += struct.pack("<IIQ", tag, 0, len(data)) + data + b"\0" * ((8 - len(data) % 8) % 8)
    return out


def host_flags():
    try:
        with open("/proc/cpuinfo") as fh:
            for ln in fh:
                if ln.startswith("flags"):
                    return set(ln.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def ask_for_missing_cpu_feature(d):
    """Sets CPUID leaf 7.0 EBX bit 16 (avx512f) in spore/vm.state (every EBX
    bit when the host has avx512f) and fixes the manifest's digest and size."""
    SF_CPUID, ENT = 37, 40
    path = os.path.join(d, "spore", "vm.state")
    kind, secs = parse_state(read(path))
    found = False
    for k, (tag, data) in enumerate(secs):
        if tag != SF_CPUID:
            continue
        check(len(data) % ENT == 0, "CPUID section is %d bytes, not a multiple of %d" % (len(data), ENT))
        data = bytearray(data)
        for off in range(0, len(data), ENT):
            fn, idx, flags, eax, ebx, ecx, edx = struct.unpack_from("<7I", data, off)
            if fn == 7 and idx == 0:
                ebx = 0xFFFFFFFF if "avx512f" in host_flags() else ebx | (1 << 16)
                struct.pack_into("<7I", data, off, fn, idx, flags, eax, ebx, ecx, edx)
                found = True
        secs[k] = (tag, bytes(data))
    check(found, "vm.state has no CPUID leaf 7 subleaf 0 entry")
    new = build_state(kind, secs)
    replace_file(path, new)
    m = manifest(d)
    m["state"]["vm"]["digest"] = "sha256:" + hashlib.sha256(new).hexdigest()
    m["state"]["vm"]["size"] = len(new)
    write_manifest(d, m)


def test_fail_closed(ctx):
    a = ctx.path("A")
    boot_capture(ctx, a, args=("mode=bench", "warm_ms=100"))
    first_chunk = manifest(a)["memory"]["chunks"][0]
    chunk_rel = os.path.relpath(chunk_file(a, first_chunk["digest"]), a)
    chunk_idx = first_chunk["index"]

    def corrupt_chunk(d):
        p = os.path.join(d, chunk_rel)
        data = bytearray(read(p))
        data[3 * 4096 + 17] ^= 0x40
        replace_file(p, bytes(data))

    def missing_chunk(d):
        os.unlink(os.path.join(d, chunk_rel))

    def short_chunk(d):
        p = os.path.join(d, chunk_rel)
        replace_file(p, read(p)[:CHUNK_SIZE // 2])

    def symlink_chunk(d):
        p = os.path.join(d, chunk_rel)
        outside = ctx.path("outside-chunk")
        if not os.path.exists(outside):
            shutil.copyfile(p, outside)  # the right bytes, but reached through a symlink
        os.unlink(p)
        os.symlink(outside, p)

    def fifo_chunk(d):
        # open() of a FIFO blocks until a writer comes: a restore that opens
        # chunks without O_NONBLOCK hangs here instead of refusing.
        p = os.path.join(d, chunk_rel)
        os.unlink(p)
        os.mkfifo(p, 0o444)

    def dir_chunk(d):
        p = os.path.join(d, chunk_rel)
        os.unlink(p)
        os.mkdir(p)

    def symlink_state(d):
        p = os.path.join(d, "spore", "vm.state")
        outside = ctx.path("outside-vm.state")
        if not os.path.exists(outside):
            shutil.copyfile(p, outside)
        os.unlink(p)
        os.symlink(outside, p)

    def fifo_state(d):
        p = os.path.join(d, "spore", "vcpu-0.state")
        os.unlink(p)
        os.mkfifo(p, 0o444)

    def truncate_manifest(d):
        p = os.path.join(d, "spore", "manifest.json")
        data = read(p)
        replace_file(p, data[:len(data) // 2])

    def edit(fn):
        def mutate(d):
            m = manifest(d)
            fn(m)
            write_manifest(d, m)
        return mutate

    def corrupt_vm_state(d):
        p = os.path.join(d, "spore", "vm.state")
        data = bytearray(read(p))
        data[len(data) // 2] ^= 1
        replace_file(p, bytes(data))

    def wrong_state_digest(d):
        m = manifest(d)
        m["state"]["vcpus"][0]["digest"] = "sha256:" + "ab" * 32
        write_manifest(d, m)

    cases = [
        ("chunk bytes changed", corrupt_chunk,
         r"chunk %d does not match its digest: want %s, got sha256:[0-9a-f]{64} \(%s\)" %
         (chunk_idx, first_chunk["digest"], re.escape(chunk_rel))),
        ("chunk missing", missing_chunk,
         r"chunk %d \(%s\) is missing: no %s" % (chunk_idx, first_chunk["digest"], re.escape(chunk_rel))),
        ("chunk truncated", short_chunk,
         r"chunk %d \(%s\): %s is %d bytes, want %d" %
         (chunk_idx, first_chunk["digest"], re.escape(chunk_rel), CHUNK_SIZE // 2, CHUNK_SIZE)),
        ("chunk replaced by a symlink", symlink_chunk, re.escape(chunk_rel) + r".*symlink"),
        ("chunk replaced by a FIFO", fifo_chunk, re.escape(chunk_rel)),
        ("chunk replaced by a directory", dir_chunk, r"chunk %d \(%s\): %s is \d+ bytes, want %d" %
         (chunk_idx, first_chunk["digest"], re.escape(chunk_rel), CHUNK_SIZE)),
        ("state file replaced by a symlink", symlink_state, r"spore/vm\.state: path crosses a symlink"),
        ("state file replaced by a FIFO", fifo_state, r"spore/vcpu-0\.state: not a regular file"),
        ("manifest.json truncated", truncate_manifest, r"manifest\.json: .*line \d+"),
        ("manifest field of the wrong type", edit(lambda m: m["machine"].__setitem__("vcpus", "1")),
         r"manifest\.json: field \"vcpus\" must be"),
        ("manifest field missing", edit(lambda m: m.__delitem__("created")),
         r"manifest\.json: field \"created\" missing"),
        ("manifest chunk digest malformed",
         edit(lambda m: m["memory"]["chunks"][0].__setitem__("digest", "sha256:xyz")),
         r"manifest\.json: memory\.chunks\[0\]"),
        ("manifest chunks out of order",
         edit(lambda m: m["memory"]["chunks"].reverse() if len(m["memory"]["chunks"]) > 1
              else m["memory"]["chunks"].append(dict(m["memory"]["chunks"][0]))),
         r"manifest\.json: memory\.chunks\[1\] index \d+ out of order"),
        ("unknown format version", edit(lambda m: m.__setitem__("version", 2)),
         r"manifest\.json: unknown spore format version 2"),
        ("CPU feature the host lacks", ask_for_missing_cpu_feature,
         r"platform contract not met: host CPU lacks .*cpuid 0x7\.0 ebx bit"),
        ("vm.state bytes changed", corrupt_vm_state, r"spore/vm\.state does not match its digest"),
        ("wrong state file digest", wrong_state_digest,
         r"spore/vcpu-0\.state does not match its digest: want sha256:(ab){32}"),
        ("unknown KVM capability", edit(lambda m: m["platform"]["kvm_caps"].append("warp-drive")),
         r"platform contract not met: unknown KVM capability \"warp-drive\""),
        ("spore for another architecture", edit(lambda m: m["platform"].__setitem__("arch", "aarch64")),
         r"platform contract not met: spore is for aarch64"),
    ]

    # Control: an untouched link-copy resumes, so each failure below is the
    # mutation's doing.
    def link_copy(name):
        d = ctx.path(name)
        shutil.copytree(a, d, copy_function=os.link, symlinks=True)
        return d

    ok = link_copy("control")
    r = ctx.spore("resume", ok, "--for", "500ms", timeout=60, expect=0)
    one_gen(r, r.lines(), 1)

    before = {rel: read(os.path.join(a, rel)) for rel in spore_files(a) + ["spore/manifest.json"]}
    failures = []
    for k, (what, mutate, pattern) in enumerate(cases):
        d = link_copy("case-%02d" % k)
        mutate(d)
        try:
            r = ctx.spore("resume", d, "--for", "2s", timeout=15)
        except Fail as e:  # a hang is a failure of this case, not of the others
            failures.append("%s: %s" % (what, e))
            continue
        if r.rc != EXIT_SPORE_FAILED:
            failures.append("%s: want exit status %d\n%s" % (what, EXIT_SPORE_FAILED, r.describe()))
        elif not re.search(pattern, r.err):
            failures.append("%s: stderr does not match /%s/\n%s" % (what, pattern, r.describe()))
        elif r.lines():
            failures.append("%s: the guest ran although the spore was refused\n%s" % (what, r.describe()))
        else:
            print("  ok: %s: %s" % (what, r.err.strip().splitlines()[-1]), flush=True)
    after = {rel: read(os.path.join(a, rel)) for rel in before}
    check(after == before, "a mutation of a link-copy changed the original spore's shared files")
    check(not failures, "%d of %d fail-closed cases failed:\n\n%s" % (len(failures), len(cases), "\n\n".join(failures)))


# ---- sharing -----------------------------------------------------------------

def test_seals(ctx):
    """A restore hashes each chunk it has no seal for and seals it; the next
    restore of the same unchanged inodes (also through a fork's hard links)
    skips the hash; any write to a chunk, even with its mtime put back, or
    --verify full, brings the hash back; an unsafe seal directory is refused."""
    a = ctx.path("A")
    boot_capture(ctx, a)
    n = len(manifest(a)["memory"]["chunks"])
    check(n >= 2, "the test guest should leave at least 2 non-zero chunks, got %d" % n)
    seals = os.path.join(ctx.env["SPORE_STATE_DIR"], "seals")
    ctx.env["SPORE_LOG"] = "debug"
    time.sleep(0.05)  # chunks are sealed once their mtime is two clock ticks old

    def resume(d, *extra, expect=0):
        r = ctx.spore("resume", d, "--for", "200ms", *extra, timeout=60, expect=expect)
        if expect != 0:
            return r
        m = RESTORED_RE.search(r.err)
        check(m, "no restored line in the debug log\n" + r.describe())
        return tuple(int(x) for x in m.groups())

    got = resume(a)
    check(got == (n, n, 0), "first restore: (chunks, hashed, sealed) = %s, want %s" % (got, (n, n, 0)))
    check(len(os.listdir(seals)) == n, "want %d seals in %s, found %s" % (n, seals, os.listdir(seals)))
    for name in os.listdir(seals):
        st = os.stat(os.path.join(seals, name))
        check(st.st_mode & 0o077 == 0, "seal %s is mode %o: must be private" % (name, st.st_mode & 0o777))
    got = resume(a)
    check(got == (n, 0, n), "second restore: %s, want every chunk sealed %s" % (got, (n, 0, n)))
    got = resume(a, "--verify", "full")
    check(got == (n, n, 0), "--verify full: %s, want every chunk hashed %s" % (got, (n, n, 0)))

    f = ctx.path("F")
    ctx.spore("fork", a, "--count", 2, "--out", f, timeout=60, expect=0)
    got = resume(os.path.join(f, "child-01"))
    check(got == (n, 0, n), "fork child (hard links, same inodes): %s, want %s" % (got, (n, 0, n)))

    # Someone else's chunk files could have had their mtime put back by their
    # owner: never sealed, always hashed (running as root, hand a copy to nobody).
    if os.geteuid() == 0:
        b = ctx.path("B")
        shutil.copytree(a, b)
        for root, dirs, files in os.walk(b):
            for name in files:
                os.chown(os.path.join(root, name), 65534, 65534)
        time.sleep(0.05)
        for i in range(2):
            got = resume(b)
            check(got == (n, n, 0), "restore %d of chunks owned by another user: %s, want %s" % (i + 1, got, (n, n, 0)))

    # An unsafe seal directory is an error, not a silent fallback.
    os.chmod(seals, 0o777)
    r = resume(a, expect=EXIT_SPORE_FAILED)
    check("seal directory" in r.err and "not group/other-writable" in r.err,
          "a world-writable seal directory must be refused by name\n" + r.describe())
    os.chmod(seals, 0o700)

    # Flip a byte in place (the inode every child shares): mtime moves, the
    # seal no longer matches and the hash catches it.
    first = manifest(a)["memory"]["chunks"][0]
    p = chunk_file(a, first["digest"])
    st = os.stat(p)
    os.chmod(p, 0o644)
    with open(p, "r+b") as fh:
        fh.seek(4096 * 5 + 3)
        b = fh.read(1)
        fh.seek(4096 * 5 + 3)
        fh.write(bytes([b[0] ^ 0x10]))
    os.chmod(p, 0o444)
    check(os.stat(p).st_mtime_ns != st.st_mtime_ns, "the write did not move the mtime")
    for d in (a, os.path.join(f, "child-02")):
        r = resume(d, expect=EXIT_SPORE_FAILED)
        check(re.search(r"chunk %d does not match its digest: want %s" % (first["index"], first["digest"]), r.err),
              "an in-place write under a seal must be caught\n" + r.describe())


def test_pool(ctx):
    """spore pool: pre-started workers each serve one restore request from
    `spore resume --pool`, with a fresh generation each; shape mismatches,
    corrupt spores, malformed requests and other users get errors; SIGTERM
    stops the pool and removes its socket."""
    import socket
    a = ctx.path("A")
    boot_capture(ctx, a)
    sock = ctx.path("pool.sock")
    pool = subprocess.Popen([ctx.spore_bin, "pool", "--size", "2", "--socket", sock], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=ctx.env, cwd=ctx.tmp,
                            start_new_session=True, text=True)
    try:
        deadline = time.monotonic() + 20
        while not os.path.exists(sock):
            check(pool.poll() is None and time.monotonic() < deadline,
                  "pool did not create %s: %s" % (sock, pool.poll()))
            time.sleep(0.02)
        check(os.stat(sock).st_mode & 0o077 == 0, "pool socket must be private to its owner")
        ids = []
        for i in range(3):  # more requests than workers: used ones are replaced
            r = ctx.spore("resume", "--pool", sock, a, "--for", "300ms", timeout=60, expect=0)
            lines = r.lines()
            assert_clean(r, lines)
            ids.append(one_gen(r, lines, 1))
        check(len(set(ids)) == 3, "pooled restores must each get a new generation id: %s" % ids)

        # A client that dies takes its VM with it: the worker watches the
        # connection (the guest would otherwise run on with no one to see it).
        cl = subprocess.Popen([ctx.spore_bin, "resume", "--pool", sock, a], stdin=subprocess.DEVNULL,
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=ctx.env, cwd=ctx.tmp,
                              start_new_session=True)
        first = cl.stdout.readline()
        check(first.startswith(b"tg: "), "pooled resume without --for printed %r" % first)
        cl.kill()
        cl.wait()
        cl.stdout.close()

        small = ctx.path("S")
        boot_capture(ctx, small, mem=64)
        r = ctx.spore("resume", "--pool", sock, small, timeout=60, expect=EXIT_SPORE_FAILED)
        check("spore needs 1 vcpus and 64 MiB, this VM has 1 and 128" in r.err,
              "a shape the pool cannot serve must be named\n" + r.describe())

        c = ctx.path("C")
        shutil.copytree(a, c)
        ch = manifest(c)["memory"]["chunks"][0]
        p = chunk_file(c, ch["digest"])
        data = bytearray(read(p))
        data[100] ^= 1
        replace_file(p, bytes(data))
        r = ctx.spore("resume", "--pool", sock, c, timeout=60, expect=EXIT_SPORE_FAILED)
        check("chunk %d does not match its digest" % ch["index"] in r.err,
              "a corrupt chunk must fail a pooled restore by name\n" + r.describe())

        def raw(msg, uid=None):
            rfd, wfd = os.pipe()
            pid = os.fork()
            if pid == 0:
                try:
                    os.close(rfd)
                    if uid is not None:
                        os.setgid(uid)
                        os.setuid(uid)
                    s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
                    s.settimeout(20)
                    s.connect(sock)
                    s.send(msg)
                    os.write(wfd, s.recv(600))
                except OSError as e:
                    os.write(wfd, ("client error: %s" % e).encode())
                finally:
                    os._exit(0)
            os.close(wfd)
            out = b""
            while True:
                b = os.read(rfd, 600)
                if not b:
                    break
                out += b
            os.close(rfd)
            os.waitpid(pid, 0)
            return out.decode(errors="replace")

        for msg, want in ((b"restore\x000x\x00\x00/x\x00", "error pool request: bad duration"),
                          (b"restore\x0007\x00\x00/x\x00", "error pool request: bad duration"),
                          (b"resume\x000\x00\x00/x\x00", "error pool request: unknown verb"),
                          (b"restore\x000\x00\x00/x", "error pool request: want 4 NUL-terminated fields")):
            got = raw(msg)
            check(got.startswith(want), "request %r: reply %r, want %r" % (msg, got, want))
        # The agent form needs a pool whose machines have a vsock device.
        rr, rw = os.pipe()
        pr, pw = os.pipe()
        try:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            s.settimeout(20)
            s.connect(sock)
            socket.send_fds(s, [b"resume-agent\x000\x00\x00" + a.encode() + b"\x00h\x00"], [rw, pr])
            got = s.recv(600).decode(errors="replace")
            s.close()
        finally:
            for fd in (rr, rw, pr, pw):
                os.close(fd)
        check(got.startswith("error pool request: resume-agent needs a pool started with --vsock"),
              "resume-agent on a pool without --vsock: %r" % got)
        if os.geteuid() == 0:
            # Let another user reach the socket: the credential check must still refuse.
            os.chmod(ctx.tmp, 0o711)
            os.chmod(sock, 0o666)
            try:
                got = raw(b"restore\x000\x00\x00" + a.encode() + b"\x00", uid=65534)
            finally:
                os.chmod(sock, 0o600)
                os.chmod(ctx.tmp, 0o700)
            check(got.startswith("error pool serves uid 0 only"), "uid 65534 got %r" % got)
    finally:
        pool.send_signal(signal.SIGTERM)
        try:
            _, err = pool.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            ps = subprocess.run(["ps", "-o", "pid,ppid,stat,wchan:24,cmd", "-s", str(pool.pid)],
                                stdout=subprocess.PIPE, text=True).stdout
            os.killpg(pool.pid, signal.SIGKILL)
            pool.communicate()
            raise Fail("pool did not stop on SIGTERM; its session:\n" + ps)
    check(pool.returncode == 0, "pool exit status %s on SIGTERM\n%s" % (pool.returncode, err))
    check('msg="pool client went away"' in err, "the worker of a killed client did not end its VM:\n%s" % err)
    check(not os.path.exists(sock), "the pool left its socket behind")

def test_control(ctx):
    """--control SOCKET: status, pause (the guest stops), resume, capture of
    the running VM (which resumes on its own), stop; --ready-fd announces the
    running guest; malformed requests get errors naming what was wrong; a
    live socket is never taken over, a stale one is replaced."""
    import socket
    a = ctx.path("A")
    boot_capture(ctx, a, args=("mode=demo", "warm_ms=50", "pulse_ms=20"))
    sock = ctx.path("ctl.sock")
    with open(sock, "w"):
        pass  # not a socket: refused by name, never removed
    r = ctx.spore("resume", a, "--control", sock, "--for", "5s", timeout=30, expect=EXIT_SPORE_FAILED)
    check("control socket %s: exists and is not a socket" % sock in r.err, "a regular file at the control path:\n" +
          r.describe())
    os.unlink(sock)
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    stale.bind(sock)
    stale.close()  # a socket file nobody listens on: a dead VMM's

    opath = ctx.path("control.out")
    rfd, wfd = os.pipe()
    with open(opath, "w") as out:
        vm = subprocess.Popen([ctx.spore_bin, "resume", a, "--control", sock, "--ready-fd", str(wfd)],
                              stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.PIPE, env=ctx.env,
                              cwd=ctx.tmp, start_new_session=True, text=True, pass_fds=(wfd,))
    os.close(wfd)

    def pulses():
        return len(re.findall(r"^tg: pulse n=\d+$", read(opath).decode(errors="replace"), re.M))

    def ask(msg):
        c = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        c.settimeout(30)
        try:
            c.connect(sock)
            c.send(msg)
            return c.recv(4096).decode(errors="replace")
        finally:
            c.close()

    try:
        t0 = time.monotonic()
        ready = b""
        while not ready.endswith(b"\n"):
            check(time.monotonic() - t0 < 30, "no ready line on --ready-fd within 30 s")
            b = os.read(rfd, 100)
            check(b, "--ready-fd closed without a ready line; stderr: %s" % (vm.stderr.read() if vm.poll() else ""))
            ready += b
        check(re.match(rb"^ready restore_ms=\d+\.\d{3}\n$", ready), "ready line %r" % ready)
        check(os.read(rfd, 100) == b"", "--ready-fd must be closed after the ready line")
        os.close(rfd)
        rfd = -1
        check(os.stat(sock).st_mode & 0o077 == 0, "control socket must be private to its owner")

        st = ask(b"status")
        m = re.match(r"^ok state=running pid=(\d+) generation=([0-9a-f]{32}) counter=1$", st)
        check(m and int(m.group(1)) == vm.pid, "status reply %r (pid %d)" % (st, vm.pid))
        deadline = time.monotonic() + 20
        while pulses() < 3:
            check(time.monotonic() < deadline, "the resumed guest does not pulse")
            time.sleep(0.05)
        gen_line = "tg: gen counter=1 id=%s" % m.group(2)
        check(gen_line in read(opath).decode(), "status generation is not the guest's (%s)" % gen_line)

        check(ask(b"pause") == "ok state=paused", "pause")
        time.sleep(0.1)  # output already in flight
        n = pulses()
        time.sleep(0.6)
        check(pulses() == n, "the guest went on pulsing while paused (%d -> %d)" % (n, pulses()))
        check(ask(b"status").startswith("ok state=paused "), "status while paused")
        check(ask(b"pause") == "ok state=paused", "a second pause is harmless")
        check(ask(b"resume") == "ok state=running", "resume")
        deadline = time.monotonic() + 20
        while pulses() < n + 3:
            check(time.monotonic() < deadline, "the guest did not pulse again after resume")
            time.sleep(0.05)

        b = ctx.path("B")
        rep = ask(("capture " + b).encode())
        check(re.match(r"^ok ms=[0-9.]+ chunks_written=\d+ chunks_reused=\d+ zero_chunks=\d+$", rep),
              "capture reply %r" % rep)
        check(os.path.isfile(os.path.join(b, "spore", "manifest.json")), "capture wrote no spore at %s" % b)
        n = pulses()
        deadline = time.monotonic() + 20
        while pulses() < n + 3:
            check(time.monotonic() < deadline, "the guest did not run on after a capture")
            time.sleep(0.05)
        rep = ask(("capture " + b).encode())
        check(rep.startswith("error ") and b in rep, "capture over an existing spore: %r" % rep)

        for msg, want in ((b"bogus", 'error control request "bogus": want status, pause, resume, stop or capture DIR'),
                          (b"capture rel/dir", "error control request: capture wants an absolute directory"),
                          (b"capture /x/../y", "error control request: capture wants an absolute directory"),
                          (b"status\x00", "error control request: contains a NUL byte"),
                          (b"x" * 5000, "error control request longer than 4096 bytes")):
            got = ask(msg)
            check(got.startswith(want), "request %r: reply %r, want %r" % (msg[:40], got, want))

        r = ctx.spore("resume", a, "--control", sock, "--for", "5s", timeout=30, expect=EXIT_SPORE_FAILED)
        check("control socket %s: in use by a running VM" % sock in r.err, "a live socket taken over:\n" +
              r.describe())
        r = ctx.spore("control", sock, "status", timeout=30, expect=0)
        check(r.out.startswith("ok state=running pid=%d " % vm.pid), "spore control status\n" + r.describe())
        check(ask(b"stop") == "ok", "stop")
        _, err = vm.communicate(timeout=30)
    finally:
        if vm.poll() is None:
            os.killpg(vm.pid, signal.SIGKILL)
            vm.communicate()
        if rfd >= 0:
            os.close(rfd)
    check(vm.returncode == 0, "a VM stopped through its control socket exits 0, got %s\n%s" % (vm.returncode, err))
    check(not os.path.exists(sock), "the control socket was left behind")
    r = ctx.spore("resume", b, "--for", "1s", timeout=60, expect=0)
    lines = r.lines()
    assert_clean(r, lines)
    one_gen(r, lines, 2)
    check(any(ln.startswith("tg: pulse ") for ln in lines), "the spore captured through --control does not run\n" +
          r.describe())
    r = ctx.spore("control", ctx.path("nothing.sock"), "status", timeout=30, expect=EXIT_SPORE_FAILED)
    check("control: connect to" in r.err, "spore control without a VM\n" + r.describe())


# ---- the opt-in jail -----------------------------------------------------------

def thread_status(pid):
    """{tid: {field: value}} of the jail-relevant /proc status fields."""
    res = {}
    for tid in os.listdir("/proc/%d/task" % pid):
        try:
            with open("/proc/%d/task/%s/status" % (pid, tid)) as f:
                st = dict(ln.split(":", 1) for ln in f.read().splitlines() if ":" in ln)
        except OSError:
            continue  # the thread ended
        res[tid] = {k: st[k].split() for k in ("Name", "Uid", "Gid", "CapPrm", "CapEff", "CapInh", "CapBnd",
                                                "CapAmb", "NoNewPrivs", "Seccomp") if k in st}
    return res


def check_jailed(pid, uid, what):
    """Every thread of pid: seccomp filter, no_new_privs, no capabilities, uid."""
    ts = thread_status(pid)
    check(len(ts) >= 2, "%s: want the main and vCPU threads, got %s" % (what, ts))
    for tid, st in ts.items():
        if st["Name"][0].startswith("kvm-"):
            continue  # a kernel worker attached to the VM: not ours
        bad = [k for k in ("CapPrm", "CapEff", "CapInh", "CapBnd", "CapAmb") if int(st[k][0], 16)]
        check(not bad, "%s: thread %s (%s) still has capabilities %s" % (what, tid, st["Name"][0], st))
        check(st["NoNewPrivs"] == ["1"] and st["Seccomp"] == ["2"],
              "%s: thread %s (%s) is not under the seccomp filter with no_new_privs: %s" %
              (what, tid, st["Name"][0], st))
        check(st["Uid"] == [str(uid)] * 4, "%s: thread %s runs as uid %s, want %d" % (what, tid, st["Uid"], uid))
    return ts


def jail_mounts(pid):
    """The jailed process's mounts, as it sees them: {mount point: (fstype, options)}."""
    out = {}
    with open("/proc/%d/mountinfo" % pid) as f:
        for line in f:
            pre, post = line.split(" - ", 1)
            fields = pre.split()
            out[fields[4]] = (post.split()[0], fields[5].split(","))
    return out


def check_jail_view(pid, want, what):
    """The jail shows a read-only tmpfs root and exactly want ({path: rw})."""
    m = jail_mounts(pid)
    check(set(m) == {"/"} | set(want), "%s: the jail's mounts are %s, want / and %s" % (what, sorted(m), sorted(want)))
    check(m["/"][0] == "tmpfs" and "ro" in m["/"][1], "%s: the jail's root is %s, want a read-only tmpfs" %
          (what, m["/"]))
    for path, rw in want.items():
        opts = m.get(path, ("", []))[1]
        check(("rw" if rw else "ro") in opts and "nosuid" in opts and "nodev" in opts and "noexec" in opts,
              "%s: %s is mounted %s, want %s,nosuid,nodev,noexec" % (what, path, opts, "rw" if rw else "ro"))


def jailed_vm(ctx, spore_dir, extra, uid, check_control=None, sock=None, view=None):
    """spore resume --jail with a control socket: checks every thread is
    jailed and what the jail shows (view, default: the test's directory,
    which holds the spore and the socket), asks status (and
    check_control(sock), if given), stops it."""
    sock = sock or ctx.path("jail.sock")
    if os.path.exists(sock):
        os.unlink(sock)  # left by a VMM that ran as another uid
    epath = ctx.path("jail.err")
    with open(ctx.path("jail.out"), "w") as out, open(epath, "w") as err:
        vm = subprocess.Popen([ctx.spore_bin, "resume", spore_dir, "--jail", "--control", sock] + extra,
                              stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=ctx.env, cwd=ctx.tmp,
                              start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while True:
            r = subprocess.run([ctx.spore_bin, "control", sock, "status"], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, env=ctx.env, text=True, timeout=30)
            if r.returncode == 0:
                break
            check(vm.poll() is None, "jailed VM ended (%s) before its control socket answered: %s" %
                  (vm.returncode, read(epath).decode(errors="replace")))
            check(time.monotonic() < deadline, "no answer on the jailed VM's control socket: %s" % r.stderr)
            time.sleep(0.05)
        check(re.match(r"^ok state=running pid=%d generation=[0-9a-f]{32} counter=\d+$" % vm.pid, r.stdout),
              "status of a jailed VM: %r" % r.stdout)
        ts = check_jailed(vm.pid, uid, "resume --jail %s" % " ".join(extra))
        check_jail_view(vm.pid, view or {ctx.tmp: True}, "resume --jail %s" % " ".join(extra))
        if check_control:
            check_control(sock)
        r = subprocess.run([ctx.spore_bin, "control", sock, "stop"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           env=ctx.env, text=True, timeout=30)
        check(r.returncode == 0 and r.stdout.strip() == "ok", "stop a jailed VM: %r %r" % (r.stdout, r.stderr))
        vm.wait(timeout=30)
    finally:
        if vm.poll() is None:
            os.killpg(vm.pid, signal.SIGKILL)
            vm.wait()
    err = read(epath).decode(errors="replace")
    check(vm.returncode == 0, "a jailed VM stopped through its control socket exits 0, got %s\n%s" %
          (vm.returncode, err))
    check("sanitizer" not in err.lower(), "sanitizer report from a jailed VM:\n%s" % err)
    return read(ctx.path("jail.out")).decode(errors="replace"), ts


def test_jail_resume(ctx):
    """resume --jail (and --jail-uid): the guest runs as without the jail;
    every VMM thread (the vsock device's too) has no capabilities, no_new_privs
    and the seccomp filter; the control socket works; capture through it works
    as root and fails with a clear error where the jail's uid cannot write."""
    a = ctx.path("A")
    # The sockets live here: a VMM running as 65534 must get through to them
    # (the agent job reconnects by path), without listing or writing.
    os.chmod(ctx.tmp, 0o711)
    boot_capture(ctx, a, args=("mode=demo", "warm_ms=50", "pulse_ms=20"))
    for extra in ([], ["--jail-uid", "65534"]):
        for verb in (["resume", a], ["run", "--from", a]):
            r = ctx.spore(*verb, "--jail", *extra, "--for", "500ms", timeout=60, expect=0)
            lines = r.lines()
            assert_clean(r, lines)
            one_gen(r, lines, 1)
            check(any(ln.startswith("tg: pulse ") for ln in lines), "a jailed guest does not run\n" + r.describe())
            check("sanitizer" not in r.err.lower(), "sanitizer report from a jailed VM\n" + r.describe())

    b = ctx.path("B")

    def capture_ok(sock):
        r = ctx.spore("control", sock, "capture", b, timeout=60, expect=0)
        check(r.out.startswith("ok ms="), "capture of a jailed VM\n" + r.describe())

    out, _ = jailed_vm(ctx, a, [], 0, capture_ok)
    check(re.search(r"^tg: pulse ", out, re.M), "the jailed guest did not pulse:\n" + out)
    r = ctx.spore("resume", b, "--for", "500ms", timeout=60, expect=0)
    lines = r.lines()
    assert_clean(r, lines)
    one_gen(r, lines, 2)

    c = ctx.path("C")

    def capture_refused(sock):
        # ctx.tmp is root's and 0700: uid 65534 cannot create C there.
        r = ctx.spore("control", sock, "capture", c, timeout=60, expect=1)
        check(r.out.startswith("error capture") and c in r.out and "Permission denied" in r.out,
              "capture by a VMM jailed as uid 65534 into root's directory\n" + r.describe())
        check(not os.path.exists(c), "a refused capture left %s behind" % c)

    jailed_vm(ctx, a, ["--jail-uid", "65534"], 65534, capture_refused)

    # A spore with the test guest's agent: the vsock device's thread starts
    # before the jail and must be jailed too; the agent answers.
    v = ctx.path("V")
    ctx.spore("run", "--kernel", ctx.guest, "--vsock", ctx.path("cap.vsock"), "--capture", v, "--capture-on",
              "ready", "--", "echo", "warm", timeout=120, expect=0)
    # --vsock in the test's directory: a VMM jailed as 65534 cannot remove
    # its socket, nor a private vsock directory it made in root's $TMPDIR.
    # A VMM never takes over an existing socket: one path per run.
    for extra, uid in (([], 0), (["--jail-uid", "65534:65534"], 65534)):
        r = ctx.spore("resume", v, "--jail", *extra, "--vsock", ctx.path("cmd%d.vsock" % uid), "--hostname", "jailed",
                      "--", "hostname", timeout=60, expect=0)
        check("jailed\n" in r.out and "sanitizer" not in r.err.lower(), "agent command in a jailed VM\n" +
              r.describe())
        _, ts = jailed_vm(ctx, v, extra + ["--vsock", ctx.path("ctl%d.vsock" % uid)], uid)
        check(any(st["Name"][0] == "vsock-io" for st in ts.values()), "no vsock-io thread was checked: %s" % ts)

    # As root the jail is the default: a booted VM (boot_capture above) ran
    # jailed; --no-jail opts out.
    r = ctx.spore("resume", a, "--no-jail", "--for", "300ms", timeout=60, expect=0)
    check("jailed" not in r.err, "--no-jail: the VMM says it was jailed\n" + r.describe())
    for args, want in ((["resume", a, "--no-jail", "--jail-uid", "65534"], "--jail-uid and --jail-bind need the jail"),
                       (["resume", a, "--no-jail", "--jail"], "--jail and --no-jail contradict"),
                       (["resume", a, "--jail-bind", "relative"], "--jail-bind relative: want an absolute"),
                       (["resume", a, "--jail-bind", ctx.path("missing")], "not a directory"),
                       (["resume", a, "--jail", "--jail-uid", "0"], "--jail-uid 0: want UID[:GID]"),
                       (["resume", a, "--jail", "--jail-uid", "65534:x"], "--jail-uid 65534:x: want UID[:GID]"),
                       (["resume", a, "--control", "/jail-test.sock"], "would show the whole file system"),
                       (["resume", a, "--control", ctx.path("..", os.path.basename(ctx.tmp), "c.sock")], "without \"..\""),
                       (["resume", "--pool", ctx.path("nopool.sock"), a, "--jail"], "--pool does not take")):
        r = ctx.spore(*args, timeout=30, expect=EXIT_SPORE_FAILED)
        check(want in r.err, "want %r on stderr\n%s" % (want, r.describe()))
    check(not os.path.exists("/jail-test.sock"), "a refused --control left /jail-test.sock")


def test_jail_view(ctx):
    """What a jailed VMM's file system shows: a read-only tmpfs root, the
    spore read-only, its sockets' directories, --jail-bind; captures
    outside them are refused with a clear error, inside them work, and a
    capture linking chunks across two shown directories still works."""
    sp, ctl, out = ctx.path("spores"), ctx.path("ctl"), ctx.path("out")
    for d in (sp, ctl, out):
        os.mkdir(d)
    a = os.path.join(sp, "A")
    boot_capture(ctx, a, args=("mode=demo", "warm_ms=50", "pulse_ms=20"))
    sock = os.path.join(ctl, "c.sock")

    def refused(s):
        r = ctx.spore("control", s, "capture", os.path.join(out, "X"), timeout=60, expect=1)
        check("outside the jail, which shows only" in r.out and "--jail-bind" in r.out and ctl in r.out,
              "capture outside the jail\n" + r.describe())
        # inside the socket's directory, beside the socket: allowed
        r = ctx.spore("control", s, "capture", os.path.join(ctl, "B"), timeout=60, expect=0)
        check(r.out.startswith("ok ms="), "capture into a shown directory\n" + r.describe())

    jailed_vm(ctx, a, [], 0, refused, sock=sock, view={a: False, ctl: True})
    r = ctx.spore("resume", os.path.join(ctl, "B"), "--for", "300ms", timeout=60, expect=0)
    one_gen(r, r.lines(), 2)

    def bound(s):
        r = ctx.spore("control", s, "capture", os.path.join(out, "Y"), timeout=60, expect=0)
        check(r.out.startswith("ok ms="), "capture into --jail-bind\n" + r.describe())

    jailed_vm(ctx, a, ["--jail-bind", out], 0, bound, sock=sock, view={a: False, ctl: True, out: True})
    r = ctx.spore("resume", os.path.join(out, "Y"), "--for", "300ms", timeout=60, expect=0)
    one_gen(r, r.lines(), 2)
    # The host saw nothing of the jails: no mount of ours is left.
    with open("/proc/self/mountinfo") as f:
        left = [ln for ln in f if ctx.tmp in ln]
    check(not left, "mounts left on the host: %s" % left)


def test_sharing(ctx):
    a, f = ctx.path("A"), ctx.path("F")
    n, mem = 20, 256
    boot_capture(ctx, a, vcpus=1, mem=mem, args=("mode=demo", "work_mib=32", "warm_ms=200"), timeout=300)
    ctx.spore("fork", a, "--count", n, "--out", f, timeout=60, expect=0)

    # Our own look, once every child has restored and run its self-check
    # (which reads its whole workload): chunk pages must be shared page
    # cache, not private copies.
    steady = {}

    def sample(fanout_pid, out):
        if steady or len(re.findall(r"^child-\d+\| tg: selfcheck ok$", out, re.M)) < n:
            return
        for pid in child_pids(fanout_pid):
            mem = smaps_rollup(pid)
            if mem:
                steady[pid] = mem

    helptext = ctx.spore("fanout", "--help", timeout=30, expect=0).out
    summary = ctx.path("summary.json") if "--summary-json" in helptext else None
    r = ctx.spore_watch("fanout", f, "--parallel", "--for", "3s", *(["--summary-json", summary] if summary else []),
                        timeout=600, expect=0, poll=sample)
    if summary:
        with open(summary) as fh:
            js = json.load(fh)
        statuses = {c["name"]: c["status"] for c in js["per_child"]}
        check(js["children"] == n and js["failed"] == 0 and len(statuses) == n and
              all(v == 0 for v in statuses.values()),
              "--summary-json: %s children, %s failed, statuses %s" % (js["children"], js["failed"], statuses))
        check(abs(sum(c["private_mib"] for c in js["per_child"]) - js["private_mib_sum"]) < 1,
              "--summary-json: private_mib_sum is not the sum of per_child private_mib")
        check(js["private_mib_sum"] < n * mem / 4,
              "--summary-json: children's private memory sums to %.1f MiB, want < %.0f MiB (%d x %d MiB / 4)" %
              (js["private_mib_sum"], n * mem / 4, n, mem))
        print("  --summary-json: private_mib_sum %.1f, stored_mib %d" % (js["private_mib_sum"], js["stored_mib"]))
    m = re.search(r"fanout: (\d+) children \(parallel\) in [\d.]+ ms, (\d+) failed", r.err)
    check(m, "no fanout summary on stderr\n%s" % r.describe())
    check(int(m.group(1)) == n and int(m.group(2)) == 0,
          "fanout: %s children, %s failed; want %d, 0\n%s" % (m.group(1), m.group(2), n, r.describe()))
    st = re.search(r"spore memory (\d+) MiB, (\d+) MiB stored", r.err)
    pm = re.search(r"private memory per child: +avg +([\d.]+) MiB +max +([\d.]+) MiB +"
                   r"\(sum ([\d.]+) MiB vs (\d+) MiB if copied\)", r.err)
    check(st and pm, "fanout summary lacks the memory lines\n%s" % r.describe())
    stored, priv_sum, copied = int(st.group(2)), float(pm.group(3)), int(pm.group(4))
    check(int(st.group(1)) == mem and copied == n * mem,
          "fanout summary: spore memory %s MiB, %d if copied; want %d, %d" % (st.group(1), copied, mem, n * mem))
    check(stored >= 32, "the spore stores %d MiB: the 32 MiB workload is missing" % stored)
    limit = n * mem / 4
    check(priv_sum > 0, "fanout measured no private memory at all\n%s" % r.describe())
    check(priv_sum < limit,
          "children's private memory sums to %.1f MiB, want < %.0f MiB (%d x %d MiB / 4)\n%s" %
          (priv_sum, limit, n, mem, r.describe()))
    print("  fanout: private memory sum %.1f MiB for %d children (limit %.0f), %d MiB stored" %
          (priv_sum, n, limit, stored), flush=True)

    check(len(steady) == n, "sampled %d of %d children after all had self-checked (were they still "
          "running?)\n%s" % (len(steady), n, r.describe()))
    priv = sum(v["Private_Clean"] + v["Private_Dirty"] for v in steady.values()) / 1024
    shared_min = min(v["Shared_Clean"] for v in steady.values()) / 1024
    print("  steady state: private sum %.1f MiB, least shared-clean %.1f MiB per child" % (priv, shared_min),
          flush=True)
    check(priv < n * stored / 2,
          "with every child running, their private memory sums to %.1f MiB: not below half of "
          "%d x %d MiB stored, so chunks are being copied" % (priv, n, stored))
    check(shared_min >= stored / 2,
          "a child shares only %.1f MiB clean pages; its %d MiB of chunks should be shared page cache" %
          (shared_min, stored))
    for i in range(1, n + 1):
        lines = r.lines("child-%02d| " % i)
        assert_clean(r, lines)
        one_gen(r, lines, 1)
        checks(r, lines, 1)
        selfcheck_ok(r, lines)


def child_pids(ppid):
    pids = []
    for e in os.listdir("/proc"):
        if e.isdigit():
            try:
                with open("/proc/%s/stat" % e) as fh:
                    if int(fh.read().rsplit(")", 1)[1].split()[1]) == ppid:
                        pids.append(int(e))
            except (OSError, ValueError, IndexError):
                pass
    return pids


def smaps_rollup(pid):
    """{field: kB} of /proc/PID/smaps_rollup, or None once it is gone."""
    res = {}
    try:
        with open("/proc/%d/smaps_rollup" % pid) as fh:
            for ln in fh:
                k, _, v = ln.partition(":")
                v = v.split()
                if len(v) == 2 and v[1] == "kB":
                    res[k] = int(v[0])
    except OSError:
        return None
    return res if "Private_Dirty" in res else None


# ---- cli_errors --------------------------------------------------------------

def test_cli_errors(ctx):
    g = ctx.guest
    existing = ctx.path("exists")
    os.mkdir(existing)
    with open(os.path.join(existing, "keep"), "w") as fh:
        fh.write("keep\n")
    notelf = ctx.path("not-an-elf")
    with open(notelf, "w") as fh:
        fh.write("#!/bin/sh\n")
    empty = ctx.path("empty-dir")
    os.mkdir(empty)
    quick = ["--", "mode=bench", "warm_ms=50"]
    spore_dir = ctx.path("spore")
    boot_capture(ctx, spore_dir, args=("mode=bench", "warm_ms=50"))
    afile = ctx.path("a-file")
    with open(afile, "w") as fh:
        fh.write("not a directory\n")
    cases = [
        (["run", "--kernel", g, "--vcpus", "0"] + quick, r'--vcpus must be an integer in 1\.\.16, got "0"'),
        (["run", "--kernel", g, "--vcpus", "17"] + quick, r'--vcpus must be an integer in 1\.\.16, got "17"'),
        (["run", "--kernel", g, "--mem", "3"] + quick, r"--mem must be an even number of MiB, got 3"),
        (["run", "--kernel", g, "--mem", "1"] + quick, r'--mem must be an integer in 2\.\.\d+, got "1"'),
        (["run", "--kernel", g, "--mem", "lots"] + quick, r'--mem must be an integer .*"lots"'),
        (["run", "--kernel", g, "--capture", ctx.path("c1")] + quick, r"--capture needs --capture-on"),
        (["run", "--kernel", g, "--capture-on", "ready"] + quick, r"--capture-on needs --capture"),
        (["run", "--kernel", g, "--capture", ctx.path("c2"), "--capture-on", "never"] + quick,
         r'--capture-on must be .*got "never"'),
        (["run", "--kernel", g, "--capture", ctx.path("c3"), "--capture-on", "after:soon"] + quick,
         r'bad duration "soon"'),
        (["run", "--kernel", g, "--for", "abc"] + quick, r'bad duration "abc"'),
        (["run", "--kernel", g, "--for", "5 parsecs"] + quick, r'bad duration unit in "5 parsecs"'),
        (["run", "--kernel", g, "--for", "0"] + quick, r"--for must be longer than 0"),
        (["run"] + quick, r"--kernel is required"),
        (["run", "--kernel", ctx.path("no-such-kernel")] + quick,
         r"kernel %s: .*not found" % re.escape(ctx.path("no-such-kernel"))),
        (["run", "--kernel", notelf] + quick,
         r"kernel %s: neither an ELF file nor a Linux bzImage" % re.escape(notelf)),
        (["run", "--kernel", g, "--initrd", notelf] + quick,
         r"kernel %s is an ELF file: --initrd needs a Linux bzImage" % re.escape(g)),
        # Refused before the guest runs (it could warm for minutes first).
        (["run", "--kernel", g, "--capture", existing, "--capture-on", "ready"] + quick,
         r"--capture %s: already exists" % re.escape(existing)),
        (["run", "--kernel", g, "--capture", os.path.join(afile, "s"), "--capture-on", "ready"] + quick,
         r"--capture %s: %s is not a directory" % (re.escape(os.path.join(afile, "s")), re.escape(afile))),
        (["resume", ctx.path("no-such-spore")], r"open spore %s: No such file" % re.escape(ctx.path("no-such-spore"))),
        (["resume"], r"resume: exactly one spore directory expected"),
        (["resume", empty], r"spore manifest.*(not found|No such file)"),
        (["inspect", ctx.path("no-such-spore")], r"open spore .*no-such-spore"),
        (["fork", empty, "--count", "0", "--out", ctx.path("f")], r'--count must be an integer in 1\.\.10000, got "0"'),
        (["fork", empty, "--count", "2"], r"fork: need DIR, --count and --out"),
        (["fork", spore_dir, "--count", "2", "--out", afile], r"fork: .*%s" % re.escape(afile)),
        (["fanout", empty], r"fanout: no child spores in %s" % re.escape(empty)),
        (["fanout", empty, "--for", "xyz"], r'bad duration "xyz"'),
        (["frobnicate"], r'unknown command "frobnicate"'),
    ]
    other = other_fs_dir(ctx)
    if other:
        cases.append((["fork", spore_dir, "--count", "2", "--out", os.path.join(other, "F")],
                      r"fork: --out must be on the spore's filesystem"))
    failures = []
    for args, pattern in cases:
        r = ctx.spore(*args, timeout=60)
        if r.rc != EXIT_SPORE_FAILED:
            failures.append("want exit status %d\n%s" % (EXIT_SPORE_FAILED, r.describe()))
        elif not re.search(pattern, r.err):
            failures.append("stderr does not match /%s/\n%s" % (pattern, r.describe()))
        elif args[0] == "run" and r.out:
            failures.append("the guest ran before a usage error was reported\n%s" % r.describe())
    if other and os.path.isdir(os.path.join(other, "F")):
        check(not os.listdir(os.path.join(other, "F")),
              "a refused fork left %s in --out" % os.listdir(os.path.join(other, "F")))
    check(read(os.path.join(existing, "keep")) == b"keep\n" and os.listdir(existing) == ["keep"],
          "a refused capture touched the existing directory")
    left = [e for e in os.listdir(ctx.tmp) if ".tmp." in e]
    check(not left, "a failed capture left temporary directories: %s" % left)
    for d in ("c1", "c2", "c3", "f"):
        check(not os.path.exists(ctx.path(d)), "a refused command created %s" % d)
    check(not failures, "%d of %d cases failed:\n\n%s" % (len(failures), len(cases), "\n\n".join(failures)))


TESTS = {
    "continuity": test_continuity,
    "chain": test_chain,
    "fork_identity": test_fork_identity,
    "fanout_report": test_fanout_report,
    "fail_closed": test_fail_closed,
    "sharing": test_sharing,
    "seals": test_seals,
    "pool": test_pool,
    "control": test_control,
    "jail-resume": test_jail_resume,
    "jail-view": test_jail_view,
    "cli_errors": test_cli_errors,
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
    why = kvm_usable()
    if why:
        print("SKIP kvm-%s: %s" % (name, why))
        return SKIP
    for p in (spore, guest):
        if not os.path.isfile(p):
            print("FAIL kvm-%s: %s does not exist (build it first)" % (name, p))
            return 1
    tmp = tempfile.mkdtemp(prefix="spore-kvm-%s-" % name)
    t0 = time.monotonic()
    ok = False
    ctx = Ctx(spore, guest, tmp)
    try:
        TESTS[name](ctx)
        ok = True
        print("PASS kvm-%s (%.1fs)" % (name, time.monotonic() - t0))
        return 0
    except Fail as e:
        print("FAIL kvm-%s: %s" % (name, e))
        return 1
    finally:
        for d in [tmp] + ctx.cleanup:
            if ok or not os.environ.get("SPORE_TEST_KEEP"):
                shutil.rmtree(d, ignore_errors=True)
            else:
                print("kept %s" % d)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
