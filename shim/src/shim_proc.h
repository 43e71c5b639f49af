/* A process of a container running in the pod's guest through the agent, with its stdio relayed to containerd's FIFOs. */
#ifndef SHIM_PROC_H
#define SHIM_PROC_H

#include <stdbool.h>
#include <stdint.h>
#include <time.h>
#include "shim_spec.h"
#include "sl/error.h"

struct shim_proc;

struct shim_proc_opts {
	const char *vsock_path;             /* the VM's agent socket */
	const struct shim_process_spec *spec;
	const char *stdin_path;             /* FIFO paths from containerd; NULL or "": none */
	const char *stdout_path;
	const char *stderr_path;
	int timeout_ms;                     /* agent connect + start; <= 0: 10 s */
	/* Called on the process's relay thread once it has ended (status
	 * known, output flushed); the proc stays valid until freed. */
	void (*on_exit)(void *arg, struct shim_proc *p);
	void *arg;
};

/* Connects to the agent, opens the FIFOs and starts the process. Returns
 * once the agent reported it running, or with the agent's reason why not
 * (an unknown executable names it). */
int shim_proc_start(const struct shim_proc_opts *o, struct shim_proc **out, sl_error_t *err);
/* Delivers a signal to the process (ignored once it has exited). */
int shim_proc_kill(struct shim_proc *p, int signo, sl_error_t *err);
/* containerd's CloseIO: the process sees end of file on stdin once the
 * client's writers are gone too. */
void shim_proc_close_stdin(struct shim_proc *p);
/* Waits for the end: returns true with the status (a signal N is 128+N;
 * 255 when the guest or its VM went away), false on timeout. timeout_ms < 0
 * waits forever. */
bool shim_proc_wait(struct shim_proc *p, int timeout_ms, uint32_t *status, struct timespec *exited_at);
bool shim_proc_exited(struct shim_proc *p);
uint32_t shim_proc_guest_pid(const struct shim_proc *p);
/* Ends the process if it still runs (the agent kills what a dropped
 * connection started), stops the relay, closes everything. */
void shim_proc_free(struct shim_proc *p);

#endif
