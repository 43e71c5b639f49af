/* The per-VM control socket: pause, resume, capture, stop and status of a running VM. */
#include <errno.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "cli.h"
#include "sl/sock.h"
#include "control_proto.h"
#include "sl/log.h"

struct cli_control {
	int lfd;
	int cfd[CONTROL_MAX_CLIENTS]; /* -1: free */
	char path[108];
};

/* A socket file at path that nobody answers on is left over from a VMM
 * that died; one that answers belongs to a live VM and is never taken. */
static int claim_path(const char *path, sl_error_t *err)
{
	struct stat st;
	if (lstat(path, &st) < 0)
		return errno == ENOENT ? 0 : sl_error_sys(err, "control socket %s", path);
	if (!S_ISSOCK(st.st_mode))
		return sl_error_set(err, SL_E_INVALID, "control socket %s: exists and is not a socket", path);
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	strcpy(sa.sun_path, path);
	_cleanup_close_ int s = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	if (s < 0)
		return sl_error_sys(err, "control socket: socket");
	if (connect(s, (struct sockaddr *)&sa, sizeof(sa)) == 0)
		return sl_error_set(err, SL_E_INVALID, "control socket %s: in use by a running VM", path);
	if (unlink(path) < 0 && errno != ENOENT)
		return sl_error_sys(err, "control socket %s: remove stale socket", path);
	return 0;
}

int cli_control_open(const char *path, struct cli_control **out, sl_error_t *err)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	if (!path[0] || strlen(path) >= sizeof(sa.sun_path))
		return sl_error_set(err, SL_E_INVALID, "control socket path must be 1..%zu bytes",
				    sizeof(sa.sun_path) - 1);
	strcpy(sa.sun_path, path);
	/* Whoever can replace the socket in its directory gets the requests. */
	if (sl_sock_dir_check(path, "control socket", err) < 0 || claim_path(path, err) < 0)
		return -1;
	_cleanup_close_ int lfd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (lfd < 0)
		return sl_error_sys(err, "control socket: socket");
	mode_t old = umask(077); /* private to the VMM's owner */
	int brc = bind(lfd, (struct sockaddr *)&sa, sizeof(sa));
	umask(old);
	if (brc < 0)
		return sl_error_sys(err, "control socket: bind %s", path);
	if (listen(lfd, 16) < 0) {
		unlink(path);
		return sl_error_sys(err, "control socket: listen %s", path);
	}
	struct cli_control *c = calloc(1, sizeof(*c));
	if (!c) {
		unlink(path);
		return sl_error_set(err, SL_E_NOMEM, "control socket: out of memory");
	}
	c->lfd = sl_steal_fd(lfd);
	for (int i = 0; i < CONTROL_MAX_CLIENTS; i++)
		c->cfd[i] = -1;
	strcpy(c->path, path);
	*out = c;
	return 0;
}

void cli_control_close(struct cli_control *c)
{
	if (!c)
		return;
	for (int i = 0; i < CONTROL_MAX_CLIENTS; i++)
		if (c->cfd[i] >= 0)
			close(c->cfd[i]);
	close(c->lfd);
	unlink(c->path);
	free(c);
}

int cli_control_pollfds(const struct cli_control *c, struct pollfd *p)
{
	if (!c)
		return 0;
	int n = 0;
	p[n++] = (struct pollfd){c->lfd, POLLIN, 0};
	for (int i = 0; i < CONTROL_MAX_CLIENTS; i++)
		p[n++] = (struct pollfd){c->cfd[i], POLLIN, 0};
	return n;
}

static void accept_client(struct cli_control *c)
{
	int fd = accept4(c->lfd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
	if (fd < 0)
		return;
	uid_t uid;
	if (!sl_sock_peer_allowed(fd, geteuid(), &uid)) {
		/* Its request, if already queued, is dropped unread: closing with
		 * unread data would reset the connection before our reply. */
		char drop[64];
		for (int i = 0; i < 16 && recv(fd, drop, sizeof(drop), MSG_DONTWAIT) >= 0; i++)
			;
		cli_reply(fd, "error control socket serves uid %u only", (unsigned)geteuid());
		close(fd);
		sl_warn("control: refused peer", "uid=%d", uid == (uid_t)-1 ? -1 : (int)uid);
		return;
	}
	for (int i = 0; i < CONTROL_MAX_CLIENTS; i++) {
		if (c->cfd[i] < 0) {
			c->cfd[i] = fd;
			return;
		}
	}
	cli_reply(fd, "error control socket: already %d clients", CONTROL_MAX_CLIENTS);
	close(fd);
}

/* Carries out one request; returns the run's exit status for stop, else -1. */
static int serve(int fd, const struct control_request *req, struct cli_control_vm *cv)
{
	sl_error_t err = NULL;
	switch (req->verb) {
	case CONTROL_STATUS: {
		uint64_t counter;
		char id[33];
		vmm_generation(cv->vm, &counter, id);
		/* Disks: whether their chunks share the cache's extents (a metric
		 * an operator can poll, beside the "disks ready" log line). */
		char disks[96] = "";
		if (cv->disk_shared || cv->disk_copied)
			snprintf(disks, sizeof(disks), " disk_shared_mib=%.1f disk_copied_mib=%.1f",
				 cv->disk_shared / 1048576.0, cv->disk_copied / 1048576.0);
		cli_reply(fd, "ok state=%s pid=%d generation=%s counter=%llu%s", cv->paused ? "paused" : "running",
			  getpid(), id, (unsigned long long)counter, disks);
		return -1;
	}
	case CONTROL_PAUSE:
		if (!cv->paused && vmm_pause(cv->vm, &err) < 0)
			break;
		cv->paused = true;
		cli_reply(fd, "ok state=paused");
		return -1;
	case CONTROL_RESUME:
		if (cv->paused && vmm_resume(cv->vm, &err) < 0)
			break;
		cv->paused = false;
		cli_reply(fd, "ok state=running");
		return -1;
	case CONTROL_CAPTURE: {
		char shown[1024];
		if (cv->jail && !cli_jail_can_capture(cv->jail, req->dir, shown, sizeof(shown))) {
			sl_error_set(&err, SL_E_INVALID,
				     "capture %s: outside the jail, which shows only %s; start the VMM with "
				     "--jail-bind DIR (or --no-jail)",
				     req->dir, shown);
			break;
		}
		bool was_paused = cv->paused;
		struct vmm_capture_stats st;
		if (!was_paused && vmm_pause(cv->vm, &err) < 0)
			break;
		int rc = vmm_capture(cv->vm, req->dir, &st, &err);
		/* The VM runs on whatever the capture did, as it was before. */
		sl_error_t rerr = NULL;
		if (!was_paused && vmm_resume(cv->vm, &rerr) < 0) {
			sl_err("cannot resume after capture", "err=\"%s\"", sl_error_msg(rerr));
			sl_error_free(&rerr);
			cv->paused = true;
		}
		if (rc < 0)
			break;
		sl_info("captured", "dir=%s ms=%.2f chunks_written=%llu chunks_reused=%llu zero_chunks=%llu", req->dir,
			st.total_ns / 1e6, (unsigned long long)st.chunks_written, (unsigned long long)st.chunks_reused,
			(unsigned long long)st.zero_chunks);
		cli_reply(fd, "ok ms=%.2f chunks_written=%llu chunks_reused=%llu zero_chunks=%llu", st.total_ns / 1e6,
		      (unsigned long long)st.chunks_written, (unsigned long long)st.chunks_reused,
		      (unsigned long long)st.zero_chunks);
		return -1;
	}
	case CONTROL_STOP:
		sl_info("stopped through the control socket", "%s", "");
		cli_reply(fd, "ok");
		return 0;
	}
	cli_reply(fd, "error %s", sl_error_msg(err));
	sl_error_free(&err);
	return -1;
}

int cli_control_service(struct cli_control *c, const struct pollfd *p, struct cli_control_vm *cv)
{
	if (!c)
		return -1;
	if (p[0].revents & POLLIN)
		accept_client(c);
	int status = -1;
	for (int i = 0; i < CONTROL_MAX_CLIENTS && status < 0; i++) {
		if (c->cfd[i] < 0 || p[1 + i].fd != c->cfd[i] || !p[1 + i].revents)
			continue;
		char buf[CONTROL_MSG_MAX + 1];
		ssize_t n = recv(c->cfd[i], buf, sizeof(buf), MSG_TRUNC | MSG_DONTWAIT);
		if (n < 0 && (errno == EAGAIN || errno == EINTR))
			continue;
		if (n <= 0) { /* hung up */
			close(c->cfd[i]);
			c->cfd[i] = -1;
			continue;
		}
		struct control_request req;
		sl_error_t err = NULL;
		if ((size_t)n > CONTROL_MSG_MAX) {
			cli_reply(c->cfd[i], "error control request longer than %d bytes", CONTROL_MSG_MAX);
		} else if (control_parse_request(buf, (size_t)n, &req, &err) < 0) {
			cli_reply(c->cfd[i], "error %s", sl_error_msg(err));
			sl_error_free(&err);
		} else {
			status = serve(c->cfd[i], &req, cv);
		}
	}
	return status;
}
