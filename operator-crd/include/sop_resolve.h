/* Resolving spec.spore tags to manifest digests through the OCI registry client, with a time-bounded cache. */
#ifndef SOP_RESOLVE_H
#define SOP_RESOLVE_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include "sl/digest.h"
#include "sl/error.h"

struct sop_resolver {
	pthread_mutex_t lock;
	bool insecure;        /* plain HTTP to non-loopback registries */
	const char *ca_file;  /* extra CA bundle, or NULL */
	uint32_t ttl_ms;      /* a resolved tag is looked up again after this */
	struct sop_resolved *entries;
	size_t n, cap;
	uint64_t lookups, failures;
};

void sop_resolver_init(struct sop_resolver *r, bool insecure, const char *ca_file, uint32_t ttl_ms);
void sop_resolver_destroy(struct sop_resolver *r);
/* The digest of spore (a tag reference) as "sha256:<hex>": from the cache
 * while fresh, else HEAD (and GET when HEAD names no digest) of the manifest. */
int sop_resolve(struct sop_resolver *r, const char *spore, char out[SL_DIGEST_STRLEN], sl_error_t *err);

#endif
