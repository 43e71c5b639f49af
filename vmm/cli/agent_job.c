/* The CLI's conversation with a Linux guest's agent: wait for it, new generation, run a command, power off. */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "agent_client.h"
#include "cli.h"
#include "sl/log.h"

/* One connection attempt: the agent answers within milliseconds once it
 * listens; until then the vsock device resets the connection at once. */
#define ATTEMPT_MS 3000
#define RETRY_MS 20

struct agent_job {
	struct agent_job_opts o;
	pthread_t thread;
	bool thread_started;
	int event_fd;

	pthread_mutex_t lock;
	pthread_cond_t cond;
	enum agent_job_state state; /* protected by lock */
	bool stopping;
	struct agent_client *client;
	int status;        /* the command's, when state is DONE */
	sl_error_t err;    /* set with state FAILED */
	uint64_t ready_ns; /* when the agent first answered */
	uint64_t gen_ns;   /* when the new generation was applied */
	bool line_start[3]; /* per output stream: the next byte starts a line */
};

/* Guest command output with o.prefix before every line (fanout tells its
 * children apart this way, as it does for their consoles). */
static int prefixed_output(void *arg, int stream, const uint8_t *data, size_t len)
{
	struct agent_job *j = arg;
	int fd = stream == 1 ? 1 : 2;
	size_t plen = strlen(j->o.prefix);
	struct iovec iov[64];
	int n = 0;
	while (len) {
		if (j->line_start[stream]) {
			iov[n++] = (struct iovec){(void *)j->o.prefix, plen};
			j->line_start[stream] = false;
		}
		const uint8_t *nl = memchr(data, '\n', len);
		size_t take = nl ? (size_t)(nl - data) + 1 : len;
		iov[n++] = (struct iovec){(void *)data, take};
		j->line_start[stream] = nl != NULL;
		data += take;
		len -= take;
		if (n >= 62 || !len) {
			for (int i = 0; i < n;) {
				ssize_t w = writev(fd, iov + i, n - i);
				if (w < 0 && errno == EINTR)
					continue;
				if (w < 0)
					return -1;
				while (i < n && (size_t)w >= iov[i].iov_len)
					w -= (ssize_t)iov[i++].iov_len;
				if (i < n) {
					iov[i].iov_base = (uint8_t *)iov[i].iov_base + w;
					iov[i].iov_len -= (size_t)w;
				}
			}
			n = 0;
		}
	}
	return 0;
}

static void set_state(struct agent_job *j, enum agent_job_state s)
{
	pthread_mutex_lock(&j->lock);
	j->state = s;
	pthread_mutex_unlock(&j->lock);
	uint64_t one = 1;
	ssize_t n = write(j->event_fd, &one, sizeof(one));
	(void)n;
}

static bool stopping(struct agent_job *j)
{
	pthread_mutex_lock(&j->lock);
	bool s = j->stopping;
	pthread_mutex_unlock(&j->lock);
	return s;
}

/* Retries until the guest's agent listens and answers HELLO and READY, or
 * the boot deadline passes (the last attempt's error is kept). */
static int connect_agent(struct agent_job *j, sl_error_t *err)
{
	uint64_t deadline = cli_now_ns() + (uint64_t)j->o.timeout_ms * 1000000ull;
	for (unsigned attempt = 1;; attempt++) {
		struct agent_client_opts co = {.flags = AGENT_CLIENT_VSOCK_PREFIX, .timeout_ms = ATTEMPT_MS};
		struct agent_client *c = NULL;
		sl_error_free(err);
		if (agent_client_connect(j->o.vsock_path, &co, &c, err) == 0) {
			pthread_mutex_lock(&j->lock);
			j->client = c;
			bool stop = j->stopping;
			pthread_mutex_unlock(&j->lock);
			if (stop)
				return sl_error_set(err, SL_E_INVALID, "stopped");
			sl_debug("agent connected", "attempts=%u", attempt);
			return 0;
		}
		if (stopping(j) || cli_now_ns() >= deadline)
			return sl_error_wrap(err, "the guest's agent did not answer within %d ms (%u attempts)",
					     j->o.timeout_ms, attempt);
		nanosleep(&(struct timespec){0, RETRY_MS * 1000000L}, NULL);
	}
}

static int new_generation(struct agent_job *j, sl_error_t *err)
{
	struct agent_generation g = {.hostname = (char *)(j->o.hostname ? j->o.hostname : "")};
	/* Fresh host entropy per restore: forks of one spore must not share
	 * their guests' CRNG state (docs/agent-protocol.md). */
	if (getrandom(g.entropy, sizeof(g.entropy), 0) != (ssize_t)sizeof(g.entropy))
		return sl_error_sys(err, "getrandom for the guest's entropy");
	struct timespec now;
	clock_gettime(CLOCK_REALTIME, &now);
	g.sec = (uint64_t)now.tv_sec;
	g.nsec = (uint32_t)now.tv_nsec;
	for (char *const *e = j->o.env; e && *e; e++)
		g.envc++;
	g.env = (char **)j->o.env;
	return agent_client_generation(j->client, &g, 0, err);
}

static void *job_main(void *arg)
{
	struct agent_job *j = arg;
	sl_error_t err = NULL;
	if (connect_agent(j, &err) < 0)
		goto fail;
	pthread_mutex_lock(&j->lock);
	j->ready_ns = cli_now_ns();
	pthread_mutex_unlock(&j->lock);
	if (j->o.generation) {
		if (new_generation(j, &err) < 0)
			goto fail;
		pthread_mutex_lock(&j->lock);
		j->gen_ns = cli_now_ns();
		pthread_mutex_unlock(&j->lock);
	}
	int status = -1;
	if (j->o.argv) {
		struct agent_client_exec x = {.id = 1, .argv = j->o.argv, .env = j->o.env, .stdin_fd = -1,
					      .stdout_fd = 1, .stderr_fd = 2};
		if (j->o.prefix) {
			j->line_start[1] = j->line_start[2] = true;
			x.output = prefixed_output;
			x.output_arg = j;
		}
		struct agent_exit_status st;
		if (agent_client_exec(j->client, &x, &st, &err) < 0)
			goto fail;
		status = st.kind == AGENT_EXIT_CODE ? (int)st.value : 128 + (int)st.value;
	}
	if (j->o.hold_at_ready) {
		/* Warm (the command, if any, ran), so ready: the VM is captured
		 * now, with this connection open; a restore resets it. */
		pthread_mutex_lock(&j->lock);
		j->status = status;
		pthread_mutex_unlock(&j->lock);
		set_state(j, AGENT_JOB_READY);
		pthread_mutex_lock(&j->lock);
		while (!j->stopping)
			pthread_cond_wait(&j->cond, &j->lock);
		pthread_mutex_unlock(&j->lock);
		return NULL;
	}
	/* Power off through the agent: it syncs the guest's file systems, so
	 * what the command wrote to a disk reaches the image. */
	if (j->o.argv && j->o.shutdown_after && agent_client_shutdown(j->client, &err) < 0) {
		sl_warn("agent shutdown failed", "error=\"%s\"", sl_error_msg(err));
		sl_error_free(&err);
	}
	pthread_mutex_lock(&j->lock);
	j->status = status;
	/* Without a command nothing more is said: the connection goes back to
	 * the guest (the test guest's agent has 4), for the VM's supervisor. */
	if (!j->o.argv) {
		agent_client_close(j->client);
		j->client = NULL;
	}
	pthread_mutex_unlock(&j->lock);
	set_state(j, AGENT_JOB_DONE);
	return NULL;
fail:
	pthread_mutex_lock(&j->lock);
	j->err = err;
	pthread_mutex_unlock(&j->lock);
	set_state(j, AGENT_JOB_FAILED);
	return NULL;
}

int agent_job_start(const struct agent_job_opts *o, struct agent_job **out, sl_error_t *err)
{
	struct agent_job *j = calloc(1, sizeof(*j));
	if (!j)
		return sl_error_set(err, SL_E_NOMEM, "agent job");
	j->o = *o;
	if (j->o.timeout_ms <= 0)
		j->o.timeout_ms = AGENT_JOB_BOOT_TIMEOUT_MS;
	pthread_mutex_init(&j->lock, NULL);
	pthread_cond_init(&j->cond, NULL);
	j->event_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (j->event_fd < 0) {
		sl_error_sys(err, "eventfd");
		agent_job_free(j);
		return -1;
	}
	if (pthread_create(&j->thread, NULL, job_main, j) != 0) {
		sl_error_set(err, SL_E_NOMEM, "agent job thread");
		agent_job_free(j);
		return -1;
	}
	j->thread_started = true;
	*out = j;
	return 0;
}

int agent_job_fd(const struct agent_job *j)
{
	return j->event_fd;
}

enum agent_job_state agent_job_poll(struct agent_job *j, int *status, sl_error_t *err)
{
	uint64_t v;
	ssize_t n = read(j->event_fd, &v, sizeof(v));
	(void)n;
	pthread_mutex_lock(&j->lock);
	enum agent_job_state s = j->state;
	if (status)
		*status = j->status;
	if (s == AGENT_JOB_FAILED && err && j->err) {
		*err = j->err;
		j->err = NULL;
	}
	pthread_mutex_unlock(&j->lock);
	return s;
}

void agent_job_times(struct agent_job *j, uint64_t *ready_ns, uint64_t *gen_ns)
{
	pthread_mutex_lock(&j->lock);
	*ready_ns = j->ready_ns;
	*gen_ns = j->gen_ns;
	pthread_mutex_unlock(&j->lock);
}

void agent_job_free(struct agent_job *j)
{
	if (!j)
		return;
	if (j->thread_started) {
		pthread_mutex_lock(&j->lock);
		j->stopping = true;
		pthread_cond_broadcast(&j->cond);
		/* Wakes a thread blocked on the agent (an exec still running when
		 * the VM ended): its calls fail and it returns. */
		if (j->client)
			shutdown(agent_client_fd(j->client), SHUT_RDWR);
		pthread_mutex_unlock(&j->lock);
		pthread_join(j->thread, NULL);
	}
	agent_client_close(j->client);
	sl_error_free(&j->err);
	if (j->event_fd >= 0)
		close(j->event_fd);
	pthread_mutex_destroy(&j->lock);
	pthread_cond_destroy(&j->cond);
	free(j);
}
