#!/usr/bin/env python3
"""bench-fork: private memory of 20 children resumed at once from one spore."""
import json
import os
import shutil
import subprocess
import sys
import tempfile

CHILDREN = 20
MEM_MIB = 256
WORK_MIB = 64  # the spore's non-zero memory: a warmed guest's working set


def main():
    spore, elf = sys.argv[1], sys.argv[2]
    work = tempfile.mkdtemp(prefix="bench-fork.")
    try:
        base, kids, summary = (os.path.join(work, n) for n in ("base", "kids", "summary.json"))
        subprocess.run([spore, "run", "--kernel", elf, "--mem", str(MEM_MIB), "--capture", base,
                        "--capture-on", "ready", "--", "mode=demo", f"work_mib={WORK_MIB}"],
                       check=True, stdout=subprocess.DEVNULL, timeout=120)
        subprocess.run([spore, "fork", base, "--count", str(CHILDREN), "--out", kids],
                       check=True, stdout=subprocess.DEVNULL, timeout=60)
        subprocess.run([spore, "fanout", kids, "--parallel", "--for", "3s", "--summary-json", summary],
                       check=True, stdout=subprocess.DEVNULL, timeout=300)
        with open(summary) as f:
            s = json.load(f)
        per_child = s["private_mib_avg"]
        stored = s["stored_mib"]
        # The peer is an eager restore (QEMU -incoming, Cloud Hypervisor's
        # default): every child holds its own copy of the spore's non-zero
        # memory, at least `stored` MiB each.
        print(f"bench: {CHILDREN} children of a {MEM_MIB} MiB spore ({stored} MiB non-zero), "
              f"private memory per child avg {per_child:.2f} MiB max {s['private_mib_max']:.2f} MiB; "
              f"an eager copy needs >= {stored} MiB per child")
        print(f"RESULT children={CHILDREN} spore_mib={MEM_MIB} stored_mib={stored} "
              f"private_mib_per_child={per_child:.2f} ratio_vs_copy={stored / max(per_child, 0.01):.1f}")
        return 0 if s["failed"] == 0 else 1
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
