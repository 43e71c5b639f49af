#!/usr/bin/env python3
"""bench-pull: `spore pull` of a 1 GiB spore (512 random, incompressible 2 MiB
chunks) into an empty node cache, side by side with curl fetching the same
blobs (manifest, config, every layer) from the same registry with the same
concurrency, in the same run.

The peer is curl saving every blob to a file on the same filesystem and
fsyncing it (`curl -o F URL && sync F`, then the directory): the same end
state as a pull, the blobs durably on this node's disk, without the
verification, the chunk table and the spore directory. So `ratio` is the
price of full verification. The transport ceiling is measured too: curl
writing to /dev/null (`curl_null_mib_s`, `ratio_null`), which no pull that
keeps what it fetched can reach once the disk is slower than the network.

usage: bench_pull.py SPORE_BIN TESTGUEST_ELF
Each round prints wall time and CPU (user/sys of the client, CPU of the
registry) of both sides, and the pull's own breakdown (its "fetch round"
debug line: fetch_ms, part_wait_ms = transfers waiting for hashing and the
disk, commit_ms = making the round durable and linking it).
Ends with: RESULT pull_mib_s=<x> curl_mib_s=<y> ratio=<pull/curl>
                  curl_null_mib_s=<z> ratio_null=<pull/z>
Exit status 0, 1 (could not run), 77 (no /dev/kvm, docker-registry or curl).
"""

import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as H  # noqa: E402

NCHUNKS = 512  # 1 GiB
PARALLEL = 8
ROUNDS = 2  # each side twice, interleaved; the best round counts
REPO = "bench/pull"


def skip_reason():
    if not os.path.exists("/dev/kvm") or not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return "no usable /dev/kvm (the template spore is a real capture)"
    if not shutil.which("curl"):
        return "curl is not installed"
    return H.registry_tools_missing()


def bench_env(work):
    docker = os.path.join(work, "docker")
    os.makedirs(docker, exist_ok=True)
    return dict(os.environ, SPORE_LOG="warn", SPORE_STATE_DIR=os.path.join(work, "state"),
                SPORE_CACHE_DIR=os.path.join(work, "cache"), DOCKER_CONFIG=docker)


def synthetic_spore(spore, elf, work, env, nchunks=NCHUNKS):
    """A 1 GiB test-guest capture whose memory is replaced by nchunks random chunks."""
    tmpl = H.capture_spore(spore, elf, os.path.join(work, "template"), mem=2 * nchunks,
                           args=("mode=bench", "warm_ms=50"), env=env, timeout=300)
    s = os.path.join(work, "spore")
    t0 = time.monotonic()
    H.make_synthetic_spore(tmpl, s, nchunks)
    print("bench: wrote a %d MiB synthetic spore in %.1fs" % (2 * nchunks, time.monotonic() - t0), flush=True)
    shutil.rmtree(tmpl)
    return s


def must(r, what):
    if r.rc != 0:
        raise H.HarnessError("%s failed (exit %s)\n%s\n%s" % (what, r.rc, H.tail(r.out), H.tail(r.err)))
    return r


def proc_cpu_s(pid):
    """User + system CPU seconds of a running process (the registry)."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return 0.0


class Usage:
    """CPU used by waited-for children and by the registry between start and stop."""

    def __init__(self, reg_pid):
        self.reg_pid = reg_pid
        self.c0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        self.r0 = proc_cpu_s(reg_pid)

    def stop(self):
        c1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        return ("user=%.2fs sys=%.2fs registry_cpu=%.2fs" %
                (c1.ru_utime - self.c0.ru_utime, c1.ru_stime - self.c0.ru_stime, proc_cpu_s(self.reg_pid) - self.r0))


def curl_round(urls, accept_manifest, out_dir=None):
    """All blobs with PARALLEL curls at a time (xargs -P); seconds.
    out_dir None: to /dev/null. Otherwise each blob is saved to a file in
    out_dir and fsynced as soon as it is complete (coreutils `sync FILE`),
    then out_dir itself, so the round ends with everything durable."""
    t0 = time.monotonic()
    if out_dir is None:
        m = subprocess.run(["curl", "-sSf", "-o", "/dev/null", "-H", "Accept: " + accept_manifest[1],
                            accept_manifest[0]], stderr=subprocess.PIPE, timeout=120)
        lst = "\n".join(urls) + "\n"
        p = subprocess.run(["xargs", "-P", str(PARALLEL), "-n", "1", "curl", "-sSf", "-o", "/dev/null"],
                           input=lst.encode(), stderr=subprocess.PIPE, timeout=600)
    else:
        os.makedirs(out_dir)
        mf = os.path.join(out_dir, "manifest.json")
        m = subprocess.run(["sh", "-c", 'curl -sSf -o "$0" -H "$1" "$2" && sync "$0"', mf,
                            "Accept: " + accept_manifest[1], accept_manifest[0]], stderr=subprocess.PIPE, timeout=120)
        lst = "".join("%s %s\n" % (os.path.join(out_dir, "blob%d" % i), u) for i, u in enumerate(urls))
        p = subprocess.run(["xargs", "-P", str(PARALLEL), "-n", "2", "sh", "-c", 'curl -sSf -o "$0" "$1" && sync "$0"'],
                           input=lst.encode(), stderr=subprocess.PIPE, timeout=600)
        if m.returncode == 0 and p.returncode == 0:
            subprocess.run(["sync", out_dir], check=True, timeout=120)
    dt = time.monotonic() - t0
    if m.returncode or p.returncode:
        raise H.HarnessError("curl failed: %s %s" % (m.stderr.decode(errors="replace"), p.stderr.decode(errors="replace")))
    if out_dir is not None:
        shutil.rmtree(out_dir)
    return dt


def main():
    if len(sys.argv) != 3:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    spore, elf = os.path.abspath(sys.argv[1]), os.path.abspath(sys.argv[2])
    why = skip_reason()
    if why:
        print("SKIP bench-pull: %s" % why)
        return 77
    work = tempfile.mkdtemp(prefix="bench-pull.")
    reg = H.Registry(parent_dir=work)
    try:
        env = bench_env(work)
        s = synthetic_spore(spore, elf, work, env)
        reg.start()
        ref = "%s/%s:v1" % (reg.host, REPO)
        t0 = time.monotonic()
        r = must(H.run([spore, "push", s, ref, "--parallel", PARALLEL], env=env, timeout=600), "spore push")
        print("bench: pushed in %.1fs: %s" % (time.monotonic() - t0, r.out.strip().splitlines()[-1]), flush=True)
        c = H.Client(reg.url)
        body, _ct, digest = c.get_manifest(REPO, "v1")
        m = json.loads(body)
        blobs = [m["config"]] + m["layers"]
        total = len(body) + sum(b["size"] for b in blobs)
        urls = ["%s/v2/%s/blobs/%s" % (reg.url, REPO, b["digest"]) for b in blobs]
        murl = ("%s/v2/%s/manifests/%s" % (reg.url, REPO, digest), H.MT_MANIFEST)
        pulls, curls, nulls = [], [], []
        mib = total / 1048576
        for i in range(ROUNDS):
            u = Usage(reg.proc.pid)
            nulls.append(curl_round(urls, murl))
            print("bench: round %d: curl to /dev/null %.2fs (%.0f MiB/s) %s" %
                  (i, nulls[-1], mib / nulls[-1], u.stop()), flush=True)
            u = Usage(reg.proc.pid)
            curls.append(curl_round(urls, murl, os.path.join(work, "curl%d" % i)))
            print("bench: round %d: curl to files, fsynced %.2fs (%.0f MiB/s) %s" %
                  (i, curls[-1], mib / curls[-1], u.stop()), flush=True)
            cache, out = os.path.join(work, "cache%d" % i), os.path.join(work, "pulled%d" % i)
            # debug: the pull's "fetch round" line, its own breakdown.
            penv = dict(env, SPORE_CACHE_DIR=cache, SPORE_LOG="debug")
            u = Usage(reg.proc.pid)
            t0 = time.monotonic()
            r = must(H.run([spore, "pull", ref, "--out", out, "--parallel", PARALLEL], env=penv, timeout=600),
                     "spore pull")
            pulls.append(time.monotonic() - t0)
            usage = u.stop()
            rounds = [" ".join(re.findall(r"\b(?:chunks|requests|\w+_ms)=\S+", line))
                      for line in r.err.splitlines() if "fetch round" in line]
            print("bench: round %d: spore pull %.2fs (%.0f MiB/s) %s; %s" %
                  (i, pulls[-1], mib / pulls[-1], usage, " | ".join(rounds) or "no fetch round reported"),
                  flush=True)
            shutil.rmtree(out, ignore_errors=True)
            shutil.rmtree(cache, ignore_errors=True)
        pull_s, curl_s, null_s = mib / min(pulls), mib / min(curls), mib / min(nulls)
        print("bench: %.0f MiB image (%d layers), %d-way parallel, best of %d: spore pull %.2fs (%.0f MiB/s, "
              "into an empty cache, verified, durable), curl %.2fs (%.0f MiB/s, to files, fsynced), "
              "curl %.2fs (%.0f MiB/s, to /dev/null)" %
              (mib, len(m["layers"]), PARALLEL, ROUNDS, min(pulls), pull_s, min(curls), curl_s, min(nulls), null_s))
        print("RESULT pull_mib_s=%.1f curl_mib_s=%.1f ratio=%.3f curl_null_mib_s=%.1f ratio_null=%.3f" %
              (pull_s, curl_s, pull_s / curl_s, null_s, pull_s / null_s))
        return 0
    except H.HarnessError as e:
        print("bench-pull: %s\nregistry log:\n%s" % (e, H.tail(reg.log())))
        return 1
    finally:
        reg.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
