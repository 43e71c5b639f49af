/* libFuzzer target: the registry client's parsers of response headers and error bodies. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "registry_int.h"

/* Every one of these reads bytes a registry (or anything between) sent:
 * Content-Range, Range, Retry-After, Location and JSON error bodies. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size > 16384)
		return 0;
	char *s = malloc(size + 1);
	if (!s)
		return 0;
	memcpy(s, data, size);
	s[size] = '\0';

	uint64_t first, last, total;
	if (reg_parse_content_range(s, &first, &last, &total) == 0 && (first > last || last >= total))
		__builtin_trap();
	if (reg_parse_range(s, &first, &last) == 0 && first > last)
		__builtin_trap();
	int64_t ms = reg_retry_after_ms(s, (time_t)1795000000);
	(void)ms;
	char summary[256];
	reg_error_summary((const char *)data, size, summary, sizeof(summary));
	if (strnlen(summary, sizeof(summary)) == sizeof(summary))
		__builtin_trap();
	sl_error_t err = NULL;
	char *url = reg_resolve("http://127.0.0.1:5000/v2/spores/app/blobs/uploads/x?_state=y", s, &err);
	if (!url && !err)
		__builtin_trap();
	free(url);
	sl_error_free(&err);
	free(s);
	return 0;
}
