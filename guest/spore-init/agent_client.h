/* Host-side client of the guest agent (docs/agent-protocol.md) for the VMM, CLI and tests. */
#ifndef SPORE_AGENT_CLIENT_H
#define SPORE_AGENT_CLIENT_H

#include <stdint.h>

#include "agent_proto.h"
#include "sl/error.h"

/* Speak Firecracker-style "CONNECT <port>\n" / "OK <n>\n" first: the VMM's
 * vsock device exposes the guest's ports behind one Unix socket. */
#define AGENT_CLIENT_VSOCK_PREFIX 0x1u

struct agent_client_opts {
	unsigned flags;       /* AGENT_CLIENT_* */
	uint32_t port;        /* guest vsock port for the prefix; 0 means AGENT_VSOCK_PORT */
	int timeout_ms;       /* connect + HELLO + READY, and completing any started frame; <= 0: 10 s */
};

struct agent_client;

/* Connects to a Unix socket, exchanges HELLO and waits for the first READY.
 * Every frame from the guest is untrusted: headers are checked before a
 * payload is read, messages are decoded strictly and must be guest-to-host
 * types (violations: SL_E_GUEST). */
int agent_client_connect(const char *path, const struct agent_client_opts *opts, struct agent_client **out,
			 sl_error_t *err);
void agent_client_close(struct agent_client *c);
int agent_client_fd(const struct agent_client *c);

/* Low level: one frame out, one frame in. recv returns 1 with *m filled
 * (free with agent_msg_free), 0 if nothing started arriving within
 * wait_ms (-1: wait forever), -1 on error or end of stream. */
int agent_client_send(struct agent_client *c, const struct agent_msg *m, sl_error_t *err);
int agent_client_recv(struct agent_client *c, struct agent_msg *m, int wait_ms, sl_error_t *err);

struct agent_client_exec {
	uint32_t id;            /* nonzero, unique among this connection's live processes */
	char *const *argv;      /* NULL-terminated, at least one entry */
	char *const *env;       /* NULL-terminated "KEY=VALUE", may be NULL */
	const char *cwd;        /* absolute, NULL for "/" */
	uint32_t uid, gid;
	int stdin_fd;           /* forwarded until EOF; -1: the process gets /dev/null */
	int stdout_fd, stderr_fd; /* -1: discard */
	/* If set, output goes here instead (stream 1 or 2; opaque bytes from
	 * the guest); a negative return (errno set) ends the exec. */
	int (*output)(void *arg, int stream, const uint8_t *data, size_t len);
	void *output_arg;
	/* If set, called once the agent reports the process running (STARTED,
	 * before any of its output); guest_pid is 0 when the guest has none. */
	void (*started)(void *arg, uint32_t guest_pid);
	/* If set, signals are delivered while the process runs: whenever
	 * wake_fd (an eventfd or pipe the caller writes to) is readable it is
	 * drained, then next_signal(arg) is called until it returns 0 and each
	 * value is sent as SIGNAL. */
	int (*next_signal)(void *arg);
	int wake_fd;
	void *cb_arg; /* for started and next_signal */
};

struct agent_exit_status {
	uint32_t kind;  /* enum agent_exit_kind */
	uint32_t value; /* exit code or signal number */
};

/* Runs one process to completion, streaming its output as it comes.
 * A process the agent could not start is an error (SL_E_GUEST with the
 * agent's message). */
int agent_client_exec(struct agent_client *c, const struct agent_client_exec *x, struct agent_exit_status *st,
		      sl_error_t *err);

/* Sends GENERATION and waits (timeout_ms, <= 0: 30 s) for READY(generation). */
int agent_client_generation(struct agent_client *c, const struct agent_generation *g, int timeout_ms,
			    sl_error_t *err);

/* Asks the agent to power the guest off (PID 1) or exit (host runs). */
int agent_client_shutdown(struct agent_client *c, sl_error_t *err);

#endif
