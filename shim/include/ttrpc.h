/* ttrpc: containerd's unary RPC protocol over unix sockets (server, client, codec). */
#ifndef SPORELET_TTRPC_H
#define SPORELET_TTRPC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <protobuf-c/protobuf-c.h>

#include <sl/error.h>

/* Wire facts (docs/ttrpc.md). */
#define TTRPC_HEADER_LEN 10
#define TTRPC_MESSAGE_LENGTH_MAX (4u << 20) /* data bytes per frame */

enum ttrpc_msg_type {
	TTRPC_TYPE_REQUEST = 0x01,
	TTRPC_TYPE_RESPONSE = 0x02,
	TTRPC_TYPE_DATA = 0x03, /* streaming only; ignored by this server */
};

enum ttrpc_flag {
	TTRPC_FLAG_REMOTE_CLOSED = 0x01,
	TTRPC_FLAG_REMOTE_OPEN = 0x02,
	TTRPC_FLAG_NO_DATA = 0x04,
};

/* gRPC status codes, as carried in google.rpc.Status.code. */
enum ttrpc_code {
	TTRPC_OK = 0,
	TTRPC_CANCELLED = 1,
	TTRPC_UNKNOWN = 2,
	TTRPC_INVALID_ARGUMENT = 3,
	TTRPC_DEADLINE_EXCEEDED = 4,
	TTRPC_NOT_FOUND = 5,
	TTRPC_ALREADY_EXISTS = 6,
	TTRPC_PERMISSION_DENIED = 7,
	TTRPC_RESOURCE_EXHAUSTED = 8,
	TTRPC_FAILED_PRECONDITION = 9,
	TTRPC_ABORTED = 10,
	TTRPC_OUT_OF_RANGE = 11,
	TTRPC_UNIMPLEMENTED = 12,
	TTRPC_INTERNAL = 13,
	TTRPC_UNAVAILABLE = 14,
	TTRPC_DATA_LOSS = 15,
	TTRPC_UNAUTHENTICATED = 16,
};

/* "NOT_FOUND" etc.; "UNKNOWN_CODE" for a value outside 0..16. */
const char *ttrpc_code_name(int code);

#define TTRPC_NAMESPACE_KEY "containerd-namespace-ttrpc"
#define TTRPC_TASK_V2_SERVICE "containerd.task.v2.Task"
#define TTRPC_TASK_V3_SERVICE "containerd.task.v3.Task"
#define TTRPC_EVENTS_SERVICE "containerd.services.events.ttrpc.v1.Events"

/* ---- frame codec (pure functions) ------------------------------------- */

struct ttrpc_frame_header {
	uint32_t length; /* data bytes after the header */
	uint32_t stream_id;
	uint8_t type;    /* enum ttrpc_msg_type, or anything on receipt */
	uint8_t flags;
};

void ttrpc_header_encode(const struct ttrpc_frame_header *h, uint8_t out[TTRPC_HEADER_LEN]);
void ttrpc_header_decode(const uint8_t in[TTRPC_HEADER_LEN], struct ttrpc_frame_header *h);

/* Header + data in one malloc'd buffer, ready for one write. Refuses data
 * over TTRPC_MESSAGE_LENGTH_MAX (SL_E_LIMIT). */
int ttrpc_frame_encode(uint32_t stream_id, uint8_t type, uint8_t flags, const uint8_t *data,
		       size_t len, uint8_t **out, size_t *out_len, sl_error_t *err);

struct ttrpc_kv {
	const char *key;
	const char *value;
};

/* The ttrpc.Request envelope. Decoded requests are one malloc'd block
 * (free()), with every pointer into it and strings NUL-terminated. */
struct ttrpc_request {
	const char *service;
	const char *method;
	const uint8_t *payload;
	size_t payload_len;
	int64_t timeout_nano; /* 0: no deadline */
	const struct ttrpc_kv *metadata;
	size_t n_metadata;
};

/* The ttrpc.Response envelope. code TTRPC_OK encodes status as an empty
 * google.rpc.Status (bytes 0a 00), as the Go server does. message may be
 * NULL. Decoded responses are one malloc'd block (free()); message is then
 * never NULL ("" when absent). */
struct ttrpc_response {
	int code;
	const char *message;
	const uint8_t *payload;
	size_t payload_len;
};

int ttrpc_request_encode(const struct ttrpc_request *req, uint8_t **out, size_t *out_len,
			 sl_error_t *err);
int ttrpc_request_decode(const uint8_t *buf, size_t len, struct ttrpc_request **out,
			 sl_error_t *err);
int ttrpc_response_encode(const struct ttrpc_response *resp, uint8_t **out, size_t *out_len,
			  sl_error_t *err);
int ttrpc_response_decode(const uint8_t *buf, size_t len, struct ttrpc_response **out,
			  sl_error_t *err);

/* Value of the first metadata entry with exactly this key, or NULL. */
const char *ttrpc_metadata_get(const struct ttrpc_kv *md, size_t n, const char *key);
/* The containerd namespace (metadata key TTRPC_NAMESPACE_KEY), or NULL. */
const char *ttrpc_request_namespace(const struct ttrpc_request *req);

/* Serializes a protobuf-c message into a malloc'd buffer (*out is NULL for
 * an empty encoding). */
int ttrpc_pack(const ProtobufCMessage *msg, uint8_t **out, size_t *out_len, sl_error_t *err);

/* ---- addresses ------------------------------------------------------------ */

/* "unix:///abs/path" is always a filesystem socket and "@name" always an
 * abstract one. A bare address (no scheme, no '@') is a filesystem path by
 * default, as $TTRPC_ADDRESS is; with TTRPC_ADDR_BARE_ABSTRACT it is an
 * abstract name, as containerd reads a shim address without a scheme. */
#define TTRPC_ADDR_BARE_ABSTRACT 0x1

/* A listening unix stream socket (CLOEXEC) bound to addr. A filesystem
 * socket's directory is created (0700) if missing, and refused (SL_E_INVALID)
 * if it or a directory above it could be changed by anyone but root and
 * our euid (sl_sock_dir_check); the socket is chmod 0600 before listen.
 * A stale socket file is not removed: the caller decides. */
int ttrpc_listen(const char *addr, int flags, int *fd_out, sl_error_t *err);

/* ---- server ------------------------------------------------------------- */

struct ttrpc_server;
struct ttrpc_conn;

/* One incoming call, valid for the duration of the handler. */
struct ttrpc_call {
	const char *service;
	const char *method;
	const uint8_t *payload; /* the serialized request message */
	size_t payload_len;
	const char *ns;         /* containerd namespace, NULL if not sent */
	int64_t timeout_nano;   /* the caller's deadline, 0 if none (advisory) */
	const struct ttrpc_kv *metadata;
	size_t n_metadata;
	uint32_t stream_id;
	pid_t peer_pid;         /* SO_PEERCRED of the connection */
	uid_t peer_uid;
	gid_t peer_gid;
	struct ttrpc_conn *conn; /* private: for ttrpc_call_cancelled */
};

/* What a handler produces: code TTRPC_OK and an optional payload, or an
 * error code and message. Both buffers are malloc'd and owned by the
 * server once the handler returns. */
struct ttrpc_result {
	int code;
	char *message;
	uint8_t *payload;
	size_t payload_len;
};

/* Handlers run on their own thread and may block (Wait does); they must not
 * call ttrpc_server_shutdown or ttrpc_server_free. */
typedef void (*ttrpc_handler_fn)(const struct ttrpc_call *call, struct ttrpc_result *res,
				 void *user);

/* Sets res to an error: code plus printf-formatted message. */
void ttrpc_result_error(struct ttrpc_result *res, int code, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
/* Sets res to OK with msg packed as the payload (INTERNAL if that fails). */
void ttrpc_result_pack(struct ttrpc_result *res, const ProtobufCMessage *msg);

/* True once the server is shutting down or the call's connection was closed
 * by the peer: a long handler (Wait) should then give up. */
bool ttrpc_call_cancelled(const struct ttrpc_call *call);

/* Caps (docs/ttrpc.md). 0 in a field means the default. */
#define TTRPC_DEFAULT_MAX_CONNS 256
#define TTRPC_DEFAULT_MAX_CALLS_PER_CONN 64

struct ttrpc_server_opts {
	bool require_peer_uid; /* close connections whose SO_PEERCRED uid != peer_uid */
	uid_t peer_uid;
	bool allow_root;       /* with require_peer_uid: uid 0 is served too */
	/* Told about each connection closed for its uid (from the accepting
	 * thread, no lock held), for the program's log; at most once a second,
	 * `more` counting the refusals since the previous call that were not
	 * reported. NULL: silent. */
	void (*refused)(void *arg, uid_t uid, pid_t pid, unsigned more);
	void *refused_arg;
	unsigned max_conns;          /* further connections are closed at once */
	unsigned max_calls_per_conn; /* further calls get RESOURCE_EXHAUSTED */
};

/* opts may be NULL (defaults, no peer check). */
int ttrpc_server_new(const struct ttrpc_server_opts *opts, struct ttrpc_server **out,
		     sl_error_t *err);

/* Registration happens before ttrpc_server_start/ttrpc_server_serve_fd.
 * service/method strings are copied. Registering a (service, method) pair
 * twice is an error. */
int ttrpc_server_register(struct ttrpc_server *s, const char *service, const char *method,
			  ttrpc_handler_fn fn, void *user, sl_error_t *err);

struct ttrpc_method {
	const char *method;
	ttrpc_handler_fn fn;
};

/* Registers every method of the table under service. */
int ttrpc_server_register_service(struct ttrpc_server *s, const char *service,
				  const struct ttrpc_method *methods, size_t n, void *user,
				  sl_error_t *err);
/* Registers the table under both containerd.task.v2.Task and
 * containerd.task.v3.Task (their messages are byte-identical). */
int ttrpc_server_register_task(struct ttrpc_server *s, const struct ttrpc_method *methods,
			       size_t n, void *user, sl_error_t *err);

/* Starts accepting on listen_fd (a listening unix stream socket, e.g. from
 * ttrpc_listen), which the server then owns and closes. */
int ttrpc_server_start(struct ttrpc_server *s, int listen_fd, sl_error_t *err);
/* Serves one already-connected socket (e.g. one end of a socketpair); the
 * server owns fd from here on, even on failure. */
int ttrpc_server_serve_fd(struct ttrpc_server *s, int fd, sl_error_t *err);

/* An eventfd that becomes readable when shutdown begins, so a blocking
 * handler can poll() it alongside its own file descriptors. */
int ttrpc_server_cancel_fd(const struct ttrpc_server *s);

/* Stops accepting, stops reading new calls, then waits up to timeout_ms for
 * the calls in flight to finish and their responses to be written, and
 * closes every connection. Returns -1 (SL_E_LIMIT) if calls are still
 * running at the deadline: their connections are closed anyway and the
 * handlers keep running; the server's memory then stays alive until the
 * last one returns, but their user data must too. Idempotent. */
int ttrpc_server_shutdown(struct ttrpc_server *s, unsigned timeout_ms, sl_error_t *err);

/* Releases the server, after a shutdown with a 5 s bound if
 * ttrpc_server_shutdown was not called. */
void ttrpc_server_free(struct ttrpc_server *s);

/* Number of calls in flight (for tests and diagnostics). */
unsigned ttrpc_server_inflight(struct ttrpc_server *s);

/* ---- client ------------------------------------------------------------- */

struct ttrpc_client;

/* Connects to addr (see ttrpc_listen for the forms and flags). */
int ttrpc_client_dial(const char *addr, int flags, struct ttrpc_client **out, sl_error_t *err);
/* Wraps a connected socket (owned by the client from here on, even on
 * failure). ttrpc_client_reconnect cannot redial such a client. */
int ttrpc_client_from_fd(int fd, struct ttrpc_client **out, sl_error_t *err);

/* The answer to a call: code, message (never NULL) and payload, one
 * malloc'd block to free(). */
typedef struct ttrpc_response ttrpc_reply_t;

/* One unary call. Safe from several threads at once; responses are matched
 * by stream id. ns (may be NULL) is sent as containerd-namespace-ttrpc;
 * timeout_ms 0 means no deadline (else it is also sent as timeout_nano).
 * Returns 0 when the server answered, whatever the status: check
 * (*reply)->code. Returns -1 with err on local failures: an oversized
 * request (SL_E_LIMIT), a closed connection (SL_E_IO, sys_errno EPIPE:
 * ttrpc_client_reconnect may help), a timeout (SL_E_IO, ETIMEDOUT), an
 * undecodable response (SL_E_INVALID). */
int ttrpc_client_call(struct ttrpc_client *c, const char *service, const char *method,
		      const uint8_t *req, size_t req_len, const char *ns, unsigned timeout_ms,
		      ttrpc_reply_t **reply, sl_error_t *err);

/* True once the connection is gone (peer closed, I/O error). */
bool ttrpc_client_closed(struct ttrpc_client *c);
/* Redials the original address if the connection is gone; 0 if it is up. */
int ttrpc_client_reconnect(struct ttrpc_client *c, sl_error_t *err);

/* Closes the connection and frees the client. No call may be in progress
 * (a caller blocked in ttrpc_client_call would use freed memory). */
void ttrpc_client_free(struct ttrpc_client *c);

#endif
