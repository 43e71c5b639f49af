/* Encoder and strict parser of the tag-length-value state file container. */
#include <stdlib.h>
#include <string.h>

#include "state_file.h"

struct sf_header {
	uint32_t magic;
	uint16_t version;
	uint16_t kind;
	uint32_t nsec;
	uint32_t reserved;
};

struct sf_sec_header {
	uint32_t tag;
	uint32_t reserved;
	uint64_t len;
};

static void put(struct sf_writer *w, const void *data, size_t len)
{
	if (w->failed)
		return;
	if (w->len + len > w->cap) {
		size_t cap = w->cap ? w->cap : 4096;
		while (cap < w->len + len)
			cap *= 2;
		uint8_t *nb = realloc(w->buf, cap);
		if (!nb) {
			w->failed = 1;
			return;
		}
		w->buf = nb;
		w->cap = cap;
	}
	if (data)
		memcpy(w->buf + w->len, data, len);
	else
		memset(w->buf + w->len, 0, len);
	w->len += len;
}

void sf_writer_init(struct sf_writer *w, uint16_t kind)
{
	memset(w, 0, sizeof(*w));
	struct sf_header h = {.magic = SF_MAGIC, .version = SF_VERSION, .kind = kind};
	put(w, &h, sizeof(h));
}

void sf_add(struct sf_writer *w, uint32_t tag, const void *data, size_t len)
{
	struct sf_sec_header sh = {.tag = tag, .len = len};
	put(w, &sh, sizeof(sh));
	put(w, data, len);
	put(w, NULL, (8 - len % 8) % 8); /* keep every section 8-byte aligned */
	w->nsec++;
}

uint8_t *sf_finish(struct sf_writer *w, size_t *len, sl_error_t *err)
{
	if (w->failed || w->len > SF_MAX_SIZE || w->nsec > SF_MAX_SECTIONS) {
		free(w->buf);
		w->buf = NULL;
		sl_error_set(err, w->failed ? SL_E_NOMEM : SL_E_LIMIT, "state file too large");
		return NULL;
	}
	((struct sf_header *)w->buf)->nsec = w->nsec;
	*len = w->len;
	uint8_t *b = w->buf;
	w->buf = NULL;
	return b;
}

static int known_tag(uint16_t kind, uint32_t tag)
{
	if (kind == SF_KIND_VCPU)
		return tag >= SF_REGS && tag <= SF_TSC_KHZ;
	return (tag >= SF_PIC_MASTER && tag <= SF_CPUID) || (tag >= SF_SERIAL && tag <= SF_PLATFORM) ||
	       (tag >= SF_VIRTIO_FIRST && tag <= SF_VIRTIO_LAST);
}

int sf_parse(const uint8_t *buf, size_t len, uint16_t kind, const char *what, struct sf_file *out,
	     sl_error_t *err)
{
	struct sf_header h;
	if (len < sizeof(h))
		return sl_error_set(err, SL_E_INVALID, "%s: truncated header (%zu bytes)", what, len);
	if (len > SF_MAX_SIZE)
		return sl_error_set(err, SL_E_LIMIT, "%s: %zu bytes, the limit is %u", what, len,
				    SF_MAX_SIZE);
	memcpy(&h, buf, sizeof(h));
	if (h.magic != SF_MAGIC)
		return sl_error_set(err, SL_E_INVALID, "%s: not a spore state file (bad magic)", what);
	if (h.version != SF_VERSION)
		return sl_error_set(err, SL_E_UNSUPPORTED, "%s: unknown state file version %u", what,
				    h.version);
	if (h.kind != kind || h.reserved != 0)
		return sl_error_set(err, SL_E_INVALID, "%s: wrong kind %u (want %u)", what, h.kind, kind);
	if (h.nsec > SF_MAX_SECTIONS)
		return sl_error_set(err, SL_E_LIMIT, "%s: %u sections, the limit is %u", what, h.nsec,
				    SF_MAX_SECTIONS);
	size_t off = sizeof(h);
	out->kind = h.kind;
	out->nsec = 0;
	for (uint32_t i = 0; i < h.nsec; i++) {
		struct sf_sec_header sh;
		if (len - off < sizeof(sh))
			return sl_error_set(err, SL_E_INVALID, "%s: section %u header truncated", what, i);
		memcpy(&sh, buf + off, sizeof(sh));
		off += sizeof(sh);
		uint64_t padded = sh.len + (8 - sh.len % 8) % 8;
		if (sh.len > len - off || padded > len - off || sh.reserved != 0)
			return sl_error_set(err, SL_E_INVALID, "%s: section %u (tag %u) out of bounds",
					    what, i, sh.tag);
		if (!known_tag(kind, sh.tag))
			return sl_error_set(err, SL_E_UNSUPPORTED, "%s: unknown section tag %u", what,
					    sh.tag);
		for (uint32_t j = 0; j < out->nsec; j++)
			if (out->sec[j].tag == sh.tag)
				return sl_error_set(err, SL_E_INVALID, "%s: duplicate section tag %u",
						    what, sh.tag);
		out->sec[out->nsec++] = (struct sf_section){sh.tag, buf + off, sh.len};
		off += padded;
	}
	if (off != len)
		return sl_error_set(err, SL_E_INVALID, "%s: %zu trailing bytes", what, len - off);
	return 0;
}

int sf_get(const struct sf_file *f, uint32_t tag, size_t len, const char *what,
	   const struct sf_section **out, sl_error_t *err)
{
	for (uint32_t i = 0; i < f->nsec; i++) {
		if (f->sec[i].tag != tag)
			continue;
		if (len && f->sec[i].len != len)
			return sl_error_set(err, SL_E_INVALID, "%s: section %u is %llu bytes, want %zu",
					    what, tag, (unsigned long long)f->sec[i].len, len);
		*out = &f->sec[i];
		return 0;
	}
	return sl_error_set(err, SL_E_INVALID, "%s: section %u missing", what, tag);
}
