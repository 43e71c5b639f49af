/* Registry authentication inputs: WWW-Authenticate challenges, docker
 * config.json credentials, token endpoint responses. */
#ifndef OCI_AUTH_H
#define OCI_AUTH_H

#include <stdbool.h>
#include <stddef.h>
#include "sl/error.h"

enum oci_auth_scheme { OCI_AUTH_NONE = 0, OCI_AUTH_BASIC, OCI_AUTH_BEARER };

/* One challenge of a WWW-Authenticate header (RFC 7235 auth-params; quoted
 * strings with backslash escapes; parameter names case-insensitive). */
struct oci_challenge {
	enum oci_auth_scheme scheme;
	char realm[1024];
	char service[256];
	char scope[1024]; /* as given; may be empty */
};

/* Parses a WWW-Authenticate header value (untrusted). Basic or Bearer; a
 * Bearer challenge must have a realm that is an http(s) URL. */
int oci_challenge_parse(const char *value, struct oci_challenge *ch, sl_error_t *err);

struct oci_creds {
	bool present;
	char username[256];
	char password[1024];
};

/* Credentials for registry from the text of a docker-style config.json:
 * "auths" -> key equal to registry (or "https://registry", or for docker.io
 * "https://index.docker.io/v1/") -> "auth" (base64 "user:password") or
 * "username" + "password". No entry: present = false, return 0. Malformed
 * JSON or base64: SL_E_INVALID. credHelpers/credsStore are not supported
 * (documented). */
int oci_creds_from_config(const char *json, size_t len, const char *registry, struct oci_creds *out,
			  sl_error_t *err);

/* $DOCKER_CONFIG/config.json, else $HOME/.docker/config.json; a missing
 * file means no credentials. */
int oci_creds_load(const char *registry, struct oci_creds *out, sl_error_t *err);

/* A token endpoint's JSON reply: "token" or "access_token" (first non-empty),
 * "expires_in" seconds (absent or < 60 -> 60; > 86400 -> 86400, so adding it
 * to a time cannot overflow). Token at most cap-1 bytes. */
int oci_token_parse(const char *json, size_t len, char *token, size_t cap, long *expires_in, sl_error_t *err);

/* base64 (RFC 4648, with padding) for Basic auth. Returns length or -1. */
int oci_base64_encode(const void *in, size_t len, char *out, size_t cap);
/* Strict RFC 4648 decoding: standard alphabet, padded to a multiple of 4, no
 * whitespace, zero pad bits (one encoding per byte string); n > 0 and at
 * most cap bytes out. */
bool oci_base64_decode(const char *in, size_t n, unsigned char *out, size_t cap, size_t *outlen);

#endif
