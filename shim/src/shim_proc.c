/* Running one OCI process in the guest over its own agent connection, relaying stdio. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "agent_client.h"
#include "shim_proc.h"
#include "sl/log.h"
#include "sl/time.h"

#define PROC_MAX_PENDING 16
#define PROC_EXIT_LOST 255 /* the agent or the VM went away */

struct shim_proc {
	struct shim_proc_opts o;
	struct agent_client *client;
	pthread_t thread;
	bool thread_started;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	bool started, exited;
	sl_error_t start_err; /* set when EXEC failed before STARTED */
	uint32_t guest_pid;
	uint32_t status;
	struct timespec exited_at;
	int pending[PROC_MAX_PENDING];
	unsigned npending;
	int wake_fd;
	int in_fd, in_hold_fd, out_fd, err_fd;
};

static void close_fd(int *fd)
{
	if (*fd >= 0)
		close(*fd);
	*fd = -1;
}

/* A FIFO end for output: containerd opened the read side before Create,
 * so a non-blocking open succeeds; without a reader (a detached client)
 * the shim holds both ends and the FIFO buffers until someone reads. */
static int open_out(const char *path, sl_error_t *err)
{
	int fd = open(path, O_WRONLY | O_NONBLOCK | O_CLOEXEC);
	if (fd < 0 && errno == ENXIO)
		fd = open(path, O_RDWR | O_NONBLOCK | O_CLOEXEC);
	if (fd < 0)
		return sl_error_sys(err, "open %s", path);
	fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
	return fd;
}

static void on_started(void *arg, uint32_t guest_pid)
{
	struct shim_proc *p = arg;
	pthread_mutex_lock(&p->lock);
	p->started = true;
	p->guest_pid = guest_pid;
	pthread_cond_broadcast(&p->cond);
	pthread_mutex_unlock(&p->lock);
}

static int next_signal(void *arg)
{
	struct shim_proc *p = arg;
	pthread_mutex_lock(&p->lock);
	int s = 0;
	if (p->npending) {
		s = p->pending[0];
		memmove(p->pending, p->pending + 1, --p->npending * sizeof(int));
	}
	pthread_mutex_unlock(&p->lock);
	return s;
}

static void *relay(void *arg)
{
	struct shim_proc *p = arg;
	const struct shim_process_spec *s = p->o.spec;
	struct agent_client_exec x = {.id = 1,
				      .argv = s->argv,
				      .env = s->env,
				      .cwd = s->cwd,
				      .uid = s->uid,
				      .gid = s->gid,
				      .stdin_fd = p->in_fd,
				      .stdout_fd = p->out_fd,
				      /* No pty in the guest: a terminal's one stream is both. */
				      .stderr_fd = s->terminal && p->err_fd < 0 ? p->out_fd : p->err_fd,
				      .started = on_started,
				      .next_signal = next_signal,
				      .wake_fd = p->wake_fd,
				      .cb_arg = p};
	struct agent_exit_status st = {0};
	sl_error_t err = NULL;
	int rc = agent_client_exec(p->client, &x, &st, &err);
	uint32_t status;
	if (rc == 0)
		status = st.kind == AGENT_EXIT_SIGNAL ? 128 + st.value : st.value;
	else
		status = PROC_EXIT_LOST;
	/* Nothing more for the FIFOs: readers see end of file. */
	close_fd(&p->out_fd);
	close_fd(&p->err_fd);
	pthread_mutex_lock(&p->lock);
	if (rc < 0 && !p->started) {
		p->start_err = err; /* EXEC refused: the caller reports it */
		err = NULL;
	} else if (rc < 0) {
		char q[256];
		sl_warn("guest process lost", "err=%s", sl_log_quote(sl_error_msg(err), q, sizeof(q)));
	}
	p->status = status;
	clock_gettime(CLOCK_REALTIME, &p->exited_at);
	p->exited = true;
	bool was_started = p->started;
	pthread_cond_broadcast(&p->cond);
	pthread_mutex_unlock(&p->lock);
	sl_error_free(&err);
	if (was_started && p->o.on_exit)
		p->o.on_exit(p->o.arg, p);
	return NULL;
}

int shim_proc_start(const struct shim_proc_opts *o, struct shim_proc **out, sl_error_t *err)
{
	struct shim_proc *p = calloc(1, sizeof(*p));
	if (!p)
		return sl_error_set(err, SL_E_NOMEM, "process: out of memory");
	p->o = *o;
	p->in_fd = p->in_hold_fd = p->out_fd = p->err_fd = -1;
	pthread_mutex_init(&p->lock, NULL);
	pthread_cond_init(&p->cond, NULL);
	int tmo = o->timeout_ms > 0 ? o->timeout_ms : 10000;
	p->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (p->wake_fd < 0) {
		sl_error_sys(err, "process: eventfd");
		goto fail;
	}
	if (o->stdin_path && o->stdin_path[0]) {
		/* Our own write end keeps the process's stdin open until CloseIO,
		 * whatever the client does with its end meanwhile. */
		p->in_fd = open(o->stdin_path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
		if (p->in_fd < 0 || (p->in_hold_fd = open(o->stdin_path, O_WRONLY | O_NONBLOCK | O_CLOEXEC)) < 0) {
			sl_error_sys(err, "open %s", o->stdin_path);
			goto fail;
		}
		fcntl(p->in_fd, F_SETFL, fcntl(p->in_fd, F_GETFL) & ~O_NONBLOCK);
	}
	if (o->stdout_path && o->stdout_path[0] && (p->out_fd = open_out(o->stdout_path, err)) < 0)
		goto fail;
	if (o->stderr_path && o->stderr_path[0] && (p->err_fd = open_out(o->stderr_path, err)) < 0)
		goto fail;
	struct agent_client_opts ao = {.flags = AGENT_CLIENT_VSOCK_PREFIX, .timeout_ms = tmo};
	if (agent_client_connect(o->vsock_path, &ao, &p->client, err) < 0)
		goto fail;
	if (pthread_create(&p->thread, NULL, relay, p) != 0) {
		sl_error_set(err, SL_E_NOMEM, "process: cannot start its relay thread");
		goto fail;
	}
	p->thread_started = true;
	struct timespec dl;
	sl_deadline_ms(&dl, CLOCK_REALTIME, (unsigned long)tmo);
	pthread_mutex_lock(&p->lock);
	int wr = 0;
	while (!p->started && !p->exited && wr != ETIMEDOUT)
		wr = pthread_cond_timedwait(&p->cond, &p->lock, &dl);
	bool ok = p->started;
	sl_error_t serr = sl_steal_ptr(p->start_err);
	pthread_mutex_unlock(&p->lock);
	if (!ok) {
		if (serr)
			*err = serr;
		else
			sl_error_set(err, SL_E_GUEST, "process %s: the guest agent did not start it within %d ms",
				     o->spec->argv[0], tmo);
		goto fail;
	}
	*out = p;
	return 0;
fail:
	shim_proc_free(p);
	return -1;
}

int shim_proc_kill(struct shim_proc *p, int signo, sl_error_t *err)
{
	if (signo < 1 || signo > 64)
		return sl_error_set(err, SL_E_INVALID, "signal %d out of range", signo);
	pthread_mutex_lock(&p->lock);
	int rc = 0;
	if (!p->exited) {
		if (p->npending == PROC_MAX_PENDING)
			rc = sl_error_set(err, SL_E_LIMIT, "more than %d signals pending", PROC_MAX_PENDING);
		else
			p->pending[p->npending++] = signo;
	}
	pthread_mutex_unlock(&p->lock);
	uint64_t one = 1;
	if (rc == 0 && write(p->wake_fd, &one, sizeof(one)) < 0 && errno != EAGAIN)
		return sl_error_sys(err, "signal: eventfd");
	return rc;
}

void shim_proc_close_stdin(struct shim_proc *p)
{
	pthread_mutex_lock(&p->lock);
	close_fd(&p->in_hold_fd);
	pthread_mutex_unlock(&p->lock);
}

bool shim_proc_wait(struct shim_proc *p, int timeout_ms, uint32_t *status, struct timespec *exited_at)
{
	struct timespec dl;
	if (timeout_ms >= 0)
		sl_deadline_ms(&dl, CLOCK_REALTIME, (unsigned long)timeout_ms);
	pthread_mutex_lock(&p->lock);
	int wr = 0;
	while (!p->exited && wr != ETIMEDOUT)
		wr = timeout_ms < 0 ? pthread_cond_wait(&p->cond, &p->lock)
				    : pthread_cond_timedwait(&p->cond, &p->lock, &dl);
	bool done = p->exited;
	if (done) {
		if (status)
			*status = p->status;
		if (exited_at)
			*exited_at = p->exited_at;
	}
	pthread_mutex_unlock(&p->lock);
	return done;
}

bool shim_proc_exited(struct shim_proc *p)
{
	pthread_mutex_lock(&p->lock);
	bool e = p->exited;
	pthread_mutex_unlock(&p->lock);
	return e;
}

uint32_t shim_proc_guest_pid(const struct shim_proc *p)
{
	return p->guest_pid;
}

void shim_proc_free(struct shim_proc *p)
{
	if (!p)
		return;
	if (p->thread_started) {
		/* Cutting the connection makes the agent kill the process and
		 * the relay's exec return. */
		if (p->client && !shim_proc_exited(p))
			shutdown(agent_client_fd(p->client), SHUT_RDWR);
		pthread_join(p->thread, NULL);
	}
	agent_client_close(p->client);
	close_fd(&p->in_fd);
	close_fd(&p->in_hold_fd);
	close_fd(&p->out_fd);
	close_fd(&p->err_fd);
	close_fd(&p->wake_fd);
	sl_error_free(&p->start_err);
	pthread_mutex_destroy(&p->lock);
	pthread_cond_destroy(&p->cond);
	free(p);
}
