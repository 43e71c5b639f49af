/* Blobs described as segment lists (memory, file ranges, zeros): hashing and random reads. */
#include <stdlib.h>
#include <string.h>

#include "oci/image.h"
#include "sl/file.h"

#define SEGS_BLOCK (1u << 20)

/* Zero runs are fed from here so no zero buffer is allocated per call. */
static const uint8_t segs_zeros[64 << 10];

static int seg_pread(const struct oci_seg *s, uint64_t off, void *buf, size_t len, sl_error_t *err)
{
	if (s->off > (uint64_t)INT64_MAX - off)
		return sl_error_set(err, SL_E_INVALID, "segment offset out of range");
	if (sl_pread_all(s->fd, buf, len, (off_t)(s->off + off), err) < 0)
		/* A file that shrank since planning: its bytes are not the
		 * ones the digest was computed over. */
		return sl_error_wrap(err, "segment fd %d", s->fd);
	return 0;
}

int oci_segs_digest(const struct oci_seg *segs, size_t n, sl_digest *out, uint64_t *size, sl_error_t *err)
{
	_cleanup_free_ uint8_t *buf = NULL;
	sl_sha256_ctx *c = sl_sha256_new();
	uint64_t total = 0;

	if (!c)
		return sl_error_set(err, SL_E_NOMEM, "hashing segments: out of memory");
	for (size_t i = 0; i < n; i++) {
		const struct oci_seg *s = &segs[i];

		if (s->mem) {
			sl_sha256_update(c, s->mem, s->len);
		} else if (s->fd >= 0) {
			if (!buf && !(buf = malloc(SEGS_BLOCK))) {
				sl_sha256_final(c, out);
				return sl_error_set(err, SL_E_NOMEM, "hashing segments: out of memory");
			}
			for (uint64_t done = 0; done < s->len;) {
				size_t k = s->len - done < SEGS_BLOCK ? (size_t)(s->len - done) : SEGS_BLOCK;

				if (seg_pread(s, done, buf, k, err) < 0) {
					sl_sha256_final(c, out);
					return -1;
				}
				sl_sha256_update(c, buf, k);
				done += k;
			}
		} else {
			for (uint64_t done = 0; done < s->len;) {
				size_t k = s->len - done < sizeof(segs_zeros) ? (size_t)(s->len - done)
									       : sizeof(segs_zeros);
				sl_sha256_update(c, segs_zeros, k);
				done += k;
			}
		}
		total += s->len;
	}
	sl_sha256_final(c, out);
	if (size)
		*size = total;
	return 0;
}

int oci_segs_read(const struct oci_seg *segs, size_t n, uint64_t off, void *buf, size_t len, sl_error_t *err)
{
	uint8_t *p = buf;
	uint64_t base = 0;

	for (size_t i = 0; i < n && len > 0; i++) {
		const struct oci_seg *s = &segs[i];
		uint64_t in, k;

		if (off >= base + s->len) {
			base += s->len;
			continue;
		}
		in = off - base;
		k = s->len - in < len ? s->len - in : len;
		if (s->mem)
			memcpy(p, (const uint8_t *)s->mem + in, (size_t)k);
		else if (s->fd >= 0) {
			if (seg_pread(s, in, p, (size_t)k, err) < 0)
				return -1;
		} else
			memset(p, 0, (size_t)k);
		p += k;
		off += k;
		len -= (size_t)k;
		base += s->len;
	}
	if (len > 0)
		return sl_error_set(err, SL_E_INVALID, "read of %zu bytes at %llu: past the end of the blob", len,
				    (unsigned long long)off);
	return 0;
}
