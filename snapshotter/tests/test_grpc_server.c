/* The gRPC server against a real peer: grpcio (tests/grpc_peer.py) calls test methods over a unix socket. */
#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "grpc_int.h"
#include "snap_grpc.h"

static atomic_bool slow_saw_cancel;

static void h_unary(const struct snap_grpc_call *call, struct snap_grpc_result *res, void *user)
{
	(void)user;
	res->msg = malloc(call->len ? call->len : 1);
	memcpy(res->msg, call->msg, call->len);
	res->len = call->len;
}

static void h_fail(const struct snap_grpc_call *call, struct snap_grpc_result *res, void *user)
{
	(void)user;
	int code = call->len ? call->msg[0] : SNAP_GRPC_INTERNAL;
	snap_grpc_error(res, code, "fail: 100%% \xc3\xbcnicode\nand a newline");
}

static void h_stream(const struct snap_grpc_call *call, struct snap_grpc_result *res, void *user)
{
	(void)user;
	if (call->len != 4) {
		snap_grpc_error(res, SNAP_GRPC_INVALID_ARGUMENT, "want a 4-byte count");
		return;
	}
	uint32_t n = (uint32_t)call->msg[0] << 24 | (uint32_t)call->msg[1] << 16 | (uint32_t)call->msg[2] << 8 |
		     call->msg[3];
	for (uint32_t i = 0; i < n; i++) {
		char m[32];
		int k = snprintf(m, sizeof(m), "msg-%u", i);
		sl_error_t err = NULL;
		if (snap_grpc_send(call, (const uint8_t *)m, (size_t)k, &err) < 0) {
			snap_grpc_error(res, SNAP_GRPC_CANCELLED, "%s", sl_error_msg(err));
			sl_error_free(&err);
			return;
		}
	}
}

/* Holds until the client gives up (its deadline resets the stream). */
static void h_slow(const struct snap_grpc_call *call, struct snap_grpc_result *res, void *user)
{
	(void)user;
	for (int i = 0; i < 1000 && !snap_grpc_cancelled(call); i++)
		usleep(10000);
	if (snap_grpc_cancelled(call))
		atomic_store(&slow_saw_cancel, true);
	snap_grpc_error(res, SNAP_GRPC_DEADLINE_EXCEEDED, "slow");
}

static void h_cancelled(const struct snap_grpc_call *call, struct snap_grpc_result *res, void *user)
{
	(void)user;
	(void)call;
	res->msg = malloc(1);
	res->msg[0] = atomic_load(&slow_saw_cancel) ? 'y' : 'n';
	res->len = 1;
}

static void h_ns(const struct snap_grpc_call *call, struct snap_grpc_result *res, void *user)
{
	(void)user;
	const char *ns = call->ns ? call->ns : "(none)";
	res->msg = (uint8_t *)strdup(ns);
	res->len = strlen(ns);
}

static int check_frames(void)
{
	static const uint8_t ok[] = {0, 0, 0, 0, 2, 'h', 'i'}, empty[] = {0, 0, 0, 0, 0},
			     comp[] = {1, 0, 0, 0, 0}, flag[] = {2, 0, 0, 0, 0}, trail[] = {0, 0, 0, 0, 1, 'a', 'b'},
			     big[] = {0, 1, 0, 0, 1};
	int bad = 0;
	bad |= grpc_frame_check(ok, sizeof(ok)) != GRPC_FRAME_OK;
	bad |= grpc_frame_check(empty, sizeof(empty)) != GRPC_FRAME_OK;
	bad |= grpc_frame_check(ok, 6) != GRPC_FRAME_SHORT;
	bad |= grpc_frame_check(ok, 4) != GRPC_FRAME_SHORT;
	bad |= grpc_frame_check(comp, sizeof(comp)) != GRPC_FRAME_COMPRESSED;
	bad |= grpc_frame_check(flag, sizeof(flag)) != GRPC_FRAME_BAD_FLAG;
	bad |= grpc_frame_check(trail, sizeof(trail)) != GRPC_FRAME_TRAILING;
	bad |= grpc_frame_check(big, sizeof(big)) != GRPC_FRAME_TOO_LARGE;
	if (bad)
		fprintf(stderr, "FAIL: grpc_frame_check\n");
	return bad;
}

static atomic_int refused_calls;
static atomic_uint refused_uid;

static void on_refused(void *arg, uid_t uid, unsigned more)
{
	(void)arg;
	(void)more;
	atomic_store(&refused_uid, uid);
	atomic_fetch_add(&refused_calls, 1);
}

int main(int argc, char **argv)
{
	if (argc != 2) {
		fprintf(stderr, "usage: %s grpc_peer.py\n", argv[0]);
		return 2;
	}
	if (check_frames())
		return 1;
	/* grpcio must be importable by the python that has it (not pyenv's). */
	const char *py = access("/usr/bin/python3", X_OK) == 0 ? "/usr/bin/python3" : "python3";
	char probe[256];
	snprintf(probe, sizeof(probe), "%s -c 'import grpc' 2>/dev/null", py);
	if (system(probe) != 0) {
		printf("SKIP: python3-grpcio is not installed (scripts/setup installs it)\n");
		return 77;
	}
	char dir[] = "/tmp/snap-grpc-XXXXXX";
	if (!mkdtemp(dir)) {
		perror("mkdtemp");
		return 1;
	}
	char sock[100];
	snprintf(sock, sizeof(sock), "%s/grpc.sock", dir);
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", sock);
	int lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (lfd < 0 || bind(lfd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(lfd, 64) < 0) {
		perror("listen");
		return 1;
	}
	struct snap_grpc_server *s = NULL;
	sl_error_t err = NULL;
	static const struct {
		const char *path;
		snap_grpc_fn fn;
		bool streaming;
	} methods[] = {{"/test.Echo/Unary", h_unary, false},	     {"/test.Echo/Fail", h_fail, false},
		       {"/test.Echo/Stream", h_stream, true},	     {"/test.Echo/Slow", h_slow, false},
		       {"/test.Echo/Cancelled", h_cancelled, false}, {"/test.Echo/Ns", h_ns, false}};
	if (snap_grpc_server_new(&s, &err) < 0)
		goto fail;
	for (size_t i = 0; i < sizeof(methods) / sizeof(methods[0]); i++)
		if (snap_grpc_server_register(s, methods[i].path, methods[i].fn, methods[i].streaming, NULL, &err) < 0)
			goto fail;
	if (snap_grpc_server_register(s, "/test.Echo/Unary", h_unary, false, NULL, &err) == 0) {
		fprintf(stderr, "FAIL: a duplicate method registered\n");
		return 1;
	}
	sl_error_free(&err);
	snap_grpc_server_on_refused(s, on_refused, NULL);
	/* As root, the peer also connects as other uids: let the file system
	 * allow it, so that only the server's uid rule stands in the way. */
	if (geteuid() == 0 && (chmod(dir, 0755) < 0 || chmod(sock, 0666) < 0)) {
		perror("chmod");
		return 1;
	}
	if (snap_grpc_server_start(s, lfd, &err) < 0)
		goto fail;
	pid_t pid = fork();
	if (pid == 0) {
		execlp(py, py, argv[1], sock, (char *)NULL);
		_exit(127);
	}
	int st = 0;
	while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
		;
	snap_grpc_server_free(s);
	unlink(sock);
	rmdir(dir);
	if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
		fprintf(stderr, "FAIL: the grpcio peer exited with %d\n", WIFEXITED(st) ? WEXITSTATUS(st) : -1);
		return 1;
	}
	/* The peer's refused connections (uid 65534) were reported, at most
	 * once a second. */
	if (geteuid() == 0 && (atomic_load(&refused_calls) < 1 || atomic_load(&refused_uid) != 65534)) {
		fprintf(stderr, "FAIL: refusals reported %d times, last uid %u\n", atomic_load(&refused_calls),
			atomic_load(&refused_uid));
		return 1;
	}
	printf("PASS unit-snap-grpc_server\n");
	return 0;
fail:
	fprintf(stderr, "FAIL: %s\n", sl_error_msg(err));
	return 1;
}
