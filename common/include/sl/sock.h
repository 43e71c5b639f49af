/* Local socket hygiene for every daemon that listens on a Unix socket: where the socket may live, and who may connect. */
#ifndef SL_SOCK_H
#define SL_SOCK_H

#include <stdbool.h>
#include <sys/types.h>

#include "sl/error.h"

/* Checks the directory that holds (or will hold) the Unix socket at path,
 * and every directory above it up to /: each must be owned by root or by
 * the caller's effective uid, and must not be writable by group or others
 * unless it is sticky (like /tmp, where others may add names but cannot
 * remove or rename ours). Anyone who could change such a directory could
 * replace the socket (or a directory on the way to it) with their own, and
 * then receive the connections meant for us. Symlinks in the path are
 * resolved first (realpath): the directories checked are the ones the
 * socket really lands in. `what` names the socket in errors ("vsock
 * socket"). SL_E_NOT_FOUND if the directory does not exist, SL_E_INVALID
 * naming the offending directory, its owner or mode, otherwise. */
int sl_sock_dir_check(const char *path, const char *what, sl_error_t *err);

/* mkdir -p of the directory that will hold the socket at path; the
 * directories it creates get `mode` (0700, or 0711 where other users'
 * processes must reach a socket inside by its full name), whatever the
 * umask. Then sl_sock_dir_check. */
int sl_sock_dir_make(const char *path, mode_t mode, const char *what, sl_error_t *err);

/* The uid of a connected Unix socket's peer, from SO_PEERCRED (fixed when
 * the peer called connect). -1 with *err set if the kernel will not say. */
int sl_sock_peer_uid(int fd, uid_t *uid, sl_error_t *err);

/* The rule every Sporelet socket applies: a peer is served if it is root
 * or runs as `owner`. `owner` is normally geteuid() read at accept time,
 * so a process that switches to an unprivileged uid after its sockets
 * exist (`spore --jail-uid`) compares peers with its new uid, and root
 * (containerd, the shim) is still served. *uid gets the peer's uid, or
 * (uid_t)-1 when it could not be read (then the answer is false). */
bool sl_sock_peer_allowed(int fd, uid_t owner, uid_t *uid);

#endif
