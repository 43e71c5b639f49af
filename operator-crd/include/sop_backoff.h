/* Exponential backoff with full jitter, for watch restarts and requeues. */
#ifndef SOP_BACKOFF_H
#define SOP_BACKOFF_H

#include <stdint.h>

struct sop_backoff {
	uint32_t base_ms, max_ms; /* first ceiling and the cap */
	uint32_t attempt;         /* failures since the last success */
	uint64_t rng;             /* xorshift state; never 0 */
};

void sop_backoff_init(struct sop_backoff *b, uint32_t base_ms, uint32_t max_ms, uint64_t seed);
/* The ceiling for the current attempt: min(max, base * 2^attempt). */
uint32_t sop_backoff_ceiling(const struct sop_backoff *b);
/* The next delay: ceiling/2 plus a uniform jitter in [0, ceiling/2], so
 * retries of many clients spread out but never come back at once; counts
 * one failure. */
uint32_t sop_backoff_next(struct sop_backoff *b);
void sop_backoff_reset(struct sop_backoff *b);

#endif
