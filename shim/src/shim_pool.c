/* Finding or starting the node's warm pool (`spore pool --vsock`) for the shims. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "shim_pool.h"
#include "sl/time.h"

/* The pid in the pool's pid file, if that process is a `spore pool` on
 * sock (a stale file's pid may have been reused by anything). Probing the
 * socket instead would cost a worker: each connection is one request. */
static pid_t live_pool(const char *pid_path, const char *sock)
{
	char buf[32];
	int fd = open(pid_path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return 0;
	ssize_t n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return 0;
	buf[n] = '\0';
	char *end;
	long pid = strtol(buf, &end, 10);
	if (pid <= 0 || *end != '\n')
		return 0;
	char path[64], cmd[8192];
	snprintf(path, sizeof(path), "/proc/%ld/cmdline", pid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return 0;
	n = read(fd, cmd, sizeof(cmd) - 1);
	close(fd);
	if (n <= 0)
		return 0;
	cmd[n] = '\0';
	/* argv: spore pool ... --socket <sock> ...: NUL-separated. */
	bool is_pool = false, on_sock = false;
	for (char *a = cmd + strlen(cmd) + 1; a < cmd + n; a += strlen(a) + 1) {
		if (a == cmd + strlen(cmd) + 1 && !strcmp(a, "pool"))
			is_pool = true;
		if (!strcmp(a, sock))
			on_sock = true;
	}
	return is_pool && on_sock ? (pid_t)pid : 0;
}

static int spawn_pool(const struct shim_config *cfg, const char *sock, const char *pid_path, pid_t *out,
		      sl_error_t *err)
{
	char log_path[PATH_MAX + 16], size[16], mem[16], vcpus[16];
	snprintf(log_path, sizeof(log_path), "%s/%s", cfg->state_dir, SHIM_POOL_LOG);
	snprintf(size, sizeof(size), "%u", cfg->pool_size);
	snprintf(mem, sizeof(mem), "%u", cfg->memory_mib);
	snprintf(vcpus, sizeof(vcpus), "%u", cfg->vcpus);
	const char *argv[] = {cfg->spore_bin, "pool", "--size", size, "--mem", mem, "--vcpus", vcpus, "--vsock",
			      "--socket", sock, "--pid-file", pid_path,
			      cfg->jail_uid[0] ? "--jail-uid" : NULL, cfg->jail_uid, NULL};
	int logfd = open(log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
	if (logfd < 0)
		return sl_error_sys(err, "pool: %s", log_path);
	int pp[2];
	if (pipe2(pp, O_CLOEXEC) < 0) {
		close(logfd);
		return sl_error_sys(err, "pool: pipe");
	}
	/* Twice forked: the pool is nobody's child (it outlives this shim and
	 * serves every pod of the node) and in its own session. */
	pid_t mid = fork();
	if (mid < 0) {
		close(logfd);
		close(pp[0]);
		close(pp[1]);
		return sl_error_sys(err, "pool: fork");
	}
	if (mid == 0) {
		setsid();
		pid_t g = fork();
		if (g == 0) {
			int nul = open("/dev/null", O_RDWR);
			if (nul < 0 || dup2(nul, 0) < 0 || dup2(logfd, 1) < 0 || dup2(logfd, 2) < 0 || chdir("/") < 0)
				_exit(125);
			sigset_t none;
			sigemptyset(&none);
			sigprocmask(SIG_SETMASK, &none, NULL);
			execv(cfg->spore_bin, (char *const *)argv);
			dprintf(2, "spore: cannot run %s: %s\n", cfg->spore_bin, strerror(errno));
			_exit(125);
		}
		ssize_t w = write(pp[1], &g, sizeof(g));
		_exit(g > 0 && w == sizeof(g) ? 0 : 1);
	}
	close(logfd);
	close(pp[1]);
	pid_t g = -1;
	ssize_t r = read(pp[0], &g, sizeof(g));
	close(pp[0]);
	int st;
	while (waitpid(mid, &st, 0) < 0 && errno == EINTR)
		;
	if (r != sizeof(g) || g <= 0)
		return sl_error_set(err, SL_E_IO, "pool: could not start `%s pool`", cfg->spore_bin);
	*out = g;
	return 0;
}

int shim_pool_ensure(const struct shim_config *cfg, char *sock, size_t cap, sl_error_t *err)
{
	char pid_path[PATH_MAX + 16];
	struct sockaddr_un sa;
	if ((size_t)snprintf(sock, cap, "%s/%s", cfg->state_dir, SHIM_POOL_SOCKET) >= cap ||
	    strlen(sock) >= sizeof(sa.sun_path))
		return sl_error_set(err, SL_E_INVALID, "pool: socket path in %s too long", cfg->state_dir);
	snprintf(pid_path, sizeof(pid_path), "%s/%s", cfg->state_dir, SHIM_POOL_PID);
	if (live_pool(pid_path, sock))
		return 0;
	int dfd = open(cfg->state_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd < 0)
		return sl_error_sys(err, "pool: %s", cfg->state_dir);
	/* One starter at a time: a pool replaces a socket it finds, so two
	 * pools started at once would leave one unreachable. */
	int rc = 0;
	while (flock(dfd, LOCK_EX) < 0 && errno == EINTR)
		;
	if (!live_pool(pid_path, sock)) {
		pid_t pid = 0;
		rc = spawn_pool(cfg, sock, pid_path, &pid, err);
		int pidfd = rc == 0 ? (int)syscall(SYS_pidfd_open, pid, 0) : -1;
		long deadline = sl_now_ms() + SHIM_POOL_START_TIMEOUT_MS;
		/* It writes its pid file once it listens. */
		while (rc == 0 && live_pool(pid_path, sock) != pid) {
			struct pollfd p = {pidfd, POLLIN, 0};
			if (pidfd >= 0 && poll(&p, 1, 20) == 1)
				rc = sl_error_set(err, SL_E_IO, "pool: `spore pool` exited at once; see %s/%s",
						  cfg->state_dir, SHIM_POOL_LOG);
			else if (pidfd < 0)
				usleep(20000);
			if (rc == 0 && sl_now_ms() > deadline) {
				if (pidfd >= 0)
					syscall(SYS_pidfd_send_signal, pidfd, SIGKILL, NULL, 0);
				rc = sl_error_set(err, SL_E_IO, "pool: not listening within %d ms; see %s/%s",
						  SHIM_POOL_START_TIMEOUT_MS, cfg->state_dir, SHIM_POOL_LOG);
			}
		}
		if (pidfd >= 0)
			close(pidfd);
	}
	flock(dfd, LOCK_UN);
	close(dfd);
	return rc;
}
