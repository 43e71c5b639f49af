/* libFuzzer target: spore_manifest_parse; whatever parses must write, re-parse
 * and write again to identical bytes (manifest digests are over those bytes). */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "sl/spore_manifest.h"

static char *write_or_trap(const struct spore_manifest *m, size_t *len)
{
	sl_error_t err = NULL;
	char *buf = NULL;

	if (spore_manifest_write(m, &buf, len, &err) < 0 || err || !buf || *len != strlen(buf))
		__builtin_trap();
	return buf;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct spore_manifest m, m2, c;
	sl_error_t err = NULL;

	if (spore_manifest_parse((const char *)data, size, &m, &err) < 0) {
		if (!err || !sl_error_msg(err)[0])
			__builtin_trap();
		if (err->code != SL_E_INVALID && err->code != SL_E_UNSUPPORTED && err->code != SL_E_LIMIT)
			__builtin_trap();
		/* nothing is left allocated, and freeing again is harmless */
		if (m.features || m.kvm_caps || m.chunks)
			__builtin_trap();
		spore_manifest_free(&m);
		sl_error_free(&err);
		return 0;
	}
	if (err || m.version != SPORE_FORMAT_VERSION || m.vcpus < 1 || m.vcpus > SPORE_MAX_VCPUS ||
	    m.nchunks > (m.mem_mib << 20) / SPORE_CHUNK_SIZE)
		__builtin_trap();
	for (size_t i = 1; i < m.nchunks; i++)
		if (m.chunks[i].index <= m.chunks[i - 1].index)
			__builtin_trap();

	size_t l1, l2, l3;
	char *a = write_or_trap(&m, &l1);
	if (spore_manifest_parse(a, l1, &m2, &err) < 0)
		__builtin_trap();
	char *b = write_or_trap(&m2, &l2);
	if (l1 != l2 || memcmp(a, b, l1) != 0)
		__builtin_trap();

	/* a deep copy writes the same bytes and outlives the original */
	if (spore_manifest_copy(&m, &c, &err) < 0)
		__builtin_trap();
	spore_manifest_free(&m);
	char *d = write_or_trap(&c, &l3);
	if (l3 != l1 || memcmp(a, d, l1) != 0)
		__builtin_trap();

	spore_manifest_free(&c);
	spore_manifest_free(&m2);
	free(a);
	free(b);
	free(d);
	return 0;
}
