/* libFuzzer target: sf_parse (both kinds), sf_get on every tag, and the
 * writer round trip of whatever parses. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "state_file.h"

static const uint32_t all_tags[] = {
	SF_REGS, SF_SREGS, SF_XSAVE, SF_XCRS, SF_LAPIC, SF_MSRS, SF_MP_STATE, SF_EVENTS,
	SF_DEBUGREGS, SF_TSC_KHZ, SF_PIC_MASTER, SF_PIC_SLAVE, SF_IOAPIC, SF_PIT2, SF_CLOCK,
	SF_CPUID, SF_SERIAL, SF_SPORE_DEV, 0, 11, 31, 38, 47, 50, UINT32_MAX,
};

static void check_err(int r, sl_error_t *err)
{
	if ((r == 0) != (*err == NULL))
		__builtin_trap();
	if (r < 0 && (!sl_error_msg(*err) || !sl_error_msg(*err)[0]))
		__builtin_trap();
	sl_error_free(err);
}

static void one_kind(const uint8_t *buf, size_t size, uint16_t kind)
{
	struct sf_file f;
	sl_error_t err = NULL;
	int r = sf_parse(buf, size, kind, "fuzz.state", &f, &err);

	if (r < 0) {
		int c = err ? err->code : -1;
		if (c != SL_E_INVALID && c != SL_E_UNSUPPORTED && c != SL_E_LIMIT)
			__builtin_trap();
		check_err(r, &err);
		return;
	}
	check_err(r, &err);
	if (f.kind != kind || f.nsec > SF_MAX_SECTIONS || size > SF_MAX_SIZE)
		__builtin_trap();

	/* Sections lie inside the buffer, in order, 8-byte aligned, with
	 * distinct tags; touching every byte lets ASan check the bounds. */
	const uint8_t *prev_end = buf + 16;
	volatile uint8_t sink = 0;
	for (uint32_t i = 0; i < f.nsec; i++) {
		const struct sf_section *s = &f.sec[i];
		if (s->data < prev_end + 16 || s->len > size || s->data + s->len > buf + size ||
		    (size_t)(s->data - buf) % 8)
			__builtin_trap();
		for (uint64_t k = 0; k < s->len; k++)
			sink ^= s->data[k];
		for (uint32_t j = 0; j < i; j++)
			if (f.sec[j].tag == s->tag)
				__builtin_trap();
		prev_end = s->data + s->len;
	}
	(void)sink;

	for (size_t t = 0; t < sizeof(all_tags) / sizeof(all_tags[0]); t++) {
		const struct sf_section *s = NULL;
		r = sf_get(&f, all_tags[t], 0, "fuzz.state", &s, &err);
		if (r == 0 && (!s || s->tag != all_tags[t]))
			__builtin_trap();
		check_err(r, &err);
		if (r == 0) {
			/* exact-size lookups: its own size matches, another does not */
			const struct sf_section *s2 = NULL;
			if (s->len) {
				r = sf_get(&f, all_tags[t], (size_t)s->len, "fuzz.state", &s2, &err);
				if (r != 0 || s2 != s)
					__builtin_trap();
				check_err(r, &err);
			}
			r = sf_get(&f, all_tags[t], (size_t)s->len + 1, "fuzz.state", &s2, &err);
			if (r == 0)
				__builtin_trap();
			check_err(r, &err);
		}
	}

	/* Re-encoding what was parsed gives a file that parses to the same sections. */
	struct sf_writer w;
	size_t len = 0;
	sf_writer_init(&w, kind);
	for (uint32_t i = 0; i < f.nsec; i++)
		sf_add(&w, f.sec[i].tag, f.sec[i].data, f.sec[i].len);
	uint8_t *out = sf_finish(&w, &len, &err);
	if (!out) /* it fit before, so it fits now (padding is the same) */
		__builtin_trap();
	struct sf_file g;
	if (len != size || sf_parse(out, len, kind, "re-encoded", &g, &err) < 0 || g.nsec != f.nsec)
		__builtin_trap();
	for (uint32_t i = 0; i < f.nsec; i++)
		if (g.sec[i].tag != f.sec[i].tag || g.sec[i].len != f.sec[i].len ||
		    memcmp(g.sec[i].data, f.sec[i].data, f.sec[i].len) != 0)
			__builtin_trap();
	free(out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	/* A copy with the allocator's alignment, as a file read gives. */
	uint8_t *buf = malloc(size ? size : 1);
	if (!buf)
		return 0;
	memcpy(buf, data, size);
	one_kind(buf, size, SF_KIND_VCPU);
	one_kind(buf, size, SF_KIND_VM);
	free(buf);
	return 0;
}
