/* Translating containerd mounts (type, source, options) into mount(2) calls. */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>

#include "shim_mount.h"

struct flag_opt {
	const char *name;
	bool clear;
	unsigned long flag;
};

static const struct flag_opt flag_opts[] = {
	{"ro", false, MS_RDONLY},	   {"rw", true, MS_RDONLY},	      {"nosuid", false, MS_NOSUID},
	{"suid", true, MS_NOSUID},	   {"nodev", false, MS_NODEV},	      {"dev", true, MS_NODEV},
	{"noexec", false, MS_NOEXEC},	   {"exec", true, MS_NOEXEC},	      {"sync", false, MS_SYNCHRONOUS},
	{"async", true, MS_SYNCHRONOUS},   {"noatime", false, MS_NOATIME},    {"atime", true, MS_NOATIME},
	{"nodiratime", false, MS_NODIRATIME}, {"relatime", false, MS_RELATIME}, {"strictatime", false, MS_STRICTATIME},
	{"bind", false, MS_BIND},	   {"rbind", false, MS_BIND | MS_REC}, {"remount", false, MS_REMOUNT},
	{"defaults", false, 0},
};

#define MOUNT_DATA_MAX 8192

static int one(const struct shim_mount *m, const char *target, sl_error_t *err)
{
	unsigned long flags = 0;
	char data[MOUNT_DATA_MAX] = "";
	size_t dl = 0;
	for (size_t i = 0; i < m->noptions; i++) {
		const char *o = m->options[i];
		const struct flag_opt *f = NULL;
		for (size_t k = 0; k < sizeof(flag_opts) / sizeof(flag_opts[0]) && !f; k++)
			if (!strcmp(o, flag_opts[k].name))
				f = &flag_opts[k];
		if (f) {
			flags = f->clear ? flags & ~f->flag : flags | f->flag;
			continue;
		}
		size_t ol = strlen(o);
		if (dl + ol + 2 > sizeof(data))
			return sl_error_set(err, SL_E_LIMIT, "rootfs mount %s: options longer than %d bytes", m->type,
					    MOUNT_DATA_MAX);
		if (dl)
			data[dl++] = ',';
		memcpy(data + dl, o, ol + 1);
		dl += ol;
	}
	bool bind = flags & MS_BIND;
	const char *type = bind ? NULL : m->type;
	if (mount(m->source, target, type, bind ? flags & ~MS_RDONLY : flags, dl ? data : NULL) < 0)
		return sl_error_sys(err, "mount %s %s on %s", m->type, m->source, target);
	/* A bind mount takes "ro" only on a remount. */
	if (bind && (flags & MS_RDONLY) &&
	    mount(NULL, target, NULL, MS_REMOUNT | MS_BIND | MS_RDONLY | (flags & MS_REC), NULL) < 0) {
		int e = errno;
		umount2(target, MNT_DETACH);
		return sl_error_errno(err, e, "remount %s read-only", target);
	}
	return 0;
}

int shim_mount_rootfs(const struct shim_mount *m, size_t n, const char *target, sl_error_t *err)
{
	for (size_t i = 0; i < n; i++) {
		if (!m[i].type || !m[i].source)
			return sl_error_set(err, SL_E_INVALID, "rootfs mount %zu has no type or source", i);
		if (one(&m[i], target, err) < 0) {
			sl_error_t ignored = NULL;
			shim_unmount_rootfs(target, &ignored);
			sl_error_free(&ignored);
			return -1;
		}
	}
	return 0;
}

int shim_unmount_rootfs(const char *target, sl_error_t *err)
{
	/* Stacked mounts come off one by one; EINVAL: nothing mounted there. */
	for (int i = 0; i < 16; i++) {
		if (umount2(target, 0) == 0)
			continue;
		if (errno == EBUSY && umount2(target, MNT_DETACH) == 0)
			continue;
		if (errno == EINVAL || errno == ENOENT)
			return 0;
		return sl_error_sys(err, "unmount %s", target);
	}
	return sl_error_set(err, SL_E_INVALID, "unmount %s: more than 16 mounts stacked there", target);
}
