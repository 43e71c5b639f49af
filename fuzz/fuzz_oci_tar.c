/* libFuzzer target: oci_tar_index over arbitrary bytes; every accepted entry must be safe and inside the archive. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "oci/tar.h"

static void check_path(const char *p)
{
	size_t n = strnlen(p, OCI_TAR_PATH_MAX + 1);

	if (n == 0 || n > OCI_TAR_PATH_MAX || p[0] == '/' || p[n - 1] == '/')
		__builtin_trap();
	for (const char *c = p;;) {
		const char *e = strchr(c, '/');
		size_t k = e ? (size_t)(e - c) : strlen(c);

		if (k == 0 || (k == 1 && c[0] == '.') || (k == 2 && c[0] == '.' && c[1] == '.'))
			__builtin_trap();
		if (!e)
			break;
		c = e + 1;
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct oci_tar_mem m = { .data = data, .len = size };
	struct oci_tar_entry *e = NULL;
	size_t n = 0;
	sl_error_t err = NULL;

	if (oci_tar_index(oci_tar_read_mem, &m, size, 256, &e, &n, &err) < 0) {
		if (!err || !sl_error_msg(err)[0] || e || n)
			__builtin_trap();
		if (err->code != SL_E_INVALID && err->code != SL_E_LIMIT)
			__builtin_trap();
		sl_error_free(&err);
		return 0;
	}
	if (err || n > 256 || (n && !e))
		__builtin_trap();
	for (size_t i = 0; i < n; i++) {
		check_path(e[i].path);
		if (e[i].type != '0' && e[i].type != '5')
			__builtin_trap();
		if (e[i].type == '5' && e[i].size)
			__builtin_trap();
		if (e[i].data_offset % OCI_TAR_BLOCK || e[i].data_offset < OCI_TAR_BLOCK ||
		    e[i].data_offset > size || e[i].size > size - e[i].data_offset)
			__builtin_trap();
		if (i && e[i].data_offset <= e[i - 1].data_offset)
			__builtin_trap();
		for (size_t k = 0; k < i; k++)
			if (strcmp(e[i].path, e[k].path) == 0)
				__builtin_trap();
	}
	free(e);
	return 0;
}
