/* Uncompressed ustar: deterministic headers for spore layers and a strict
 * reader that indexes entries without extracting them. */
#ifndef OCI_TAR_H
#define OCI_TAR_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include "sl/error.h"

#define OCI_TAR_BLOCK 512u
#define OCI_TAR_PATH_MAX 100 /* ustar name field; spore paths fit */

/* Header of a regular file entry: ustar magic, mode as given, uid/gid 0,
 * empty user/group names, mtime 0 (layers are reproducible: same files,
 * same bytes, same digest), checksum filled in. Paths longer than 99 bytes,
 * absolute, or with ".." components: SL_E_INVALID. */
int oci_tar_file_header(uint8_t hdr[OCI_TAR_BLOCK], const char *path, uint64_t size, mode_t mode,
			sl_error_t *err);
/* Bytes of zero padding after a file of this size. */
uint64_t oci_tar_padding(uint64_t size);
/* The end of an archive: two zero blocks. */
#define OCI_TAR_TRAILER (2u * OCI_TAR_BLOCK)

struct oci_tar_entry {
	char path[OCI_TAR_PATH_MAX + 1]; /* normalised: no leading "./", no trailing '/' */
	char type;                       /* '0' regular file, '5' directory */
	uint64_t size;
	uint64_t data_offset; /* where the bytes start in the archive */
	mode_t mode;
};

/* Reads bytes of the archive at an offset (fd, memory, network...). Returns
 * 0, or -1 with *err set. */
typedef int (*oci_tar_read_fn)(void *arg, uint64_t off, void *buf, size_t len, sl_error_t *err);

/* Indexes an archive of archive_size bytes (untrusted): checksums, octal
 * fields, sizes within the archive, only regular files and directories
 * (symlinks, hard links, devices, FIFOs, pax/GNU extension headers are
 * errors), relative paths without ".." or empty components, no duplicate
 * paths, at most max_entries entries, end marker present. *entries is
 * malloc'd. Errors name the entry and the problem (SL_E_INVALID). */
int oci_tar_index(oci_tar_read_fn rd, void *arg, uint64_t archive_size, size_t max_entries,
		  struct oci_tar_entry **entries, size_t *n, sl_error_t *err);

/* Convenience readers for oci_tar_index. */
int oci_tar_read_mem(void *arg /* struct oci_tar_mem * */, uint64_t off, void *buf, size_t len, sl_error_t *err);
struct oci_tar_mem {
	const uint8_t *data;
	size_t len;
};
int oci_tar_read_fd(void *arg /* int * */, uint64_t off, void *buf, size_t len, sl_error_t *err);

#endif
