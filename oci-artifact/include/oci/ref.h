/* Image references: "[registry/]repository[:tag][@sha256:hex]", parsed strictly. */
#ifndef OCI_REF_H
#define OCI_REF_H

#include <stdbool.h>
#include <stddef.h>
#include "sl/digest.h"
#include "sl/error.h"

#define OCI_DEFAULT_REGISTRY "docker.io"
/* docker.io's API lives on another host. */
#define OCI_DOCKER_HUB_API_HOST "registry-1.docker.io"

struct oci_ref {
	char registry[256];   /* host[:port]: "localhost:5000", "ghcr.io", "docker.io" */
	char repository[256]; /* "spores/app"; docker.io single names get "library/" */
	char tag[129];        /* "" if none */
	bool has_digest;
	sl_digest digest;
};

/* Rules (docs/oci-registry.md): the first path component is a registry if it
 * contains '.' or ':' or is "localhost"; otherwise the registry is docker.io.
 * Repository components follow the distribution-spec grammar (lowercase
 * [a-z0-9] separated by '.', '_', '__' or '-'+), host + '/' + repository at most
 * 255 bytes; tags [A-Za-z0-9_][A-Za-z0-9._-]{0,127}; digest "sha256:<64 hex>".
 * SL_E_INVALID naming the offending part otherwise. */
int oci_ref_parse(const char *s, struct oci_ref *ref, sl_error_t *err);

/* "registry/repository[:tag][@digest]". Returns the length, or -1 if it does
 * not fit in cap. */
int oci_ref_format(const struct oci_ref *ref, char *out, size_t cap);

/* Room for what oci_ref_reference writes: a tag (up to 128 bytes) or a
 * digest (71), plus the NUL. SL_DIGEST_STRLEN is too small for long tags. */
#define OCI_REF_REFERENCE_MAX 129

/* What goes in /v2/<name>/manifests/<reference>: the digest if set, else
 * the tag, else "latest". out needs OCI_REF_REFERENCE_MAX bytes. */
void oci_ref_reference(const struct oci_ref *ref, char out[OCI_REF_REFERENCE_MAX]);

/* The host to talk HTTP to for a registry name (docker.io -> registry-1.docker.io). */
const char *oci_registry_api_host(const char *registry);

/* localhost, 127.0.0.0/8 or [::1], with or without a port: plain HTTP is
 * allowed for these without --insecure-registry. */
bool oci_registry_is_loopback(const char *registry);

#endif
