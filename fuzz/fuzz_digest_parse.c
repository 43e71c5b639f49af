/* libFuzzer target: the strict digest parsers on arbitrary bytes. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "sl/digest.h"

/* The parsers are strict, so anything they accept must be canonical:
 * formatting the result gives back exactly the input. */
static void check_parse(const char *s)
{
	sl_error_t err = NULL;
	sl_digest d;
	char out[SL_DIGEST_STRLEN];

	if (sl_digest_parse(s, &d, &err) == 0) {
		if (err)
			__builtin_trap();
		sl_digest_format(&d, out);
		if (strcmp(out, s) != 0)
			__builtin_trap();
	} else if (!err || err->code != SL_E_INVALID ||
		   strlen(sl_error_msg(err)) > 512) {
		/* Failures must explain themselves, without echoing an
		 * unbounded amount of hostile input. */
		__builtin_trap();
	}
	sl_error_free(&err);

	if (sl_digest_parse_hex(s, &d, &err) == 0) {
		char hex[SL_DIGEST_HEXLEN + 1];

		sl_digest_hex(&d, hex);
		if (strcmp(hex, s) != 0)
			__builtin_trap();
	} else if (!err || err->code != SL_E_INVALID) {
		__builtin_trap();
	}
	sl_error_free(&err);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *s = malloc(size + 1);

	if (!s)
		return 0;
	memcpy(s, data, size);
	s[size] = '\0';
	check_parse(s);
	free(s);
	return 0;
}
