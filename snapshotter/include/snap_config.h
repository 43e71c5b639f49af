/* spore-snapshotter's settings: defaults, the YAML config file, command-line overrides. */
#ifndef SNAP_CONFIG_H
#define SNAP_CONFIG_H

#include <limits.h>
#include <stddef.h>

#include "sl/error.h"

#define SNAP_CONFIG_MAX_INSECURE 16

struct snap_config {
	char root[PATH_MAX];    /* the store: metadata.db and snapshots/ */
	char address[108];      /* the unix socket containerd's proxy_plugins entry names */
	char log_level[16];
	char spore_bin[PATH_MAX]; /* `spore`, for spore pull (materialising spore directories) */
	char cache_dir[PATH_MAX]; /* the node chunk cache */
	char insecure[SNAP_CONFIG_MAX_INSECURE][256]; /* registries reached over plain HTTP */
	size_t ninsecure;
	unsigned pull_timeout_s;
};

void snap_config_defaults(struct snap_config *c);
/* Applies a YAML document (docs/snapshotter.md, "Configuration") to c;
 * unknown keys and bad values are errors naming `what` and the key; c is
 * unchanged on error. */
int snap_config_parse(const char *buf, size_t len, const char *what, struct snap_config *c, sl_error_t *err);
int snap_config_load(const char *path, struct snap_config *c, sl_error_t *err);

#endif
