/* The warm pool's request protocol (docs/pool-protocol.md), shared by the
 * pool workers, `spore resume --pool` and the restore benchmark. */
#ifndef SPORE_POOL_PROTO_H
#define SPORE_POOL_PROTO_H

#include <stddef.h>
#include <stdint.h>
#include "sl/error.h"

#define POOL_MSG_MAX 8192

struct pool_request {
	uint64_t for_ms;
	char prefix[64];
	char dir[4096];
	int console_fd; /* received with SCM_RIGHTS; -1 if none */
};

/* Encodes a request into buf; returns its length or -1 if it does not fit. */
int pool_encode_request(char *buf, size_t cap, const char *dir, uint64_t for_ms, const char *prefix);
/* One SOCK_SEQPACKET message: "restore\0<for_ms>\0<prefix>\0<dir>\0" with
 * the console fd attached. */
int pool_send_request(int sock, const char *dir, uint64_t for_ms, const char *prefix, int console_fd,
		      sl_error_t *err);
/* Parses one message (untrusted: a local client); takes ownership of an
 * attached fd. */
int pool_parse_request(const char *buf, size_t len, struct pool_request *req, sl_error_t *err);
int pool_recv_request(int sock, struct pool_request *req, sl_error_t *err);

#endif
