/* The VMM of a pod: a warm pool's worker or a `spore resume` child, with a vsock device and a control socket. */
#ifndef SHIM_VM_H
#define SHIM_VM_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>
#include "shim_cgroup.h"
#include "sl/error.h"

struct shim_vm_opts {
	const char *spore_bin; /* the `spore` executable */
	const char *spore_dir; /* the spore to resume */
	const char *run_dir;   /* existing private directory for the VM's sockets and log */
	const char *hostname;  /* the new generation's hostname, or NULL */
	char *const *env;      /* the new generation's environment (K=V, NULL-terminated), or NULL */
	int timeout_ms;        /* for the guest (and its agent) to be ready; <= 0: 30 s */
	int console_fd;        /* guest serial output; -1: discarded */
	const char *cgroup;    /* the pod's cgroup (OCI cgroupsPath, cgroupfs form), or NULL */
	const char *pool_sock; /* a `spore pool --vsock` to ask first (docs/pool-protocol.md), or NULL */
	const char *disk_dir;  /* spore resume --disk-dir, or NULL */
	const char *jail_uid;  /* spore resume --jail-uid, or NULL */
};

struct shim_vm {
	pid_t pid;
	int pidfd;               /* readable once the VMM exited */
	char vsock_path[108];    /* the guest agent's socket (Firecracker-style CONNECT) */
	char control_path[108];  /* docs/control-protocol.md */
	char log_path[4096];     /* the VMM's own log (its stderr) */
	bool reaped;
	int wait_status;         /* waitpid status once reaped */
	double restore_ms;       /* from the ready line */
	int parent_fd;           /* our end of --parent-fd: the VM stops when we die */
	struct shim_cgroup cg;   /* what we created for it */
	char cgroup_err[256];    /* why it is not in the pod's cgroup, or "" */
	/* A pool worker: not our child, so its exit status is unknown (reaped
	 * as 255 when its pidfd says it ended) and it is killed by pidfd. */
	bool pooled;
	char pool_err[256];      /* why the pool did not serve it (then it was spawned), or "" */
};

/* Starts the VMM and waits until the guest runs and its agent applied the
 * new generation: from the pool if o->pool_sock is given and the pool
 * serves it, else (pool_err says why) as a `spore resume` child. On
 * failure nothing is left running, and the error carries the VMM's last
 * log line. */
int shim_vm_start(const struct shim_vm_opts *o, struct shim_vm **out, sl_error_t *err);
/* One control request ("pause", "capture /dir", ...); reply gets the VMM's
 * answer without "ok"/"error"; an "error" answer is an SL_E_GUEST error. */
int shim_vm_request(struct shim_vm *vm, const char *request, char *reply, size_t cap, sl_error_t *err);
/* Collects the exit status if the VMM ended; returns true once reaped. */
bool shim_vm_reap(struct shim_vm *vm);
/* Asks the VMM to stop, waits up to grace_ms, then kills it; reaps it. */
void shim_vm_stop(struct shim_vm *vm, int grace_ms);
/* Stops the VM if it still runs, removes its sockets and log, frees. */
void shim_vm_free(struct shim_vm *vm);

#endif
