/* libFuzzer target: oci_ref_parse on arbitrary strings; accepted references must format and re-parse identically. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "oci/ref.h"

static bool same(const struct oci_ref *a, const struct oci_ref *b)
{
	return strcmp(a->registry, b->registry) == 0 && strcmp(a->repository, b->repository) == 0 &&
	       strcmp(a->tag, b->tag) == 0 && a->has_digest == b->has_digest &&
	       (!a->has_digest || sl_digest_equal(&a->digest, &b->digest));
}

static void check(const char *s)
{
	sl_error_t err = NULL;
	struct oci_ref r, r2;
	char out[600], again[600], reference[OCI_REF_REFERENCE_MAX];
	int n;

	if (oci_ref_parse(s, &r, &err) < 0) {
		/* Failures explain themselves without echoing unbounded input. */
		if (!err || err->code != SL_E_INVALID || strlen(sl_error_msg(err)) > 512)
			__builtin_trap();
		sl_error_free(&err);
		return;
	}
	if (err || !memchr(r.registry, '\0', sizeof(r.registry)) || !memchr(r.repository, '\0', sizeof(r.repository)) ||
	    !memchr(r.tag, '\0', sizeof(r.tag)) || strlen(r.registry) + 1 + strlen(r.repository) > 255 ||
	    !r.registry[0] || !r.repository[0])
		__builtin_trap();

	n = oci_ref_format(&r, out, sizeof(out));
	if (n < 0 || (size_t)n != strlen(out))
		__builtin_trap();
	if (oci_ref_parse(out, &r2, &err) < 0 || !same(&r, &r2))
		__builtin_trap();
	/* The formatted form is canonical: a fixed point. */
	if (oci_ref_format(&r2, again, sizeof(again)) != n || strcmp(out, again) != 0)
		__builtin_trap();

	oci_ref_reference(&r, reference);
	if (!memchr(reference, '\0', sizeof(reference)) || !reference[0])
		__builtin_trap();
	if (!oci_registry_api_host(r.registry))
		__builtin_trap();
	(void)oci_registry_is_loopback(r.registry);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *s = malloc(size + 1);

	if (!s)
		return 0;
	memcpy(s, data, size);
	s[size] = '\0';
	check(s);
	/* The loopback rule also sees raw strings (e.g. --insecure-registry). */
	(void)oci_registry_is_loopback(s);
	free(s);
	return 0;
}
