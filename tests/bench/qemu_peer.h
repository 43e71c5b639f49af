/* QEMU restore peer for the bench-restore benchmark: boot testguest, save its state, time restores. */
#ifndef SPORELET_QEMU_PEER_H
#define SPORELET_QEMU_PEER_H

#include <stddef.h>

/* Boots testguest under QEMU (PVH, -accel kvm, one vCPU, mem_mib RAM) with `cmdline`,
 * waits (bounded) for the line "tg: ready" on the serial output, stops the VM and saves
 * its migration state to state_path via QMP (a private unix socket: qmp_capabilities,
 * stop, migrate to "exec:cat > state_path", poll query-migrate until completed, quit).
 * Returns 0, or -1 with a message in errbuf. */
int qemu_peer_prepare(const char *qemu, const char *elf, const char *cmdline,
		      unsigned mem_mib, const char *state_path, char *errbuf, size_t errlen);

/* Launches QEMU with the same machine options plus -incoming "exec:cat state_path",
 * measures wall time from just before fork() to the first byte read from the guest
 * serial output (QEMU stdout; nothing else can be printed there), then kills
 * and reaps that QEMU. Returns 0 with *ms_out set, or -1 with a message in errbuf. */
int qemu_peer_restore_once(const char *qemu, const char *elf, unsigned mem_mib,
			   const char *state_path, double *ms_out, char *errbuf, size_t errlen);

/* The guest command line the benchmark uses for the peer: the restored guest
 * prints a pulse line within about 1 ms of resuming. */
#define QEMU_PEER_CMDLINE "mode=bench pulse_ms=1 hz=1000"

#endif
