/* The guest agent: one poll loop over the listening socket, host connections, child pipes and SIGCHLD. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <linux/random.h>
#include <linux/vm_sockets.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "agent.h"
#include "agent_proto.h"
#include "sl/log.h"

#define DEFAULT_PATH "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
#define READ_CHUNK 65536u

extern char **environ;

/* A byte queue: live bytes are d[off, len). */
struct buf {
	uint8_t *d;
	size_t off, len, cap;
};

struct conn {
	int fd; /* -1: slot free */
	bool hello, closing;
	struct buf in, out;
};

struct proc {
	pid_t pid; /* 0: slot free */
	uint32_t id;
	struct conn *conn; /* NULL once the connection is gone; the slot waits for the reap */
	int in_fd, out_fd, err_fd;
	struct buf stdin_q;
	bool has_stdin; /* started with AGENT_EXEC_STDIN */
	bool stdin_eof; /* close in_fd once stdin_q drains */
};

struct agent {
	const struct agent_config *cfg;
	int lfd, sfd;
	char unix_path[sizeof(((struct sockaddr_un *)0)->sun_path)];
	struct conn conns[AGENT_MAX_CONNS];
	struct proc procs[AGENT_MAX_PROCS];
	char **gen_env; /* from the last GENERATION, NULL-terminated */
	bool shutdown;
};

static size_t buf_pending(const struct buf *b)
{
	return b->len - b->off;
}

static int buf_append(struct buf *b, const void *d, size_t n)
{
	if (b->off && b->off == b->len)
		b->off = b->len = 0;
	if (b->cap - b->len < n) {
		if (b->off) { /* compact before growing */
			memmove(b->d, b->d + b->off, b->len - b->off);
			b->len -= b->off;
			b->off = 0;
		}
		if (b->cap - b->len < n) {
			size_t cap = b->cap ? b->cap : 4096;
			while (cap - b->len < n)
				cap *= 2;
			uint8_t *nd = realloc(b->d, cap);
			if (!nd)
				return -1;
			b->d = nd;
			b->cap = cap;
		}
	}
	memcpy(b->d + b->len, d, n);
	b->len += n;
	return 0;
}

static void buf_consume(struct buf *b, size_t n)
{
	b->off += n;
	if (b->off == b->len)
		b->off = b->len = 0;
}

static void buf_free(struct buf *b)
{
	free(b->d);
	memset(b, 0, sizeof(*b));
}

static void close_fd(int *fd)
{
	if (*fd >= 0)
		close(*fd);
	*fd = -1;
}

static void conn_send(struct conn *c, const struct agent_msg *m)
{
	_cleanup_error_ sl_error_t err = NULL;
	uint8_t *frame;
	size_t n;
	if (agent_msg_encode(m, &frame, &n, &err) < 0) {
		sl_err("cannot encode a frame", "error=\"%s\"", sl_error_msg(err));
		c->closing = true;
		return;
	}
	if (buf_append(&c->out, frame, n) < 0) {
		sl_err("out of memory queueing a frame", NULL);
		c->closing = true;
	}
	free(frame);
}

static void conn_error(struct conn *c, uint32_t code, uint32_t id, bool fatal, const char *fmt, ...)
	__attribute__((format(printf, 5, 6)));
static void conn_error(struct conn *c, uint32_t code, uint32_t id, bool fatal, const char *fmt, ...)
{
	char msg[AGENT_MAX_ERROR_MSG];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	struct agent_msg m = {.type = AGENT_MSG_ERROR};
	m.u.error.code = code;
	m.u.error.id = id;
	m.u.error.flags = fatal ? AGENT_ERROR_FATAL : 0;
	m.u.error.message = msg;
	conn_send(c, &m);
	if (fatal) {
		char q[AGENT_MAX_ERROR_MSG + 8];
		sl_warn("closing connection", "error=%s", sl_log_quote(msg, q, sizeof(q)));
		c->closing = true;
	}
}

static void proc_release(struct proc *p)
{
	close_fd(&p->in_fd);
	close_fd(&p->out_fd);
	close_fd(&p->err_fd);
	buf_free(&p->stdin_q);
	p->conn = NULL;
}

static void conn_close(struct agent *ag, struct conn *c)
{
	/* Processes die with the connection that started them: nobody could
	 * read their output or learn their exit status any more. */
	for (int i = 0; i < AGENT_MAX_PROCS; i++) {
		struct proc *p = &ag->procs[i];
		if (p->pid && p->conn == c) {
			kill(-p->pid, SIGKILL);
			kill(p->pid, SIGKILL);
			proc_release(p);
		}
	}
	close_fd(&c->fd);
	buf_free(&c->in);
	buf_free(&c->out);
	c->hello = c->closing = false;
}

static struct proc *proc_find(struct agent *ag, struct conn *c, uint32_t id)
{
	for (int i = 0; i < AGENT_MAX_PROCS; i++)
		if (ag->procs[i].pid && ag->procs[i].conn == c && ag->procs[i].id == id)
			return &ag->procs[i];
	return NULL;
}

/* ---- process start ---- */

static bool env_has_key(char *const *env, const char *entry)
{
	size_t k = (size_t)(strchr(entry, '=') - entry);
	for (; env && *env; env++)
		if (strncmp(*env, entry, k + 1) == 0)
			return true;
	return false;
}

/* GENERATION env first, EXEC env overriding by key, PATH defaulted. */
static char **build_env(char *const *gen, char *const *exec_env)
{
	size_t n = 0;
	for (char *const *e = gen; e && *e; e++)
		n++;
	for (char *const *e = exec_env; e && *e; e++)
		n++;
	char **v = calloc(n + 2, sizeof(char *));
	if (!v)
		return NULL;
	size_t k = 0;
	for (char *const *e = gen; e && *e; e++)
		if (!env_has_key(exec_env, *e))
			v[k++] = *e;
	for (char *const *e = exec_env; e && *e; e++)
		v[k++] = *e;
	if (!env_has_key(v, "PATH="))
		v[k++] = DEFAULT_PATH;
	v[k] = NULL;
	return v;
}

struct start_report {
	int stage; /* 0 setup, 1 chdir, 2 credentials, 3 exec */
	int err;
};

/* Only async-signal-safe calls between fork and exec. */
static void child_reset_signals(void)
{
	sigset_t none;
	sigemptyset(&none);
	signal(SIGPIPE, SIG_DFL);
	signal(SIGCHLD, SIG_DFL);
	sigprocmask(SIG_SETMASK, &none, NULL);
}

static __attribute__((noreturn)) void child_fail(int fd, int stage)
{
	struct start_report r = {stage, errno};
	ssize_t w = write(fd, &r, sizeof(r));
	(void)w;
	_exit(127);
}

static void proc_start(struct agent *ag, struct conn *c, const struct agent_exec *e)
{
	if (e->id == 0) {
		conn_error(c, AGENT_ERR_PROTOCOL, 0, true, "EXEC: process id 0 is reserved");
		return;
	}
	if (proc_find(ag, c, e->id)) {
		conn_error(c, AGENT_ERR_BUSY, e->id, false, "EXEC: process id %u is in use", e->id);
		return;
	}
	struct proc *p = NULL;
	for (int i = 0; i < AGENT_MAX_PROCS && !p; i++)
		if (!ag->procs[i].pid)
			p = &ag->procs[i];
	if (!p) {
		conn_error(c, AGENT_ERR_BUSY, e->id, false, "EXEC: %d processes already running", AGENT_MAX_PROCS);
		return;
	}
	char **env = build_env(ag->gen_env, e->env);
	int inp[2] = {-1, -1}, outp[2] = {-1, -1}, errp[2] = {-1, -1}, rep[2] = {-1, -1};
	bool want_stdin = e->flags & AGENT_EXEC_STDIN;
	if (!env || pipe2(outp, O_CLOEXEC) < 0 || pipe2(errp, O_CLOEXEC) < 0 || pipe2(rep, O_CLOEXEC) < 0 ||
	    (want_stdin && pipe2(inp, O_CLOEXEC) < 0)) {
		conn_error(c, AGENT_ERR_INTERNAL, e->id, false, "EXEC: pipes: %s", strerror(errno));
		goto out;
	}
	int devnull = want_stdin ? -1 : open("/dev/null", O_RDONLY | O_CLOEXEC);
	pid_t pid = fork();
	if (pid < 0) {
		conn_error(c, AGENT_ERR_INTERNAL, e->id, false, "EXEC: fork: %s", strerror(errno));
		close_fd(&devnull);
		goto out;
	}
	if (pid == 0) {
		child_reset_signals();
		setsid(); /* its own group, so a dropped connection can kill it all */
		int in = want_stdin ? inp[0] : devnull;
		if (in < 0 || dup2(in, 0) < 0 || dup2(outp[1], 1) < 0 || dup2(errp[1], 2) < 0)
			child_fail(rep[1], 0);
		if (chdir(e->cwd[0] ? e->cwd : "/") < 0)
			child_fail(rep[1], 1);
		if ((geteuid() == 0 && setgroups(0, NULL) < 0) || setgid(e->gid) < 0 || setuid(e->uid) < 0)
			child_fail(rep[1], 2);
		environ = env; /* execvp searches the child's own PATH */
		execvp(e->argv[0], e->argv);
		child_fail(rep[1], 3);
	}
	close_fd(&devnull);
	close_fd(&rep[1]);
	close_fd(&outp[1]);
	close_fd(&errp[1]);
	close_fd(&inp[0]);
	struct start_report r;
	ssize_t n;
	do
		n = read(rep[0], &r, sizeof(r));
	while (n < 0 && errno == EINTR);
	if (n == (ssize_t)sizeof(r)) {
		static const char *const stages[] = {"stdio", "chdir", "set credentials", "execve"};
		conn_error(c, AGENT_ERR_EXEC, e->id, false, "EXEC %s: %s: %s", e->argv[0],
			   stages[r.stage >= 0 && r.stage < 4 ? r.stage : 0], strerror(r.err));
		goto out; /* the child is reaped as an unknown pid */
	}
	*p = (struct proc){.pid = pid, .id = e->id, .conn = c, .in_fd = inp[1], .out_fd = outp[0], .err_fd = errp[0], .has_stdin = want_stdin};
	inp[1] = outp[0] = errp[0] = -1;
	fcntl(p->out_fd, F_SETFL, O_NONBLOCK);
	fcntl(p->err_fd, F_SETFL, O_NONBLOCK);
	if (p->in_fd >= 0)
		fcntl(p->in_fd, F_SETFL, O_NONBLOCK);
	sl_debug("process started", "id=%u pid=%d", e->id, (int)pid);
	/* Before any output of the process: the host learns it runs (an EXEC
	 * that fails gets ERROR EXEC instead, and nothing else). */
	struct agent_msg sm = {.type = AGENT_MSG_STARTED};
	sm.u.started.id = e->id;
	sm.u.started.pid = (uint32_t)pid;
	conn_send(c, &sm);
out:
	for (int i = 0; i < 2; i++) {
		close_fd(&inp[i]);
		close_fd(&outp[i]);
		close_fd(&errp[i]);
		close_fd(&rep[i]);
	}
	free(env);
}

/* Reads one chunk of child output into a frame; returns bytes read, 0 at
 * EOF (fd closed), -1 if nothing was available. */
static ssize_t proc_pump(struct proc *p, int *fd, uint8_t type)
{
	static uint8_t chunk[READ_CHUNK];
	ssize_t n = read(*fd, chunk, sizeof(chunk));
	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return -1;
	if (n <= 0) {
		close_fd(fd);
		return 0;
	}
	if (p->conn) {
		struct agent_msg m = {.type = type};
		m.u.data.id = p->id;
		m.u.data.len = (uint32_t)n;
		m.u.data.data = chunk;
		conn_send(p->conn, &m);
	}
	return n;
}

static void proc_exited(struct agent *ag, pid_t pid, int status)
{
	struct proc *p = NULL;
	for (int i = 0; i < AGENT_MAX_PROCS && !p; i++)
		if (ag->procs[i].pid == pid)
			p = &ag->procs[i];
	if (!p)
		return; /* an orphan (we may be PID 1) or a child that failed to start */
	/* Everything the process wrote is in the pipes by now. Output of
	 * descendants that outlive it is cut after 1 MiB per stream. */
	if (p->conn) {
		for (size_t total = 0; p->out_fd >= 0 && total < AGENT_OUTQ_HIGH;) {
			ssize_t n = proc_pump(p, &p->out_fd, AGENT_MSG_STDOUT);
			if (n <= 0)
				break;
			total += (size_t)n;
		}
		for (size_t total = 0; p->err_fd >= 0 && total < AGENT_OUTQ_HIGH;) {
			ssize_t n = proc_pump(p, &p->err_fd, AGENT_MSG_STDERR);
			if (n <= 0)
				break;
			total += (size_t)n;
		}
		struct agent_msg m = {.type = AGENT_MSG_EXIT};
		m.u.exit.id = p->id;
		if (WIFSIGNALED(status)) {
			m.u.exit.kind = AGENT_EXIT_SIGNAL;
			m.u.exit.value = (uint32_t)WTERMSIG(status);
		} else {
			m.u.exit.kind = AGENT_EXIT_CODE;
			m.u.exit.value = (uint32_t)WEXITSTATUS(status);
		}
		conn_send(p->conn, &m);
	}
	proc_release(p);
	p->pid = 0;
}

static void reap(struct agent *ag)
{
	struct signalfd_siginfo si;
	while (read(ag->sfd, &si, sizeof(si)) == (ssize_t)sizeof(si)) {
		/* SIGTERM ends a non-PID-1 agent like SHUTDOWN, so its process
		 * groups die with it; PID 1 ignores it (the kernel would too). */
		if (si.ssi_signo == SIGTERM && getpid() != 1) {
			sl_info("terminating on SIGTERM", NULL);
			ag->shutdown = true;
		}
	}
	int status;
	pid_t pid;
	while ((pid = waitpid(-1, &status, WNOHANG)) > 0)
		proc_exited(ag, pid, status);
}

/* ---- GENERATION ---- */

static int cmp_names(const struct dirent **a, const struct dirent **b)
{
	return strcmp((*a)->d_name, (*b)->d_name); /* byte order, independent of locale */
}

static int not_hidden(const struct dirent *d)
{
	return d->d_name[0] != '.';
}

/* Runs one hook with a deadline; returns its wait status or -1. */
static int run_hook(const char *path, char **env)
{
	pid_t pid = fork();
	if (pid < 0)
		return -1;
	if (pid == 0) {
		child_reset_signals();
		setsid();
		int fd = open("/dev/null", O_RDONLY);
		if (fd >= 0 && fd != 0) {
			dup2(fd, 0);
			close(fd);
		}
		char *argv[] = {(char *)path, NULL};
		execve(path, argv, env);
		_exit(127);
	}
	int status;
	for (int waited = 0;; waited += 5) {
		pid_t r = waitpid(pid, &status, WNOHANG);
		if (r == pid)
			return status;
		if (r < 0 && errno != EINTR)
			return -1;
		if (waited >= AGENT_HOOK_TIMEOUT_MS) {
			kill(-pid, SIGKILL);
			kill(pid, SIGKILL);
			waitpid(pid, &status, 0);
			return -1;
		}
		nanosleep(&(struct timespec){0, 5 * 1000 * 1000}, NULL);
	}
}

/* Returns NULL or a description of the first failure (static buffer). */
static const char *run_fork_hooks(struct agent *ag)
{
	static char why[512];
	struct dirent **names = NULL;
	int n = scandir(ag->cfg->fork_dir, &names, not_hidden, cmp_names);
	if (n < 0)
		return errno == ENOENT ? NULL : "cannot list the fork hook directory";
	char **env = build_env(ag->gen_env, NULL);
	const char *bad = env ? NULL : "out of memory";
	for (int i = 0; i < n; i++) {
		char path[4096];
		struct stat st;
		snprintf(path, sizeof(path), "%s/%s", ag->cfg->fork_dir, names[i]->d_name);
		if (!bad && stat(path, &st) == 0 && S_ISREG(st.st_mode) && access(path, X_OK) == 0) {
			int status = run_hook(path, env);
			if (status != 0) {
				snprintf(why, sizeof(why), "fork hook %s failed (wait status %d)", names[i]->d_name,
					 status);
				bad = why;
			}
		}
		free(names[i]);
	}
	free(names);
	free(env);
	return bad;
}

static void free_strv(char **v)
{
	for (char **e = v; e && *e; e++)
		free(*e);
	free(v);
}

static void apply_generation(struct agent *ag, struct conn *c, const struct agent_generation *g)
{
	if (ag->cfg->privileged) {
		int fd = open("/dev/random", O_WRONLY | O_CLOEXEC);
		struct {
			int entropy_count, buf_size;
			uint8_t buf[AGENT_ENTROPY_SIZE];
		} pool = {AGENT_ENTROPY_SIZE * 8, AGENT_ENTROPY_SIZE, {0}};
		memcpy(pool.buf, g->entropy, AGENT_ENTROPY_SIZE);
		/* Credit the host's entropy and force a reseed now, so no two
		 * forks of one spore share CRNG output from here on. */
		if (fd < 0 || ioctl(fd, RNDADDENTROPY, &pool) < 0 || ioctl(fd, RNDRESEEDCRNG) < 0) {
			conn_error(c, AGENT_ERR_GENERATION, 0, false, "GENERATION: reseed: %s", strerror(errno));
			if (fd >= 0)
				close(fd);
			return;
		}
		close(fd);
		struct timespec ts = {.tv_sec = (time_t)g->sec, .tv_nsec = (long)g->nsec};
		if (clock_settime(CLOCK_REALTIME, &ts) < 0) {
			conn_error(c, AGENT_ERR_GENERATION, 0, false, "GENERATION: clock_settime: %s",
				   strerror(errno));
			return;
		}
		if (g->hostname[0] && sethostname(g->hostname, strlen(g->hostname)) < 0) {
			conn_error(c, AGENT_ERR_GENERATION, 0, false, "GENERATION: sethostname: %s",
				   strerror(errno));
			return;
		}
	}
	char **env = calloc((size_t)g->envc + 1, sizeof(char *));
	for (uint32_t i = 0; env && i < g->envc; i++) {
		if (!(env[i] = strdup(g->env[i]))) {
			free_strv(env);
			env = NULL;
		}
	}
	if (!env) {
		conn_error(c, AGENT_ERR_INTERNAL, 0, false, "GENERATION: out of memory");
		return;
	}
	free_strv(ag->gen_env);
	ag->gen_env = env;
	const char *bad = run_fork_hooks(ag);
	if (bad) {
		conn_error(c, AGENT_ERR_GENERATION, 0, false, "GENERATION: %s", bad);
		return;
	}
	struct agent_msg m = {.type = AGENT_MSG_READY};
	m.u.ready.reason = AGENT_READY_GENERATION;
	conn_send(c, &m);
}

/* ---- messages from the host ---- */

static void handle(struct agent *ag, struct conn *c, const struct agent_msg *m)
{
	if (!c->hello && m->type != AGENT_MSG_HELLO) {
		conn_error(c, AGENT_ERR_STATE, 0, true, "%s before HELLO", agent_msg_type_name(m->type));
		return;
	}
	switch (m->type) {
	case AGENT_MSG_HELLO: {
		if (c->hello) {
			conn_error(c, AGENT_ERR_STATE, 0, true, "second HELLO");
			return;
		}
		if (m->u.hello.version != AGENT_PROTO_VERSION) {
			conn_error(c, AGENT_ERR_VERSION, 0, true, "protocol version %u not supported (agent speaks %u)",
				   m->u.hello.version, AGENT_PROTO_VERSION);
			return;
		}
		c->hello = true;
		struct agent_msg r = {.type = AGENT_MSG_HELLO};
		r.u.hello.version = AGENT_PROTO_VERSION;
		conn_send(c, &r);
		r = (struct agent_msg){.type = AGENT_MSG_READY};
		r.u.ready.reason = AGENT_READY_START;
		conn_send(c, &r);
		return;
	}
	case AGENT_MSG_EXEC:
		proc_start(ag, c, &m->u.exec);
		return;
	case AGENT_MSG_STDIN:
	case AGENT_MSG_STDIN_EOF: {
		uint32_t id = m->type == AGENT_MSG_STDIN ? m->u.data.id : m->u.eof.id;
		const char *what = agent_msg_type_name(m->type);
		struct proc *p = proc_find(ag, c, id);
		if (!p) {
			conn_error(c, AGENT_ERR_NO_PROCESS, id, false, "%s: no process %u", what, id);
		} else if (!p->has_stdin || p->stdin_eof) {
			conn_error(c, AGENT_ERR_STATE, id, false, "%s: stdin of process %u is closed", what, id);
		} else if (m->type == AGENT_MSG_STDIN_EOF) {
			p->stdin_eof = true;
			if (!buf_pending(&p->stdin_q))
				close_fd(&p->in_fd);
		} else if (p->in_fd < 0) {
			/* the child closed its stdin (EPIPE): drop the data, as a pipe would */
		} else if (buf_append(&p->stdin_q, m->u.data.data, m->u.data.len) < 0) {
			conn_error(c, AGENT_ERR_INTERNAL, id, false, "STDIN: out of memory");
		}
		return;
	}
	case AGENT_MSG_SIGNAL: {
		struct proc *p = proc_find(ag, c, m->u.signal.id);
		if (!p)
			conn_error(c, AGENT_ERR_NO_PROCESS, m->u.signal.id, false, "SIGNAL: no process %u",
				   m->u.signal.id);
		else if (kill(p->pid, (int)m->u.signal.signo) < 0)
			conn_error(c, AGENT_ERR_NO_PROCESS, m->u.signal.id, false, "SIGNAL: %s", strerror(errno));
		return;
	}
	case AGENT_MSG_GENERATION:
		apply_generation(ag, c, &m->u.gen);
		return;
	case AGENT_MSG_SHUTDOWN:
		sl_info("shutdown requested", NULL);
		ag->shutdown = true;
		return;
	case AGENT_MSG_ERROR: {
		char q[AGENT_MAX_ERROR_MSG + 8];
		sl_warn("host sent an error", "code=%u error=%s", m->u.error.code,
			sl_log_quote(m->u.error.message, q, sizeof(q)));
		if (m->u.error.flags & AGENT_ERROR_FATAL)
			c->closing = true;
		return;
	}
	default:
		conn_error(c, AGENT_ERR_PROTOCOL, 0, true, "%s is not a host-to-guest message",
			   agent_msg_type_name(m->type));
		return;
	}
}

static void conn_read(struct agent *ag, struct conn *c)
{
	static uint8_t chunk[READ_CHUNK];
	ssize_t n = read(c->fd, chunk, sizeof(chunk));
	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return;
	if (n <= 0) {
		conn_close(ag, c);
		return;
	}
	if (buf_append(&c->in, chunk, (size_t)n) < 0) {
		conn_error(c, AGENT_ERR_INTERNAL, 0, true, "out of memory");
		return;
	}
	while (!c->closing && !ag->shutdown) {
		_cleanup_error_ sl_error_t err = NULL;
		struct agent_msg m;
		size_t used;
		int r = agent_frame_decode(c->in.d + c->in.off, buf_pending(&c->in), &used, &m, &err);
		if (r == 0)
			break;
		if (r < 0) {
			conn_error(c, err->code == SL_E_LIMIT ? AGENT_ERR_TOO_LARGE : AGENT_ERR_PROTOCOL, 0, true, "%s",
				   sl_error_msg(err));
			break;
		}
		buf_consume(&c->in, used);
		handle(ag, c, &m);
		agent_msg_free(&m);
	}
}

static void conn_write(struct agent *ag, struct conn *c)
{
	ssize_t n = send(c->fd, c->out.d + c->out.off, buf_pending(&c->out), MSG_NOSIGNAL | MSG_DONTWAIT);
	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return;
	if (n < 0) {
		conn_close(ag, c);
		return;
	}
	buf_consume(&c->out, (size_t)n);
}

static void proc_feed(struct proc *p)
{
	ssize_t n = write(p->in_fd, p->stdin_q.d + p->stdin_q.off, buf_pending(&p->stdin_q));
	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return;
	if (n < 0) { /* EPIPE: the child closed its stdin; later data is dropped */
		close_fd(&p->in_fd);
		buf_free(&p->stdin_q);
		return;
	}
	buf_consume(&p->stdin_q, (size_t)n);
	if (!buf_pending(&p->stdin_q) && p->stdin_eof)
		close_fd(&p->in_fd);
}

/* ---- setup and loop ---- */

static int listen_on(struct agent *ag, sl_error_t *err)
{
	const char *spec = ag->cfg->listen;
	int fd;
	if (strncmp(spec, "unix:", 5) == 0) {
		struct sockaddr_un sa = {.sun_family = AF_UNIX};
		const char *path = spec + 5;
		if (!*path || strlen(path) >= sizeof(sa.sun_path))
			return sl_error_set(err, SL_E_INVALID, "listen %s: bad socket path", spec);
		strcpy(sa.sun_path, path);
		struct stat st;
		if (lstat(path, &st) == 0 && S_ISSOCK(st.st_mode))
			unlink(path); /* a stale socket of an earlier run */
		fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
		if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
			int e = errno;
			if (fd >= 0)
				close(fd);
			return sl_error_errno(err, e, "listen %s", spec);
		}
		strcpy(ag->unix_path, path);
	} else if (strcmp(spec, "vsock") == 0 || strncmp(spec, "vsock:", 6) == 0) {
		unsigned long port = AGENT_VSOCK_PORT;
		if (spec[5] == ':') {
			char *end;
			errno = 0;
			port = strtoul(spec + 6, &end, 10);
			if (errno || *end || end == spec + 6 || port > 0xffffffffu)
				return sl_error_set(err, SL_E_INVALID, "listen %s: bad port", spec);
		}
		struct sockaddr_vm sa = {.svm_family = AF_VSOCK, .svm_cid = VMADDR_CID_ANY, .svm_port = (unsigned)port};
		fd = socket(AF_VSOCK, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
		if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
			int e = errno;
			if (fd >= 0)
				close(fd);
			return sl_error_errno(err, e, "listen %s", spec);
		}
	} else {
		return sl_error_set(err, SL_E_INVALID, "listen %s: want vsock, vsock:PORT or unix:PATH", spec);
	}
	if (listen(fd, 16) < 0) {
		int e = errno;
		close(fd);
		return sl_error_errno(err, e, "listen %s", spec);
	}
	ag->lfd = fd;
	return 0;
}

enum slot_kind { K_LISTEN, K_SIG, K_CONN, K_PIN, K_POUT, K_PERR };

int agent_run(const struct agent_config *cfg, sl_error_t *err)
{
	static struct agent ag_storage;
	struct agent *ag = &ag_storage;
	memset(ag, 0, sizeof(*ag));
	ag->cfg = cfg;
	ag->lfd = ag->sfd = -1;
	for (int i = 0; i < AGENT_MAX_CONNS; i++)
		ag->conns[i].fd = -1;
	for (int i = 0; i < AGENT_MAX_PROCS; i++)
		ag->procs[i].in_fd = ag->procs[i].out_fd = ag->procs[i].err_fd = -1;

	sigset_t chld; /* SIGCHLD and SIGTERM, read from the signalfd */
	sigemptyset(&chld);
	sigaddset(&chld, SIGCHLD);
	sigaddset(&chld, SIGTERM);
	signal(SIGPIPE, SIG_IGN);
	if (sigprocmask(SIG_BLOCK, &chld, NULL) < 0 ||
	    (ag->sfd = signalfd(-1, &chld, SFD_CLOEXEC | SFD_NONBLOCK)) < 0)
		return sl_error_sys(err, "agent: signalfd");
	if (listen_on(ag, err) < 0) {
		close(ag->sfd);
		return -1;
	}
	sl_info("agent listening", "on=%s", cfg->listen);

	enum { NSLOTS = 2 + AGENT_MAX_CONNS + 3 * AGENT_MAX_PROCS };
	struct pollfd pfd[NSLOTS];
	struct { enum slot_kind kind; int idx; } slot[NSLOTS];
	while (!ag->shutdown) {
		int n = 0;
		bool conn_free = false;
		for (int i = 0; i < AGENT_MAX_CONNS; i++) {
			struct conn *c = &ag->conns[i];
			if (c->fd >= 0 && c->closing && !buf_pending(&c->out))
				conn_close(ag, c); /* the final ERROR is out */
			if (c->fd < 0) {
				conn_free = true;
				continue;
			}
			size_t stdin_q = 0;
			for (int j = 0; j < AGENT_MAX_PROCS; j++)
				if (ag->procs[j].pid && ag->procs[j].conn == c)
					stdin_q += buf_pending(&ag->procs[j].stdin_q);
			short ev = (!c->closing && stdin_q < AGENT_STDINQ_HIGH ? POLLIN : 0) |
				   (buf_pending(&c->out) ? POLLOUT : 0);
			pfd[n] = (struct pollfd){c->fd, ev, 0};
			slot[n].kind = K_CONN;
			slot[n++].idx = i;
		}
		pfd[n] = (struct pollfd){conn_free ? ag->lfd : -1, POLLIN, 0};
		slot[n].kind = K_LISTEN;
		slot[n++].idx = 0;
		pfd[n] = (struct pollfd){ag->sfd, POLLIN, 0};
		slot[n].kind = K_SIG;
		slot[n++].idx = 0;
		for (int j = 0; j < AGENT_MAX_PROCS; j++) {
			struct proc *p = &ag->procs[j];
			if (!p->pid || !p->conn)
				continue;
			bool room = buf_pending(&p->conn->out) < AGENT_OUTQ_HIGH;
			if (p->out_fd >= 0 && room) {
				pfd[n] = (struct pollfd){p->out_fd, POLLIN, 0};
				slot[n].kind = K_POUT;
				slot[n++].idx = j;
			}
			if (p->err_fd >= 0 && room) {
				pfd[n] = (struct pollfd){p->err_fd, POLLIN, 0};
				slot[n].kind = K_PERR;
				slot[n++].idx = j;
			}
			if (p->in_fd >= 0 && buf_pending(&p->stdin_q)) {
				pfd[n] = (struct pollfd){p->in_fd, POLLOUT, 0};
				slot[n].kind = K_PIN;
				slot[n++].idx = j;
			}
		}
		if (poll(pfd, (nfds_t)n, -1) < 0) {
			if (errno == EINTR)
				continue;
			sl_err("poll failed", "errno=%d", errno);
			break;
		}
		for (int k = 0; k < n && !ag->shutdown; k++) {
			if (!pfd[k].revents)
				continue;
			struct proc *p = slot[k].kind >= K_PIN ? &ag->procs[slot[k].idx] : NULL;
			struct conn *c = slot[k].kind == K_CONN ? &ag->conns[slot[k].idx] : NULL;
			switch (slot[k].kind) {
			case K_LISTEN: {
				int fd = accept4(ag->lfd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
				for (int i = 0; fd >= 0 && i < AGENT_MAX_CONNS; i++) {
					if (ag->conns[i].fd < 0) {
						ag->conns[i].fd = fd;
						fd = -1;
					}
				}
				if (fd >= 0)
					close(fd);
				break;
			}
			case K_SIG:
				reap(ag);
				break;
			case K_CONN:
				/* a slot may have been reused since the poll set was built */
				if (c->fd != pfd[k].fd)
					break;
				if (pfd[k].revents & POLLOUT)
					conn_write(ag, c);
				if (c->fd >= 0 && (pfd[k].revents & (POLLIN | POLLHUP | POLLERR)))
					conn_read(ag, c);
				break;
			case K_POUT:
				if (p->pid && p->conn && p->out_fd == pfd[k].fd)
					proc_pump(p, &p->out_fd, AGENT_MSG_STDOUT);
				break;
			case K_PERR:
				if (p->pid && p->conn && p->err_fd == pfd[k].fd)
					proc_pump(p, &p->err_fd, AGENT_MSG_STDERR);
				break;
			case K_PIN:
				if (p->pid && p->conn && p->in_fd == pfd[k].fd)
					proc_feed(p);
				break;
			}
		}
	}

	for (int i = 0; i < AGENT_MAX_CONNS; i++)
		if (ag->conns[i].fd >= 0)
			conn_close(ag, &ag->conns[i]);
	for (int i = 0; i < AGENT_MAX_PROCS; i++)
		proc_release(&ag->procs[i]);
	free_strv(ag->gen_env);
	close(ag->lfd);
	close(ag->sfd);
	if (ag->unix_path[0])
		unlink(ag->unix_path);
	return 0;
}
