/* The node's warm pool of VMMs (`spore pool --vsock`) that shims share. */
#ifndef SHIM_POOL_H
#define SHIM_POOL_H

#include <stddef.h>
#include "shim_config.h"
#include "sl/error.h"

#define SHIM_POOL_SOCKET "pool.sock"
#define SHIM_POOL_PID "pool.pid"
#define SHIM_POOL_LOG "pool.log"
#define SHIM_POOL_START_TIMEOUT_MS 15000

/* Makes sure a pool of cfg's shape serves <state_dir>/pool.sock: if no
 * live pool wrote <state_dir>/pool.pid, starts `spore pool --vsock` as a
 * daemon (own session, output to <state_dir>/pool.log) and waits until it
 * listens. Shims starting at once start one pool (a lock on state_dir).
 * sock gets the socket's path. */
int shim_pool_ensure(const struct shim_config *cfg, char *sock, size_t cap, sl_error_t *err);

#endif
