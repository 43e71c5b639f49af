/* Safe file operations: atomic replace, and opening untrusted relative
 * paths beneath a directory without following symlinks out of it. */
#ifndef SL_FILE_H
#define SL_FILE_H

#include <stddef.h>
#include <sys/types.h>
#include "sl/error.h"

/* Writes buf to dirfd/relpath atomically: a temp file in the same directory,
 * fsync, rename over relpath, fsync the directory. On failure the old file
 * (if any) is untouched and no temp file is left behind. relpath may contain
 * directories; they must exist and are resolved with sl_open_beneath rules. */
int sl_write_atomic(int dirfd, const char *relpath, const void *buf, size_t len,
		    mode_t mode, sl_error_t *err);

/* Like sl_write_atomic, but never replaces: if relpath already exists it is
 * left as is and 0 is returned (for content-addressed files named by their
 * digest, where an existing file already has the right content; callers that
 * do not trust existing files verify them). Safe under concurrent writers. */
int sl_write_atomic_once(int dirfd, const char *relpath, const void *buf,
			 size_t len, mode_t mode, sl_error_t *err);

/* Opens relpath beneath dirfd. Rejects absolute paths, "..", and any symlink
 * on the way (openat2 RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS|RESOLVE_NO_MAGICLINKS,
 * with a component-by-component O_NOFOLLOW walk where openat2 is missing).
 * Returns the fd or -1 with *err set (SL_E_NOT_FOUND for ENOENT,
 * SL_E_INVALID for a path that escapes or crosses a symlink). */
int sl_open_beneath(int dirfd, const char *relpath, int flags, mode_t mode,
		    sl_error_t *err);

/* Creates every missing directory of relpath beneath dirfd (like mkdir -p),
 * with the same rules as sl_open_beneath. */
int sl_mkdir_beneath(int dirfd, const char *relpath, mode_t mode, sl_error_t *err);

/* Reads a regular file beneath dirfd, refusing files larger than max
 * (SL_E_LIMIT). *buf is NUL-terminated (not counted in *len); free() it. */
int sl_read_beneath(int dirfd, const char *relpath, size_t max, char **buf,
		    size_t *len, sl_error_t *err);

/* Reads all of a file path (no beneath rules), same contract as above. */
int sl_read_path(const char *path, size_t max, char **buf, size_t *len,
		 sl_error_t *err);

int sl_fsync_dir(int dirfd, sl_error_t *err);

/* dir-of-this-executable/name into out (companion programs installed side by
 * side, e.g. `spore` next to the shim); fallback when /proc/self/exe cannot
 * be read. */
void sl_exe_sibling(const char *name, const char *fallback, char *out, size_t cap);

/* write(2)/read(2) loops handling EINTR and short transfers. */
int sl_write_all(int fd, const void *buf, size_t len, sl_error_t *err);
int sl_pread_all(int fd, void *buf, size_t len, off_t off, sl_error_t *err);

/* Removes a directory tree (no symlink following). Missing is not an error. */
int sl_remove_tree(int dirfd, const char *relpath, sl_error_t *err);
/* The same for a path as the caller has it: absolute (beneath /) or
 * relative to the working directory. */
int sl_remove_path(const char *path, sl_error_t *err);

#endif
