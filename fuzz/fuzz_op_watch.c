/* libFuzzer target: the operator's watch stream (bounded line buffer, fed in pieces, and event parsing). */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "sop_watch.h"

static int on_line(void *arg, const char *line, size_t len, sl_error_t *err)
{
	(void)arg;
	struct sop_watch_event ev;
	sl_error_t perr = NULL;
	if (!len || len > 4096 || memchr(line, '\n', len))
		__builtin_trap(); /* lines are non-empty, bounded and newline-free */
	if (sop_watch_event_parse(line, len, &ev, &perr) == 0) {
		if (!ev.object || (ev.type != SOP_EV_ERROR && !ev.resource_version))
			__builtin_trap();
		sop_watch_event_clear(&ev);
	} else if (!perr || strlen(sl_error_msg(perr)) > 1024) {
		__builtin_trap();
	}
	sl_error_free(&perr);
	(void)err;
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct sop_linebuf lb;
	sl_error_t err = NULL;
	sop_linebuf_init(&lb, 4096);
	/* The first byte picks the piece size, as curl hands over arbitrary chunks. */
	size_t step = size ? (size_t)data[0] % 61 + 1 : 1;
	const char *p = (const char *)data + (size ? 1 : 0);
	size_t n = size ? size - 1 : 0;
	for (size_t off = 0; off < n; off += step) {
		size_t k = n - off < step ? n - off : step;
		if (sop_linebuf_feed(&lb, p + off, k, on_line, NULL, &err) < 0) {
			if (!err)
				__builtin_trap();
			sl_error_free(&err);
			break;
		}
		if (sop_linebuf_pending(&lb) > 4096)
			__builtin_trap();
	}
	sop_linebuf_free(&lb);
	return 0;
}
