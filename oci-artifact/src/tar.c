/* Uncompressed ustar: reproducible file headers and a strict, non-extracting index reader. */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "oci/tar.h"
#include "sl/file.h"

/* ustar header layout (POSIX.1-1988), byte offsets and field widths. */
#define T_NAME 0
#define T_NAME_LEN 100
#define T_MODE 100
#define T_UID 108
#define T_GID 116
#define T_SIZE 124
#define T_MTIME 136
#define T_CHKSUM 148
#define T_TYPE 156
#define T_LINKNAME 157
#define T_MAGIC 257
#define T_VERSION 263
#define T_DEVMAJOR 329
#define T_DEVMINOR 337
#define T_PREFIX 345
#define T_PREFIX_LEN 155

/* The largest size an 11-digit octal field holds: 8 GiB - 1. */
#define T_SIZE_MAX ((1ull << 33) - 1)

/* Writes v as width-1 zero-padded octal digits and a NUL. */
static void put_octal(uint8_t *field, size_t width, uint64_t v)
{
	for (size_t i = width - 1; i-- > 0;) {
		field[i] = (uint8_t)('0' + (v & 7));
		v >>= 3;
	}
	field[width - 1] = 0;
}

static unsigned header_sum(const uint8_t hdr[OCI_TAR_BLOCK])
{
	unsigned sum = 0;

	/* The checksum is computed with its own field read as eight spaces. */
	for (size_t i = 0; i < OCI_TAR_BLOCK; i++)
		sum += (i >= T_CHKSUM && i < T_CHKSUM + 8) ? (unsigned)' ' : hdr[i];
	return sum;
}

/* Rejects what no spore path needs and what would escape an extraction
 * directory: absolute paths, "." / ".." / empty components, control bytes. */
static const char *path_problem(const char *p)
{
	const char *c = p;

	if (!*p)
		return "empty path";
	if (*p == '/')
		return "absolute path";
	for (const char *s = p; *s; s++)
		if ((unsigned char)*s < 0x20 || *s == 0x7f)
			return "control character in path";
	while (*c) {
		const char *e = strchr(c, '/');
		size_t n = e ? (size_t)(e - c) : strlen(c);

		if (n == 0)
			return "empty path component";
		if (n == 2 && c[0] == '.' && c[1] == '.')
			return "\"..\" component";
		if (n == 1 && c[0] == '.')
			return "\".\" component";
		if (!e)
			break;
		c = e + 1;
		if (!*c)
			return "trailing '/'";
	}
	return NULL;
}

int oci_tar_file_header(uint8_t hdr[OCI_TAR_BLOCK], const char *path, uint64_t size, mode_t mode,
			sl_error_t *err)
{
	size_t n = strlen(path);
	const char *why = path_problem(path);
	unsigned sum;

	if (n > OCI_TAR_PATH_MAX - 1)
		return sl_error_set(err, SL_E_INVALID, "tar header for \"%.100s...\": path longer than %u bytes",
				    path, OCI_TAR_PATH_MAX - 1);
	if (why)
		return sl_error_set(err, SL_E_INVALID, "tar header for \"%s\": %s", path, why);
	if (size > T_SIZE_MAX)
		return sl_error_set(err, SL_E_LIMIT, "tar header for \"%s\": %llu bytes, ustar holds at most %llu",
				    path, (unsigned long long)size, (unsigned long long)T_SIZE_MAX);
	memset(hdr, 0, OCI_TAR_BLOCK);
	memcpy(hdr + T_NAME, path, n);
	put_octal(hdr + T_MODE, 8, (uint64_t)mode & 07777);
	put_octal(hdr + T_UID, 8, 0);
	put_octal(hdr + T_GID, 8, 0);
	put_octal(hdr + T_SIZE, 12, size);
	put_octal(hdr + T_MTIME, 12, 0);
	hdr[T_TYPE] = '0';
	memcpy(hdr + T_MAGIC, "ustar", 6); /* with its NUL */
	memcpy(hdr + T_VERSION, "00", 2);
	put_octal(hdr + T_DEVMAJOR, 8, 0);
	put_octal(hdr + T_DEVMINOR, 8, 0);
	/* GNU/POSIX convention: six digits, NUL, space. */
	sum = header_sum(hdr);
	put_octal(hdr + T_CHKSUM, 7, sum);
	hdr[T_CHKSUM + 7] = ' ';
	return 0;
}

uint64_t oci_tar_padding(uint64_t size)
{
	return (OCI_TAR_BLOCK - size % OCI_TAR_BLOCK) % OCI_TAR_BLOCK;
}

/* A numeric field: optional leading spaces, octal digits, then only NULs or
 * spaces. Base-256 (GNU, high bit set) is rejected: nothing of a spore needs
 * it. An empty field reads as 0 only where allow_empty. */
static bool parse_octal(const uint8_t *f, size_t width, bool allow_empty, uint64_t *out)
{
	size_t i = 0;
	uint64_t v = 0;
	bool digits = false;

	while (i < width && f[i] == ' ')
		i++;
	for (; i < width && f[i] >= '0' && f[i] <= '7'; i++) {
		if (v >> 60)
			return false;
		v = v << 3 | (uint64_t)(f[i] - '0');
		digits = true;
	}
	for (; i < width; i++)
		if (f[i] != 0 && f[i] != ' ')
			return false;
	if (!digits && !allow_empty)
		return false;
	*out = v;
	return true;
}

static bool all_zero(const uint8_t *b, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (b[i])
			return false;
	return true;
}

static const char *type_name(uint8_t t)
{
	switch (t) {
	case '1': return "hard link";
	case '2': return "symbolic link";
	case '3': return "character device";
	case '4': return "block device";
	case '6': return "FIFO";
	case '7': return "contiguous file";
	case 'x': return "pax extended header";
	case 'g': return "pax global header";
	case 'L': return "GNU long name";
	case 'K': return "GNU long link name";
	default: return NULL;
	}
}

/* Builds the entry path from prefix and name, strips one leading "./" and a
 * trailing '/' (directories). *root is set for the archive root ("." or
 * "./"), which carries no file and is skipped. */
static const char *entry_path(const uint8_t *hdr, bool posix, bool is_dir, char out[OCI_TAR_PATH_MAX + 1],
			      bool *root)
{
	char full[T_PREFIX_LEN + 1 + T_NAME_LEN + 1];
	size_t np = 0, nn = strnlen((const char *)hdr + T_NAME, T_NAME_LEN);
	char *p = full;
	size_t len;

	*root = false;
	if (posix)
		np = strnlen((const char *)hdr + T_PREFIX, T_PREFIX_LEN);
	if (np) {
		memcpy(full, hdr + T_PREFIX, np);
		full[np++] = '/';
	}
	memcpy(full + np, hdr + T_NAME, nn);
	len = np + nn;
	full[len] = 0;

	if (p[0] == '.' && p[1] == '/')
		p += 2;
	len = strlen(p);
	if (is_dir && (len == 0 || strcmp(p, ".") == 0)) {
		*root = true;
		return NULL;
	}
	if (len && p[len - 1] == '/') {
		if (!is_dir)
			return "trailing '/' on a regular file";
		p[--len] = 0;
	}
	if (len > OCI_TAR_PATH_MAX)
		return "path longer than 100 bytes";
	memcpy(out, p, len + 1);
	return path_problem(out);
}

/* Names the entry in errors: its position and (printable) raw name. */
static void raw_name(const uint8_t *hdr, char out[T_NAME_LEN + 1])
{
	size_t n = strnlen((const char *)hdr + T_NAME, T_NAME_LEN);

	for (size_t i = 0; i < n; i++) {
		uint8_t c = hdr[T_NAME + i];
		out[i] = (c < 0x20 || c >= 0x7f) ? '?' : (char)c;
	}
	out[n] = 0;
}

static int cmp_entry_path(const void *a, const void *b)
{
	const struct oci_tar_entry *const *x = a, *const *y = b;

	return strcmp((*x)->path, (*y)->path);
}

/* Duplicates by sorting pointers: O(n log n) even for adversarial archives. */
static int check_duplicates(struct oci_tar_entry *e, size_t n, sl_error_t *err)
{
	_cleanup_free_ struct oci_tar_entry **v = NULL;

	if (n < 2)
		return 0;
	v = malloc(n * sizeof(*v));
	if (!v)
		return sl_error_set(err, SL_E_NOMEM, "tar index: out of memory");
	for (size_t i = 0; i < n; i++)
		v[i] = &e[i];
	if (n > 1)
		qsort(v, n, sizeof(*v), cmp_entry_path);
	for (size_t i = 1; i < n; i++)
		if (strcmp(v[i - 1]->path, v[i]->path) == 0)
			return sl_error_set(err, SL_E_INVALID, "tar: entry \"%s\" appears twice", v[i]->path);
	return 0;
}

int oci_tar_index(oci_tar_read_fn rd, void *arg, uint64_t archive_size, size_t max_entries,
		  struct oci_tar_entry **entries, size_t *n, sl_error_t *err)
{
	_cleanup_free_ struct oci_tar_entry *v = NULL;
	size_t cnt = 0, cap = 0;
	uint64_t off = 0;
	uint8_t hdr[OCI_TAR_BLOCK];

	*entries = NULL;
	*n = 0;
	for (size_t idx = 0;; idx++) {
		char name[T_NAME_LEN + 1], path[OCI_TAR_PATH_MAX + 1];
		uint64_t size, mode, chk, scratch;
		bool posix, gnu, root;
		const char *why;
		struct oci_tar_entry *e;
		uint8_t type;

		if (archive_size < OCI_TAR_BLOCK || off > archive_size - OCI_TAR_BLOCK)
			return sl_error_set(err, SL_E_INVALID, "tar: end marker missing (archive ends at %llu)",
					    (unsigned long long)archive_size);
		if (rd(arg, off, hdr, OCI_TAR_BLOCK, err) < 0)
			return sl_error_wrap(err, "tar: header at %llu", (unsigned long long)off);
		if (all_zero(hdr, OCI_TAR_BLOCK)) {
			/* The end: two zero blocks. Bytes after them (record
			 * padding) are not part of the archive. */
			if (off + OCI_TAR_BLOCK > archive_size - OCI_TAR_BLOCK)
				return sl_error_set(err, SL_E_INVALID, "tar: end marker truncated at %llu",
						    (unsigned long long)off);
			if (rd(arg, off + OCI_TAR_BLOCK, hdr, OCI_TAR_BLOCK, err) < 0)
				return sl_error_wrap(err, "tar: end marker at %llu", (unsigned long long)off);
			if (!all_zero(hdr, OCI_TAR_BLOCK))
				return sl_error_set(err, SL_E_INVALID, "tar: lone zero block at %llu",
						    (unsigned long long)off);
			break;
		}

		raw_name(hdr, name);
		posix = memcmp(hdr + T_MAGIC, "ustar\0" "00", 8) == 0;
		gnu = memcmp(hdr + T_MAGIC, "ustar  \0", 8) == 0;
		if (!posix && !gnu)
			return sl_error_set(err, SL_E_INVALID, "tar: entry %zu \"%s\": not a ustar header", idx, name);
		if (!parse_octal(hdr + T_CHKSUM, 8, false, &chk))
			return sl_error_set(err, SL_E_INVALID, "tar: entry %zu \"%s\": bad checksum field", idx, name);
		if (chk != header_sum(hdr))
			return sl_error_set(err, SL_E_INVALID, "tar: entry %zu \"%s\": checksum mismatch", idx, name);
		type = hdr[T_TYPE];
		if (type != '0' && type != 0 && type != '5') {
			const char *tn = type_name(type);

			if (tn)
				return sl_error_set(err, SL_E_INVALID, "tar: entry %zu \"%s\": %s not allowed", idx,
						    name, tn);
			return sl_error_set(err, SL_E_INVALID, "tar: entry %zu \"%s\": unknown type 0x%02x", idx,
					    name, type);
		}
		if (!parse_octal(hdr + T_SIZE, 12, false, &size))
			return sl_error_set(err, SL_E_INVALID, "tar: entry %zu \"%s\": bad octal size", idx, name);
		if (!parse_octal(hdr + T_MODE, 8, false, &mode))
			return sl_error_set(err, SL_E_INVALID, "tar: entry %zu \"%s\": bad octal mode", idx, name);
		if (!parse_octal(hdr + T_UID, 8, true, &scratch) || !parse_octal(hdr + T_GID, 8, true, &scratch) ||
		    !parse_octal(hdr + T_MTIME, 12, true, &scratch))
			return sl_error_set(err, SL_E_INVALID, "tar: entry %zu \"%s\": bad octal uid/gid/mtime", idx,
					    name);
		if (type == '5' && size != 0)
			return sl_error_set(err, SL_E_INVALID, "tar: entry %zu \"%s\": directory with %llu bytes", idx,
					    name, (unsigned long long)size);
		if (size > archive_size - off - OCI_TAR_BLOCK)
			return sl_error_set(err, SL_E_INVALID,
					    "tar: entry %zu \"%s\": %llu bytes run past the end of the archive", idx,
					    name, (unsigned long long)size);

		why = entry_path(hdr, posix, type == '5', path, &root);
		if (why)
			return sl_error_set(err, SL_E_INVALID, "tar: entry %zu \"%s\": %s", idx, name, why);
		if (!root) {
			if (cnt == cap) {
				size_t ncap = cap ? cap * 2 : 16;
				struct oci_tar_entry *nv;

				if (cnt >= max_entries)
					return sl_error_set(err, SL_E_LIMIT, "tar: more than %zu entries", max_entries);
				if (ncap > max_entries)
					ncap = max_entries;
				nv = realloc(v, ncap * sizeof(*v));
				if (!nv)
					return sl_error_set(err, SL_E_NOMEM, "tar index: out of memory");
				v = nv;
				cap = ncap;
			}
			e = &v[cnt++];
			memcpy(e->path, path, strlen(path) + 1);
			e->type = type == '5' ? '5' : '0';
			e->size = size;
			e->data_offset = off + OCI_TAR_BLOCK;
			e->mode = (mode_t)(mode & 07777);
		}
		off += OCI_TAR_BLOCK + size + oci_tar_padding(size);
	}
	if (check_duplicates(v, cnt, err) < 0)
		return -1;
	*entries = sl_steal_ptr(v);
	*n = cnt;
	return 0;
}

int oci_tar_read_mem(void *arg, uint64_t off, void *buf, size_t len, sl_error_t *err)
{
	const struct oci_tar_mem *m = arg;

	if (off > m->len || len > m->len - off)
		return sl_error_set(err, SL_E_INVALID, "read of %zu bytes at %llu past the end (%zu bytes)", len,
				    (unsigned long long)off, m->len);
	memcpy(buf, m->data + off, len);
	return 0;
}

int oci_tar_read_fd(void *arg, uint64_t off, void *buf, size_t len, sl_error_t *err)
{
	if (off > (uint64_t)INT64_MAX)
		return sl_error_set(err, SL_E_INVALID, "read at offset %llu: out of range", (unsigned long long)off);
	return sl_pread_all(*(int *)arg, buf, len, (off_t)off, err);
}
