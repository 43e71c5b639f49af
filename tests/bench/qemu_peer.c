/* QEMU peer for bench-restore and bench-fork: boots testguest, saves its migration state, restores it. */
#include "qemu_peer.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define READY_TIMEOUT_MS 30000
#define QMP_TIMEOUT_MS 10000
#define MIGRATE_TIMEOUT_MS 60000
#define QUIT_TIMEOUT_MS 5000
#define RESTORE_TIMEOUT_MS 20000

/*
 * Machine options, shared by the saving and the restoring QEMU (they must
 * match for the migration stream to load). Chosen for the fastest restore:
 *  - microvm: the smallest machine QEMU has (no PCI, no firmware tables to
 *    build, few devices, so few vmstate sections to load); x-option-roms=off
 *    (the PVH boot needs no option ROM); acpi=off; rtc/pit/pic/ioapic2 off:
 *    the test guest only uses the LAPIC timer and the serial port, and every
 *    device left out is one less to create, reset and load. smm=off saves the
 *    SMRAM address space.
 *  - -cpu host minus arch-capabilities: plain `-cpu host` (and `max`) abort on
 *    PVM-backed KVM, which rejects MSR_IA32_ARCH_CAPABILITIES (0x10a).
 *  - -nodefaults -no-user-config: no default devices, no config files; with
 *    -display none and no monitor, the serial port is the only thing writing
 *    to stdout, so the first byte there is the guest's.
 *  - one vCPU, mem_mib RAM; -no-reboot so a guest crash ends QEMU.
 * The restore reads the state with -incoming "exec:cat <file>" (QEMU 7.2 has
 * no file: migration URI) and resumes on its own: the saving side sets
 * migration.store-global-state=off, so the stream does not carry the
 * "paused" run state of the stopped source (which would keep the
 * destination paused until a QMP "cont").
 */
#ifndef QP_MACHINE /* overridable at build time, for experiments */
#define QP_MACHINE "microvm,x-option-roms=off,acpi=off,rtc=off,pit=off,pic=off,ioapic2=off,smm=off"
#endif
#ifndef QP_CPU
#define QP_CPU "host,-arch-capabilities"
#endif

static void set_err(char *errbuf, size_t errlen, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static void set_err(char *errbuf, size_t errlen, const char *fmt, ...)
{
	if (!errbuf || !errlen)
		return;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(errbuf, errlen, fmt, ap);
	va_end(ap);
}

static double now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/* The exec: URI goes through /bin/sh: accept only paths that quote safely
 * (inside '...') and need no JSON escaping. */
static bool path_ok(const char *p)
{
	if (!p || !*p)
		return false;
	for (const unsigned char *c = (const unsigned char *)p; *c; c++)
		if (*c < 0x20 || *c == 0x7f || *c == '\'' || *c == '"' || *c == '\\')
			return false;
	return true;
}

/* Appends up to `max` bytes of QEMU's stderr (non-blocking) to errbuf. */
static void append_stderr(struct qemu_peer_proc *p, char *errbuf, size_t errlen)
{
	if (p->err_fd < 0 || !errbuf || !errlen)
		return;
	char buf[512];
	ssize_t n = read(p->err_fd, buf, sizeof(buf) - 1);
	if (n <= 0)
		return;
	buf[n] = 0;
	while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r'))
		buf[--n] = 0;
	for (ssize_t i = 0; i < n; i++)
		if (buf[i] == '\n')
			buf[i] = ' ';
	size_t used = strlen(errbuf);
	if (used + 16 < errlen)
		snprintf(errbuf + used, errlen - used, " (qemu: %s)", buf);
}

static void proc_kill(struct qemu_peer_proc *p)
{
	if (p->pid > 0) {
		/* QEMU runs in its own process group (with the exec: shell and cat). */
		kill(-p->pid, SIGKILL);
		kill(p->pid, SIGKILL);
		while (waitpid(p->pid, NULL, 0) < 0 && errno == EINTR)
			;
		p->pid = -1;
	}
}

void qemu_peer_stop(struct qemu_peer_proc *p)
{
	proc_kill(p);
	if (p->out_fd >= 0)
		close(p->out_fd);
	if (p->err_fd >= 0)
		close(p->err_fd);
	p->out_fd = p->err_fd = -1;
}

/* Waits up to timeout_ms for the process to exit by itself. */
static bool proc_wait(struct qemu_peer_proc *p, int timeout_ms)
{
	double end = now_ms() + timeout_ms;
	while (p->pid > 0) {
		pid_t r = waitpid(p->pid, NULL, WNOHANG);
		if (r == p->pid || (r < 0 && errno == ECHILD)) {
			p->pid = -1;
			return true;
		}
		if (now_ms() > end)
			return false;
		usleep(2000);
	}
	return true;
}

/* fork + exec QEMU with stdin from /dev/null and stdout/stderr on pipes.
 * p->start_ms is the time taken just before fork(). */
static int proc_start(struct qemu_peer_proc *p, char *const argv[], char *errbuf, size_t errlen)
{
	int out[2] = {-1, -1}, err[2] = {-1, -1};
	p->pid = -1;
	p->out_fd = p->err_fd = -1;
	p->first_output_ms = -1;
	pid_t parent = getpid();
	if (pipe2(out, O_CLOEXEC) < 0 || pipe2(err, O_CLOEXEC) < 0) {
		set_err(errbuf, errlen, "pipe: %s", strerror(errno));
		goto fail;
	}
	int devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);
	if (devnull < 0) {
		set_err(errbuf, errlen, "open /dev/null: %s", strerror(errno));
		goto fail;
	}
	p->start_ms = now_ms();
	pid_t pid = fork();
	if (pid < 0) {
		set_err(errbuf, errlen, "fork: %s", strerror(errno));
		close(devnull);
		goto fail;
	}
	if (pid == 0) {
		setpgid(0, 0);
		/* A caller killed outright (SIGKILL, a crash) must not leave QEMUs
		 * behind: they hold GiBs and /dev/kvm. The getppid() check closes the
		 * race with a parent that died before prctl(). */
		if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0 || getppid() != parent)
			_exit(127);
		if (dup2(devnull, 0) < 0 || dup2(out[1], 1) < 0 || dup2(err[1], 2) < 0)
			_exit(127);
		execvp(argv[0], argv);
		dprintf(2, "exec %s: %s\n", argv[0], strerror(errno));
		_exit(127);
	}
	setpgid(pid, pid); /* also from the parent: no race with kill(-pid) */
	close(devnull);
	close(out[1]);
	close(err[1]);
	p->pid = pid;
	p->out_fd = out[0];
	p->err_fd = err[0];
	fcntl(p->err_fd, F_SETFL, O_NONBLOCK);
	return 0;
fail:
	for (int i = 0; i < 2; i++) {
		if (out[i] >= 0)
			close(out[i]);
		if (err[i] >= 0)
			close(err[i]);
	}
	return -1;
}

/* Builds the QEMU command line: the shared machine options plus `extra`
 * (NULL-terminated). Strings live in `store` (mem_buf for -m). */
#define MAX_ARGS 48
static void build_argv(const char *argv[MAX_ARGS], const char *qemu, const char *elf,
		       char mem_buf[16], unsigned mem_mib, const char *const *extra)
{
	snprintf(mem_buf, 16, "%u", mem_mib);
	size_t n = 0;
	const char *base[] = {qemu,       "-accel",  "kvm",        "-M",    QP_MACHINE, "-cpu",
			      QP_CPU,     "-m",      mem_buf,      "-smp",  "1",        "-nodefaults",
			      "-no-user-config", "-display", "none",   "-serial", "stdio", "-no-reboot",
			      "-kernel",  elf};
	for (size_t i = 0; i < sizeof(base) / sizeof(base[0]); i++)
		argv[n++] = base[i];
	for (size_t i = 0; extra && extra[i] && n < MAX_ARGS - 1; i++)
		argv[n++] = extra[i];
	argv[n] = NULL;
}

/* ---- QMP over a unix socket ---- */

struct qmp {
	int fd;
	char buf[16384];
	size_t len;
};

/* Discards whatever the guest printed, so QEMU never blocks on a full pipe. */
static void drain_serial(struct qemu_peer_proc *p)
{
	char buf[4096];
	while (p->out_fd >= 0) {
		struct pollfd pfd = {.fd = p->out_fd, .events = POLLIN};
		if (poll(&pfd, 1, 0) <= 0 || !(pfd.revents & (POLLIN | POLLHUP)))
			return;
		if (read(p->out_fd, buf, sizeof(buf)) <= 0)
			return;
	}
}

/* Reads one QMP message line (without the line end) into line[]. While waiting,
 * keeps draining the serial output. */
static int qmp_read_line(struct qmp *q, struct qemu_peer_proc *p, char *line, size_t cap,
			 double end, char *errbuf, size_t errlen)
{
	for (;;) {
		char *nl = memchr(q->buf, '\n', q->len);
		if (nl) {
			size_t l = (size_t)(nl - q->buf);
			size_t c = l < cap - 1 ? l : cap - 1;
			memcpy(line, q->buf, c);
			line[c] = 0;
			if (c && line[c - 1] == '\r')
				line[c - 1] = 0;
			memmove(q->buf, nl + 1, q->len - l - 1);
			q->len -= l + 1;
			return 0;
		}
		if (q->len == sizeof(q->buf)) {
			set_err(errbuf, errlen, "QMP: message too long");
			return -1;
		}
		double left = end - now_ms();
		if (left <= 0) {
			set_err(errbuf, errlen, "QMP: timed out waiting for QEMU");
			return -1;
		}
		struct pollfd pfd[2] = {{.fd = q->fd, .events = POLLIN},
					{.fd = p->out_fd, .events = POLLIN}};
		int r = poll(pfd, 2, left > 50 ? 50 : (int)left + 1);
		if (r < 0 && errno != EINTR) {
			set_err(errbuf, errlen, "poll: %s", strerror(errno));
			return -1;
		}
		if (r > 0 && pfd[1].revents)
			drain_serial(p);
		if (r > 0 && pfd[0].revents) {
			ssize_t n = read(q->fd, q->buf + q->len, sizeof(q->buf) - q->len);
			if (n == 0 || (n < 0 && errno != EINTR && errno != EAGAIN)) {
				set_err(errbuf, errlen, "QMP: connection closed by QEMU");
				return -1;
			}
			if (n > 0)
				q->len += (size_t)n;
		}
	}
}

/* Sends one command and waits for its {"return" ...} (events are skipped).
 * The reply is left in reply[]. */
static int qmp_cmd(struct qmp *q, struct qemu_peer_proc *p, const char *json, char *reply,
		   size_t cap, char *errbuf, size_t errlen)
{
	size_t len = strlen(json), off = 0;
	while (off < len) {
		ssize_t n = send(q->fd, json + off, len - off, MSG_NOSIGNAL);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			set_err(errbuf, errlen, "QMP: write: %s", strerror(errno));
			return -1;
		}
		off += (size_t)n;
	}
	double end = now_ms() + QMP_TIMEOUT_MS;
	for (;;) {
		if (qmp_read_line(q, p, reply, cap, end, errbuf, errlen) < 0)
			return -1;
		if (!strncmp(reply, "{\"return\"", 9))
			return 0;
		if (!strncmp(reply, "{\"error\"", 8)) {
			set_err(errbuf, errlen, "QMP: %.*s -> %.300s", (int)strcspn(json, "\r\n"), json,
				reply);
			return -1;
		}
		/* an event: keep reading */
	}
}

static int qmp_connect(struct qmp *q, struct qemu_peer_proc *p, const char *path, char *errbuf,
		       size_t errlen)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	if (strlen(path) >= sizeof(sa.sun_path)) {
		set_err(errbuf, errlen, "QMP socket path too long: %s", path);
		return -1;
	}
	strcpy(sa.sun_path, path);
	double end = now_ms() + QMP_TIMEOUT_MS;
	for (;;) {
		q->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (q->fd < 0) {
			set_err(errbuf, errlen, "socket: %s", strerror(errno));
			return -1;
		}
		if (connect(q->fd, (struct sockaddr *)&sa, sizeof(sa)) == 0)
			break;
		int e = errno;
		close(q->fd);
		q->fd = -1;
		bool gone = waitpid(p->pid, NULL, WNOHANG) == p->pid;
		if (gone)
			p->pid = -1;
		if (gone || now_ms() > end) {
			set_err(errbuf, errlen, "QMP: cannot connect to %s: %s", path, strerror(e));
			return -1;
		}
		usleep(5000);
	}
	q->len = 0;
	char line[1024];
	/* greeting: {"QMP": {...}} */
	if (qmp_read_line(q, p, line, sizeof(line), now_ms() + QMP_TIMEOUT_MS, errbuf, errlen) < 0)
		return -1;
	if (strncmp(line, "{\"QMP\"", 6)) {
		set_err(errbuf, errlen, "QMP: unexpected greeting %.200s", line);
		return -1;
	}
	return 0;
}

/* Reads the serial output until a line "tg: ready" (bounded). */
static int wait_ready(struct qemu_peer_proc *p, char *errbuf, size_t errlen)
{
	char win[256]; /* the current, possibly partial, line */
	size_t wl = 0;
	double end = now_ms() + READY_TIMEOUT_MS;
	for (;;) {
		double left = end - now_ms();
		if (left <= 0) {
			set_err(errbuf, errlen, "timed out after %d ms waiting for \"tg: ready\"",
				READY_TIMEOUT_MS);
			return -1;
		}
		struct pollfd pfd = {.fd = p->out_fd, .events = POLLIN};
		int r = poll(&pfd, 1, (int)left + 1);
		if (r < 0 && errno != EINTR) {
			set_err(errbuf, errlen, "poll: %s", strerror(errno));
			return -1;
		}
		if (r <= 0)
			continue;
		char buf[4096];
		ssize_t n = read(p->out_fd, buf, sizeof(buf));
		if (n == 0) {
			set_err(errbuf, errlen, "QEMU exited before the guest was ready");
			return -1;
		}
		if (n < 0) {
			if (errno == EINTR)
				continue;
			set_err(errbuf, errlen, "read: %s", strerror(errno));
			return -1;
		}
		for (ssize_t i = 0; i < n; i++) {
			if (buf[i] == '\n') {
				win[wl] = 0;
				if (wl && win[wl - 1] == '\r')
					win[wl - 1] = 0;
				if (!strcmp(win, "tg: ready"))
					return 0;
				if (!strncmp(win, "tg: error", 9) || !strncmp(win, "tg: fault", 9) ||
				    !strncmp(win, "tg: exit", 8)) {
					set_err(errbuf, errlen, "guest: %s", win);
					return -1;
				}
				wl = 0;
			} else if (wl < sizeof(win) - 1) {
				win[wl++] = buf[i];
			}
		}
	}
}

int qemu_peer_prepare(const char *qemu, const char *elf, const char *cmdline, unsigned mem_mib,
		      const char *state_path, char *errbuf, size_t errlen)
{
	if (errbuf && errlen)
		errbuf[0] = 0;
	if (!qemu || !elf || !cmdline || !mem_mib || !path_ok(state_path)) {
		set_err(errbuf, errlen, "qemu_peer_prepare: bad arguments (state path must not "
					"contain quotes, backslashes or control characters)");
		return -1;
	}
	char dir[] = "/tmp/qemu-peer-XXXXXX";
	if (!mkdtemp(dir)) {
		set_err(errbuf, errlen, "mkdtemp: %s", strerror(errno));
		return -1;
	}
	char sock[sizeof(dir) + 16], qmp_arg[sizeof(sock) + 32];
	snprintf(sock, sizeof(sock), "%s/qmp.sock", dir);
	snprintf(qmp_arg, sizeof(qmp_arg), "unix:%s,server=on,wait=off", sock);
	unlink(state_path);

	char mem_buf[16];
	const char *argv[MAX_ARGS];
	const char *extra[] = {"-append", cmdline, "-qmp", qmp_arg, "-global",
			       "migration.store-global-state=off", NULL};
	build_argv(argv, qemu, elf, mem_buf, mem_mib, extra);

	int ret = -1;
	struct qmp q = {.fd = -1};
	struct qemu_peer_proc p;
	if (proc_start(&p, (char *const *)argv, errbuf, errlen) < 0)
		goto out;
	if (wait_ready(&p, errbuf, errlen) < 0)
		goto out_qemu;
	if (qmp_connect(&q, &p, sock, errbuf, errlen) < 0)
		goto out_qemu;

	char reply[4096], cmd[PATH_MAX + 128];
	if (qmp_cmd(&q, &p, "{\"execute\":\"qmp_capabilities\"}\n", reply, sizeof(reply), errbuf,
		    errlen) < 0 ||
	    qmp_cmd(&q, &p, "{\"execute\":\"stop\"}\n", reply, sizeof(reply), errbuf, errlen) < 0)
		goto out_qemu;
	snprintf(cmd, sizeof(cmd),
		 "{\"execute\":\"migrate\",\"arguments\":{\"uri\":\"exec:cat > '%s'\"}}\n",
		 state_path);
	if (qmp_cmd(&q, &p, cmd, reply, sizeof(reply), errbuf, errlen) < 0)
		goto out_qemu;
	double end = now_ms() + MIGRATE_TIMEOUT_MS;
	for (;;) {
		if (qmp_cmd(&q, &p, "{\"execute\":\"query-migrate\"}\n", reply, sizeof(reply),
			    errbuf, errlen) < 0)
			goto out_qemu;
		if (strstr(reply, "\"completed\""))
			break;
		if (strstr(reply, "\"failed\"") || strstr(reply, "\"cancelled\"")) {
			set_err(errbuf, errlen, "migration failed: %.300s", reply);
			goto out_qemu;
		}
		if (now_ms() > end) {
			set_err(errbuf, errlen, "migration did not complete in %d ms",
				MIGRATE_TIMEOUT_MS);
			goto out_qemu;
		}
		usleep(5000);
	}
	/* quit: QEMU may close the socket before or after replying */
	char qerr[64];
	(void)qmp_cmd(&q, &p, "{\"execute\":\"quit\"}\n", reply, sizeof(reply), qerr, sizeof(qerr));
	if (!proc_wait(&p, QUIT_TIMEOUT_MS))
		proc_kill(&p);
	struct stat st;
	if (stat(state_path, &st) < 0 || st.st_size == 0) {
		set_err(errbuf, errlen, "no migration state written to %s", state_path);
		goto out_qemu;
	}
	ret = 0;
out_qemu:
	if (ret < 0)
		append_stderr(&p, errbuf, errlen);
	if (q.fd >= 0)
		close(q.fd);
	qemu_peer_stop(&p);
out:
	unlink(sock);
	rmdir(dir);
	return ret;
}

/* Describes how QEMU ended, reaping it if it has exited (waits at most a
 * moment: its stdout has just closed, so it is on its way out). */
static void describe_exit(struct qemu_peer_proc *p, char *errbuf, size_t errlen)
{
	siginfo_t si;
	bool exited = false;
	for (int i = 0; p->pid > 0 && i < 100 && !exited; i++) {
		/* WNOWAIT: the zombie keeps its pid, so the group kill below cannot
		 * reach a process that reused it */
		si.si_pid = 0;
		exited = waitid(P_PID, (id_t)p->pid, &si, WEXITED | WNOHANG | WNOWAIT) == 0 &&
			 si.si_pid == p->pid;
		if (!exited)
			usleep(2000);
	}
	if (!exited)
		return; /* still running: qemu_peer_stop kills it */
	kill(-p->pid, SIGKILL); /* the exec: shell and cat may outlive it */
	while (waitpid(p->pid, NULL, 0) < 0 && errno == EINTR)
		;
	p->pid = -1;
	size_t used = errbuf ? strlen(errbuf) : 0;
	if (!errbuf || used + 32 >= errlen)
		return;
	if (si.si_code == CLD_EXITED)
		snprintf(errbuf + used, errlen - used, " (exit status %d)", si.si_status);
	else
		snprintf(errbuf + used, errlen - used, " (killed by signal %d)", si.si_status);
}

int qemu_peer_start(const char *qemu, const char *elf, unsigned mem_mib, const char *state_path,
		    struct qemu_peer_proc *out, char *errbuf, size_t errlen)
{
	if (errbuf && errlen)
		errbuf[0] = 0;
	if (!out)
		return -1;
	out->pid = -1;
	out->out_fd = out->err_fd = -1;
	out->first_output_ms = -1;
	if (!qemu || !elf || !mem_mib || !path_ok(state_path)) {
		set_err(errbuf, errlen, "qemu_peer_start: bad arguments");
		return -1;
	}
	struct stat st;
	if (stat(state_path, &st) < 0 || !S_ISREG(st.st_mode) || st.st_size == 0 ||
	    access(state_path, R_OK) < 0) {
		/* QEMU would wait forever on an empty incoming stream */
		set_err(errbuf, errlen, "no readable migration state at %s", state_path);
		return -1;
	}
	char incoming[PATH_MAX + 32];
	snprintf(incoming, sizeof(incoming), "exec:cat '%s'", state_path);
	char mem_buf[16];
	const char *argv[MAX_ARGS];
	const char *extra[] = {"-incoming", incoming, NULL};
	build_argv(argv, qemu, elf, mem_buf, mem_mib, extra);
	if (proc_start(out, (char *const *)argv, errbuf, errlen) < 0)
		return -1;
	/* non-blocking, so callers draining many QEMUs from one poll() never stall */
	fcntl(out->out_fd, F_SETFL, O_NONBLOCK);
	return 0;
}

int qemu_peer_drain(struct qemu_peer_proc *p, char *errbuf, size_t errlen)
{
	if (p->out_fd < 0) {
		set_err(errbuf, errlen, "QEMU pid %d: serial output already closed", (int)p->pid);
		return -1;
	}
	char buf[4096];
	/* bounded, so one chatty guest cannot starve the others sharing a poll loop */
	for (int i = 0; i < 64; i++) {
		ssize_t n = read(p->out_fd, buf, sizeof(buf));
		if (n > 0) {
			if (p->first_output_ms < 0)
				p->first_output_ms = now_ms() - p->start_ms;
			continue;
		}
		if (n == 0) {
			set_err(errbuf, errlen, "QEMU pid %d exited %s", (int)p->pid,
				p->first_output_ms < 0 ? "without guest output" : "after guest output");
			describe_exit(p, errbuf, errlen);
			usleep(20000); /* let its stderr arrive (the exec: cat may hold the pipe) */
			append_stderr(p, errbuf, errlen);
			return -1;
		}
		if (errno == EINTR)
			continue;
		if (errno == EAGAIN || errno == EWOULDBLOCK)
			return 0;
		set_err(errbuf, errlen, "QEMU pid %d: read serial: %s", (int)p->pid, strerror(errno));
		return -1;
	}
	return 0;
}

int qemu_peer_wait_output(struct qemu_peer_proc *p, int timeout_ms, char *errbuf, size_t errlen)
{
	if (errbuf && errlen)
		errbuf[0] = 0;
	double end = now_ms() + timeout_ms;
	while (p->first_output_ms < 0) {
		double left = end - now_ms();
		if (left <= 0) {
			set_err(errbuf, errlen, "no guest output within %d ms of the restore",
				timeout_ms);
			append_stderr(p, errbuf, errlen);
			return -1;
		}
		struct pollfd pfd = {.fd = p->out_fd, .events = POLLIN};
		int r = poll(&pfd, 1, (int)left + 1);
		if (r < 0 && errno != EINTR) {
			set_err(errbuf, errlen, "poll: %s", strerror(errno));
			return -1;
		}
		if (r > 0 && qemu_peer_drain(p, errbuf, errlen) < 0)
			return -1;
	}
	return 0;
}

int qemu_peer_restore_once(const char *qemu, const char *elf, unsigned mem_mib,
			   const char *state_path, double *ms_out, char *errbuf, size_t errlen)
{
	if (!ms_out) {
		set_err(errbuf, errlen, "qemu_peer_restore_once: bad arguments");
		return -1;
	}
	struct qemu_peer_proc p;
	if (qemu_peer_start(qemu, elf, mem_mib, state_path, &p, errbuf, errlen) < 0)
		return -1;
	int ret = qemu_peer_wait_output(&p, RESTORE_TIMEOUT_MS, errbuf, errlen);
	if (ret == 0)
		*ms_out = p.first_output_ms;
	qemu_peer_stop(&p);
	return ret;
}
