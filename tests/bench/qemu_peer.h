/* QEMU peer for bench-restore and bench-fork: boot testguest, save its state, restore it. */
#ifndef SPORELET_QEMU_PEER_H
#define SPORELET_QEMU_PEER_H

#include <stddef.h>
#include <sys/types.h>

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

/* One restoring QEMU, started by qemu_peer_start() and still running. */
struct qemu_peer_proc {
	pid_t pid;              /* QEMU itself, leader of its own process group; -1 once reaped */
	int out_fd;             /* guest serial output (QEMU stdout), non-blocking; -1 when closed */
	int err_fd;             /* QEMU stderr, non-blocking, read for error messages */
	double start_ms;        /* CLOCK_MONOTONIC, in ms, taken just before fork() */
	double first_output_ms; /* start_ms to the first serial byte read, in ms; < 0 until then */
};

/* Launches QEMU as qemu_peer_restore_once() does and returns at once, leaving it
 * running. The caller must keep reading its serial output (qemu_peer_drain, e.g.
 * when poll() reports out_fd readable) so the guest never blocks on a full pipe,
 * and must end it with qemu_peer_stop(). QEMU gets SIGKILL if the calling thread
 * dies first. Returns 0, or -1 with a message in errbuf (nothing left running). */
int qemu_peer_start(const char *qemu, const char *elf, unsigned mem_mib, const char *state_path,
		    struct qemu_peer_proc *out, char *errbuf, size_t errlen);

/* Reads and discards whatever serial output is available, without blocking; the
 * first byte sets first_output_ms. Returns 0 while QEMU's output is still open, or
 * -1 with a message in errbuf (QEMU exited: its exit status and stderr, or a read error). */
int qemu_peer_drain(struct qemu_peer_proc *p, char *errbuf, size_t errlen);

/* Waits up to timeout_ms (from now) for the first serial byte, draining output.
 * Returns 0 with first_output_ms set, or -1 with a message in errbuf. */
int qemu_peer_wait_output(struct qemu_peer_proc *p, int timeout_ms, char *errbuf, size_t errlen);

/* Kills QEMU (and the exec: shell and cat in its process group), reaps it and
 * closes its pipes. Safe to call again, and on a struct with pid <= 0 and both fds -1. */
void qemu_peer_stop(struct qemu_peer_proc *p);

/* The guest command line the benchmark uses for the peer: the restored guest
 * prints a pulse line within about 1 ms of resuming. */
#define QEMU_PEER_CMDLINE "mode=bench pulse_ms=1 hz=1000"

#endif
