/* Putting the pod's VMM into the cgroup containerd chose for the pod, on cgroup v2 or v1 hosts. */
#ifndef SHIM_CGROUP_H
#define SHIM_CGROUP_H

#include <limits.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>
#include "sl/error.h"

#define SHIM_CGROUP_MAX_DIRS 32

struct shim_cgroup {
	char dirs[SHIM_CGROUP_MAX_DIRS][PATH_MAX]; /* created by us, removed by shim_cgroup_remove */
	int n;
};

/* The mount point of the cgroup2 hierarchy (controller NULL) or of the v1
 * hierarchy carrying controller; -1 if there is none. */
int shim_cgroup_mount(const char *controller, char *out, size_t cap);
/* True (with its mount point in root) when the unified hierarchy has the
 * cpu, memory or pids controller: a cgroup v2 host. */
bool shim_cgroup_unified(char *root, size_t cap);
/* Moves pid into path (an OCI linux.cgroupsPath in cgroupfs form, "/a/b"):
 * the unified hierarchy on a cgroup v2 host, else the cpu, cpuacct, memory
 * and pids v1 hierarchies. Directories it creates are recorded in cg. */
int shim_cgroup_place(pid_t pid, const char *path, struct shim_cgroup *cg, sl_error_t *err);
/* Removes the recorded directories (the process must have exited). */
void shim_cgroup_remove(struct shim_cgroup *cg);

#endif
