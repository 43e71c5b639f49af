/* Tag to digest resolution for spec.spore: the registry's manifest HEAD (GET as fallback), cached per reference. */
#include <stdlib.h>
#include <string.h>

#include "oci/registry.h"
#include "sl/time.h"
#include "sop_resolve.h"

struct sop_resolved {
	char *spore;
	char digest[SL_DIGEST_STRLEN];
	int64_t at_ms;
};

void sop_resolver_init(struct sop_resolver *r, bool insecure, const char *ca_file, uint32_t ttl_ms)
{
	memset(r, 0, sizeof(*r));
	pthread_mutex_init(&r->lock, NULL);
	r->insecure = insecure;
	r->ca_file = ca_file;
	r->ttl_ms = ttl_ms;
}

void sop_resolver_destroy(struct sop_resolver *r)
{
	for (size_t i = 0; i < r->n; i++)
		free(r->entries[i].spore);
	free(r->entries);
	pthread_mutex_destroy(&r->lock);
}

static bool cached(struct sop_resolver *r, const char *spore, char out[SL_DIGEST_STRLEN])
{
	bool hit = false;
	int64_t now = sl_now_ms();
	pthread_mutex_lock(&r->lock);
	for (size_t i = 0; i < r->n; i++) {
		if (strcmp(r->entries[i].spore, spore) == 0 && now - r->entries[i].at_ms < r->ttl_ms) {
			memcpy(out, r->entries[i].digest, SL_DIGEST_STRLEN);
			hit = true;
			break;
		}
	}
	pthread_mutex_unlock(&r->lock);
	return hit;
}

static void remember(struct sop_resolver *r, const char *spore, const char *digest)
{
	pthread_mutex_lock(&r->lock);
	size_t i;
	for (i = 0; i < r->n && strcmp(r->entries[i].spore, spore) != 0; i++)
		;
	if (i == r->n) {
		if (r->n == r->cap) {
			size_t cap = r->cap ? r->cap * 2 : 8;
			struct sop_resolved *ne = realloc(r->entries, cap * sizeof(*ne));
			if (!ne) {
				pthread_mutex_unlock(&r->lock);
				return;
			}
			r->entries = ne;
			r->cap = cap;
		}
		if (!(r->entries[i].spore = strdup(spore))) {
			pthread_mutex_unlock(&r->lock);
			return;
		}
		r->n++;
	}
	memcpy(r->entries[i].digest, digest, SL_DIGEST_STRLEN);
	r->entries[i].at_ms = sl_now_ms();
	pthread_mutex_unlock(&r->lock);
}

static void client_freep(struct oci_client **c)
{
	if (*c)
		oci_client_free(*c);
}

int sop_resolve(struct sop_resolver *r, const char *spore, char out[SL_DIGEST_STRLEN], sl_error_t *err)
{
	if (cached(r, spore, out))
		return 0;
	struct oci_ref ref;
	if (oci_ref_parse(spore, &ref, err) < 0)
		return sl_error_wrap(err, "resolve %s", spore);
	pthread_mutex_lock(&r->lock);
	r->lookups++;
	pthread_mutex_unlock(&r->lock);
	struct oci_client_opts opts = { .insecure = r->insecure, .retries = 2, .ca_file = r->ca_file };
	__attribute__((cleanup(client_freep))) struct oci_client *c = NULL;
	char reference[OCI_REF_REFERENCE_MAX];
	oci_ref_reference(&ref, reference);
	bool exists = false;
	sl_digest d;
	int rc = oci_client_new(&ref, &opts, &c, err);
	if (rc == 0)
		rc = oci_manifest_head(c, reference, &exists, &d, err);
	if (rc == 0 && !exists)
		rc = sl_error_set(err, SL_E_NOT_FOUND, "registry %s: no manifest %s in %s", ref.registry, reference,
				  ref.repository);
	static const sl_digest zero;
	if (rc == 0 && sl_digest_equal(&d, &zero)) {
		/* The registry sent no Docker-Content-Digest: hash the manifest itself. */
		char *body = NULL, mt[128];
		size_t len;
		rc = oci_manifest_get(c, reference, &body, &len, mt, &d, err);
		free(body);
	}
	if (rc < 0) {
		pthread_mutex_lock(&r->lock);
		r->failures++;
		pthread_mutex_unlock(&r->lock);
		return sl_error_wrap(err, "resolve %s", spore);
	}
	sl_digest_format(&d, out);
	remember(r, spore, out);
	return 0;
}
