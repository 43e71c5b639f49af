/* Private pieces of the gRPC server shared with its tests and fuzz target. */
#ifndef SNAP_GRPC_INT_H
#define SNAP_GRPC_INT_H

#include <stddef.h>
#include <stdint.h>

/* A request body of a unary or server-streaming call: exactly one
 * length-prefixed message (1 byte flag, 4 bytes big-endian length). */
typedef enum {
	GRPC_FRAME_OK = 0,
	GRPC_FRAME_SHORT,      /* fewer than 5 bytes, or fewer than the length says */
	GRPC_FRAME_COMPRESSED, /* flag 1: no compression was negotiated */
	GRPC_FRAME_BAD_FLAG,   /* flag other than 0 or 1 */
	GRPC_FRAME_TRAILING,   /* more than one message */
	GRPC_FRAME_TOO_LARGE,  /* length above SNAP_GRPC_MAX_MESSAGE */
} grpc_frame_verdict;

grpc_frame_verdict grpc_frame_check(const uint8_t *body, size_t len);
const char *grpc_frame_verdict_text(grpc_frame_verdict v);

/* Feeds bytes to a server-side HTTP/2 session with the server's own
 * callbacks and no methods (every call is answered UNIMPLEMENTED), and
 * drains what it would send. For the fuzz target: the request decoding
 * path, without sockets or threads. */
void grpc_fuzz_session(const uint8_t *data, size_t len);

#endif
