#!/usr/bin/env python3
"""bench-push-delta: push a 1 GiB spore (512 random 2 MiB chunks), then a
child of it that differs in K=4 chunks (hard links to the parent's files,
4 new random chunks, parent = the parent's manifest digest), and report what
the child's push cost: bytes uploaded and wall time, against the bytes of
the chunks that are actually new.

usage: bench_push_delta.py SPORE_BIN TESTGUEST_ELF
Ends with: RESULT bytes_uploaded=<n> ms=<t> new_chunk_bytes=<n>
Exit status 0, 1 (could not run), 77 (no /dev/kvm or docker-registry).
"""

import json
import os
import shutil
import sys
import tempfile
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as H  # noqa: E402
from bench_pull import bench_env, must, synthetic_spore  # noqa: E402

K = 4
PARALLEL = 8
REPO = "bench/delta"


def main():
    if len(sys.argv) != 3:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    spore, elf = os.path.abspath(sys.argv[1]), os.path.abspath(sys.argv[2])
    if not os.path.exists("/dev/kvm") or not os.access("/dev/kvm", os.R_OK | os.W_OK):
        print("SKIP bench-push-delta: no usable /dev/kvm (the template spore is a real capture)")
        return 77
    why = H.registry_tools_missing()
    if why:
        print("SKIP bench-push-delta: %s" % why)
        return 77
    work = tempfile.mkdtemp(prefix="bench-push-delta.")
    reg = H.Registry(parent_dir=work)
    try:
        env = bench_env(work)  # one SPORE_CACHE_DIR: the node that pushed the parent pushes the child
        parent = synthetic_spore(spore, elf, work, env)
        reg.start()
        t0 = time.monotonic()
        r = must(H.run([spore, "push", parent, "%s/%s:parent" % (reg.host, REPO), "--parallel", PARALLEL, "--json"],
                       env=env, timeout=600), "spore push (parent)")
        pev = json.loads(r.out.strip().splitlines()[-1])
        print("bench: parent pushed in %.1fs, %d bytes uploaded" % (time.monotonic() - t0, pev["bytes_uploaded"]),
              flush=True)
        child = os.path.join(work, "child")
        H.make_child_spore(parent, child, K)
        t0 = time.monotonic()
        r = must(H.run([spore, "push", child, "%s/%s:child" % (reg.host, REPO), "--parallel", PARALLEL, "--json"],
                       env=env, timeout=600), "spore push (child)")
        ms = (time.monotonic() - t0) * 1000
        events = [json.loads(ln) for ln in r.out.splitlines() if ln.strip()]
        ev = events[-1]
        if ev.get("event") != "pushed":
            raise H.HarnessError("the child push's last event is %s" % ev)
        new = K * H.CHUNK_SIZE
        print("bench: child with %d new chunks pushed in %.0f ms: %d blobs, %d bytes uploaded (%.2fx the new "
              "chunks), %s blobs skipped; parent uploaded %d bytes" %
              (K, ms, ev.get("blobs_uploaded", -1), ev["bytes_uploaded"], ev["bytes_uploaded"] / new,
               ev.get("blobs_skipped"), pev["bytes_uploaded"]))
        print("RESULT bytes_uploaded=%d ms=%.0f new_chunk_bytes=%d" % (ev["bytes_uploaded"], ms, new))
        return 0
    except (H.HarnessError, ValueError, KeyError) as e:
        print("bench-push-delta: %s\nregistry log:\n%s" % (e, H.tail(reg.log())))
        return 1
    finally:
        reg.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
