/* Mounting a container's rootfs from containerd's Mount list, and unmounting it. */
#ifndef SHIM_MOUNT_H
#define SHIM_MOUNT_H

#include <stddef.h>
#include "sl/error.h"

struct shim_mount {
	const char *type;
	const char *source;
	char *const *options; /* counted, as protobuf-c gives them */
	size_t noptions;
};

/* Mounts each entry on target in order (containerd gives one: an overlay
 * or a bind mount of a snapshot). Options that are mount flags become
 * flags, the rest the filesystem's data. On failure nothing stays mounted. */
int shim_mount_rootfs(const struct shim_mount *m, size_t n, const char *target, sl_error_t *err);
/* Unmounts everything at target (lazily if busy); not mounted is fine. */
int shim_unmount_rootfs(const char *target, sl_error_t *err);

#endif
