/* Exponential backoff with jitter (xorshift64*, seeded per user so instances do not retry in step). */
#include "sop_backoff.h"

void sop_backoff_init(struct sop_backoff *b, uint32_t base_ms, uint32_t max_ms, uint64_t seed)
{
	b->base_ms = base_ms ? base_ms : 1;
	b->max_ms = max_ms < b->base_ms ? b->base_ms : max_ms;
	b->attempt = 0;
	b->rng = seed ? seed : 0x9e3779b97f4a7c15ull;
}

uint32_t sop_backoff_ceiling(const struct sop_backoff *b)
{
	uint64_t c = b->base_ms;
	for (uint32_t i = 0; i < b->attempt && c < b->max_ms; i++)
		c <<= 1;
	return c > b->max_ms ? b->max_ms : (uint32_t)c;
}

static uint64_t xorshift(uint64_t *s)
{
	uint64_t x = *s;
	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	*s = x;
	return x * 0x2545f4914f6cdd1dull;
}

uint32_t sop_backoff_next(struct sop_backoff *b)
{
	uint32_t c = sop_backoff_ceiling(b);
	uint32_t half = c / 2;
	uint32_t d = half + (uint32_t)(xorshift(&b->rng) % ((uint64_t)(c - half) + 1));
	if (b->attempt < 64)
		b->attempt++;
	return d;
}

void sop_backoff_reset(struct sop_backoff *b)
{
	b->attempt = 0;
}
