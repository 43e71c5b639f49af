/* libFuzzer target: WWW-Authenticate parsing (plus config.json and token replies when the input looks like JSON). */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "oci/auth.h"

static void check_challenge(const char *s)
{
	sl_error_t err = NULL;
	struct oci_challenge ch;

	if (oci_challenge_parse(s, &ch, &err) < 0) {
		if (!err || (err->code != SL_E_INVALID && err->code != SL_E_UNSUPPORTED) ||
		    strlen(sl_error_msg(err)) > 512)
			__builtin_trap();
		sl_error_free(&err);
		return;
	}
	if (err || (ch.scheme != OCI_AUTH_BASIC && ch.scheme != OCI_AUTH_BEARER) ||
	    !memchr(ch.realm, '\0', sizeof(ch.realm)) || !memchr(ch.service, '\0', sizeof(ch.service)) ||
	    !memchr(ch.scope, '\0', sizeof(ch.scope)))
		__builtin_trap();
	if (ch.scheme == OCI_AUTH_BEARER && strncasecmp(ch.realm, "http://", 7) != 0 &&
	    strncasecmp(ch.realm, "https://", 8) != 0)
		__builtin_trap();
}

/* A challenge never starts with '{' (not a token character), so JSON-looking
 * inputs are spent on the other two parsers of registry-supplied text. */
static void check_json(const uint8_t *data, size_t size)
{
	sl_error_t err = NULL;
	struct oci_creds c;
	char tok[256];
	long ttl = 0;

	if (oci_creds_from_config((const char *)data, size, "localhost:5000", &c, &err) == 0) {
		if (err || (c.present && (!memchr(c.username, '\0', sizeof(c.username)) || !c.username[0] ||
					  !memchr(c.password, '\0', sizeof(c.password)))))
			__builtin_trap();
	} else if (!err || err->code != SL_E_INVALID) {
		__builtin_trap();
	}
	sl_error_free(&err);
	if (oci_token_parse((const char *)data, size, tok, sizeof(tok), &ttl, &err) == 0) {
		if (err || !tok[0] || !memchr(tok, '\0', sizeof(tok)) || ttl < 60 || ttl > 86400)
			__builtin_trap();
	} else if (!err || err->code != SL_E_INVALID) {
		__builtin_trap();
	}
	sl_error_free(&err);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *s = malloc(size + 1);

	if (!s)
		return 0;
	memcpy(s, data, size);
	s[size] = '\0';
	check_challenge(s);
	if (size && data[0] == '{')
		check_json(data, size);
	free(s);
	return 0;
}
