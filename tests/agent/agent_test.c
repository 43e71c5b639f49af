/* Host integration tests of the guest agent: runs spore-agent-host on a Unix socket and drives it. */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "agent_client.h"
#include "agent_proto.h"
#include "pid1.h"

static const char *agent_bin;
static char dir[64];
static char sock_path[128];
static pid_t agent_pid = -1;
static pid_t proxy_pid = -1;
static bool as_pid1; /* run the agent as PID 1 of private PID/mount/UTS namespaces */

static int cleanup_cb(const char *p, const struct stat *sb, int flag, struct FTW *f)
{
	(void)sb, (void)flag, (void)f;
	return remove(p);
}

static void cleanup(void)
{
	if (proxy_pid > 0) {
		kill(proxy_pid, SIGKILL);
		waitpid(proxy_pid, NULL, 0);
		proxy_pid = -1;
	}
	if (agent_pid > 0) {
		/* SIGTERM first: the agent then kills the processes it started */
		kill(agent_pid, SIGTERM);
		bool gone = false;
		for (int i = 0; i < 200 && !gone; i++) {
			gone = waitpid(agent_pid, NULL, WNOHANG) == agent_pid;
			if (!gone)
				usleep(10000);
		}
		if (!gone) {
			kill(agent_pid, SIGKILL);
			waitpid(agent_pid, NULL, 0);
		}
		agent_pid = -1;
	}
	if (dir[0])
		nftw(dir, cleanup_cb, 16, FTW_DEPTH | FTW_PHYS);
	dir[0] = 0;
}

static __attribute__((noreturn, format(printf, 2, 3))) void fail_at(int line, const char *fmt, ...)
{
	va_list ap;
	fprintf(stderr, "FAIL (line %d): ", line);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	cleanup();
	exit(1);
}
#define FAIL(...) fail_at(__LINE__, __VA_ARGS__)
#define CHECK(cond)                                  \
	do {                                         \
		if (!(cond))                         \
			FAIL("check failed: %s", #cond); \
	} while (0)
#define CHECK_OK(call, err)                                                 \
	do {                                                                \
		if ((call) < 0)                                             \
			FAIL("%s: %s", #call, sl_error_msg(err));           \
	} while (0)

/* A hung test still removes its agent and scratch directory before ctest's
 * own timeout kills it without cleanup. Not async-signal-safe in theory;
 * the process ends right after. */
static void watchdog(int sig)
{
	static const char msg[] = "FAIL: test timed out (watchdog)\n";
	(void)sig;
	(void)!write(2, msg, sizeof(msg) - 1);
	cleanup();
	_exit(1);
}

static int64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void start_agent(void)
{
	char listen[160], forkdir[128];
	snprintf(listen, sizeof(listen), "unix:%s", sock_path);
	snprintf(forkdir, sizeof(forkdir), "%s/fork.d", dir);
	agent_pid = fork();
	CHECK(agent_pid >= 0);
	if (agent_pid == 0) {
		if (as_pid1)
			/* private namespaces: its mounts, hostname and kill(-1) stay inside */
			execl("/usr/bin/unshare", "unshare", "--pid", "--fork", "--kill-child", "--mount",
			      "--propagation", "private", "--uts", "--ipc", "--", agent_bin, "--listen", listen,
			      "--no-privileged", "--fork-dir", forkdir, "--log-level", "error", (char *)NULL);
		else
			execl(agent_bin, agent_bin, "--listen", listen, "--no-privileged", "--fork-dir", forkdir,
			      "--log-level", "error", (char *)NULL);
		_exit(127);
	}
	for (int64_t end = now_ms() + 10000; now_ms() < end;) {
		int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		struct sockaddr_un sa = {.sun_family = AF_UNIX};
		strcpy(sa.sun_path, sock_path);
		int r = connect(fd, (struct sockaddr *)&sa, sizeof(sa));
		close(fd);
		if (r == 0)
			return;
		if (waitpid(agent_pid, NULL, WNOHANG) == agent_pid) {
			agent_pid = -1;
			FAIL("agent exited at start");
		}
		usleep(10000);
	}
	FAIL("agent did not start listening");
}

static struct agent_client *connect_agent(const char *path, unsigned flags)
{
	sl_error_t err = NULL;
	struct agent_client *c = NULL;
	struct agent_client_opts o = {.flags = flags, .timeout_ms = 10000};
	CHECK_OK(agent_client_connect(path, &o, &c, &err), err);
	return c;
}

/* SHUTDOWN must end the host agent with status 0. */
static void stop_agent(void)
{
	sl_error_t err = NULL;
	struct agent_client *c = connect_agent(sock_path, 0);
	CHECK_OK(agent_client_shutdown(c, &err), err);
	int status = -1;
	for (int64_t end = now_ms() + 10000; now_ms() < end; usleep(10000))
		if (waitpid(agent_pid, &status, WNOHANG) == agent_pid)
			break;
	agent_client_close(c);
	/* As PID 1 of a namespace, reboot(RB_POWER_OFF) ends the namespace by
	 * SIGINT to its init, which unshare passes on to itself. */
	bool ok = as_pid1 ? WIFSIGNALED(status) && WTERMSIG(status) == SIGINT
			  : WIFEXITED(status) && WEXITSTATUS(status) == 0;
	if (!ok)
		FAIL("agent did not end as expected after SHUTDOWN (status %d)", status);
	agent_pid = -1;
}

/* Output collected in a memfd, returned as a NUL-terminated string. */
struct run {
	struct agent_exit_status st;
	char out[65536], errout[4096];
};

static void read_memfd(int fd, char *buf, size_t sz)
{
	off_t n = lseek(fd, 0, SEEK_CUR);
	CHECK(n >= 0 && (size_t)n < sz);
	CHECK(pread(fd, buf, (size_t)n, 0) == n);
	buf[n] = 0;
	close(fd);
}

static int run_cmd(struct agent_client *c, uint32_t id, char *const *argv, char *const *env, const char *cwd,
		   uint32_t uid, uint32_t gid, int stdin_fd, struct run *r, sl_error_t *err)
{
	int o = memfd_create("out", MFD_CLOEXEC), e = memfd_create("err", MFD_CLOEXEC);
	CHECK(o >= 0 && e >= 0);
	struct agent_client_exec x = {.id = id, .argv = argv, .env = env, .cwd = cwd, .uid = uid, .gid = gid,
				      .stdin_fd = stdin_fd, .stdout_fd = o, .stderr_fd = e};
	int rc = agent_client_exec(c, &x, &r->st, err);
	read_memfd(o, r->out, sizeof(r->out));
	read_memfd(e, r->errout, sizeof(r->errout));
	return rc;
}

static void run_ok(struct agent_client *c, char *const *argv, char *const *env, const char *cwd, struct run *r)
{
	sl_error_t err = NULL;
	CHECK_OK(run_cmd(c, 1, argv, env, cwd, getuid(), getgid(), -1, r, &err), err);
}

#define ARGV(...) ((char *const[]){__VA_ARGS__, NULL})

/* ---- raw frame helpers ---- */

static int raw_connect(void)
{
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	strcpy(sa.sun_path, sock_path);
	CHECK(fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0);
	return fd;
}

static void raw_send(int fd, const void *buf, size_t n)
{
	CHECK(send(fd, buf, n, MSG_NOSIGNAL) == (ssize_t)n);
}

static void raw_send_msg(int fd, const struct agent_msg *m)
{
	sl_error_t err = NULL;
	uint8_t *f;
	size_t n;
	CHECK_OK(agent_msg_encode(m, &f, &n, &err), err);
	raw_send(fd, f, n);
	free(f);
}

/* Reads one frame (5 s bound); returns 0 at EOF. */
static int raw_recv(int fd, struct agent_msg *m)
{
	uint8_t buf[4096];
	size_t have = 0;
	for (int64_t end = now_ms() + 5000;;) {
		size_t used;
		sl_error_t err = NULL;
		int r = agent_frame_decode(buf, have, &used, m, &err);
		if (r < 0)
			FAIL("bad frame from agent: %s", sl_error_msg(err));
		if (r == 1) {
			CHECK(used == have); /* the tests read one frame at a time */
			return 1;
		}
		struct pollfd p = {fd, POLLIN, 0};
		int left = (int)(end - now_ms());
		if (left <= 0 || poll(&p, 1, left) <= 0)
			FAIL("timed out reading a frame");
		/* header first, then exactly the payload: never read past a frame */
		size_t want = have < AGENT_HDR_SIZE ? AGENT_HDR_SIZE - have
			: AGENT_HDR_SIZE + (buf[0] | buf[1] << 8 | buf[2] << 16 | (size_t)buf[3] << 24) - have;
		CHECK(have + want <= sizeof(buf));
		ssize_t n = read(fd, buf + have, want);
		if (n == 0 && have == 0)
			return 0;
		CHECK(n > 0);
		have += (size_t)n;
	}
}

static void raw_hello(int fd, uint32_t version)
{
	struct agent_msg m = {.type = AGENT_MSG_HELLO};
	m.u.hello.version = version;
	raw_send_msg(fd, &m);
}

static void expect_fatal_error(int fd, uint32_t code)
{
	struct agent_msg m;
	CHECK(raw_recv(fd, &m) == 1);
	if (m.type != AGENT_MSG_ERROR || m.u.error.code != code || !(m.u.error.flags & AGENT_ERROR_FATAL))
		FAIL("want fatal ERROR %u, got %s code %u", code, agent_msg_type_name(m.type),
		     m.type == AGENT_MSG_ERROR ? m.u.error.code : 0);
	agent_msg_free(&m);
	CHECK(raw_recv(fd, &m) == 0); /* then the agent closes */
	close(fd);
}

/* After a refused connection the agent must still serve the next one. */
static void check_survives(void)
{
	struct agent_client *c = connect_agent(sock_path, 0);
	struct run r;
	run_ok(c, ARGV("echo", "still here"), NULL, NULL, &r);
	CHECK(strcmp(r.out, "still here\n") == 0);
	agent_client_close(c);
}

/* ---- tests ---- */

static void test_echo(void)
{
	struct agent_client *c = connect_agent(sock_path, 0);
	struct run r;
	run_ok(c, ARGV("echo", "hi"), NULL, NULL, &r);
	CHECK(strcmp(r.out, "hi\n") == 0 && r.errout[0] == 0);
	CHECK(r.st.kind == AGENT_EXIT_CODE && r.st.value == 0);
	run_ok(c, ARGV("sh", "-c", "echo oops >&2"), NULL, NULL, &r);
	CHECK(strcmp(r.errout, "oops\n") == 0 && r.out[0] == 0);
	agent_client_close(c);
}

static void test_exit_status(void)
{
	struct agent_client *c = connect_agent(sock_path, 0);
	struct run r;
	run_ok(c, ARGV("sh", "-c", "exit 7"), NULL, NULL, &r);
	CHECK(r.st.kind == AGENT_EXIT_CODE && r.st.value == 7);
	/* a process that cannot start is an error naming the cause */
	sl_error_t err = NULL;
	CHECK(run_cmd(c, 2, ARGV("/nonexistent/prog"), NULL, NULL, getuid(), getgid(), -1, &r, &err) < 0);
	CHECK(err && strstr(sl_error_msg(err), "execve") && strstr(sl_error_msg(err), "No such file"));
	sl_error_free(&err);
	CHECK(run_cmd(c, 3, ARGV("true"), NULL, "/nonexistent-dir", getuid(), getgid(), -1, &r, &err) < 0);
	CHECK(err && strstr(sl_error_msg(err), "chdir"));
	sl_error_free(&err);
	run_ok(c, ARGV("true"), NULL, NULL, &r); /* the connection is still usable */
	CHECK(r.st.kind == AGENT_EXIT_CODE && r.st.value == 0);
	agent_client_close(c);
}

static void test_signal(void)
{
	struct agent_client *c = connect_agent(sock_path, 0);
	struct run r;
	run_ok(c, ARGV("sh", "-c", "kill -TERM $$"), NULL, NULL, &r);
	CHECK(r.st.kind == AGENT_EXIT_SIGNAL && r.st.value == SIGTERM);
	/* SIGNAL from the host */
	sl_error_t err = NULL;
	struct agent_msg m = {.type = AGENT_MSG_EXEC};
	m.u.exec = (struct agent_exec){.id = 5, .uid = getuid(), .gid = getgid(), .cwd = "", .argc = 2,
				       .argv = (char **)ARGV("sleep", "30"), .env = (char **)ARGV(NULL)};
	CHECK_OK(agent_client_send(c, &m, &err), err);
	struct agent_msg x;
	CHECK(agent_client_recv(c, &x, 5000, &err) == 1 && x.type == AGENT_MSG_STARTED && x.u.started.id == 5);
	agent_msg_free(&x);
	m = (struct agent_msg){.type = AGENT_MSG_SIGNAL};
	m.u.signal.id = 5;
	m.u.signal.signo = SIGKILL;
	int64_t t0 = now_ms();
	CHECK_OK(agent_client_send(c, &m, &err), err);
	CHECK(agent_client_recv(c, &x, 5000, &err) == 1);
	CHECK(x.type == AGENT_MSG_EXIT && x.u.exit.id == 5 && x.u.exit.kind == AGENT_EXIT_SIGNAL &&
	      x.u.exit.value == SIGKILL);
	CHECK(now_ms() - t0 < 5000);
	agent_msg_free(&x);
	/* SIGNAL to an unknown id: a per-process ERROR, connection stays */
	m.u.signal.id = 99;
	CHECK_OK(agent_client_send(c, &m, &err), err);
	CHECK(agent_client_recv(c, &x, 5000, &err) == 1);
	CHECK(x.type == AGENT_MSG_ERROR && x.u.error.code == AGENT_ERR_NO_PROCESS && x.u.error.id == 99 &&
	      !(x.u.error.flags & AGENT_ERROR_FATAL));
	agent_msg_free(&x);
	run_ok(c, ARGV("true"), NULL, NULL, &r);
	agent_client_close(c);
}

/* agent_client_exec's hooks: STARTED reaches started() before the exit,
 * and signals queued through wake_fd/next_signal reach the process. */
struct hook_state {
	int started_calls;
	uint32_t guest_pid;
	int pending; /* signal to hand out once */
};

static void hook_started(void *arg, uint32_t pid)
{
	struct hook_state *h = arg;
	h->started_calls++;
	h->guest_pid = pid;
}

static int hook_next_signal(void *arg)
{
	struct hook_state *h = arg;
	int s = h->pending;
	h->pending = 0;
	return s;
}

static void test_exec_hooks(void)
{
	struct agent_client *c = connect_agent(sock_path, 0);
	sl_error_t err = NULL;
	int pfd[2];
	CHECK(pipe2(pfd, O_CLOEXEC | O_NONBLOCK) == 0);
	struct hook_state h = {.pending = SIGTERM};
	/* The wake-up is already there: the signal goes out right after EXEC,
	 * so it must not overtake the process's start (the agent queues it). */
	CHECK(write(pfd[1], "x", 1) == 1);
	struct agent_client_exec x = {.id = 9, .argv = (char *const *)ARGV("sleep", "30"), .uid = getuid(),
				      .gid = getgid(), .stdin_fd = -1, .stdout_fd = -1, .stderr_fd = -1,
				      .started = hook_started, .next_signal = hook_next_signal, .wake_fd = pfd[0],
				      .cb_arg = &h};
	struct agent_exit_status st;
	int64_t t0 = now_ms();
	CHECK_OK(agent_client_exec(c, &x, &st, &err), err);
	CHECK(now_ms() - t0 < 10000);
	CHECK(h.started_calls == 1 && h.guest_pid > 1);
	CHECK(st.kind == AGENT_EXIT_SIGNAL && st.value == SIGTERM);
	/* A process that cannot start: no started() call, an error instead. */
	h = (struct hook_state){0};
	x.id = 10;
	x.argv = (char *const *)ARGV("/nonexistent/prog");
	CHECK(agent_client_exec(c, &x, &st, &err) < 0);
	CHECK(err && strstr(sl_error_msg(err), "execve"));
	sl_error_free(&err);
	CHECK(h.started_calls == 0);
	close(pfd[0]);
	close(pfd[1]);
	agent_client_close(c);
}

static void test_stdin(void)
{
	struct agent_client *c = connect_agent(sock_path, 0);
	int in = memfd_create("in", MFD_CLOEXEC);
	CHECK(in >= 0);
	/* larger than a pipe and than one frame chunk, so flow control is used */
	static char data[40000];
	for (size_t i = 0; i < sizeof(data) - 1; i++)
		data[i] = (char)('a' + i % 26);
	data[sizeof(data) - 1] = '\n';
	CHECK(write(in, data, sizeof(data)) == (ssize_t)sizeof(data));
	CHECK(lseek(in, 0, SEEK_SET) == 0);
	struct run *r = malloc(sizeof(*r));
	sl_error_t err = NULL;
	CHECK_OK(run_cmd(c, 1, ARGV("cat"), NULL, NULL, getuid(), getgid(), in, r, &err), err);
	CHECK(r->st.kind == AGENT_EXIT_CODE && r->st.value == 0);
	CHECK(strlen(r->out) == sizeof(data) && memcmp(r->out, data, sizeof(data)) == 0);
	/* EOF alone reaches the process: wc sees zero bytes */
	CHECK(ftruncate(in, 0) == 0 && lseek(in, 0, SEEK_SET) == 0);
	CHECK_OK(run_cmd(c, 2, ARGV("wc", "-c"), NULL, NULL, getuid(), getgid(), in, r, &err), err);
	CHECK(atoi(r->out) == 0);
	/* without stdin the process reads /dev/null */
	CHECK_OK(run_cmd(c, 3, ARGV("cat"), NULL, NULL, getuid(), getgid(), -1, r, &err), err);
	CHECK(r->out[0] == 0 && r->st.value == 0);
	close(in);
	free(r);
	agent_client_close(c);
}

/* 6 MiB each way through cat: more than every queue limit, so the agent's
 * back-pressure paths run; the bytes must come back unchanged and in order. */
static void test_bulk(void)
{
	const size_t size = 6u << 20;
	uint8_t *data = malloc(size), *back = malloc(size);
	CHECK(data && back);
	uint32_t x = 12345;
	for (size_t i = 0; i < size; i++) {
		x = x * 1103515245u + 12345u;
		data[i] = (uint8_t)(x >> 16);
	}
	int in = memfd_create("in", MFD_CLOEXEC), out = memfd_create("out", MFD_CLOEXEC);
	CHECK(in >= 0 && out >= 0);
	CHECK(write(in, data, size) == (ssize_t)size && lseek(in, 0, SEEK_SET) == 0);
	struct agent_client *c = connect_agent(sock_path, 0);
	sl_error_t err = NULL;
	struct agent_exit_status st;
	struct agent_client_exec e = {.id = 1, .argv = ARGV("cat"), .uid = getuid(), .gid = getgid(),
				      .stdin_fd = in, .stdout_fd = out, .stderr_fd = -1};
	CHECK_OK(agent_client_exec(c, &e, &st, &err), err);
	CHECK(st.kind == AGENT_EXIT_CODE && st.value == 0);
	CHECK(lseek(out, 0, SEEK_CUR) == (off_t)size);
	CHECK(pread(out, back, size, 0) == (ssize_t)size && memcmp(back, data, size) == 0);
	/* output 20 times the input: the client must keep reading while it sends */
	CHECK(ftruncate(in, 0) == 0 && lseek(in, 0, SEEK_SET) == 0);
	for (int i = 0; i < 2000; i++) {
		memset(data, 'a' + i % 26, 999);
		data[999] = '\n';
		CHECK(write(in, data, 1000) == 1000);
	}
	CHECK(lseek(in, 0, SEEK_SET) == 0 && ftruncate(out, 0) == 0 && lseek(out, 0, SEEK_SET) == 0);
	e = (struct agent_client_exec){.id = 3, .argv = ARGV("awk", "{for (i = 0; i < 20; i++) print}"),
				       .uid = getuid(), .gid = getgid(), .stdin_fd = in, .stdout_fd = out,
				       .stderr_fd = -1};
	CHECK_OK(agent_client_exec(c, &e, &st, &err), err);
	CHECK(st.kind == AGENT_EXIT_CODE && st.value == 0 && lseek(out, 0, SEEK_CUR) == 40000000);
	/* and a large output with no input at all */
	CHECK(ftruncate(out, 0) == 0 && lseek(out, 0, SEEK_SET) == 0);
	e = (struct agent_client_exec){.id = 2, .argv = ARGV("head", "-c", "5000000", "/dev/zero"), .uid = getuid(),
				       .gid = getgid(), .stdin_fd = -1, .stdout_fd = out, .stderr_fd = -1};
	CHECK_OK(agent_client_exec(c, &e, &st, &err), err);
	CHECK(st.value == 0 && lseek(out, 0, SEEK_CUR) == 5000000);
	agent_client_close(c);
	close(in);
	close(out);
	free(data);
	free(back);
}

static void test_creds_env_cwd(void)
{
	/* As root the agent can switch to nobody; otherwise to ourselves. */
	uint32_t uid = geteuid() == 0 ? 65534 : getuid(), gid = geteuid() == 0 ? 65534 : getgid();
	struct agent_client *c = connect_agent(sock_path, 0);
	struct run r;
	char want[32];
	sl_error_t err = NULL;
	CHECK_OK(run_cmd(c, 1, ARGV("id", "-u"), NULL, NULL, uid, gid, -1, &r, &err), err);
	snprintf(want, sizeof(want), "%u\n", uid);
	CHECK(strcmp(r.out, want) == 0);
	CHECK_OK(run_cmd(c, 2, ARGV("id", "-g"), NULL, NULL, uid, gid, -1, &r, &err), err);
	snprintf(want, sizeof(want), "%u\n", gid);
	CHECK(strcmp(r.out, want) == 0);
	if (geteuid() == 0) { /* supplementary groups are dropped */
		CHECK_OK(run_cmd(c, 3, ARGV("id", "-G"), NULL, NULL, uid, gid, -1, &r, &err), err);
		CHECK(strcmp(r.out, want) == 0);
	}
	run_ok(c, ARGV("pwd"), NULL, "/tmp", &r);
	CHECK(strcmp(r.out, "/tmp\n") == 0);
	run_ok(c, ARGV("pwd"), NULL, NULL, &r);
	CHECK(strcmp(r.out, "/\n") == 0);
	run_ok(c, ARGV("env"), ARGV("FOO=bar", "EMPTY="), NULL, &r);
	CHECK(strstr(r.out, "FOO=bar\n") && strstr(r.out, "EMPTY=\n") && strstr(r.out, "PATH=/"));
	CHECK(!strstr(r.out, "HOME=")); /* nothing leaks from the agent's own environment */
	run_ok(c, ARGV("env"), ARGV("PATH=/bin"), NULL, &r);
	CHECK(strstr(r.out, "PATH=/bin\n") && !strstr(r.out, "PATH=/usr"));
	agent_client_close(c);
}

static void test_concurrent(void)
{
	struct agent_client *c = connect_agent(sock_path, 0);
	sl_error_t err = NULL;
	const char *script = "for i in 1 2 3 4 5; do echo $ID-$i; echo e$ID-$i >&2; sleep 0.2; done; exit $CODE";
	static char *envs[3][3] = {{"ID=a", "CODE=0", NULL}, {"ID=b", "CODE=1", NULL}, {"ID=c", "CODE=2", NULL}};
	int64_t t0 = now_ms();
	for (uint32_t i = 0; i < 3; i++) {
		struct agent_msg m = {.type = AGENT_MSG_EXEC};
		m.u.exec = (struct agent_exec){.id = 10 + i, .uid = getuid(), .gid = getgid(), .cwd = "", .argc = 3,
					       .argv = (char **)ARGV("sh", "-c", (char *)script), .envc = 2,
					       .env = envs[i]};
		CHECK_OK(agent_client_send(c, &m, &err), err);
	}
	char out[3][256] = {{0}}, errs[3][256] = {{0}};
	bool exited[3] = {0}, started[3] = {0};
	uint32_t code[3] = {0};
	int last = -1, switches = 0;
	while (!exited[0] || !exited[1] || !exited[2]) {
		struct agent_msg m;
		int r = agent_client_recv(c, &m, 10000, &err);
		if (r <= 0)
			FAIL("recv: %s", err ? sl_error_msg(err) : "timeout");
		uint32_t id = m.type == AGENT_MSG_EXIT ? m.u.exit.id
			      : m.type == AGENT_MSG_STARTED ? m.u.started.id : m.u.data.id;
		CHECK(m.type == AGENT_MSG_STDOUT || m.type == AGENT_MSG_STDERR || m.type == AGENT_MSG_EXIT ||
		      m.type == AGENT_MSG_STARTED);
		CHECK(id >= 10 && id < 13);
		int k = (int)(id - 10);
		CHECK(!exited[k]);
		/* STARTED once per process, before anything else of it. */
		CHECK(started[k] == (m.type != AGENT_MSG_STARTED));
		if (m.type == AGENT_MSG_STARTED) {
			CHECK(m.u.started.pid > 1);
			started[k] = true;
		} else if (m.type == AGENT_MSG_EXIT) {
			CHECK(m.u.exit.kind == AGENT_EXIT_CODE);
			code[k] = m.u.exit.value;
			exited[k] = true;
		} else {
			char *dst = m.type == AGENT_MSG_STDOUT ? out[k] : errs[k];
			CHECK(strlen(dst) + m.u.data.len < 256);
			strncat(dst, (char *)m.u.data.data, m.u.data.len);
			if (last != k)
				switches++;
			last = k;
		}
		agent_msg_free(&m);
	}
	int64_t took = now_ms() - t0;
	for (int k = 0; k < 3; k++) {
		char want[128], wante[128];
		char id = (char)('a' + k);
		snprintf(want, sizeof(want), "%c-1\n%c-2\n%c-3\n%c-4\n%c-5\n", id, id, id, id, id);
		snprintf(wante, sizeof(wante), "e%c-1\ne%c-2\ne%c-3\ne%c-4\ne%c-5\n", id, id, id, id, id);
		if (strcmp(out[k], want) != 0 || strcmp(errs[k], wante) != 0)
			FAIL("process %c: stdout %s stderr %s", id, out[k], errs[k]);
		CHECK(code[k] == (uint32_t)k);
	}
	/* interleaved, and in parallel: one at a time would take >= 3 s */
	CHECK(switches >= 6);
	if (took > 2700)
		FAIL("3 processes of 1 s took %lld ms: not run concurrently", (long long)took);
	agent_client_close(c);
}

static void test_malformed(void)
{
	/* unknown frame type */
	int fd = raw_connect();
	raw_hello(fd, AGENT_PROTO_VERSION);
	struct agent_msg m;
	CHECK(raw_recv(fd, &m) == 1 && m.type == AGENT_MSG_HELLO);
	agent_msg_free(&m);
	CHECK(raw_recv(fd, &m) == 1 && m.type == AGENT_MSG_READY);
	agent_msg_free(&m);
	raw_send(fd, "\x00\x00\x00\x00\x7f\x00\x00\x00", 8);
	expect_fatal_error(fd, AGENT_ERR_PROTOCOL);
	check_survives();
	/* a truncated EXEC payload (argv list claims 2 entries, has one) */
	fd = raw_connect();
	raw_hello(fd, AGENT_PROTO_VERSION);
	CHECK(raw_recv(fd, &m) == 1);
	agent_msg_free(&m);
	CHECK(raw_recv(fd, &m) == 1);
	agent_msg_free(&m);
	static const uint8_t bad_exec[] = {
		29, 0, 0, 0, AGENT_MSG_EXEC, 0, 0, 0,
		1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, /* id flags uid gid */
		0, 0, 0, 0,                                     /* cwd "" */
		2, 0, 0, 0, 1, 0, 0, 0, 'x'};                   /* argv: 2 claimed, 1 given */
	raw_send(fd, bad_exec, sizeof(bad_exec));
	expect_fatal_error(fd, AGENT_ERR_PROTOCOL);
	/* a message before HELLO */
	fd = raw_connect();
	struct agent_msg s = {.type = AGENT_MSG_STDIN_EOF};
	s.u.eof.id = 1;
	raw_send_msg(fd, &s);
	expect_fatal_error(fd, AGENT_ERR_STATE);
	/* a guest-to-host type sent by the host */
	fd = raw_connect();
	raw_hello(fd, AGENT_PROTO_VERSION);
	CHECK(raw_recv(fd, &m) == 1);
	agent_msg_free(&m);
	CHECK(raw_recv(fd, &m) == 1);
	agent_msg_free(&m);
	s = (struct agent_msg){.type = AGENT_MSG_READY};
	raw_send_msg(fd, &s);
	expect_fatal_error(fd, AGENT_ERR_PROTOCOL);
	check_survives();
}

static void test_oversize(void)
{
	int fd = raw_connect();
	raw_hello(fd, AGENT_PROTO_VERSION);
	struct agent_msg m;
	CHECK(raw_recv(fd, &m) == 1);
	agent_msg_free(&m);
	CHECK(raw_recv(fd, &m) == 1);
	agent_msg_free(&m);
	/* only the header: the agent must refuse before any payload arrives */
	uint32_t len = AGENT_MAX_PAYLOAD + 1;
	uint8_t hdr[8] = {(uint8_t)len, (uint8_t)(len >> 8), (uint8_t)(len >> 16), (uint8_t)(len >> 24),
			  AGENT_MSG_STDIN, 0, 0, 0};
	raw_send(fd, hdr, sizeof(hdr));
	expect_fatal_error(fd, AGENT_ERR_TOO_LARGE);
	/* exactly the maximum is accepted (a STDIN for an unknown process) */
	fd = raw_connect();
	raw_hello(fd, AGENT_PROTO_VERSION);
	CHECK(raw_recv(fd, &m) == 1);
	agent_msg_free(&m);
	CHECK(raw_recv(fd, &m) == 1);
	agent_msg_free(&m);
	uint8_t *big = calloc(1, AGENT_HDR_SIZE + AGENT_MAX_PAYLOAD);
	len = AGENT_MAX_PAYLOAD;
	uint32_t dlen = AGENT_MAX_PAYLOAD - 8;
	memcpy(big, (uint8_t[]){(uint8_t)len, (uint8_t)(len >> 8), (uint8_t)(len >> 16), 0, AGENT_MSG_STDIN, 0, 0, 0,
				 42, 0, 0, 0, (uint8_t)dlen, (uint8_t)(dlen >> 8), (uint8_t)(dlen >> 16), 0},
	       16);
	raw_send(fd, big, AGENT_HDR_SIZE + AGENT_MAX_PAYLOAD);
	free(big);
	CHECK(raw_recv(fd, &m) == 1);
	CHECK(m.type == AGENT_MSG_ERROR && m.u.error.code == AGENT_ERR_NO_PROCESS && m.u.error.id == 42 &&
	      !(m.u.error.flags & AGENT_ERROR_FATAL));
	agent_msg_free(&m);
	close(fd);
	check_survives();
}

static void test_version(void)
{
	int fd = raw_connect();
	raw_hello(fd, AGENT_PROTO_VERSION + 1);
	expect_fatal_error(fd, AGENT_ERR_VERSION);
	fd = raw_connect();
	raw_hello(fd, 0);
	expect_fatal_error(fd, AGENT_ERR_VERSION);
	/* a second HELLO on a good connection */
	fd = raw_connect();
	raw_hello(fd, AGENT_PROTO_VERSION);
	struct agent_msg m;
	CHECK(raw_recv(fd, &m) == 1);
	agent_msg_free(&m);
	CHECK(raw_recv(fd, &m) == 1);
	agent_msg_free(&m);
	raw_hello(fd, AGENT_PROTO_VERSION);
	expect_fatal_error(fd, AGENT_ERR_STATE);
	check_survives();
}

static void test_ready(void)
{
	int fd = raw_connect();
	raw_hello(fd, AGENT_PROTO_VERSION);
	struct agent_msg m;
	CHECK(raw_recv(fd, &m) == 1);
	CHECK(m.type == AGENT_MSG_HELLO && m.u.hello.version == AGENT_PROTO_VERSION);
	agent_msg_free(&m);
	CHECK(raw_recv(fd, &m) == 1);
	CHECK(m.type == AGENT_MSG_READY && m.u.ready.reason == AGENT_READY_START);
	agent_msg_free(&m);
	close(fd);
	/* several connections at once each get their READY */
	struct agent_client *a = connect_agent(sock_path, 0), *b = connect_agent(sock_path, 0);
	agent_client_close(a);
	agent_client_close(b);
}

static void test_generation(void)
{
	char forkdir[128], hook[160], mark[160];
	snprintf(forkdir, sizeof(forkdir), "%s/fork.d", dir);
	snprintf(mark, sizeof(mark), "%s/hooks.log", dir);
	CHECK(mkdir(forkdir, 0755) == 0);
	/* two hooks: they must run in name order, with the generation env */
	for (int i = 0; i < 2; i++) {
		snprintf(hook, sizeof(hook), "%s/%02d-hook", forkdir, 20 - 10 * i);
		FILE *f = fopen(hook, "w");
		CHECK(f);
		fprintf(f, "#!/bin/sh\necho \"%d $GEN_X\" >> %s\n", 20 - 10 * i, mark);
		fclose(f);
		CHECK(chmod(hook, 0755) == 0);
	}
	snprintf(hook, sizeof(hook), "%s/.hidden", forkdir);
	FILE *f = fopen(hook, "w");
	CHECK(f);
	fprintf(f, "#!/bin/sh\nexit 1\n");
	fclose(f);
	CHECK(chmod(hook, 0755) == 0);

	char host_before[256] = "", host_after[256] = "";
	gethostname(host_before, sizeof(host_before));
	struct agent_client *c = connect_agent(sock_path, 0);
	sl_error_t err = NULL;
	struct agent_generation g = {.sec = 1, .nsec = 5, .hostname = "must-not-be-set", .envc = 2,
				     .env = (char **)ARGV("GEN_X=one", "SHARED=gen")};
	memset(g.entropy, 0x5a, sizeof(g.entropy));
	CHECK_OK(agent_client_generation(c, &g, 15000, &err), err);
	gethostname(host_after, sizeof(host_after));
	CHECK(strcmp(host_before, host_after) == 0); /* --no-privileged kept the host's name */
	CHECK(time(NULL) > 1000000000);              /* and clock */
	FILE *l = fopen(mark, "r");
	CHECK(l);
	char log[256] = "";
	size_t n = fread(log, 1, sizeof(log) - 1, l);
	fclose(l);
	log[n] = 0;
	CHECK(strcmp(log, "10 one\n20 one\n") == 0);
	struct run r;
	run_ok(c, ARGV("sh", "-c", "echo $GEN_X $SHARED"), ARGV("SHARED=exec"), NULL, &r);
	CHECK(strcmp(r.out, "one exec\n") == 0);
	/* a failing hook: ERROR, no READY */
	snprintf(hook, sizeof(hook), "%s/30-fail", forkdir);
	f = fopen(hook, "w");
	CHECK(f);
	fprintf(f, "#!/bin/sh\nexit 3\n");
	fclose(f);
	CHECK(chmod(hook, 0755) == 0);
	CHECK(agent_client_generation(c, &g, 15000, &err) < 0);
	CHECK(strstr(sl_error_msg(err), "30-fail"));
	sl_error_free(&err);
	agent_client_close(c);
}

/* A stand-in for the VMM's vsock Unix socket: answers "CONNECT <port>\n"
 * with "OK <n>\n", then relays bytes to the agent. */
static void run_proxy(int lfd)
{
	int a = accept(lfd, NULL, NULL);
	if (a < 0)
		_exit(1);
	char line[32];
	size_t n = 0;
	while (n < sizeof(line) - 1 && read(a, &line[n], 1) == 1 && line[n] != '\n')
		n++;
	line[n] = 0;
	if (strcmp(line, "CONNECT 1024") != 0) {
		(void)!write(a, "ERR\n", 4);
		_exit(1);
	}
	int b = raw_connect();
	(void)!write(a, "OK 1073741824\n", 14);
	char buf[65536];
	for (;;) {
		struct pollfd p[2] = {{a, POLLIN, 0}, {b, POLLIN, 0}};
		if (poll(p, 2, -1) < 0)
			_exit(1);
		for (int i = 0; i < 2; i++) {
			if (!p[i].revents)
				continue;
			ssize_t k = read(p[i].fd, buf, sizeof(buf));
			if (k <= 0 || write(p[1 - i].fd, buf, (size_t)k) != k)
				_exit(0);
		}
	}
}

static void test_vsock_prefix(void)
{
	char ppath[128];
	snprintf(ppath, sizeof(ppath), "%s/v.sock", dir);
	int lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	strcpy(sa.sun_path, ppath);
	CHECK(lfd >= 0 && bind(lfd, (struct sockaddr *)&sa, sizeof(sa)) == 0 && listen(lfd, 2) == 0);
	proxy_pid = fork();
	CHECK(proxy_pid >= 0);
	if (proxy_pid == 0)
		run_proxy(lfd);
	close(lfd);
	struct agent_client *c = connect_agent(ppath, AGENT_CLIENT_VSOCK_PREFIX);
	struct run r;
	run_ok(c, ARGV("echo", "via", "vsock"), NULL, NULL, &r);
	CHECK(strcmp(r.out, "via vsock\n") == 0);
	agent_client_close(c);
	waitpid(proxy_pid, NULL, 0);
	proxy_pid = -1;
}

/* PID 1 duties, in private namespaces: early mounts, orphan reaping. */
static void test_pid1(void)
{
	struct agent_client *c = connect_agent(sock_path, 0);
	struct run r;
	run_ok(c, ARGV("sh", "-c", "echo $PPID"), NULL, NULL, &r);
	CHECK(strcmp(r.out, "1\n") == 0);
	run_ok(c, ARGV("cat", "/proc/self/mounts"), NULL, NULL, &r);
	static const char *const want[] = {"proc /proc proc ", "sysfs /sys sysfs ", "devtmpfs /dev devtmpfs ",
					   "tmpfs /tmp tmpfs ", "tmpfs /run tmpfs ", "cgroup2 /sys/fs/cgroup cgroup2 "};
	for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++)
		if (!strstr(r.out, want[i]))
			FAIL("no \"%s\" mount in:\n%s", want[i], r.out);
	/* an orphan is re-parented to PID 1, which must reap it */
	run_ok(c, ARGV("sh", "-c", "sleep 0.2 & exit 0"), NULL, NULL, &r);
	usleep(600000);
	run_ok(c, ARGV("sh", "-c", "cat /proc/[0-9]*/stat 2>/dev/null | awk '$3 == \"Z\"' | wc -l"), NULL, NULL, &r);
	if (atoi(r.out) != 0)
		FAIL("zombies left: %s", r.out);
	agent_client_close(c);
}

/* A dropped connection takes its processes (and their groups) with it. */
static void test_disconnect(void)
{
	struct agent_client *c = connect_agent(sock_path, 0);
	sl_error_t err = NULL;
	struct agent_msg m = {.type = AGENT_MSG_EXEC};
	m.u.exec = (struct agent_exec){.id = 1, .uid = getuid(), .gid = getgid(), .cwd = "", .argc = 3,
				       .argv = (char **)ARGV("sh", "-c", "sleep 100 & echo $$ $!; wait"),
				       .env = (char **)ARGV(NULL)};
	CHECK_OK(agent_client_send(c, &m, &err), err);
	struct agent_msg r;
	CHECK(agent_client_recv(c, &r, 5000, &err) == 1 && r.type == AGENT_MSG_STARTED && r.u.started.id == 1);
	agent_msg_free(&r);
	CHECK(agent_client_recv(c, &r, 5000, &err) == 1 && r.type == AGENT_MSG_STDOUT);
	char line[64] = "";
	memcpy(line, r.u.data.data, r.u.data.len < 63 ? r.u.data.len : 63);
	agent_msg_free(&r);
	int sh = 0, sleeper = 0;
	CHECK(sscanf(line, "%d %d", &sh, &sleeper) == 2 && sh > 1 && sleeper > 1);
	CHECK(kill(sh, 0) == 0 && kill(sleeper, 0) == 0);
	agent_client_close(c);
	int64_t end = now_ms() + 5000;
	while ((kill(sh, 0) == 0 || kill(sleeper, 0) == 0) && now_ms() < end)
		usleep(10000);
	/* the sleeper is re-parented to init and reaped there; the shell by the agent */
	CHECK(kill(sh, 0) < 0 && errno == ESRCH);
	for (; now_ms() < end; usleep(10000)) {
		char path[64], stat[256] = "";
		snprintf(path, sizeof(path), "/proc/%d/stat", sleeper);
		FILE *f = fopen(path, "r");
		if (!f)
			break;
		size_t n = fread(stat, 1, sizeof(stat) - 1, f);
		fclose(f);
		stat[n] = 0;
		char *rp = strrchr(stat, ')');
		if (rp && rp[1] == ' ' && rp[2] == 'Z')
			break; /* dead, waiting for its new parent to reap it */
	}
	CHECK(now_ms() < end);
	check_survives();
}

/* Codec: every message type round-trips; strictness rules refuse. */
static void test_codec(void)
{
	struct agent_msg in[12];
	memset(in, 0, sizeof(in));
	in[0].type = AGENT_MSG_HELLO, in[0].u.hello.version = 1;
	in[1].type = AGENT_MSG_READY, in[1].u.ready.reason = 1;
	in[2].type = AGENT_MSG_ERROR, in[2].u.error = (typeof(in[2].u.error)){9, 4, 1, "why"};
	in[3].type = AGENT_MSG_EXEC;
	in[3].u.exec = (struct agent_exec){.id = 3, .flags = 1, .uid = 1000, .gid = 100, .cwd = "/w", .argc = 2,
					   .argv = (char **)ARGV("a", ""), .envc = 1, .env = (char **)ARGV("K=")};
	in[4].type = AGENT_MSG_STDIN, in[4].u.data = (typeof(in[4].u.data)){3, 2, (uint8_t *)"\0\1"};
	in[5].type = AGENT_MSG_STDIN_EOF, in[5].u.eof.id = 3;
	in[6].type = AGENT_MSG_STDOUT, in[6].u.data = (typeof(in[6].u.data)){3, 1, (uint8_t *)"x"};
	in[7].type = AGENT_MSG_STDERR, in[7].u.data = (typeof(in[7].u.data)){3, 1, (uint8_t *)"y"};
	in[8].type = AGENT_MSG_SIGNAL, in[8].u.signal.id = 3, in[8].u.signal.signo = 64;
	in[9].type = AGENT_MSG_EXIT, in[9].u.exit.id = 3, in[9].u.exit.kind = 0, in[9].u.exit.value = 255;
	in[10].type = AGENT_MSG_GENERATION;
	in[10].u.gen = (struct agent_generation){.sec = 0x123456789ull, .nsec = 999999999, .hostname = "h",
						 .envc = 1, .env = (char **)ARGV("A=b=c")};
	in[11].type = AGENT_MSG_SHUTDOWN;
	for (int i = 0; i < 12; i++) {
		sl_error_t err = NULL;
		uint8_t *f, *g;
		size_t n, m2, used;
		struct agent_msg out;
		CHECK_OK(agent_msg_encode(&in[i], &f, &n, &err), err);
		CHECK(agent_frame_decode(f, n - 1, &used, &out, &err) == 0); /* partial */
		CHECK(agent_frame_decode(f, n, &used, &out, &err) == 1 && used == n && out.type == in[i].type);
		CHECK_OK(agent_msg_encode(&out, &g, &m2, &err), err);
		CHECK(m2 == n && memcmp(f, g, n) == 0);
		if (i == 10)
			CHECK(out.u.gen.sec == 0x123456789ull && strcmp(out.u.gen.env[0], "A=b=c") == 0 &&
			      !out.u.gen.env[1]);
		if (i == 3)
			CHECK(out.u.exec.argc == 2 && !out.u.exec.argv[1][0] && !out.u.exec.argv[2] &&
			      strcmp(out.u.exec.cwd, "/w") == 0);
		agent_msg_free(&out);
		free(f);
		free(g);
	}
	/* the encoder refuses what the decoder would */
	struct agent_msg bad[] = {
		{.type = AGENT_MSG_SIGNAL, .u.signal = {1, 0}},
		{.type = AGENT_MSG_SIGNAL, .u.signal = {1, 65}},
		{.type = AGENT_MSG_EXIT, .u.exit = {1, 0, 256}},
		{.type = AGENT_MSG_EXIT, .u.exit = {1, 2, 0}},
		{.type = AGENT_MSG_READY, .u.ready = {2}},
		{.type = AGENT_MSG_STDOUT, .u.data = {1, 0, (uint8_t *)""}},
		{.type = AGENT_MSG_ERROR, .u.error = {0, 0, 0, "x"}},
		{.type = AGENT_MSG_ERROR, .u.error = {1, 0, 2, "x"}},
		{.type = 0x7f},
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		sl_error_t err = NULL;
		uint8_t *f;
		size_t n;
		if (agent_msg_encode(&bad[i], &f, &n, &err) == 0)
			FAIL("bad message %zu encoded", i);
		sl_error_free(&err);
	}
	struct agent_msg e = in[3];
	e.u.exec.cwd = "rel";
	sl_error_t err = NULL;
	uint8_t *f;
	size_t n, used;
	CHECK(agent_msg_encode(&e, &f, &n, &err) < 0);
	sl_error_free(&err);
	e = in[3];
	e.u.exec.env = (char **)ARGV("=v");
	CHECK(agent_msg_encode(&e, &f, &n, &err) < 0);
	sl_error_free(&err);
	struct agent_msg h = in[10];
	h.u.gen.hostname = "0123456789012345678901234567890123456789012345678901234567890123X"; /* 65 */
	CHECK(agent_msg_encode(&h, &f, &n, &err) < 0);
	sl_error_free(&err);
	/* decoder: raw frames that must be refused */
	static const struct {
		const char *what;
		uint8_t b[32];
		size_t n;
	} raw[] = {
		{"trailing byte", {5, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 9}, 13},
		{"short payload", {3, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0}, 11},
		{"flags", {4, 0, 0, 0, 1, 1, 0, 0, 1, 0, 0, 0}, 12},
		{"reserved", {4, 0, 0, 0, 1, 0, 0, 1, 1, 0, 0, 0}, 12},
		{"oversize", {1, 0, 0x10, 0, 0x11, 0, 0, 0}, 8},
		{"NUL in string", {18, 0, 0, 0, 3, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 'a', 0}, 26},
		{"unknown ERROR flag", {18, 0, 0, 0, 3, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 2, 0, 0, 0, 'a', 'b'}, 26},
	};
	static const uint8_t good[] = {18, 0, 0, 0, 3, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 'a', 'b'};
	struct agent_msg ok;
	CHECK(agent_frame_decode(good, sizeof(good), &used, &ok, &err) == 1 && strcmp(ok.u.error.message, "ab") == 0);
	agent_msg_free(&ok);
	for (size_t i = 0; i < sizeof(raw) / sizeof(raw[0]); i++) {
		struct agent_msg out;
		if (agent_frame_decode(raw[i].b, raw[i].n, &used, &out, &err) != -1)
			FAIL("accepted a frame with %s", raw[i].what);
		sl_error_free(&err);
	}
}

/* The kernel command line parser of spore.root= / spore.rootfstype=. */
static void test_cmdline(void)
{
	char dev[64], fs[16];
	CHECK(pid1_parse_root("console=ttyS0 quiet", dev, sizeof(dev), fs, sizeof(fs)) == 0);
	CHECK(pid1_parse_root("a spore.root=/dev/vda b\n", dev, sizeof(dev), fs, sizeof(fs)) == 1);
	CHECK(strcmp(dev, "/dev/vda") == 0 && strcmp(fs, "ext4") == 0);
	CHECK(pid1_parse_root("spore.rootfstype=xfs spore.root=/dev/vdb", dev, sizeof(dev), fs, sizeof(fs)) == 1);
	CHECK(strcmp(dev, "/dev/vdb") == 0 && strcmp(fs, "xfs") == 0);
	CHECK(pid1_parse_root("xspore.root=/dev/vda", dev, sizeof(dev), fs, sizeof(fs)) == 0);
	CHECK(pid1_parse_root("spore.root=", dev, sizeof(dev), fs, sizeof(fs)) == -1);
	CHECK(pid1_parse_root("spore.rootfstype=averyveryverylongfsname spore.root=/x", dev, sizeof(dev), fs,
			      sizeof(fs)) == -1);
}

static const struct {
	const char *name;
	void (*fn)(void);
} tests[] = {
	{"echo", test_echo},
	{"exit_status", test_exit_status},
	{"signal", test_signal},
	{"exec_hooks", test_exec_hooks},
	{"stdin", test_stdin},
	{"bulk", test_bulk},
	{"creds_env_cwd", test_creds_env_cwd},
	{"concurrent", test_concurrent},
	{"malformed", test_malformed},
	{"oversize", test_oversize},
	{"version", test_version},
	{"ready", test_ready},
	{"generation", test_generation},
	{"vsock_prefix", test_vsock_prefix},
	{"pid1", test_pid1},
	{"disconnect", test_disconnect},
};

int main(int argc, char **argv)
{
	if (argc != 3) {
		fprintf(stderr, "usage: %s <test> <spore-agent-host>\n", argv[0]);
		return 2;
	}
	agent_bin = argv[2];
	signal(SIGPIPE, SIG_IGN);
	signal(SIGALRM, watchdog);
	signal(SIGTERM, watchdog);
	alarm(45); /* ctest TIMEOUT is 60 */
	if (strcmp(argv[1], "cmdline") == 0 || strcmp(argv[1], "codec") == 0) {
		(argv[1][1] == 'm' ? test_cmdline : test_codec)();
		printf("PASS %s\n", argv[1]);
		return 0;
	}
	if (strcmp(argv[1], "pid1") == 0) {
		if (geteuid() != 0 || access("/usr/bin/unshare", X_OK) != 0) {
			printf("SKIP pid1: needs root and unshare(1)\n");
			return 77;
		}
		as_pid1 = true;
	}
	for (size_t i = 0; i < sizeof(tests) / sizeof(tests[0]); i++) {
		if (strcmp(argv[1], tests[i].name) != 0)
			continue;
		/* PID 1 mounts a tmpfs over /tmp in its namespace: keep the
		 * socket where both sides see it. */
		snprintf(dir, sizeof(dir), "%s/spore-agent-test-XXXXXX", as_pid1 ? "/var/tmp" : "/tmp");
		if (!mkdtemp(dir)) {
			perror("mkdtemp");
			return 1;
		}
		snprintf(sock_path, sizeof(sock_path), "%s/a.sock", dir);
		start_agent();
		tests[i].fn();
		stop_agent();
		cleanup();
		printf("PASS %s\n", argv[1]);
		return 0;
	}
	fprintf(stderr, "unknown test %s\n", argv[1]);
	return 2;
}
