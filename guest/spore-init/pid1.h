/* PID 1 duties of spore-init: early mounts, kernel modules, root switch, power off. */
#ifndef SPORE_PID1_H
#define SPORE_PID1_H

#include "sl/error.h"

#define PID1_MODULES_LIST "/etc/spore/modules"
#define PID1_NEWROOT "/newroot"
#define PID1_ROOT_WAIT_MS 5000

/* Mounts proc, sysfs, devtmpfs, tmpfs (/tmp, /run) and cgroup2; points
 * stdio at /dev/console if it is not open. Mount failures other than of
 * proc and devtmpfs are logged and tolerated. */
int pid1_early_mounts(sl_error_t *err);

/* Loads every module listed (one path per line, in order, '#' comments)
 * in `list` with finit_module(2). A missing list is not an error; a module
 * that fails to load is (EEXIST, already loaded, is fine). */
int pid1_load_modules(const char *list, sl_error_t *err);

/* If the kernel command line (`cmdline`, the text of /proc/cmdline) names
 * spore.root=<dev> [spore.rootfstype=<fs>], mounts it and makes it the
 * root, moving the early mounts along. No spore.root: nothing to do. */
int pid1_switch_root(const char *cmdline, sl_error_t *err);

/* Parses spore.root= / spore.rootfstype= (default ext4) out of a command
 * line. Returns 1 if a root is named, 0 if not, -1 if a value is too long. */
int pid1_parse_root(const char *cmdline, char *dev, size_t devsz, char *fstype, size_t fssz);

/* Kills what is left, syncs and powers the machine off; never returns. */
__attribute__((noreturn)) void pid1_poweroff(void);

#endif
