/* The health and metrics endpoint: a listening socket on its own thread, short request reads with timeouts, Connection: close. */
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "sl/file.h"
#include "sop_httpd.h"

struct sop_httpd {
	int fd;
	volatile int stop;
	pthread_t thread;
	sop_http_handler fn;
	void *arg;
};

int sop_http_request_line(const char *buf, size_t len, char *method, size_t mcap, char *path, size_t pcap)
{
	const char *eol = memchr(buf, '\n', len);
	if (!eol)
		return -1;
	const char *sp1 = memchr(buf, ' ', (size_t)(eol - buf));
	if (!sp1 || sp1 == buf || (size_t)(sp1 - buf) >= mcap)
		return -1;
	const char *p = sp1 + 1;
	const char *sp2 = memchr(p, ' ', (size_t)(eol - p));
	if (!sp2 || sp2 == p || (size_t)(sp2 - p) >= pcap || *p != '/')
		return -1;
	if ((size_t)(eol - sp2) < 9 || strncmp(sp2 + 1, "HTTP/1.", 7) != 0)
		return -1;
	/* A method is a token; ours are upper-case letters (found by
	 * fuzz_op_http_request: a NUL made an empty method string). */
	for (const char *m = buf; m < sp1; m++)
		if (*m < 'A' || *m > 'Z')
			return -1;
	memcpy(method, buf, (size_t)(sp1 - buf));
	method[sp1 - buf] = 0;
	size_t pl = (size_t)(sp2 - p);
	const char *q = memchr(p, '?', pl);
	if (q)
		pl = (size_t)(q - p);
	memcpy(path, p, pl);
	path[pl] = 0;
	for (size_t i = 0; i < pl; i++) {
		if ((unsigned char)path[i] < 0x21 || (unsigned char)path[i] > 0x7e)
			return -1;
	}
	return 0;
}

static void reply(int fd, int status, const char *ctype, const char *body, bool head)
{
	const char *text = status == 200 ? "OK" : status == 404 ? "Not Found" : status == 405 ? "Method Not Allowed"
			 : status == 503 ? "Service Unavailable" : "Bad Request";
	size_t blen = body ? strlen(body) : 0;
	char hdr[256];
	int n = snprintf(hdr, sizeof(hdr),
			 "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\nConnection: close\r\n\r\n",
			 status, text, ctype, blen);
	sl_error_t err = NULL;
	if (sl_write_all(fd, hdr, (size_t)n, &err) == 0 && !head && blen)
		sl_write_all(fd, body, blen, &err);
	sl_error_free(&err);
}

static void serve(struct sop_httpd *h, int fd)
{
	struct timeval tv = { .tv_sec = 2 };
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	char buf[8192];
	size_t len = 0;
	while (len < sizeof(buf) - 1) {
		ssize_t r = read(fd, buf + len, sizeof(buf) - 1 - len);
		if (r <= 0)
			break;
		len += (size_t)r;
		buf[len] = 0;
		if (strstr(buf, "\r\n\r\n") || strstr(buf, "\n\n"))
			break;
	}
	char method[16], path[1024];
	if (sop_http_request_line(buf, len, method, sizeof(method), path, sizeof(path)) < 0) {
		reply(fd, 400, "text/plain", "bad request\n", false);
		return;
	}
	bool head = strcmp(method, "HEAD") == 0;
	if (!head && strcmp(method, "GET") != 0) {
		reply(fd, 405, "text/plain", "only GET and HEAD\n", false);
		return;
	}
	int status = 404;
	const char *ctype = "text/plain";
	char *body = NULL;
	h->fn(h->arg, path, &status, &ctype, &body);
	reply(fd, status, ctype, body ? body : "", head);
	free(body);
}

static void *httpd_main(void *arg)
{
	struct sop_httpd *h = arg;
	while (!h->stop) {
		struct pollfd p = { .fd = h->fd, .events = POLLIN };
		int r = poll(&p, 1, 200);
		if (r <= 0)
			continue;
		int c = accept4(h->fd, NULL, NULL, SOCK_CLOEXEC);
		if (c < 0)
			continue;
		serve(h, c);
		close(c);
	}
	return NULL;
}

int sop_httpd_start(const char *addr, sop_http_handler fn, void *arg, struct sop_httpd **out, char bound[80],
		    sl_error_t *err)
{
	char host[256];
	const char *colon = strrchr(addr, ':');
	if (!colon || !colon[1])
		return sl_error_set(err, SL_E_INVALID, "listen address \"%s\": want host:port or :port", addr);
	size_t hl = (size_t)(colon - addr);
	if (hl >= sizeof(host))
		return sl_error_set(err, SL_E_INVALID, "listen address \"%s\": host too long", addr);
	memcpy(host, addr, hl);
	host[hl] = 0;
	if (hl >= 2 && host[0] == '[' && host[hl - 1] == ']') {
		memmove(host, host + 1, hl - 2);
		host[hl - 2] = 0;
	}
	struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE }, *ai;
	int gr = getaddrinfo(*host ? host : NULL, colon + 1, &hints, &ai);
	if (gr != 0)
		return sl_error_set(err, SL_E_INVALID, "listen address \"%s\": %s", addr, gai_strerror(gr));
	int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, 0);
	int one = 1;
	if (fd >= 0)
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (fd < 0 || bind(fd, ai->ai_addr, ai->ai_addrlen) < 0 || listen(fd, 16) < 0) {
		int e = errno;
		freeaddrinfo(ai);
		if (fd >= 0)
			close(fd);
		return sl_error_errno(err, e, "listen on %s", addr);
	}
	freeaddrinfo(ai);
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	getsockname(fd, (struct sockaddr *)&ss, &sl);
	char ip[INET6_ADDRSTRLEN] = "?";
	int port = 0;
	if (ss.ss_family == AF_INET) {
		struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
		inet_ntop(AF_INET, &s4->sin_addr, ip, sizeof(ip));
		port = ntohs(s4->sin_port);
		snprintf(bound, 80, "%s:%d", ip, port);
	} else {
		struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
		inet_ntop(AF_INET6, &s6->sin6_addr, ip, sizeof(ip));
		port = ntohs(s6->sin6_port);
		snprintf(bound, 80, "[%s]:%d", ip, port);
	}
	struct sop_httpd *h = calloc(1, sizeof(*h));
	if (!h) {
		close(fd);
		return sl_error_set(err, SL_E_NOMEM, "httpd: out of memory");
	}
	h->fd = fd;
	h->fn = fn;
	h->arg = arg;
	if (pthread_create(&h->thread, NULL, httpd_main, h) != 0) {
		close(fd);
		free(h);
		return sl_error_set(err, SL_E_IO, "httpd: cannot start its thread");
	}
	*out = h;
	return 0;
}

void sop_httpd_stop(struct sop_httpd *h)
{
	if (!h)
		return;
	h->stop = 1;
	pthread_join(h->thread, NULL);
	close(h->fd);
	free(h);
}
