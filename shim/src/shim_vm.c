/* Starting (from the warm pool or as a child), asking and stopping a pod's VMM. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "pool_proto.h"
#include "shim_vm.h"
#include "sl/time.h"

#define VM_MAX_ARGS 160

/* The last non-empty line of the VMM's log: why it failed. */
static void log_tail(const char *path, char *out, size_t cap)
{
	out[0] = '\0';
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return;
	char buf[2048];
	off_t end = lseek(fd, 0, SEEK_END);
	off_t from = end > (off_t)sizeof(buf) - 1 ? end - (off_t)sizeof(buf) + 1 : 0;
	ssize_t n = pread(fd, buf, sizeof(buf) - 1, from);
	close(fd);
	if (n <= 0)
		return;
	buf[n] = '\0';
	while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r'))
		buf[--n] = '\0';
	char *line = strrchr(buf, '\n');
	line = line ? line + 1 : buf;
	/* "spore: " is the CLI's prefix for its fatal error. */
	if (!strncmp(line, "spore: ", 7))
		line += 7;
	size_t l = strnlen(line, cap - 1);
	memcpy(out, line, l);
	out[l] = '\0';
}

static int set_path(char *dst, size_t cap, const char *dir, const char *name, sl_error_t *err)
{
	if ((size_t)snprintf(dst, cap, "%s/%s", dir, name) >= cap)
		return sl_error_set(err, SL_E_INVALID, "VM run directory path too long for a socket: %.100s", dir);
	return 0;
}

/* A pool worker is not our child: its end shows on its pidfd, and its
 * exit status is unknown (docs/shim.md: 255). */
static bool pooled_ended(struct shim_vm *vm, int timeout_ms)
{
	struct pollfd p = {vm->pidfd, POLLIN, 0};
	if (vm->pidfd < 0 || poll(&p, 1, timeout_ms) != 1)
		return false;
	vm->reaped = true;
	vm->wait_status = 255 << 8;
	return true;
}

static void kill_and_reap(struct shim_vm *vm)
{
	if (vm->reaped || vm->pid <= 0)
		return;
	if (vm->pooled) {
		if (vm->pidfd >= 0 && syscall(SYS_pidfd_send_signal, vm->pidfd, SIGKILL, NULL, 0) == 0)
			pooled_ended(vm, 10000);
		vm->reaped = true;
		vm->wait_status = 255 << 8;
		return;
	}
	kill(vm->pid, SIGKILL);
	int st;
	while (waitpid(vm->pid, &st, 0) < 0 && errno == EINTR)
		;
	vm->reaped = true;
	vm->wait_status = st;
}

/* Waits for "ready restore_ms=<ms>\n" on fd or the end of the pipe. */
static int wait_ready(struct shim_vm *vm, int fd, const struct shim_vm_opts *o, sl_error_t *err)
{
	char line[128];
	size_t got = 0;
	long deadline = sl_now_ms() + (o->timeout_ms > 0 ? o->timeout_ms : 30000);
	for (;;) {
		long left = deadline - sl_now_ms();
		if (left <= 0)
			return sl_error_set(err, SL_E_GUEST, "VM from spore %s not ready within %d ms", o->spore_dir,
					    o->timeout_ms > 0 ? o->timeout_ms : 30000);
		struct pollfd p = {fd, POLLIN, 0};
		int pr = poll(&p, 1, (int)left);
		if (pr <= 0)
			continue;
		ssize_t k = read(fd, line + got, sizeof(line) - 1 - got);
		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0) {
			char why[512];
			kill_and_reap(vm);
			if (vm->pooled)
				snprintf(why, sizeof(why), "pool worker %d ended without a ready line (its log is the pool's)",
					 (int)vm->pid);
			else
				log_tail(vm->log_path, why, sizeof(why));
			return sl_error_set(err, SL_E_GUEST, "VM from spore %s failed to start: %s", o->spore_dir,
					    why[0] ? why : "the VMM exited without a message");
		}
		got += (size_t)k;
		line[got] = '\0';
		if (strchr(line, '\n')) {
			if (sscanf(line, "ready restore_ms=%lf", &vm->restore_ms) != 1)
				return sl_error_set(err, SL_E_GUEST, "VM from spore %s: unexpected ready line", o->spore_dir);
			return 0;
		}
		if (got == sizeof(line) - 1)
			return sl_error_set(err, SL_E_GUEST, "VM from spore %s: ready line too long", o->spore_dir);
	}
}

static void place_in_cgroup(struct shim_vm *vm, const struct shim_vm_opts *o)
{
	/* Accounted to the pod from its first milliseconds (a miss is reported,
	 * not fatal: e.g. a systemd-style path this shim cannot create). */
	if (!o->cgroup)
		return;
	sl_error_t cerr = NULL;
	if (shim_cgroup_place(vm->pid, o->cgroup, &vm->cg, &cerr) < 0) {
		snprintf(vm->cgroup_err, sizeof(vm->cgroup_err), "%s", sl_error_msg(cerr));
		sl_error_free(&cerr);
	}
}

#define POOL_REPLY_TIMEOUT_MS 10000

/* Asks the pool for the VM. Returns 0 when the VM runs; 1 when the pool
 * did not serve it (vm->pool_err says why; nothing of it runs: a request
 * a worker takes after we gave up finds its parent pipe closed and ends);
 * -1 when the pooled VM failed after the restore (err). */
static int start_pooled(const struct shim_vm_opts *o, struct shim_vm *vm, sl_error_t *err)
{
	int rfd[2], lfd[2];
	if (pipe2(rfd, O_CLOEXEC) < 0) {
		snprintf(vm->pool_err, sizeof(vm->pool_err), "pipe: %s", strerror(errno));
		return 1;
	}
	if (pipe2(lfd, O_CLOEXEC) < 0) {
		snprintf(vm->pool_err, sizeof(vm->pool_err), "pipe: %s", strerror(errno));
		close(rfd[0]);
		close(rfd[1]);
		return 1;
	}
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", o->pool_sock);
	int s = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	sl_error_t serr = NULL;
	int rc = 1;
	if (s < 0 || connect(s, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		snprintf(vm->pool_err, sizeof(vm->pool_err), "pool %s not reachable: %s", o->pool_sock, strerror(errno));
		goto out;
	}
	/* Creating the VM took place ahead of time; the reply follows the
	 * restore. No reply this long means every worker is busy. */
	int ms = o->timeout_ms > 0 && o->timeout_ms < POOL_REPLY_TIMEOUT_MS ? o->timeout_ms : POOL_REPLY_TIMEOUT_MS;
	struct timeval tv = {.tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000};
	setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	if (pool_send_agent_request(s, o->spore_dir, 0, NULL, o->hostname, o->env, rfd[1], lfd[0], o->console_fd,
				    &serr) < 0) {
		snprintf(vm->pool_err, sizeof(vm->pool_err), "%s", sl_error_msg(serr));
		sl_error_free(&serr);
		goto out;
	}
	close(rfd[1]);
	close(lfd[0]);
	rfd[1] = lfd[0] = -1;
	char buf[600];
	ssize_t n = recv(s, buf, sizeof(buf) - 1, 0);
	if (n <= 0) {
		snprintf(vm->pool_err, sizeof(vm->pool_err), "%s",
			 n == 0 ? "the pool worker went away without a reply"
				: "no reply from the pool (all workers busy?)");
		goto out;
	}
	buf[n] = '\0';
	buf[strcspn(buf, "\n")] = '\0';
	int pid = 0;
	unsigned long long us = 0;
	if (!strncmp(buf, "error ", 6)) {
		snprintf(vm->pool_err, sizeof(vm->pool_err), "%.250s", buf + 6);
		goto out;
	}
	if (sscanf(buf, "ok restore_us=%llu pid=%d vsock=%107s control=%107s", &us, &pid, vm->vsock_path,
		   vm->control_path) != 4 ||
	    pid <= 0 || vm->vsock_path[0] != '/' || vm->control_path[0] != '/') {
		snprintf(vm->pool_err, sizeof(vm->pool_err), "unexpected pool reply \"%.100s\"", buf);
		goto out;
	}
	/* The worker cannot end before its parent pipe closes or its guest
	 * exits, so the pid is still its own here. */
	vm->pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
	if (vm->pidfd < 0) {
		snprintf(vm->pool_err, sizeof(vm->pool_err), "pidfd_open %d: %s", pid, strerror(errno));
		goto out;
	}
	vm->pid = pid;
	vm->pooled = true;
	vm->parent_fd = lfd[1];
	lfd[1] = -1;
	place_in_cgroup(vm, o);
	rc = wait_ready(vm, rfd[0], o, err) < 0 ? -1 : 0;
out:
	if (s >= 0)
		close(s);
	for (int i = 0; i < 2; i++) {
		if (rfd[i] >= 0)
			close(rfd[i]);
		if (lfd[i] >= 0)
			close(lfd[i]);
	}
	if (rc == 1) {
		vm->vsock_path[0] = vm->control_path[0] = '\0';
		vm->pid = 0;
		vm->pooled = false;
	}
	return rc;
}

/* `spore resume DIR --vsock --control --ready-fd 3 --parent-fd 4 ...` as our child. */
static int start_spawned(const struct shim_vm_opts *o, struct shim_vm *vm, sl_error_t *err)
{
	if (set_path(vm->vsock_path, sizeof(vm->vsock_path), o->run_dir, "vsock", err) < 0 ||
	    set_path(vm->control_path, sizeof(vm->control_path), o->run_dir, "control", err) < 0 ||
	    set_path(vm->log_path, sizeof(vm->log_path), o->run_dir, "vmm.log", err) < 0)
		return -1;
	char ready_arg[16], parent_arg[16];
	int pfd[2], lfd[2];
	if (pipe2(pfd, O_CLOEXEC) < 0)
		return sl_error_sys(err, "VM: pipe");
	/* The VM must not outlive its shim, whose death closes lfd[1] (not a
	 * PR_SET_PDEATHSIG: that fires when the forking thread ends, and our
	 * calls run on short-lived threads). */
	if (pipe2(lfd, O_CLOEXEC) < 0) {
		close(pfd[0]);
		close(pfd[1]);
		return sl_error_sys(err, "VM: pipe");
	}
	snprintf(ready_arg, sizeof(ready_arg), "%d", 3);
	snprintf(parent_arg, sizeof(parent_arg), "%d", 4);
	const char *argv[VM_MAX_ARGS];
	int n = 0;
	argv[n++] = o->spore_bin;
	argv[n++] = "resume";
	argv[n++] = o->spore_dir;
	argv[n++] = "--vsock";
	argv[n++] = vm->vsock_path;
	argv[n++] = "--control";
	argv[n++] = vm->control_path;
	argv[n++] = "--ready-fd";
	argv[n++] = ready_arg;
	argv[n++] = "--parent-fd";
	argv[n++] = parent_arg;
	if (o->hostname) {
		argv[n++] = "--hostname";
		argv[n++] = o->hostname;
	}
	if (o->disk_dir) {
		argv[n++] = "--disk-dir";
		argv[n++] = o->disk_dir;
	}
	if (o->jail_uid) {
		argv[n++] = "--jail-uid";
		argv[n++] = o->jail_uid;
	}
	for (size_t i = 0; o->env && o->env[i]; i++) {
		if (n + 3 > VM_MAX_ARGS) {
			close(pfd[0]);
			close(pfd[1]);
			close(lfd[0]);
			close(lfd[1]);
			return sl_error_set(err, SL_E_LIMIT, "VM: more than %d generation env entries",
					    (VM_MAX_ARGS - 16) / 2);
		}
		argv[n++] = "--env";
		argv[n++] = o->env[i];
	}
	argv[n] = NULL;
	int logfd = open(vm->log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
	if (logfd < 0) {
		close(pfd[0]);
		close(pfd[1]);
		close(lfd[0]);
		close(lfd[1]);
		sl_error_sys(err, "VM: %s", vm->log_path);
		return -1;
	}
	pid_t pid = fork();
	if (pid < 0) {
		close(pfd[0]);
		close(pfd[1]);
		close(lfd[0]);
		close(lfd[1]);
		close(logfd);
		return sl_error_sys(err, "VM: fork");
	}
	if (pid == 0) {
		int nul = open("/dev/null", O_RDWR);
		int con = o->console_fd >= 0 ? o->console_fd : nul;
		/* fds 3 and 4 may be pfd[1] or lfd[0] themselves: move them
		 * out of the way first. */
		int ready = fcntl(pfd[1], F_DUPFD_CLOEXEC, 10), parent = fcntl(lfd[0], F_DUPFD_CLOEXEC, 10);
		if (nul < 0 || ready < 0 || parent < 0 || dup2(nul, 0) < 0 || dup2(con, 1) < 0 || dup2(logfd, 2) < 0 ||
		    dup2(ready, 3) < 0 || dup2(parent, 4) < 0)
			_exit(125);
		sigset_t none;
		sigemptyset(&none);
		sigprocmask(SIG_SETMASK, &none, NULL);
		execv(o->spore_bin, (char *const *)argv);
		dprintf(2, "spore: cannot run %s: %s\n", o->spore_bin, strerror(errno));
		_exit(125);
	}
	close(pfd[1]);
	close(lfd[0]);
	close(logfd);
	vm->parent_fd = lfd[1];
	vm->pid = pid;
	place_in_cgroup(vm, o);
	vm->pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
	int rc = wait_ready(vm, pfd[0], o, err);
	close(pfd[0]);
	return rc;
}

int shim_vm_start(const struct shim_vm_opts *o, struct shim_vm **out, sl_error_t *err)
{
	struct shim_vm *vm = calloc(1, sizeof(*vm));
	if (!vm)
		return sl_error_set(err, SL_E_NOMEM, "VM: out of memory");
	vm->pidfd = -1;
	vm->parent_fd = -1;
	int rc = o->pool_sock ? start_pooled(o, vm, err) : 1;
	if (rc == 1)
		rc = start_spawned(o, vm, err);
	if (rc < 0) {
		shim_vm_free(vm);
		return -1;
	}
	*out = vm;
	return 0;
}

int shim_vm_request(struct shim_vm *vm, const char *request, char *reply, size_t cap, sl_error_t *err)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", vm->control_path);
	int s = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	if (s < 0)
		return sl_error_sys(err, "VM control: socket");
	/* A capture of a large VM takes seconds; everything else milliseconds. */
	struct timeval tv = {.tv_sec = 120};
	setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	char buf[4097];
	ssize_t n = -1;
	if (connect(s, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
	    send(s, request, strlen(request), MSG_NOSIGNAL) < 0 || (n = recv(s, buf, sizeof(buf) - 1, 0)) <= 0) {
		int e = n == 0 ? ECONNRESET : errno;
		close(s);
		return sl_error_errno(err, e, "VM control %s: %s", vm->control_path, request);
	}
	close(s);
	buf[n] = '\0';
	if (!strncmp(buf, "ok", 2) && (buf[2] == '\0' || buf[2] == ' ')) {
		if (reply && cap)
			snprintf(reply, cap, "%s", buf[2] ? buf + 3 : "");
		return 0;
	}
	return sl_error_set(err, SL_E_GUEST, "VM: %s: %s", request, !strncmp(buf, "error ", 6) ? buf + 6 : buf);
}

bool shim_vm_reap(struct shim_vm *vm)
{
	if (vm->reaped)
		return true;
	if (vm->pooled)
		return pooled_ended(vm, 0);
	int st;
	pid_t r = waitpid(vm->pid, &st, WNOHANG);
	if (r == vm->pid) {
		vm->reaped = true;
		vm->wait_status = st;
	}
	return vm->reaped;
}

void shim_vm_stop(struct shim_vm *vm, int grace_ms)
{
	if (shim_vm_reap(vm))
		return;
	sl_error_t err = NULL;
	if (shim_vm_request(vm, "stop", NULL, 0, &err) < 0)
		sl_error_free(&err);
	long deadline = sl_now_ms() + grace_ms;
	while (!shim_vm_reap(vm) && sl_now_ms() < deadline) {
		struct pollfd p = {vm->pidfd, POLLIN, 0};
		if (vm->pidfd < 0 || poll(&p, 1, (int)(deadline - sl_now_ms())) < 0)
			usleep(10000);
	}
	kill_and_reap(vm);
}

void shim_vm_free(struct shim_vm *vm)
{
	if (!vm)
		return;
	kill_and_reap(vm);
	if (vm->pidfd >= 0)
		close(vm->pidfd);
	if (vm->parent_fd >= 0)
		close(vm->parent_fd);
	shim_cgroup_remove(&vm->cg);
	if (vm->vsock_path[0])
		unlink(vm->vsock_path);
	if (vm->control_path[0])
		unlink(vm->control_path);
	if (vm->log_path[0])
		unlink(vm->log_path);
	if (vm->pooled && vm->vsock_path[0]) {
		/* The worker's private directory: it removes it when it ends,
		 * its pool when it reaps a killed one; this covers a killed
		 * worker whose pool is gone. */
		char *slash = strrchr(vm->vsock_path, '/');
		if (slash) {
			*slash = '\0';
			rmdir(vm->vsock_path);
		}
	}
	free(vm);
}
