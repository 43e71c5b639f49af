/* gRPC over HTTP/2 (nghttp2) on a unix socket: the server the snapshotter answers containerd with. */
#ifndef SNAP_GRPC_H
#define SNAP_GRPC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "sl/error.h"

/* Caps (docs/grpc.md). containerd's client sends and accepts 16 MiB. */
#define SNAP_GRPC_MAX_MESSAGE (16u << 20)
#define SNAP_GRPC_MAX_STREAMS 128     /* concurrent calls per connection (SETTINGS) */
#define SNAP_GRPC_MAX_CONNS 64
/* Request bytes held by the whole server at once (bodies being received or
 * being handled): without it, 64 connections x 128 streams x 16 MiB could
 * be asked of it. A call that would go over gets RESOURCE_EXHAUSTED. */
#define SNAP_GRPC_MAX_BUFFERED (64u << 20)

/* gRPC status codes (the same numbers as ttrpc's). */
enum snap_grpc_code {
	SNAP_GRPC_OK = 0,
	SNAP_GRPC_CANCELLED = 1,
	SNAP_GRPC_UNKNOWN = 2,
	SNAP_GRPC_INVALID_ARGUMENT = 3,
	SNAP_GRPC_DEADLINE_EXCEEDED = 4,
	SNAP_GRPC_NOT_FOUND = 5,
	SNAP_GRPC_ALREADY_EXISTS = 6,
	SNAP_GRPC_PERMISSION_DENIED = 7,
	SNAP_GRPC_RESOURCE_EXHAUSTED = 8,
	SNAP_GRPC_FAILED_PRECONDITION = 9,
	SNAP_GRPC_ABORTED = 10,
	SNAP_GRPC_OUT_OF_RANGE = 11,
	SNAP_GRPC_UNIMPLEMENTED = 12,
	SNAP_GRPC_INTERNAL = 13,
	SNAP_GRPC_UNAVAILABLE = 14,
	SNAP_GRPC_DATA_LOSS = 15,
	SNAP_GRPC_UNAUTHENTICATED = 16,
};

struct snap_grpc_server;
struct snap_grpc_call_state; /* private */

/* One call, valid while its handler runs. */
struct snap_grpc_call {
	const char *path;        /* "/package.Service/Method" */
	const uint8_t *msg;      /* the request message (unary and server-streaming calls) */
	size_t len;
	const char *ns;          /* the containerd-namespace header, or NULL */
	int64_t timeout_ms;      /* from grpc-timeout; 0: none (advisory) */
	struct snap_grpc_call_state *state;
};

/* A handler's answer: code SNAP_GRPC_OK with a reply message (unary calls;
 * a streaming call's messages went out through snap_grpc_send), or an
 * error code and message. Buffers are malloc'd and owned by the server
 * once the handler returns. */
struct snap_grpc_result {
	int code;
	char *message;
	uint8_t *msg;
	size_t len;
};

typedef void (*snap_grpc_fn)(const struct snap_grpc_call *call, struct snap_grpc_result *res, void *user);

void snap_grpc_error(struct snap_grpc_result *res, int code, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* Server-streaming handlers: queues one reply message (copied). Fails when
 * the call was cancelled or its connection is gone. */
int snap_grpc_send(const struct snap_grpc_call *call, const uint8_t *msg, size_t len, sl_error_t *err);
/* True once the client cancelled (RST_STREAM), the connection closed or
 * the server is shutting down. */
bool snap_grpc_cancelled(const struct snap_grpc_call *call);

int snap_grpc_server_new(struct snap_grpc_server **out, sl_error_t *err);
/* Before start. Connections are served only if their SO_PEERCRED uid is 0
 * or the process's effective uid (containerd runs as root); others get the
 * server preface and a GOAWAY (INADEQUATE_SECURITY) whose debug data reads
 * "spore-snapshotter serves uid U and root only", and are closed before
 * anything they sent is read. `refused` (may be NULL) is told about them
 * for the program's log, from the accepting thread, at most once a second
 * (`more`: the refusals since its last call that it was not told about). */
void snap_grpc_server_on_refused(struct snap_grpc_server *s, void (*refused)(void *arg, uid_t uid, unsigned more),
				 void *arg);
/* Before start. path is "/package.Service/Method"; streaming marks a
 * server-streaming method. */
int snap_grpc_server_register(struct snap_grpc_server *s, const char *path, snap_grpc_fn fn, bool streaming,
			      void *user, sl_error_t *err);
/* Serves listen_fd (a listening unix stream socket, now the server's). */
int snap_grpc_server_start(struct snap_grpc_server *s, int listen_fd, sl_error_t *err);
/* GOAWAY to every connection, then waits up to timeout_ms for calls in
 * flight; closes everything. */
void snap_grpc_server_shutdown(struct snap_grpc_server *s, unsigned timeout_ms);
void snap_grpc_server_free(struct snap_grpc_server *s);

#endif
