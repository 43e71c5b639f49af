/* The guest agent's wire protocol (docs/agent-protocol.md): frame and message codec. */
#ifndef SPORE_AGENT_PROTO_H
#define SPORE_AGENT_PROTO_H

#include <stddef.h>
#include <stdint.h>

#include "sl/error.h"

#define AGENT_PROTO_VERSION 1u
#define AGENT_VSOCK_PORT 1024u

#define AGENT_HDR_SIZE 8u
#define AGENT_MAX_PAYLOAD (1024u * 1024u) /* 1 MiB, enforced on the header */
#define AGENT_MAX_STRLIST 4096u           /* argv / env entries per message */
#define AGENT_MAX_PATH 4096u              /* cwd */
#define AGENT_MAX_HOSTNAME 64u
#define AGENT_MAX_ERROR_MSG 1024u
#define AGENT_ENTROPY_SIZE 32u
#define AGENT_MAX_SIGNO 64u

enum agent_msg_type {
	AGENT_MSG_HELLO = 0x01,      /* both ways: u32 version */
	AGENT_MSG_READY = 0x02,      /* guest->host: u32 reason */
	AGENT_MSG_ERROR = 0x03,      /* both ways: u32 code, u32 id, u32 flags, str message */
	AGENT_MSG_EXEC = 0x10,       /* host->guest */
	AGENT_MSG_STDIN = 0x11,      /* host->guest: u32 id, bytes (non-empty) */
	AGENT_MSG_STDIN_EOF = 0x12,  /* host->guest: u32 id */
	AGENT_MSG_STDOUT = 0x13,     /* guest->host: u32 id, bytes (non-empty) */
	AGENT_MSG_STDERR = 0x14,     /* guest->host: u32 id, bytes (non-empty) */
	AGENT_MSG_SIGNAL = 0x15,     /* host->guest: u32 id, u32 signo */
	AGENT_MSG_EXIT = 0x16,       /* guest->host: u32 id, u32 kind, u32 value */
	AGENT_MSG_STARTED = 0x17,    /* guest->host: u32 id, u32 guest pid (0: none) */
	AGENT_MSG_GENERATION = 0x20, /* host->guest */
	AGENT_MSG_SHUTDOWN = 0x21,   /* host->guest: empty */
};

enum agent_ready_reason {
	AGENT_READY_START = 0,      /* after HELLO on every connection */
	AGENT_READY_GENERATION = 1, /* a GENERATION was applied and fork hooks ran */
};

enum agent_exit_kind {
	AGENT_EXIT_CODE = 0,   /* value: exit status 0..255 */
	AGENT_EXIT_SIGNAL = 1, /* value: signal number 1..64 */
};

enum agent_error_code {
	AGENT_ERR_PROTOCOL = 1,     /* malformed frame or message */
	AGENT_ERR_VERSION = 2,      /* HELLO version not supported */
	AGENT_ERR_TOO_LARGE = 3,    /* frame length above AGENT_MAX_PAYLOAD */
	AGENT_ERR_STATE = 4,        /* message not allowed in this state */
	AGENT_ERR_EXEC = 5,         /* the process could not be started (per process) */
	AGENT_ERR_NO_PROCESS = 6,   /* unknown process id (per process) */
	AGENT_ERR_BUSY = 7,         /* id in use or too many processes (per process) */
	AGENT_ERR_GENERATION = 8,   /* applying a GENERATION failed */
	AGENT_ERR_INTERNAL = 9,     /* the agent ran out of a resource */
};
#define AGENT_ERROR_FATAL 0x1u   /* ERROR flag: the sender closes the connection */
#define AGENT_EXEC_STDIN 0x1u    /* EXEC flag: the host will send STDIN frames */

struct agent_frame_hdr {
	uint32_t len; /* payload length */
	uint8_t type;
};

/* Decoded messages. Strings are NUL-terminated copies (the wire forbids NUL
 * inside them); lists are NULL-terminated arrays. Everything lives in one
 * allocation owned by the message: release with agent_msg_free. */
struct agent_exec {
	uint32_t id, flags, uid, gid;
	char *cwd; /* "" means "/" */
	uint32_t argc, envc;
	char **argv, **env; /* env entries are "KEY=VALUE" */
};

struct agent_generation {
	uint8_t entropy[AGENT_ENTROPY_SIZE];
	uint64_t sec;
	uint32_t nsec;
	char *hostname; /* "" means "leave unchanged" */
	uint32_t envc;
	char **env;
};

struct agent_msg {
	uint8_t type;
	union {
		struct { uint32_t version; } hello;
		struct { uint32_t reason; } ready;
		struct { uint32_t code, id, flags; char *message; } error;
		struct agent_exec exec;
		struct { uint32_t id; uint32_t len; uint8_t *data; } data; /* STDIN/STDOUT/STDERR */
		struct { uint32_t id; } eof;
		struct { uint32_t id, signo; } signal;
		struct { uint32_t id, kind, value; } exit;
		struct { uint32_t id, pid; } started;
		struct agent_generation gen;
	} u;
	void *mem_; /* the allocation behind pointers above */
};

/* Validates an 8-byte header: known type, zero flags and reserved bytes,
 * length within AGENT_MAX_PAYLOAD. Error code SL_E_LIMIT for oversize. */
int agent_frame_hdr_decode(const uint8_t hdr[AGENT_HDR_SIZE], struct agent_frame_hdr *h, sl_error_t *err);

/* Decodes one frame from the start of buf. Returns 1 with *m filled and
 * *consumed set, 0 if buf does not yet hold a whole frame (nothing is
 * allocated), -1 on malformed input (SL_E_INVALID / SL_E_LIMIT). */
int agent_frame_decode(const uint8_t *buf, size_t len, size_t *consumed, struct agent_msg *m, sl_error_t *err);

/* Decodes the payload of a frame whose header was already validated. */
int agent_msg_decode(uint8_t type, const uint8_t *payload, size_t len, struct agent_msg *m, sl_error_t *err);

/* Encodes a whole frame (header + payload) into a new buffer. The message is
 * validated by the same rules the decoder applies, so what is sent can be
 * read back. */
int agent_msg_encode(const struct agent_msg *m, uint8_t **out, size_t *out_len, sl_error_t *err);

void agent_msg_free(struct agent_msg *m);

const char *agent_msg_type_name(uint8_t type);

#endif
