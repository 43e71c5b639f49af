/* ttrpc unix socket plumbing: address forms, listening, dialling and whole-frame writes. */
#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "sl/sock.h"
#include "ttrpc_int.h"

int ttrpc_sockaddr(const char *addr, int flags, struct sockaddr_un *sa, socklen_t *len,
		   sl_error_t *err)
{
	char shown[SL_SHOW_BUF];
	if (!addr || !*addr)
		return sl_error_set(err, SL_E_INVALID, "ttrpc address is empty");
	bool abstract;
	const char *name;
	if (strncmp(addr, "unix://", 7) == 0) {
		abstract = false;
		name = addr + 7;
	} else if (addr[0] == '@') {
		abstract = true;
		name = addr + 1;
	} else if (strstr(addr, "://")) {
		sl_show(addr, strlen(addr), shown);
		return sl_error_set(err, SL_E_UNSUPPORTED,
				    "ttrpc address \"%s\": only unix sockets are supported", shown);
	} else {
		abstract = (flags & TTRPC_ADDR_BARE_ABSTRACT) != 0;
		name = addr;
	}
	size_t n = strlen(name);
	/* Abstract names take the leading NUL byte out of sun_path; paths keep
	 * room for their terminating NUL. */
	if (n == 0 || n + 1 > sizeof(sa->sun_path)) {
		sl_show(addr, strlen(addr), shown);
		return sl_error_set(err, SL_E_INVALID,
				    "ttrpc address \"%s\": name must be 1..%zu bytes, not %zu", shown,
				    sizeof(sa->sun_path) - 1, n);
	}
	if (!abstract && name[0] != '/') {
		sl_show(addr, strlen(addr), shown);
		return sl_error_set(err, SL_E_INVALID, "ttrpc address \"%s\": path must be absolute",
				    shown);
	}
	memset(sa, 0, sizeof(*sa));
	sa->sun_family = AF_UNIX;
	if (abstract) {
		memcpy(sa->sun_path + 1, name, n);
		*len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + n);
	} else {
		memcpy(sa->sun_path, name, n + 1);
		*len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + 1);
	}
	return 0;
}

int ttrpc_listen(const char *addr, int flags, int *fd_out, sl_error_t *err)
{
	struct sockaddr_un sa;
	socklen_t len;
	if (ttrpc_sockaddr(addr, flags, &sa, &len, err) < 0)
		return -1;
	bool abstract = sa.sun_path[0] == '\0';
	/* Directories it creates are 0700; existing ones must not let anyone
	 * but root and us replace the socket (sl/sock.h). */
	if (!abstract && sl_sock_dir_make(sa.sun_path, 0700, "ttrpc socket", err) < 0)
		return -1;
	_cleanup_close_ int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return sl_error_sys(err, "ttrpc listen: socket");
	if (bind(fd, (struct sockaddr *)&sa, len) < 0)
		return sl_error_sys(err, "ttrpc listen: bind %s", addr);
	/* Only the owner (containerd runs as the same user) may connect. */
	if (!abstract && chmod(sa.sun_path, 0600) < 0) {
		int e = errno;
		unlink(sa.sun_path);
		return sl_error_errno(err, e, "ttrpc listen: chmod %s", sa.sun_path);
	}
	if (listen(fd, SOMAXCONN) < 0) {
		int e = errno;
		if (!abstract)
			unlink(sa.sun_path);
		return sl_error_errno(err, e, "ttrpc listen: listen %s", addr);
	}
	*fd_out = sl_steal_fd(fd);
	return 0;
}

int ttrpc_connect(const char *addr, int flags, int *fd_out, sl_error_t *err)
{
	struct sockaddr_un sa;
	socklen_t len;
	if (ttrpc_sockaddr(addr, flags, &sa, &len, err) < 0)
		return -1;
	_cleanup_close_ int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return sl_error_sys(err, "ttrpc dial: socket");
	int r;
	do
		r = connect(fd, (struct sockaddr *)&sa, len);
	while (r < 0 && errno == EINTR);
	if (r < 0)
		return sl_error_sys(err, "ttrpc dial %s", addr);
	*fd_out = sl_steal_fd(fd);
	return 0;
}

int ttrpc_write_all(int fd, const uint8_t *buf, size_t len, sl_error_t *err)
{
	while (len) {
		ssize_t n = send(fd, buf, len, MSG_NOSIGNAL);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return sl_error_sys(err, "ttrpc write");
		}
		buf += n;
		len -= (size_t)n;
	}
	return 0;
}

int ttrpc_send_response(int fd, uint32_t stream_id, const struct ttrpc_response *resp,
			sl_error_t *err)
{
	_cleanup_free_ uint8_t *body = NULL;
	_cleanup_free_ uint8_t *frame = NULL;
	size_t body_len, frame_len;
	if (ttrpc_response_encode(resp, &body, &body_len, err) < 0)
		return -1;
	if (ttrpc_frame_encode(stream_id, TTRPC_TYPE_RESPONSE, 0, body, body_len, &frame,
			       &frame_len, err) < 0)
		return -1;
	return ttrpc_write_all(fd, frame, frame_len, err);
}
