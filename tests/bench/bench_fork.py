#!/usr/bin/env python3
"""bench-fork: private memory of 20 children resumed at once from one spore,
side by side with 20 QEMUs restoring the same warmed guest from a migration
file (the eager peer: each holds its own copy of the guest's memory).

usage: bench_fork.py SPORE_BIN TESTGUEST_ELF QEMU_FORK_PEER_BIN
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile

CHILDREN = 20
MEM_MIB = 256
WORK_MIB = 64  # the spore's non-zero memory: a warmed guest's working set
RUN_SECS = 3
GUEST_ARGS = ["mode=demo", f"work_mib={WORK_MIB}"]


def spore_side(spore, elf, work):
    base, kids, summary = (os.path.join(work, n) for n in ("base", "kids", "summary.json"))
    env = dict(os.environ, SPORE_STATE_DIR=os.path.join(work, "state"))
    subprocess.run([spore, "run", "--kernel", elf, "--mem", str(MEM_MIB), "--capture", base,
                    "--capture-on", "ready", "--"] + GUEST_ARGS,
                   check=True, stdout=subprocess.DEVNULL, timeout=120, env=env)
    subprocess.run([spore, "fork", base, "--count", str(CHILDREN), "--out", kids],
                   check=True, stdout=subprocess.DEVNULL, timeout=60, env=env)
    subprocess.run([spore, "fanout", kids, "--parallel", "--for", f"{RUN_SECS}s", "--summary-json", summary],
                   check=True, stdout=subprocess.DEVNULL, timeout=300, env=env)
    with open(summary) as f:
        return json.load(f)


def qemu_side(peer, elf):
    # The same guest, memory size and settle time; QEMU's private memory is
    # its whole anonymous memory (guest RAM included: -incoming copies it in).
    p = subprocess.run([peer, elf, str(MEM_MIB), str(CHILDREN), str(RUN_SECS * 1000 // 2), " ".join(GUEST_ARGS)],
                       stdout=subprocess.PIPE, text=True, timeout=600)
    if p.returncode != 0:
        raise SystemExit(f"bench: QEMU peer failed (exit {p.returncode})")
    return json.loads(p.stdout.strip().splitlines()[-1])


def main():
    spore, elf, peer = sys.argv[1], sys.argv[2], sys.argv[3]
    work = tempfile.mkdtemp(prefix="bench-fork.")
    try:
        s = spore_side(spore, elf, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    q = qemu_side(peer, elf)
    total, own, written = s["private_mib_avg"], s["vmm_private_mib_avg"], s["guest_written_mib_avg"]
    stored, qpriv = s["stored_mib"], q["private_mib_avg"]
    print(f"bench: {CHILDREN} children of a {MEM_MIB} MiB spore ({stored} MiB non-zero), all running for {RUN_SECS} s")
    print(f"bench:   spore  private per child avg {total:7.2f} MiB (max {s['private_mib_max']:.2f}): "
          f"{written:.2f} MiB pages the guest wrote + {own:.2f} MiB the VMM's own (max {s['vmm_private_mib_max']:.2f})")
    print(f"bench:   QEMU   private per child avg {qpriv:7.2f} MiB (max {q['private_mib_max']:.2f}), "
          f"restored with -incoming from a migration file")
    print(f"RESULT children={CHILDREN} spore_mib={MEM_MIB} stored_mib={stored} private_mib_per_child={own:.2f} "
          f"guest_written_mib_per_child={written:.2f} total_private_mib_per_child={total:.2f} "
          f"qemu_private_mib_per_child={qpriv:.2f} ratio_vs_qemu={qpriv / max(total, 0.01):.1f}")
    return 0 if s["failed"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
