/* spore-snapshotter's settings: defaults, the YAML config file, command-line overrides. */
#ifndef SNAP_CONFIG_H
#define SNAP_CONFIG_H

#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <stddef.h>

#include "sl/error.h"

#define SNAP_CONFIG_MAX_INSECURE 16
#define SNAP_CONFIG_MAX_REGISTRIES 16
#define SNAP_CONFIG_MAX_MIRRORS 4

/* Per-registry settings (`registries:` in the YAML). */
struct snap_registry {
	char host[256];                                 /* host[:port] as in image references */
	char mirrors[SNAP_CONFIG_MAX_MIRRORS][256];     /* tried first, in order */
	size_t nmirrors;
	bool insecure;                                  /* plain HTTP */
	bool has_auth;
	char username[256];
	char password[1024];
};

struct snap_config {
	char root[PATH_MAX];    /* the store: metadata.db and snapshots/ */
	char address[108];      /* the unix socket containerd's proxy_plugins entry names */
	char log_level[16];
	char spore_bin[PATH_MAX]; /* `spore`, for spore pull (materialising spore directories) */
	char cache_dir[PATH_MAX]; /* the node chunk cache */
	char insecure[SNAP_CONFIG_MAX_INSECURE][256]; /* registries reached over plain HTTP */
	size_t ninsecure;
	struct snap_registry registries[SNAP_CONFIG_MAX_REGISTRIES];
	size_t nregistries;
	unsigned pull_timeout_s;
	/* cache_gc: off unless gc_interval_s > 0 */
	unsigned gc_interval_s;
	uint64_t gc_max_mib; /* trim to this; 0: every unreferenced chunk */
};

void snap_config_defaults(struct snap_config *c);
/* Applies a YAML document (docs/snapshotter.md, "Configuration") to c;
 * unknown keys and bad values are errors naming `what` and the key; c is
 * unchanged on error. */
int snap_config_parse(const char *buf, size_t len, const char *what, struct snap_config *c, sl_error_t *err);
int snap_config_load(const char *path, struct snap_config *c, sl_error_t *err);

#endif
