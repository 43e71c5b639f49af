/* The guest agent's event loop: accepts host connections and runs processes for them. */
#ifndef SPORE_AGENT_H
#define SPORE_AGENT_H

#include <stdbool.h>

#include "sl/error.h"

#define AGENT_MAX_CONNS 16
#define AGENT_MAX_PROCS 64
#define AGENT_OUTQ_HIGH (1024u * 1024u)      /* stop reading child output above this */
#define AGENT_STDINQ_HIGH (4u * 1024u * 1024u) /* stop reading the socket above this */
#define AGENT_HOOK_TIMEOUT_MS 10000

struct agent_config {
	const char *listen;   /* "vsock", "vsock:PORT" or "unix:PATH" */
	bool privileged;      /* GENERATION may reseed, set the clock and hostname */
	const char *fork_dir; /* executables run after each GENERATION */
};

/* Runs until a SHUTDOWN arrives (returns 0) or the listening socket cannot
 * be set up (returns -1). Per-connection failures never end the loop. */
int agent_run(const struct agent_config *cfg, sl_error_t *err);

#endif
