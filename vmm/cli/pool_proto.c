/* Encoding and strict decoding of warm-pool requests (restore, resume-agent). */
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "pool_proto.h"

#define POOL_MAX_FDS 3

int pool_encode_request(char *buf, size_t cap, const char *dir, uint64_t for_ms, const char *prefix)
{
	int n = snprintf(buf, cap, "restore%c%llu%c%s%c%s", 0, (unsigned long long)for_ms, 0, prefix ? prefix : "",
			 0, dir);
	if (n < 0 || (size_t)n + 1 > cap)
		return -1;
	return n + 1; /* the final NUL is part of the message */
}

int pool_encode_agent_request(char *buf, size_t cap, const char *dir, uint64_t for_ms, const char *prefix,
			      const char *hostname, char *const *env)
{
	int n = snprintf(buf, cap, "resume-agent%c%llu%c%s%c%s%c%s", 0, (unsigned long long)for_ms, 0,
			 prefix ? prefix : "", 0, dir, 0, hostname ? hostname : "");
	if (n < 0 || (size_t)n + 1 > cap)
		return -1;
	size_t len = (size_t)n + 1;
	for (size_t i = 0; env && env[i]; i++) {
		size_t l = strlen(env[i]) + 1;
		if (len + l > cap)
			return -1;
		memcpy(buf + len, env[i], l);
		len += l;
	}
	return (int)len;
}

static int send_with_fds(int sock, const char *buf, size_t len, const int *fds, size_t nfds, sl_error_t *err)
{
	struct iovec iov = {(void *)buf, len};
	union {
		char b[CMSG_SPACE(POOL_MAX_FDS * sizeof(int))];
		struct cmsghdr align;
	} ctl;
	struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1};
	if (nfds) {
		msg.msg_control = ctl.b;
		msg.msg_controllen = CMSG_SPACE(nfds * sizeof(int));
		struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN(nfds * sizeof(int));
		memcpy(CMSG_DATA(c), fds, nfds * sizeof(int));
	}
	if (sendmsg(sock, &msg, MSG_NOSIGNAL) != (ssize_t)len)
		return sl_error_sys(err, "send pool request");
	return 0;
}

int pool_send_request(int sock, const char *dir, uint64_t for_ms, const char *prefix, int console_fd,
		      sl_error_t *err)
{
	char buf[POOL_MSG_MAX];
	int n = pool_encode_request(buf, sizeof(buf), dir, for_ms, prefix);
	if (n < 0)
		return sl_error_set(err, SL_E_LIMIT, "pool request too long");
	return send_with_fds(sock, buf, (size_t)n, &console_fd, console_fd >= 0 ? 1 : 0, err);
}

int pool_send_agent_request(int sock, const char *dir, uint64_t for_ms, const char *prefix, const char *hostname,
			    char *const *env, int ready_fd, int parent_fd, int console_fd, sl_error_t *err)
{
	char buf[POOL_MSG_MAX];
	int n = pool_encode_agent_request(buf, sizeof(buf), dir, for_ms, prefix, hostname, env);
	if (n < 0)
		return sl_error_set(err, SL_E_LIMIT, "pool request longer than %d bytes", POOL_MSG_MAX);
	int fds[POOL_MAX_FDS] = {ready_fd, parent_fd, console_fd};
	return send_with_fds(sock, buf, (size_t)n, fds, console_fd >= 0 ? 3 : 2, err);
}

/* Canonical decimal only (no sign, space or leading zero): one request has
 * exactly one spelling. */
static bool parse_ms(const char *ms, uint64_t *out)
{
	unsigned long long v = 0;
	size_t nd = strlen(ms);
	bool ok = nd > 0 && nd <= 12 && (ms[0] != '0' || nd == 1);
	for (size_t i = 0; ok && i < nd; i++) {
		ok = ms[i] >= '0' && ms[i] <= '9';
		v = v * 10 + (unsigned)(ms[i] - '0');
	}
	if (!ok || v > 1000ull * 3600 * 24 * 365)
		return false;
	*out = v;
	return true;
}

/* A hostname the guest can take as is (and a log line can show): letters,
 * digits, '-', '.', '_'. */
static bool hostname_ok(const char *h)
{
	if (strlen(h) > POOL_HOSTNAME_MAX)
		return false;
	for (const char *p = h; *p; p++)
		if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') || *p == '-' ||
		      *p == '.' || *p == '_'))
			return false;
	return true;
}

int pool_parse_request(const char *buf, size_t len, struct pool_request *req, sl_error_t *err)
{
	/* Fields: every one NUL-terminated, nothing after the last NUL. */
	const char *f[5 + POOL_ENV_MAX + 1];
	size_t nf = 0;
	const char *p = buf, *end = buf + len;
	bool terminated = true;
	while (p < end && nf < sizeof(f) / sizeof(f[0])) {
		const char *z = memchr(p, 0, (size_t)(end - p));
		if (!z) {
			terminated = false;
			break;
		}
		f[nf++] = p;
		p = z + 1;
	}
	bool agent = nf > 0 && !strcmp(f[0], "resume-agent");
	if (!terminated || nf == 0 || (agent && nf < 5) || (!agent && nf != 4))
		return sl_error_set(err, SL_E_INVALID, agent ? "pool request: resume-agent wants 5 NUL-terminated fields "
							       "and at most %d K=V env entries"
							     : "pool request: want 4 NUL-terminated fields",
				    POOL_ENV_MAX);
	if (p != end || (agent && nf - 5 > POOL_ENV_MAX)) /* more fields than the longest request has */
		return sl_error_set(err, SL_E_INVALID, "pool request: more than %d env entries", POOL_ENV_MAX);
	if (!agent && strcmp(f[0], "restore") != 0)
		return sl_error_set(err, SL_E_INVALID, "pool request: unknown verb");
	if (!parse_ms(f[1], &req->for_ms))
		return sl_error_set(err, SL_E_INVALID, "pool request: bad duration");
	const char *prefix = f[2], *dir = f[3];
	if (strlen(prefix) >= sizeof(req->prefix) || !*dir || strlen(dir) >= sizeof(req->dir))
		return sl_error_set(err, SL_E_INVALID, "pool request: prefix or directory too long or empty");
	req->verb = agent ? POOL_RESUME_AGENT : POOL_RESTORE;
	strcpy(req->prefix, prefix);
	strcpy(req->dir, dir);
	req->hostname[0] = '\0';
	req->nenv = 0;
	req->env[0] = NULL;
	if (!agent)
		return 0;
	if (!hostname_ok(f[4]))
		return sl_error_set(err, SL_E_INVALID,
				    "pool request: hostname must be at most %d bytes of letters, digits, '-', '.', '_'",
				    POOL_HOSTNAME_MAX);
	strcpy(req->hostname, f[4]);
	/* The env entries are copied as they are, one after the other: they
	 * came from one message of at most POOL_MSG_MAX bytes. */
	char *out = req->envbuf;
	for (size_t i = 5; i < nf; i++) {
		size_t l = strlen(f[i]);
		const char *eq = strchr(f[i], '=');
		if (!eq || eq == f[i] || l > POOL_ENV_ENTRY_MAX)
			return sl_error_set(err, SL_E_INVALID, "pool request: env entry %zu: want KEY=VALUE, at most %d bytes",
					    i - 5, POOL_ENV_ENTRY_MAX);
		memcpy(out, f[i], l + 1);
		req->env[req->nenv++] = out;
		out += l + 1;
	}
	req->env[req->nenv] = NULL;
	return 0;
}

void pool_request_close_fds(struct pool_request *req)
{
	int *fds[] = {&req->console_fd, &req->ready_fd, &req->parent_fd};
	for (size_t i = 0; i < 3; i++) {
		if (*fds[i] >= 0)
			close(*fds[i]);
		*fds[i] = -1;
	}
}

static int accmode(int fd)
{
	int fl = fcntl(fd, F_GETFL);
	return fl < 0 ? -1 : (fl & O_ACCMODE);
}

int pool_recv_request(int sock, struct pool_request *req, sl_error_t *err)
{
	char buf[POOL_MSG_MAX];
	union {
		char b[CMSG_SPACE(POOL_MAX_FDS * sizeof(int))];
		struct cmsghdr align;
	} ctl;
	struct iovec iov = {buf, sizeof(buf)};
	struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.b, .msg_controllen = sizeof(ctl.b)};
	req->console_fd = req->ready_fd = req->parent_fd = -1;
	ssize_t n = recvmsg(sock, &msg, MSG_CMSG_CLOEXEC);
	if (n < 0)
		return sl_error_sys(err, "receive pool request");
	int fds[POOL_MAX_FDS];
	size_t nfds = 0;
	for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
		if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS || c->cmsg_len < CMSG_LEN(0))
			continue;
		size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
		for (size_t i = 0; i < k; i++) {
			int fd;
			memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
			if (nfds < POOL_MAX_FDS)
				fds[nfds++] = fd;
			else
				close(fd);
		}
	}
	int rc = 0;
	if (msg.msg_flags & MSG_TRUNC)
		rc = sl_error_set(err, SL_E_LIMIT, "pool request larger than %d bytes", POOL_MSG_MAX);
	else if (msg.msg_flags & MSG_CTRUNC)
		rc = sl_error_set(err, SL_E_INVALID, "pool request: more than %d file descriptors", POOL_MAX_FDS);
	else
		rc = pool_parse_request(buf, (size_t)n, req, err);
	if (rc == 0 && req->verb == POOL_RESTORE) {
		if (nfds > 1)
			rc = sl_error_set(err, SL_E_INVALID, "pool request: restore takes at most one fd (the console), got %zu",
					  nfds);
		else if (nfds == 1)
			req->console_fd = fds[0];
	} else if (rc == 0) {
		if (nfds < 2)
			rc = sl_error_set(err, SL_E_INVALID,
					  "pool request: resume-agent needs the ready and parent fds (then, optionally, "
					  "the console), got %zu",
					  nfds);
		else if (accmode(fds[0]) < 0 || accmode(fds[0]) == O_RDONLY)
			rc = sl_error_set(err, SL_E_INVALID, "pool request: the ready fd (the first) is not writable");
		else if (accmode(fds[1]) < 0 || accmode(fds[1]) == O_WRONLY)
			rc = sl_error_set(err, SL_E_INVALID, "pool request: the parent fd (the second) is not readable");
		else if (nfds == 3 && (accmode(fds[2]) < 0 || accmode(fds[2]) == O_RDONLY))
			rc = sl_error_set(err, SL_E_INVALID, "pool request: the console fd (the third) is not writable");
		if (rc == 0) {
			req->ready_fd = fds[0];
			req->parent_fd = fds[1];
			req->console_fd = nfds == 3 ? fds[2] : -1;
		}
	}
	if (rc < 0) {
		for (size_t i = 0; i < nfds; i++)
			close(fds[i]);
		req->console_fd = req->ready_fd = req->parent_fd = -1;
		return -1;
	}
	return 0;
}
