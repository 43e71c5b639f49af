/* The shim daemon's state, shared by its task service, its VM handling and its entry points. */
#ifndef SHIM_INT_H
#define SHIM_INT_H

#include <limits.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include "shim.h"
#include "shim_config.h"
#include "shim_proc.h"
#include "shim_spec.h"
#include "shim_vm.h"
#include "sl/error.h"

/* CRI's annotations on every container of a pod (reference section 2.5). */
#define CRI_CONTAINER_TYPE "io.kubernetes.cri.container-type"
#define CRI_SANDBOX_ID "io.kubernetes.cri.sandbox-id"
#define CRI_IMAGE_NAME "io.kubernetes.cri.image-name"
#define CRI_SANDBOX_NAME "io.kubernetes.cri.sandbox-name"
/* The pod's spore when its images are not spores themselves. */
#define SHIM_SPORE_ANNOTATION "sporelet.ai/spore"

#define SHIM_ID_MAX 256

enum shim_proc_state { SP_CREATED = 0, SP_STARTING, SP_RUNNING, SP_STOPPED };

struct shim;
struct shim_container;

/* The init process of a container (exec_id "") or one of its execs. */
struct shim_process {
	struct shim_process *next; /* the container's execs */
	struct shim *s;
	struct shim_container *c;
	char exec_id[SHIM_ID_MAX];
	struct shim_process_spec spec;
	char *stdin_path, *stdout_path, *stderr_path;
	bool terminal;
	/* A CRI sandbox (pause) container runs nothing in the guest: it is
	 * the pod itself and "runs" until it is killed or the VM ends. */
	bool placeholder;
	/* CloseIO came (maybe before the process had started: ctr calls it as
	 * soon as its stdin ends, which can be while Start is in flight). */
	bool stdin_closed;
	enum shim_proc_state st;
	struct shim_proc *proc; /* once started */
	uint32_t exit_status;
	struct timespec exited_at;
};

struct shim_container {
	struct shim_container *next;
	char id[SHIM_ID_MAX];
	char bundle[PATH_MAX];
	char rootfs[PATH_MAX];
	bool rootfs_mounted;
	bool sandbox;
	struct shim_spec spec;
	struct shim_process init;
	struct shim_process *execs;
};

struct shim {
	struct shim_config cfg;
	char ns[SHIM_ID_MAX];
	char group[SHIM_ID_MAX];   /* the pod's sandbox id, or the container id */
	char run_dir[PATH_MAX];    /* private: VM sockets and log, pulled spores */
	char socket_path[PATH_MAX];
	const char *cgroup_root;   /* NULL: /sys/fs/cgroup */
	struct shim_events *events;
	struct ttrpc_server *srv;

	pthread_mutex_t lock;      /* containers, processes, vm pointer */
	pthread_cond_t changed;    /* a process stopped or a container went away */
	/* Held while a start is published and while an exit is: a process's
	 * TaskExit never overtakes its TaskStart / TaskExecStarted. */
	pthread_mutex_t order;
	pthread_mutex_t vm_lock;   /* one VM start at a time */
	struct shim_container *containers;
	struct shim_vm *vm;
	bool vm_gone;              /* the VMM exited on its own */
	char vm_spore[PATH_MAX];
	char vm_spore_digest[80]; /* sha256 of its spore/manifest.json */
	char pod_cgroup[PATH_MAX]; /* the CRI sandbox's cgroupsPath */
	bool paused;
	pthread_t vm_watch;
	bool vm_watch_started;
	int stop_fd;               /* eventfd: the daemon should exit */
};

/* shim_service.c */
int shim_service_register(struct shim *s, sl_error_t *err);
/* Stops every guest process and the VM, unmounts what Create mounted. */
void shim_service_teardown(struct shim *s);

/* shim_tree.c: moves from_dir/name (a directory of a captured spore) to
 * to_dir/name: a rename, or across filesystems a copy (fsynced, renamed
 * into place) and the removal of the source. A missing source is not an
 * error. */
int shim_move_entry(const char *from_dir, const char *to_dir, const char *name, sl_error_t *err);

#endif
