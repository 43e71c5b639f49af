/* Guest RAM for fuzz targets: ends at a guard page, and tells which bytes were written. */
#ifndef FUZZ_RAM_H
#define FUZZ_RAM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

/* One mapping of `cap` bytes followed by a PROT_NONE guard page. A run's RAM
 * of `size` bytes is its last `size` bytes, so RAM ends exactly at the guard:
 * a write past the end faults at once. Every run starts from untouched
 * (non-resident) pages; afterwards mincore() names the pages that were
 * written, and only those are scanned. The code under test never reads
 * guest RAM it did not write, so a resident page means a write. Bytes
 * written as zero inside a page that also holds allowed data are the only
 * writes this cannot see. */
struct fuzz_ram {
	uint8_t *region; /* cap bytes */
	size_t cap;
	uint8_t *mem; /* region + cap - size: guest physical 0 */
	uint64_t size;
	unsigned char *vec; /* mincore output, one byte per page */
};

/* An allowed write range, guest physical [gpa, gpa + len). */
struct fuzz_range {
	uint64_t gpa, len;
};

#define FUZZ_PAGE 4096u

static inline void fuzz_ram_init(struct fuzz_ram *r, size_t cap)
{
	r->cap = cap;
	uint8_t *p = mmap(NULL, cap + FUZZ_PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
			  -1, 0);
	if (p == MAP_FAILED)
		abort();
	if (mprotect(p + cap, FUZZ_PAGE, PROT_NONE) < 0)
		abort();
	/* 4 KiB residency, so a write marks one page and not 512. */
	madvise(p, cap, MADV_NOHUGEPAGE);
	r->region = p;
	r->vec = malloc(cap / FUZZ_PAGE);
	if (!r->vec)
		abort();
}

/* Fresh zero RAM of `size` bytes (a multiple of the page size, <= cap). */
static inline void fuzz_ram_reset(struct fuzz_ram *r, uint64_t size)
{
	if (size > r->cap || size % FUZZ_PAGE)
		abort();
	if (madvise(r->region, r->cap, MADV_DONTNEED) < 0)
		abort();
	r->size = size;
	r->mem = r->region + r->cap - size;
}

/* Traps unless every non-zero byte of the region lies in guest RAM where
 * ok(ctx, gpa, len) allows it: asked for a whole page first (len 4096),
 * then, if not, for each non-zero byte (len 1). Returns the number of
 * written pages. */
static inline size_t fuzz_ram_check_fn(const struct fuzz_ram *r, bool (*ok)(void *ctx, uint64_t gpa, uint64_t len),
				       void *ctx)
{
	if (mincore(r->region, r->cap, r->vec) < 0)
		abort();
	size_t written = 0;
	for (size_t pg = 0; pg < r->cap / FUZZ_PAGE; pg++) {
		if (!(r->vec[pg] & 1))
			continue;
		written++;
		const uint8_t *p = r->region + pg * FUZZ_PAGE;
		if (p < r->mem) {
			/* Below guest physical 0: nothing may be there. */
			for (size_t i = 0; i < FUZZ_PAGE; i++)
				if (p[i])
					__builtin_trap();
			continue;
		}
		uint64_t gpa = (uint64_t)(p - r->mem);
		if (ok(ctx, gpa, FUZZ_PAGE))
			continue;
		for (size_t i = 0; i < FUZZ_PAGE; i++)
			if (p[i] && !ok(ctx, gpa + i, 1))
				__builtin_trap();
	}
	return written;
}

struct fuzz_ranges {
	const struct fuzz_range *a;
	unsigned n;
};

/* [gpa, gpa + len) inside one of the ranges. */
static inline bool fuzz_ranges_ok(void *ctx, uint64_t gpa, uint64_t len)
{
	const struct fuzz_ranges *rs = ctx;
	for (unsigned i = 0; i < rs->n; i++)
		if (gpa >= rs->a[i].gpa && gpa - rs->a[i].gpa < rs->a[i].len && len <= rs->a[i].len - (gpa - rs->a[i].gpa))
			return true;
	return false;
}

/* fuzz_ram_check_fn with a list of allowed ranges. */
static inline size_t fuzz_ram_check(const struct fuzz_ram *r, const struct fuzz_range *allowed, unsigned n)
{
	struct fuzz_ranges rs = {allowed, n};
	return fuzz_ram_check_fn(r, fuzz_ranges_ok, &rs);
}

#endif
