/* The per-VM control socket's request protocol (docs/control-protocol.md),
 * shared by the VMM's control server and `spore control`. */
#ifndef SPORE_CONTROL_PROTO_H
#define SPORE_CONTROL_PROTO_H

#include <stddef.h>
#include "sl/error.h"

/* Requests and replies are single SOCK_SEQPACKET messages of at most this. */
#define CONTROL_MSG_MAX 4096

enum control_verb {
	CONTROL_STATUS = 1, /* "status" */
	CONTROL_PAUSE,      /* "pause" */
	CONTROL_RESUME,     /* "resume" */
	CONTROL_CAPTURE,    /* "capture <absolute dir>" */
	CONTROL_STOP,       /* "stop" */
};

struct control_request {
	enum control_verb verb;
	char dir[CONTROL_MSG_MAX]; /* CONTROL_CAPTURE only */
};

/* Encodes a request; returns its length, or -1 if it is not a valid one
 * (capture needs an absolute directory that fits). */
int control_encode_request(char *buf, size_t cap, const struct control_request *req);
/* Parses one message (untrusted: a local client). Accepts exactly what
 * control_encode_request produces: one spelling per request. */
int control_parse_request(const char *buf, size_t len, struct control_request *req, sl_error_t *err);

#endif
