/* Host-side agent client: connects, handshakes and runs processes, treating every guest frame as untrusted. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "agent_client.h"
#include "sl/time.h"

#define CLIENT_CHUNK 65536u

struct agent_client {
	int fd;
	int timeout_ms;
};

/* Waits for fd to become readable until deadline (-1: none); 1 ready, 0 timeout. */
static int wait_readable(int fd, int64_t deadline, sl_error_t *err)
{
	for (;;) {
		int t = -1;
		if (deadline >= 0) {
			int64_t left = deadline - sl_now_ms();
			t = left > 0 ? (int)left : 0;
		}
		struct pollfd p = {fd, POLLIN, 0};
		int r = poll(&p, 1, t);
		if (r > 0)
			return 1;
		if (r == 0)
			return 0;
		if (errno != EINTR)
			return sl_error_sys(err, "agent: poll");
	}
}

/* Reads exactly n bytes before deadline. */
static int read_full(int fd, void *buf, size_t n, int64_t deadline, sl_error_t *err)
{
	uint8_t *p = buf;
	while (n) {
		int r = wait_readable(fd, deadline, err);
		if (r < 0)
			return -1;
		if (r == 0)
			return sl_error_set(err, SL_E_GUEST, "agent: timed out inside a frame");
		ssize_t k = read(fd, p, n);
		if (k < 0 && errno == EINTR)
			continue;
		if (k < 0)
			return sl_error_sys(err, "agent: read");
		if (k == 0)
			return sl_error_set(err, SL_E_GUEST, "agent: connection closed");
		p += k;
		n -= (size_t)k;
	}
	return 0;
}

static int write_full(int fd, const void *buf, size_t n, bool sock)
{
	const uint8_t *p = buf;
	while (n) {
		ssize_t k = sock ? send(fd, p, n, MSG_NOSIGNAL) : write(fd, p, n);
		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0)
			return -1;
		p += k;
		n -= (size_t)k;
	}
	return 0;
}

int agent_client_fd(const struct agent_client *c)
{
	return c->fd;
}

int agent_client_send(struct agent_client *c, const struct agent_msg *m, sl_error_t *err)
{
	uint8_t *frame;
	size_t n;
	if (agent_msg_encode(m, &frame, &n, err) < 0)
		return -1;
	int r = write_full(c->fd, frame, n, true);
	free(frame);
	if (r < 0)
		return sl_error_sys(err, "agent: send %s", agent_msg_type_name(m->type));
	return 0;
}

static bool guest_may_send(uint8_t type)
{
	switch (type) {
	case AGENT_MSG_HELLO:
	case AGENT_MSG_READY:
	case AGENT_MSG_ERROR:
	case AGENT_MSG_STDOUT:
	case AGENT_MSG_STDERR:
	case AGENT_MSG_EXIT:
	case AGENT_MSG_STARTED:
		return true;
	default:
		return false;
	}
}

int agent_client_recv(struct agent_client *c, struct agent_msg *m, int wait_ms, sl_error_t *err)
{
	int r = wait_readable(c->fd, wait_ms < 0 ? -1 : sl_now_ms() + wait_ms, err);
	if (r <= 0)
		return r;
	/* Once a frame starts, the guest gets a bounded time to finish it. */
	int64_t deadline = sl_now_ms() + c->timeout_ms;
	uint8_t hdr[AGENT_HDR_SIZE];
	struct agent_frame_hdr h;
	if (read_full(c->fd, hdr, sizeof(hdr), deadline, err) < 0)
		return -1;
	if (agent_frame_hdr_decode(hdr, &h, err) < 0) {
		if ((*err)->code != SL_E_NOMEM)
			(*err)->code = SL_E_GUEST;
		return sl_error_wrap(err, "agent");
	}
	if (!guest_may_send(h.type))
		return sl_error_set(err, SL_E_GUEST, "agent: guest sent a host-to-guest %s frame",
				    agent_msg_type_name(h.type));
	uint8_t *payload = malloc(h.len ? h.len : 1);
	if (!payload)
		return sl_error_set(err, SL_E_NOMEM, "agent: out of memory");
	int rc = read_full(c->fd, payload, h.len, deadline, err);
	if (rc == 0 && agent_msg_decode(h.type, payload, h.len, m, err) < 0) {
		if ((*err)->code != SL_E_NOMEM)
			(*err)->code = SL_E_GUEST;
		rc = sl_error_wrap(err, "agent");
	}
	free(payload);
	return rc < 0 ? -1 : 1;
}

static int vsock_prefix(struct agent_client *c, uint32_t port, int64_t deadline, sl_error_t *err)
{
	char line[64];
	int n = snprintf(line, sizeof(line), "CONNECT %u\n", port);
	if (write_full(c->fd, line, (size_t)n, true) < 0)
		return sl_error_sys(err, "agent: send CONNECT");
	/* Byte by byte: what follows the reply line is already the protocol. */
	size_t len = 0;
	for (;;) {
		if (len == sizeof(line) - 1)
			return sl_error_set(err, SL_E_GUEST, "agent: CONNECT reply too long");
		if (read_full(c->fd, &line[len], 1, deadline, err) < 0)
			return sl_error_wrap(err, "CONNECT %u", port);
		if (line[len++] == '\n')
			break;
	}
	line[len] = 0;
	bool ok = len > 4 && strncmp(line, "OK ", 3) == 0;
	for (size_t i = 3; ok && i < len - 1; i++)
		ok = line[i] >= '0' && line[i] <= '9';
	if (!ok)
		return sl_error_set(err, SL_E_GUEST, "agent: CONNECT %u refused: %.*s", port, (int)len - 1, line);
	return 0;
}

/* Waits for one message of `type`; an ERROR from the agent becomes the error. */
static int expect(struct agent_client *c, uint8_t type, struct agent_msg *m, int64_t deadline, sl_error_t *err)
{
	int64_t left = deadline - sl_now_ms();
	int r = agent_client_recv(c, m, left > 0 ? (int)left : 0, err);
	if (r < 0)
		return -1;
	if (r == 0)
		return sl_error_set(err, SL_E_GUEST, "agent: timed out waiting for %s", agent_msg_type_name(type));
	if (m->type == AGENT_MSG_ERROR) {
		int code = m->u.error.code == AGENT_ERR_VERSION ? SL_E_UNSUPPORTED : SL_E_GUEST;
		sl_error_set(err, code, "agent error %u: %s", m->u.error.code, m->u.error.message);
		agent_msg_free(m);
		return -1;
	}
	if (m->type != type) {
		sl_error_set(err, SL_E_GUEST, "agent: got %s, want %s", agent_msg_type_name(m->type),
			     agent_msg_type_name(type));
		agent_msg_free(m);
		return -1;
	}
	return 0;
}

int agent_client_connect(const char *path, const struct agent_client_opts *opts, struct agent_client **out,
			 sl_error_t *err)
{
	struct agent_client_opts o = opts ? *opts : (struct agent_client_opts){0};
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	if (strlen(path) >= sizeof(sa.sun_path))
		return sl_error_set(err, SL_E_INVALID, "agent: socket path too long: %s", path);
	strcpy(sa.sun_path, path);
	struct agent_client *c = calloc(1, sizeof(*c));
	if (!c)
		return sl_error_set(err, SL_E_NOMEM, "agent: out of memory");
	c->timeout_ms = o.timeout_ms > 0 ? o.timeout_ms : 10000;
	int64_t deadline = sl_now_ms() + c->timeout_ms;
	/* Non-blocking connect: a Unix listener whose backlog is full would
	 * otherwise block us past every deadline; EAGAIN is just a failed
	 * attempt the caller may retry. */
	c->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (c->fd < 0 || connect(c->fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
	    fcntl(c->fd, F_SETFL, fcntl(c->fd, F_GETFL) & ~O_NONBLOCK) < 0) {
		sl_error_sys(err, "agent: connect %s%s", path, errno == EAGAIN ? " (listen backlog full)" : "");
		agent_client_close(c);
		return -1;
	}
	struct agent_msg m = {.type = AGENT_MSG_HELLO};
	m.u.hello.version = AGENT_PROTO_VERSION;
	if ((o.flags & AGENT_CLIENT_VSOCK_PREFIX) &&
	    vsock_prefix(c, o.port ? o.port : AGENT_VSOCK_PORT, deadline, err) < 0)
		goto fail;
	if (agent_client_send(c, &m, err) < 0 || expect(c, AGENT_MSG_HELLO, &m, deadline, err) < 0)
		goto fail;
	uint32_t v = m.u.hello.version;
	agent_msg_free(&m);
	if (v != AGENT_PROTO_VERSION) {
		sl_error_set(err, SL_E_UNSUPPORTED, "agent: guest speaks protocol version %u, want %u", v,
			     AGENT_PROTO_VERSION);
		goto fail;
	}
	if (expect(c, AGENT_MSG_READY, &m, deadline, err) < 0)
		goto fail;
	agent_msg_free(&m);
	*out = c;
	return 0;
fail:
	sl_error_wrap(err, "agent %s", path);
	agent_client_close(c);
	return -1;
}

void agent_client_close(struct agent_client *c)
{
	if (!c)
		return;
	if (c->fd >= 0)
		close(c->fd);
	free(c);
}

/* One incoming frame during an exec: output is copied out, EXIT ends the
 * call (returns 1), errors end it with *err set (returns -1). */
static int exec_frame(struct agent_client *c, const struct agent_client_exec *x, struct agent_exit_status *st,
		      sl_error_t *err)
{
	struct agent_msg r;
	int got = agent_client_recv(c, &r, 0, err);
	if (got <= 0)
		return got;
	int rc = 0;
	switch (r.type) {
	case AGENT_MSG_STDOUT:
	case AGENT_MSG_STDERR: {
		int fd = r.type == AGENT_MSG_STDOUT ? x->stdout_fd : x->stderr_fd;
		if (r.u.data.id != x->id)
			break;
		if (x->output) {
			if (x->output(x->output_arg, r.type == AGENT_MSG_STDOUT ? 1 : 2, r.u.data.data, r.u.data.len) < 0)
				rc = sl_error_sys(err, "agent exec: write output");
		} else if (fd >= 0 && write_full(fd, r.u.data.data, r.u.data.len, false) < 0) {
			rc = sl_error_sys(err, "agent exec: write output");
		}
		break;
	}
	case AGENT_MSG_STARTED:
		if (r.u.started.id == x->id && x->started)
			x->started(x->cb_arg, r.u.started.pid);
		break;
	case AGENT_MSG_EXIT:
		if (r.u.exit.id == x->id) {
			st->kind = r.u.exit.kind;
			st->value = r.u.exit.value;
			rc = 1;
		}
		break;
	case AGENT_MSG_ERROR:
		/* NO_PROCESS / STATE answer STDIN that raced an EXIT (of this
		 * or an earlier process with a reused id): harmless. Start
		 * failures of ours, and fatal errors, end the call. */
		if ((r.u.error.flags & AGENT_ERROR_FATAL) || r.u.error.id == 0 ||
		    (r.u.error.id == x->id && r.u.error.code != AGENT_ERR_NO_PROCESS &&
		     r.u.error.code != AGENT_ERR_STATE))
			rc = sl_error_set(err, SL_E_GUEST, "agent exec %s: error %u: %s", x->argv[0], r.u.error.code,
					  r.u.error.message);
		break;
	default:
		rc = sl_error_set(err, SL_E_GUEST, "agent exec: unexpected %s", agent_msg_type_name(r.type));
	}
	agent_msg_free(&r);
	return rc;
}

/* Sends a frame without ever blocking on the socket while the guest has
 * output for us: the agent stops reading stdin when its queues are full
 * and waits for us to take output, so a plain blocking send could
 * deadlock. Returns 1 if the process ended meanwhile. */
static int exec_send(struct agent_client *c, const struct agent_client_exec *x, const struct agent_msg *m,
		     struct agent_exit_status *st, sl_error_t *err)
{
	uint8_t *frame;
	size_t n, off = 0;
	if (agent_msg_encode(m, &frame, &n, err) < 0)
		return -1;
	int rc = 0;
	/* Even if the process ends meanwhile the frame is finished, or the
	 * stream would be cut mid-frame for whatever comes next. */
	while (off < n && rc >= 0) {
		ssize_t k = send(c->fd, frame + off, n - off, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (k > 0) {
			off += (size_t)k;
			continue;
		}
		if (k < 0 && errno != EAGAIN && errno != EINTR) {
			rc = sl_error_sys(err, "agent exec: send");
			break;
		}
		struct pollfd p = {c->fd, POLLIN | POLLOUT, 0};
		if (poll(&p, 1, -1) < 0 && errno != EINTR) {
			rc = sl_error_sys(err, "agent exec: poll");
			break;
		}
		if (rc == 0 && (p.revents & (POLLIN | POLLHUP | POLLERR)))
			rc = exec_frame(c, x, st, err);
		else if (rc > 0 && !(p.revents & POLLOUT))
			poll(&(struct pollfd){c->fd, POLLOUT, 0}, 1, c->timeout_ms);
	}
	free(frame);
	return rc;
}

int agent_client_exec(struct agent_client *c, const struct agent_client_exec *x, struct agent_exit_status *st,
		      sl_error_t *err)
{
	static char *const no_env[] = {NULL};
	char *const *env = x->env ? x->env : no_env;
	struct agent_msg m = {.type = AGENT_MSG_EXEC};
	struct agent_exec *e = &m.u.exec;
	e->id = x->id;
	e->flags = x->stdin_fd >= 0 ? AGENT_EXEC_STDIN : 0;
	e->uid = x->uid;
	e->gid = x->gid;
	e->cwd = (char *)(x->cwd ? x->cwd : "");
	e->argv = (char **)x->argv;
	e->env = (char **)env;
	while (x->argv && x->argv[e->argc])
		e->argc++;
	while (env[e->envc])
		e->envc++;
	if (x->id == 0)
		return sl_error_set(err, SL_E_INVALID, "agent exec: process id 0 is reserved");
	if (agent_client_send(c, &m, err) < 0)
		return -1;
	bool in_open = x->stdin_fd >= 0;
	uint8_t *chunk = malloc(CLIENT_CHUNK);
	if (!chunk)
		return sl_error_set(err, SL_E_NOMEM, "agent exec: out of memory");
	int rc = 0;
	while (rc == 0) {
		struct pollfd p[3] = {{c->fd, POLLIN, 0},
				      {in_open ? x->stdin_fd : -1, POLLIN, 0},
				      {x->next_signal ? x->wake_fd : -1, POLLIN, 0}};
		if (poll(p, 3, -1) < 0) {
			if (errno != EINTR)
				rc = sl_error_sys(err, "agent exec: poll");
			continue;
		}
		/* Output first: it is what keeps the guest moving. */
		if (p[0].revents) {
			rc = exec_frame(c, x, st, err);
			continue;
		}
		if (p[2].revents) {
			uint8_t drain[64];
			ssize_t k = read(x->wake_fd, drain, sizeof(drain));
			(void)k;
			for (int signo; rc == 0 && (signo = x->next_signal(x->cb_arg)) != 0;) {
				struct agent_msg s = {.type = AGENT_MSG_SIGNAL};
				s.u.signal.id = x->id;
				s.u.signal.signo = (uint32_t)signo;
				rc = exec_send(c, x, &s, st, err);
			}
			continue;
		}
		if (!p[1].revents)
			continue;
		ssize_t n = read(x->stdin_fd, chunk, CLIENT_CHUNK);
		if (n < 0 && errno == EINTR)
			continue;
		struct agent_msg s = {.type = n > 0 ? AGENT_MSG_STDIN : AGENT_MSG_STDIN_EOF};
		if (n > 0) {
			s.u.data.id = x->id;
			s.u.data.len = (uint32_t)n;
			s.u.data.data = chunk;
		} else {
			s.u.eof.id = x->id;
			in_open = false; /* EOF or a read error: either way, no more input */
		}
		rc = exec_send(c, x, &s, st, err);
	}
	free(chunk);
	return rc > 0 ? 0 : -1;
}

int agent_client_generation(struct agent_client *c, const struct agent_generation *g, int timeout_ms,
			    sl_error_t *err)
{
	struct agent_msg m = {.type = AGENT_MSG_GENERATION};
	m.u.gen = *g;
	if (agent_client_send(c, &m, err) < 0)
		return -1;
	int64_t deadline = sl_now_ms() + (timeout_ms > 0 ? timeout_ms : 30000);
	struct agent_msg r;
	if (expect(c, AGENT_MSG_READY, &r, deadline, err) < 0)
		return sl_error_wrap(err, "agent generation");
	uint32_t reason = r.u.ready.reason;
	agent_msg_free(&r);
	if (reason != AGENT_READY_GENERATION)
		return sl_error_set(err, SL_E_GUEST, "agent generation: READY with reason %u", reason);
	return 0;
}

int agent_client_shutdown(struct agent_client *c, sl_error_t *err)
{
	struct agent_msg m = {.type = AGENT_MSG_SHUTDOWN};
	return agent_client_send(c, &m, err);
}
