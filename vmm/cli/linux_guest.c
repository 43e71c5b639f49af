/* CLI pieces for Linux guests: --disk parsing, the vsock socket's place, the agent job's set-up. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"
#include "sl/log.h"

int cli_parse_disk(const char *arg, struct vmm_machine *m, sl_error_t *err)
{
	if (m->ndisks >= VMM_MAX_DISKS)
		return sl_error_set(err, SL_E_INVALID, "--disk: at most %d disks", VMM_MAX_DISKS);
	struct vmm_disk *d = &m->disks[m->ndisks];
	size_t n = strlen(arg);
	*d = (struct vmm_disk){.path = arg};
	/* FILE, FILE:rw (writable) or FILE:ro; a file whose name itself ends
	 * in ":ro" is given as FILE:ro:rw. */
	if (n > 3 && !strcmp(arg + n - 3, ":ro")) {
		d->read_only = true;
	} else if (n > 3 && !strcmp(arg + n - 3, ":rw")) {
		d->read_only = false;
	} else {
		n = 0;
	}
	/* The CLI parses one command line: the names live in static storage
	 * for the rest of the process. */
	static char paths[VMM_MAX_DISKS][4096];
	char *path = paths[m->ndisks];
	size_t len = n ? n - 3 : strlen(arg);
	if (len >= sizeof(paths[0]))
		return sl_error_set(err, SL_E_INVALID, "--disk: path longer than %zu bytes", sizeof(paths[0]) - 1);
	memcpy(path, arg, len);
	path[len] = '\0';
	struct stat st;
	if (!path[0] || stat(path, &st) < 0)
		return sl_error_set(err, SL_E_INVALID, "--disk %s: %s", arg, path[0] ? strerror(errno) : "no file name");
	if (!S_ISREG(st.st_mode) && !S_ISBLK(st.st_mode))
		return sl_error_set(err, SL_E_INVALID, "--disk %s: not a regular file or block device", arg);
	d->path = path;
	m->ndisks++;
	return 0;
}

int cli_vsock_setup(const char *user_path, struct cli_vsock *v, sl_error_t *err)
{
	memset(v, 0, sizeof(*v));
	v->reaper_fd = -1;
	if (user_path) {
		if (strlen(user_path) + 12 >= sizeof(v->path))
			return sl_error_set(err, SL_E_INVALID, "--vsock %s: path too long for a Unix socket", user_path);
		snprintf(v->path, sizeof(v->path), "%s", user_path);
		return 0;
	}
	/* A private directory: the socket gives root in the guest to whoever
	 * can connect to it (docs/agent-protocol.md, security notes). */
	const char *base = getenv("XDG_RUNTIME_DIR");
	if (!base || !base[0] || access(base, W_OK) < 0)
		base = getenv("TMPDIR");
	if (!base || !base[0])
		base = "/tmp";
	if ((size_t)snprintf(v->dir, sizeof(v->dir), "%s/spore-XXXXXX", base) >= sizeof(v->dir) - 16)
		return sl_error_set(err, SL_E_INVALID, "%s: path too long for a Unix socket", base);
	if (!mkdtemp(v->dir))
		return sl_error_sys(err, "create a private directory for the vsock socket in %s", base);
	v->made_dir = true;
	snprintf(v->path, sizeof(v->path), "%s/vsock", v->dir);
	return 0;
}

int cli_vsock_reaper(struct cli_vsock *v, sl_error_t *err)
{
	if (!v->made_dir)
		return 0;
	int p[2];
	if (pipe2(p, O_CLOEXEC) < 0)
		return sl_error_sys(err, "vsock directory: pipe");
	pid_t pid = fork();
	if (pid < 0) {
		close(p[0]);
		close(p[1]);
		return sl_error_sys(err, "vsock directory: fork");
	}
	if (pid == 0) {
		/* Waits, outside the jail, for the VMM to end (the pipe's last
		 * writer goes with it), then removes what the jailed VMM cannot:
		 * its directory is a mount point in the jail's read-only root. */
		signal(SIGINT, SIG_IGN);
		signal(SIGTERM, SIG_IGN);
		signal(SIGHUP, SIG_IGN);
		close(p[1]);
		if (p[0] != 3 && dup2(p[0], 3) < 0)
			_exit(1);
		close_range(4, ~0u, 0);
		char c;
		while (read(3, &c, 1) < 0 && errno == EINTR)
			;
		unlink(v->path);
		rmdir(v->dir);
		_exit(0);
	}
	close(p[0]);
	v->reaper_fd = p[1]; /* held, never written: closed by our exit */
	return 0;
}

void cli_vsock_cleanup(struct cli_vsock *v)
{
	if (!v->made_dir || v->reaper_fd >= 0)
		return;
	/* The device removed its socket; guest-initiated listeners
	 * (<path>_<port>) are the user's, but a private directory holds none. */
	unlink(v->path);
	if (rmdir(v->dir) < 0 && errno != ENOENT)
		sl_warn("cannot remove the vsock directory", "dir=%s error=\"%s\"", v->dir, strerror(errno));
	v->made_dir = false;
}
