/* Encoding and strict decoding of warm-pool restore requests. */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "pool_proto.h"

int pool_encode_request(char *buf, size_t cap, const char *dir, uint64_t for_ms, const char *prefix)
{
	int n = snprintf(buf, cap, "restore%c%llu%c%s%c%s", 0, (unsigned long long)for_ms, 0, prefix ? prefix : "",
			 0, dir);
	if (n < 0 || (size_t)n + 1 > cap)
		return -1;
	return n + 1; /* the final NUL is part of the message */
}

int pool_send_request(int sock, const char *dir, uint64_t for_ms, const char *prefix, int console_fd,
		      sl_error_t *err)
{
	char buf[POOL_MSG_MAX];
	int n = pool_encode_request(buf, sizeof(buf), dir, for_ms, prefix);
	if (n < 0)
		return sl_error_set(err, SL_E_LIMIT, "pool request too long");
	struct iovec iov = {buf, (size_t)n};
	union {
		char b[CMSG_SPACE(sizeof(int))];
		struct cmsghdr align;
	} ctl;
	struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1};
	if (console_fd >= 0) {
		msg.msg_control = ctl.b;
		msg.msg_controllen = sizeof(ctl.b);
		struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN(sizeof(int));
		memcpy(CMSG_DATA(c), &console_fd, sizeof(int));
	}
	if (sendmsg(sock, &msg, MSG_NOSIGNAL) != (ssize_t)iov.iov_len)
		return sl_error_sys(err, "send pool request");
	return 0;
}

static const char *field(const char **p, const char *end)
{
	const char *s = *p;
	const char *z = memchr(s, 0, (size_t)(end - s));
	if (!z)
		return NULL;
	*p = z + 1;
	return s;
}

int pool_parse_request(const char *buf, size_t len, struct pool_request *req, sl_error_t *err)
{
	const char *p = buf, *end = buf + len;
	const char *verb = field(&p, end), *ms = verb ? field(&p, end) : NULL;
	const char *prefix = ms ? field(&p, end) : NULL, *dir = prefix ? field(&p, end) : NULL;
	if (!dir || p != end)
		return sl_error_set(err, SL_E_INVALID, "pool request: want 4 NUL-terminated fields");
	if (strcmp(verb, "restore") != 0)
		return sl_error_set(err, SL_E_INVALID, "pool request: unknown verb");
	/* Canonical decimal only (no sign, space or leading zero): one request
	 * has exactly one spelling. */
	unsigned long long v = 0;
	size_t nd = strlen(ms);
	bool ok = nd > 0 && nd <= 12 && (ms[0] != '0' || nd == 1);
	for (size_t i = 0; ok && i < nd; i++) {
		ok = ms[i] >= '0' && ms[i] <= '9';
		v = v * 10 + (unsigned)(ms[i] - '0');
	}
	if (!ok || v > 1000ull * 3600 * 24 * 365)
		return sl_error_set(err, SL_E_INVALID, "pool request: bad duration");
	if (strlen(prefix) >= sizeof(req->prefix) || !*dir || strlen(dir) >= sizeof(req->dir))
		return sl_error_set(err, SL_E_INVALID, "pool request: prefix or directory too long or empty");
	req->for_ms = v;
	strcpy(req->prefix, prefix);
	strcpy(req->dir, dir);
	return 0;
}

int pool_recv_request(int sock, struct pool_request *req, sl_error_t *err)
{
	char buf[POOL_MSG_MAX];
	union {
		char b[CMSG_SPACE(sizeof(int))];
		struct cmsghdr align;
	} ctl;
	struct iovec iov = {buf, sizeof(buf)};
	struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.b, .msg_controllen = sizeof(ctl.b)};
	req->console_fd = -1;
	ssize_t n = recvmsg(sock, &msg, MSG_CMSG_CLOEXEC);
	if (n < 0)
		return sl_error_sys(err, "receive pool request");
	for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c))
		if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS && c->cmsg_len == CMSG_LEN(sizeof(int)))
			memcpy(&req->console_fd, CMSG_DATA(c), sizeof(int));
	if (msg.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) {
		if (req->console_fd >= 0)
			close(req->console_fd);
		req->console_fd = -1;
		return sl_error_set(err, SL_E_LIMIT, "pool request larger than %d bytes", POOL_MSG_MAX);
	}
	int fd = req->console_fd;
	if (pool_parse_request(buf, (size_t)n, req, err) < 0) {
		if (fd >= 0)
			close(fd);
		req->console_fd = -1;
		return -1;
	}
	req->console_fd = fd;
	return 0;
}
