/* The shim's configuration: a YAML file named by containerd's runtime options (ConfigPath). */
#ifndef SHIM_CONFIG_H
#define SHIM_CONFIG_H

#include <limits.h>
#include "sl/error.h"

struct shim_config {
	char spore_bin[PATH_MAX]; /* the `spore` VMM; default: next to the shim binary */
	char state_dir[PATH_MAX]; /* VM sockets and logs, pulled spores */
	int ready_timeout_ms;     /* for a resumed VM and its agent */
	unsigned pool_size;       /* warm VMMs kept ready per shim; 0: none */
	unsigned memory_mib;      /* the pool's machine shape */
	unsigned vcpus;
	/* Where VMs put private disk copies when the spore is a read-only bind
	 * (spore-snapshotter's): a directory on the node cache's filesystem,
	 * so disk chunks are reflinked. "": the VMM's default ($TMPDIR...). */
	char disk_dir[PATH_MAX];
	/* "UID[:GID]": VMMs (spawned and the pool's) run their guests as this
	 * unprivileged user inside their jail (spore --jail-uid). "": as root,
	 * still jailed. */
	char jail_uid[24];
};

#define SHIM_CONFIG_MAX_BYTES (64u << 10)

/* Defaults, for a runtime without options. */
void shim_config_defaults(struct shim_config *c);
/* Reads path over the defaults; unknown keys and bad values are errors
 * naming the key (a typo must not silently fall back to a default). */
int shim_config_load(const char *path, struct shim_config *c, sl_error_t *err);
/* The same from memory (what names it in errors). */
int shim_config_parse(const char *buf, size_t len, const char *what, struct shim_config *c, sl_error_t *err);

#endif
