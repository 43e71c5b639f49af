/* PID 1 duties of spore-init: what a minimal init must do before the agent can serve the host. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "pid1.h"
#include "sl/log.h"

struct early_mount {
	const char *src, *dir, *type, *data;
	unsigned long flags;
	int required;
};

static const struct early_mount early[] = {
	{"proc", "/proc", "proc", NULL, MS_NOSUID | MS_NODEV | MS_NOEXEC, 1},
	{"sysfs", "/sys", "sysfs", NULL, MS_NOSUID | MS_NODEV | MS_NOEXEC, 0},
	{"devtmpfs", "/dev", "devtmpfs", "mode=0755", MS_NOSUID, 1},
	{"tmpfs", "/tmp", "tmpfs", "mode=1777", MS_NOSUID | MS_NODEV, 0},
	{"tmpfs", "/run", "tmpfs", "mode=0755", MS_NOSUID | MS_NODEV, 0},
	{"cgroup2", "/sys/fs/cgroup", "cgroup2", NULL, MS_NOSUID | MS_NODEV | MS_NOEXEC, 0},
};

int pid1_early_mounts(sl_error_t *err)
{
	for (size_t i = 0; i < sizeof(early) / sizeof(early[0]); i++) {
		const struct early_mount *m = &early[i];
		mkdir(m->dir, 0755); /* usually there already */
		if (mount(m->src, m->dir, m->type, m->flags, m->data) < 0 && errno != EBUSY) {
			if (m->required)
				return sl_error_sys(err, "mount %s on %s", m->type, m->dir);
			sl_warn("mount failed", "type=%s dir=%s errno=%d", m->type, m->dir, errno);
		}
	}
	/* Without /dev/console in the initramfs the kernel leaves fds 0-2
	 * closed; the pipes of the first child must not land on them. */
	if (fcntl(0, F_GETFD) < 0 || fcntl(1, F_GETFD) < 0 || fcntl(2, F_GETFD) < 0) {
		int fd = open("/dev/console", O_RDWR | O_NOCTTY);
		if (fd < 0)
			fd = open("/dev/null", O_RDWR);
		for (int i = 0; fd >= 0 && i < 3; i++)
			if (fcntl(i, F_GETFD) < 0)
				dup2(fd, i);
		if (fd > 2)
			close(fd);
	}
	return 0;
}

int pid1_load_modules(const char *list, sl_error_t *err)
{
	FILE *f = fopen(list, "re");
	if (!f)
		return errno == ENOENT ? 0 : sl_error_sys(err, "open %s", list);
	char line[4096];
	int rc = 0;
	while (rc == 0 && fgets(line, sizeof(line), f)) {
		line[strcspn(line, "\r\n")] = 0;
		char *p = line + strspn(line, " \t");
		if (!*p || *p == '#')
			continue;
		int fd = open(p, O_RDONLY | O_CLOEXEC);
		if (fd < 0) {
			rc = sl_error_sys(err, "module %s", p);
			break;
		}
		if (syscall(SYS_finit_module, fd, "", 0) < 0 && errno != EEXIST)
			rc = sl_error_sys(err, "finit_module %s", p);
		else
			sl_debug("module loaded", "path=%s", p);
		close(fd);
	}
	fclose(f);
	return rc;
}

static int copy_value(const char *v, size_t n, char *out, size_t outsz)
{
	if (n == 0 || n >= outsz)
		return -1;
	memcpy(out, v, n);
	out[n] = 0;
	return 0;
}

int pid1_parse_root(const char *cmdline, char *dev, size_t devsz, char *fstype, size_t fssz)
{
	int found = 0;
	if (copy_value("ext4", 4, fstype, fssz) < 0)
		return -1;
	for (const char *p = cmdline; *p;) {
		p += strspn(p, " \t\n");
		size_t n = strcspn(p, " \t\n");
		if (n > 10 && strncmp(p, "spore.root=", 11) == 0) {
			if (copy_value(p + 11, n - 11, dev, devsz) < 0)
				return -1;
			found = 1;
		} else if (n > 16 && strncmp(p, "spore.rootfstype=", 17) == 0) {
			if (copy_value(p + 17, n - 17, fstype, fssz) < 0)
				return -1;
		}
		p += n;
	}
	return found;
}

int pid1_switch_root(const char *cmdline, sl_error_t *err)
{
	char dev[256], fstype[64];
	int r = pid1_parse_root(cmdline, dev, sizeof(dev), fstype, sizeof(fstype));
	if (r < 0)
		return sl_error_set(err, SL_E_INVALID, "spore.root or spore.rootfstype: bad value");
	if (r == 0)
		return 0;
	/* The block driver may still be probing; devtmpfs creates the node
	 * once the disk is known. */
	struct stat st;
	for (int waited = 0; stat(dev, &st) < 0; waited += 10) {
		if (waited >= PID1_ROOT_WAIT_MS)
			return sl_error_sys(err, "root device %s", dev);
		nanosleep(&(struct timespec){0, 10 * 1000 * 1000}, NULL);
	}
	mkdir(PID1_NEWROOT, 0755);
	if (mount(dev, PID1_NEWROOT, fstype, 0, NULL) < 0)
		return sl_error_sys(err, "mount %s (%s) on %s", dev, fstype, PID1_NEWROOT);
	static const char *const moved[] = {"/dev", "/proc", "/sys", "/run", "/tmp"};
	for (size_t i = 0; i < sizeof(moved) / sizeof(moved[0]); i++) {
		char to[64];
		snprintf(to, sizeof(to), PID1_NEWROOT "%s", moved[i]);
		mkdir(to, 0755);
		if (mount(moved[i], to, NULL, MS_MOVE, NULL) < 0)
			sl_warn("cannot move mount into the new root", "dir=%s errno=%d", moved[i], errno);
	}
	/* switch_root(8) on an initramfs: the rootfs cannot be unmounted, so
	 * the new root is moved over it and becomes "/" by chroot. */
	if (chdir(PID1_NEWROOT) < 0 || mount(".", "/", NULL, MS_MOVE, NULL) < 0 || chroot(".") < 0 || chdir("/") < 0)
		return sl_error_sys(err, "switch root to %s", dev);
	sl_info("switched root", "dev=%s type=%s", dev, fstype);
	return 0;
}

void pid1_poweroff(void)
{
	kill(-1, SIGTERM);
	nanosleep(&(struct timespec){0, 200 * 1000 * 1000}, NULL);
	kill(-1, SIGKILL);
	sync();
	reboot(RB_POWER_OFF);
	/* Only reached if the kernel refused; PID 1 must never exit. */
	for (;;)
		pause();
}
