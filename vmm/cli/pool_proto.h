/* The warm pool's request protocol (docs/pool-protocol.md), shared by the
 * pool workers, `spore resume --pool`, the restore benchmark and the shim. */
#ifndef SPORE_POOL_PROTO_H
#define SPORE_POOL_PROTO_H

#include <stddef.h>
#include <stdint.h>
#include "sl/error.h"

#define POOL_MSG_MAX 8192
#define POOL_HOSTNAME_MAX 64 /* bytes; "" keeps the spore's hostname */
#define POOL_ENV_MAX 64      /* K=V entries of a resume-agent request */
#define POOL_ENV_ENTRY_MAX 4095

enum pool_verb {
	POOL_RESTORE = 0,  /* "restore": a test-guest spore without an agent */
	POOL_RESUME_AGENT, /* "resume-agent": a spore with a vsock device and its agent */
};

struct pool_request {
	enum pool_verb verb;
	uint64_t for_ms;
	char prefix[64];
	char dir[4096];
	/* resume-agent only: */
	char hostname[POOL_HOSTNAME_MAX + 1];
	unsigned nenv;
	char *env[POOL_ENV_MAX + 1]; /* into envbuf; NULL-terminated */
	char envbuf[POOL_MSG_MAX];
	/* Received with SCM_RIGHTS; -1 if none. */
	int console_fd;
	int ready_fd;  /* resume-agent: the write end of the supervisor's ready pipe */
	int parent_fd; /* resume-agent: the read end of a pipe whose write end the supervisor holds */
};

/* Encodes a restore request into buf; returns its length or -1 if it does not fit. */
int pool_encode_request(char *buf, size_t cap, const char *dir, uint64_t for_ms, const char *prefix);
/* The same for resume-agent: hostname may be NULL or "" (unchanged), env a
 * NULL-terminated list of K=V or NULL. */
int pool_encode_agent_request(char *buf, size_t cap, const char *dir, uint64_t for_ms, const char *prefix,
			      const char *hostname, char *const *env);
/* One SOCK_SEQPACKET message: "restore\0<for_ms>\0<prefix>\0<dir>\0" with
 * the console fd attached. */
int pool_send_request(int sock, const char *dir, uint64_t for_ms, const char *prefix, int console_fd,
		      sl_error_t *err);
/* One resume-agent message with the fds ready, parent and (if >= 0) console
 * attached in that order. */
int pool_send_agent_request(int sock, const char *dir, uint64_t for_ms, const char *prefix, const char *hostname,
			    char *const *env, int ready_fd, int parent_fd, int console_fd, sl_error_t *err);
/* Parses one message's bytes (untrusted: a local client); fds are not
 * touched (pool_recv_request assigns them). */
int pool_parse_request(const char *buf, size_t len, struct pool_request *req, sl_error_t *err);
/* Receives and parses one message; takes ownership of attached fds (all
 * closed on failure). */
int pool_recv_request(int sock, struct pool_request *req, sl_error_t *err);
/* Closes the fds a request carried. */
void pool_request_close_fds(struct pool_request *req);

#endif
