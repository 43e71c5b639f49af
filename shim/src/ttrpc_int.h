/* ttrpc internals shared by the codec, the socket helpers, server and client. */
#ifndef SPORELET_TTRPC_INT_H
#define SPORELET_TTRPC_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/un.h>

#include "ttrpc.h"

/* ---- incremental frame reader (ttrpc_codec.c) ---------------------------
 * Splits a byte stream into frames. Bodies grow as bytes arrive instead of
 * being allocated from the announced length, so a peer that announces
 * 4 MiB and sends nothing costs nothing. A frame over the 4 MiB limit is
 * read and discarded and reported as TTRPC_READ_OVERSIZED with its header,
 * so the server can answer on that stream and keep the connection. */
enum ttrpc_read_event {
	TTRPC_READ_NONE = 0,  /* all input consumed, no frame completed */
	TTRPC_READ_FRAME,     /* *frame filled; the caller owns frame->data */
	TTRPC_READ_OVERSIZED, /* frame->h filled, data NULL (discarded) */
};

struct ttrpc_frame {
	struct ttrpc_frame_header h;
	uint8_t *data; /* malloc'd, NULL when h.length is 0 */
};

struct ttrpc_reader {
	uint8_t hdr[TTRPC_HEADER_LEN];
	size_t hdr_have;
	bool in_body;
	struct ttrpc_frame_header h;
	uint8_t *body;
	size_t body_have, body_cap;
};

void ttrpc_reader_init(struct ttrpc_reader *r);
/* Frees a partial frame. */
void ttrpc_reader_release(struct ttrpc_reader *r);
/* True between frames (an EOF here is a clean close). */
bool ttrpc_reader_idle(const struct ttrpc_reader *r);
/* Consumes at most len bytes and stops right after a completed frame;
 * *used says how many. Returns the event, or -1 (SL_E_NOMEM). */
int ttrpc_reader_feed(struct ttrpc_reader *r, const uint8_t *buf, size_t len, size_t *used,
		      struct ttrpc_frame *frame, sl_error_t *err);

/* ---- what the server does with one frame (ttrpc_codec.c) ----------------
 * Pure, so the fuzzer can drive it: stream id rules, envelope decoding. */
enum ttrpc_action {
	TTRPC_ACT_IGNORE = 0, /* Data, Response and unknown frame types */
	TTRPC_ACT_DISPATCH,   /* v->req is the decoded request (free()) */
	TTRPC_ACT_REPLY,      /* answer v->code / v->msg on v->stream_id */
};

#define TTRPC_VERDICT_MSG 192

struct ttrpc_verdict {
	enum ttrpc_action action;
	uint32_t stream_id;
	int code;
	char msg[TTRPC_VERDICT_MSG];
	struct ttrpc_request *req;
};

/* event is TTRPC_READ_FRAME or TTRPC_READ_OVERSIZED; *last_stream is the
 * highest stream id accepted so far on the connection (0 at first). Returns
 * -1 only on allocation failure. */
int ttrpc_frame_verdict(uint32_t *last_stream, int event, const struct ttrpc_frame *f,
			struct ttrpc_verdict *v, sl_error_t *err);

/* ---- sockets (ttrpc_socket.c) ------------------------------------------ */
int ttrpc_sockaddr(const char *addr, int flags, struct sockaddr_un *sa, socklen_t *len,
		   sl_error_t *err);
int ttrpc_connect(const char *addr, int flags, int *fd_out, sl_error_t *err);
/* Writes the whole buffer (MSG_NOSIGNAL: a gone peer is EPIPE, not SIGPIPE). */
int ttrpc_write_all(int fd, const uint8_t *buf, size_t len, sl_error_t *err);
/* Encodes and writes one Response frame. */
int ttrpc_send_response(int fd, uint32_t stream_id, const struct ttrpc_response *resp,
			sl_error_t *err);

#endif
