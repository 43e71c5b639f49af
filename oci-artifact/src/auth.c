/* Registry auth inputs: WWW-Authenticate (RFC 7235), docker config.json credentials, token replies, base64. */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "oci/auth.h"
#include "sl/file.h"
#include "sl/json.h"

#define CONFIG_MAX (1u << 20) /* a config.json is a few KiB; refuse absurd ones */
#define HUB_LEGACY_KEY "https://index.docker.io/v1/"
#define TOKEN_TTL_MIN 60
/* Upper bound so callers can add expires_in to a time without overflow;
 * a token that stops working earlier is replaced on the next 401 anyway. */
#define TOKEN_TTL_MAX 86400

/* ---------- shared helpers ---------- */

/* ---------- WWW-Authenticate ---------- */

/* A parameter value as it appears in the header, decoded only if chosen. */
struct span {
	const char *p;
	size_t n;
	bool quoted;
	bool set;
};

struct chal_view {
	const char *scheme;
	size_t scheme_n;
	struct span realm, service, scope;
	const char *dup; /* a known parameter given twice, or NULL */
};

static bool is_tchar(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
	       (c && strchr("!#$%&'*+-.^_`|~", c));
}

static bool is_token68_char(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
	       (c && strchr("-._~+/", c));
}

static bool is_ws(char c)
{
	return c == ' ' || c == '\t';
}

static const char *skip_ws(const char *p)
{
	while (is_ws(*p))
		p++;
	return p;
}

/* RFC 7230 lists allow empty elements: ", ,Basic" is one challenge. */
static const char *skip_ws_commas(const char *p)
{
	while (is_ws(*p) || *p == ',')
		p++;
	return p;
}

static const char *skip_token(const char *p)
{
	while (is_tchar((unsigned char)*p))
		p++;
	return p;
}

static int ch_fail(sl_error_t *err, int code, const char *value, const char *why)
{
	char shown[SL_SHOW_BUF];

	sl_show(value, (size_t)-1, shown);
	return sl_error_set(err, code, "WWW-Authenticate \"%s\": %s", shown, why);
}

/* quoted-string = DQUOTE *( qdtext / quoted-pair ) DQUOTE; p is at the
 * opening quote. Returns the position after the closing one, or NULL. */
static const char *skip_quoted(const char *p)
{
	for (p++;; p++) {
		unsigned char c = (unsigned char)*p;

		if (c == '"')
			return p + 1;
		if (c == '\\') {
			c = (unsigned char)*++p;
			if (c != '\t' && (c < 0x20 || c == 0x7f))
				return NULL;
			continue;
		}
		if (c != '\t' && (c < 0x20 || c == 0x7f))
			return NULL; /* also the end of the string: unterminated */
	}
}

static void note_param(struct chal_view *v, const char *name, size_t name_n, struct span val)
{
	static const char *const names[] = {"realm", "service", "scope"};
	struct span *slots[] = {&v->realm, &v->service, &v->scope};

	for (size_t i = 0; i < 3; i++) {
		if (name_n != strlen(names[i]) || strncasecmp(name, names[i], name_n) != 0)
			continue;
		if (slots[i]->set && !v->dup)
			v->dup = names[i];
		*slots[i] = val;
		return;
	}
}

/* After "scheme 1*SP": either a token68 or a list of auth-params. Stops at
 * the end or at the ',' that precedes the next challenge. */
static int parse_params(const char **pp, struct chal_view *v, const char *value, sl_error_t *err)
{
	const char *p = *pp, *q;

	q = p;
	while (is_token68_char((unsigned char)*q))
		q++;
	if (q > p) {
		while (*q == '=')
			q++;
		q = skip_ws(q);
		if (*q == '\0' || *q == ',') {
			*pp = q;
			return 0; /* token68: nothing we use */
		}
	}

	for (;;) {
		const char *name = p, *name_end;
		struct span val = {.set = true};

		name_end = skip_token(p);
		if (name_end == name)
			return ch_fail(err, SL_E_INVALID, value, "expected an auth-param name");
		p = skip_ws(name_end);
		if (*p != '=')
			return ch_fail(err, SL_E_INVALID, value, "expected '=' after an auth-param name");
		p = skip_ws(p + 1);
		if (*p == '"') {
			q = skip_quoted(p);
			if (!q)
				return ch_fail(err, SL_E_INVALID, value,
					       "unterminated quoted string or control character in it");
			val.p = p + 1;
			val.n = (size_t)(q - p - 2);
			val.quoted = true;
		} else {
			q = skip_token(p);
			if (q == p)
				return ch_fail(err, SL_E_INVALID, value, "expected a token or quoted-string value");
			val.p = p;
			val.n = (size_t)(q - p);
		}
		note_param(v, name, (size_t)(name_end - name), val);
		p = skip_ws(q);
		if (*p == '\0')
			break;
		if (*p != ',')
			return ch_fail(err, SL_E_INVALID, value, "expected ',' between auth-params");
		/* "token =" after the comma is another param of this challenge;
		 * a token followed by anything else starts the next challenge. */
		q = skip_ws_commas(p);
		if (*q == '\0') {
			p = q;
			break;
		}
		name_end = skip_token(q);
		if (name_end > q && *skip_ws(name_end) == '=') {
			p = q;
			continue;
		}
		break;
	}
	*pp = p;
	return 0;
}

/* Copies a value into a field, undoing quoted-pair escapes. Only printable
 * ASCII is kept (the values end up in URLs and logs); the realm also may
 * not contain spaces. */
static int decode_value(const struct span *s, char *out, size_t cap, const char *name, bool no_space,
			const char *value, sl_error_t *err)
{
	size_t o = 0;
	char why[96];

	for (size_t i = 0; i < s->n; i++) {
		unsigned char c = (unsigned char)s->p[i];

		if (s->quoted && c == '\\')
			c = (unsigned char)s->p[++i];
		if (c < 0x20 || c >= 0x7f || (no_space && c == ' ')) {
			snprintf(why, sizeof(why), "%s contains a control, space or non-ASCII character", name);
			return ch_fail(err, SL_E_INVALID, value, why);
		}
		if (o + 1 >= cap) {
			snprintf(why, sizeof(why), "%s is longer than %zu bytes", name, cap - 1);
			return ch_fail(err, SL_E_INVALID, value, why);
		}
		out[o++] = (char)c;
	}
	out[o] = '\0';
	return 0;
}

static bool scheme_is(const struct chal_view *v, const char *name)
{
	return v->scheme_n == strlen(name) && strncasecmp(v->scheme, name, v->scheme_n) == 0;
}

int oci_challenge_parse(const char *value, struct oci_challenge *ch, sl_error_t *err)
{
	struct chal_view bearer = {0}, basic = {0}, other = {0}, *pick;
	struct oci_challenge out;
	char why[160];
	const char *p;

	memset(ch, 0, sizeof(*ch));
	memset(&out, 0, sizeof(out));
	if (!value)
		value = "";
	p = skip_ws_commas(value);
	if (*p == '\0')
		return ch_fail(err, SL_E_INVALID, value, "no challenge");

	while (*p) {
		struct chal_view v = {0};

		v.scheme = p;
		p = skip_token(p);
		v.scheme_n = (size_t)(p - v.scheme);
		if (v.scheme_n == 0)
			return ch_fail(err, SL_E_INVALID, value, "expected an authentication scheme");
		if (is_ws(*p)) {
			p = skip_ws(p);
			if (*p && *p != ',' && parse_params(&p, &v, value, err) < 0)
				return -1;
		} else if (*p && *p != ',') {
			return ch_fail(err, SL_E_INVALID, value, "unexpected character after the scheme");
		}
		if (scheme_is(&v, "Bearer")) {
			if (!bearer.scheme)
				bearer = v;
		} else if (scheme_is(&v, "Basic")) {
			if (!basic.scheme)
				basic = v;
		} else if (!other.scheme) {
			other = v;
		}
		p = skip_ws_commas(p);
	}

	pick = bearer.scheme ? &bearer : basic.scheme ? &basic : NULL;
	if (!pick) {
		char name[SL_SHOW_BUF], tmp[SL_SHOW_MAX + 1];
		size_t n = other.scheme_n < SL_SHOW_MAX ? other.scheme_n : SL_SHOW_MAX;

		memcpy(tmp, other.scheme, n);
		tmp[n] = '\0';
		sl_show(tmp, (size_t)-1, name);
		snprintf(why, sizeof(why), "unsupported authentication scheme \"%s\" (only Basic and Bearer)", name);
		return ch_fail(err, SL_E_UNSUPPORTED, value, why);
	}
	if (pick->dup) {
		snprintf(why, sizeof(why), "parameter %s given twice", pick->dup);
		return ch_fail(err, SL_E_INVALID, value, why);
	}
	out.scheme = pick == &bearer ? OCI_AUTH_BEARER : OCI_AUTH_BASIC;
	if (decode_value(&pick->realm, out.realm, sizeof(out.realm), "realm", out.scheme == OCI_AUTH_BEARER, value,
			 err) < 0 ||
	    decode_value(&pick->service, out.service, sizeof(out.service), "service", false, value, err) < 0 ||
	    decode_value(&pick->scope, out.scope, sizeof(out.scope), "scope", false, value, err) < 0)
		return -1;
	if (out.scheme == OCI_AUTH_BEARER) {
		size_t pre = strncasecmp(out.realm, "https://", 8) == 0 ? 8
			     : strncasecmp(out.realm, "http://", 7) == 0 ? 7
									  : 0;

		if (!pick->realm.set)
			return ch_fail(err, SL_E_INVALID, value, "Bearer challenge without a realm");
		if (pre == 0 || out.realm[pre] == '\0' || out.realm[pre] == '/')
			return ch_fail(err, SL_E_INVALID, value, "Bearer realm must be an http:// or https:// URL");
	}
	*ch = out;
	return 0;
}

/* ---------- base64 ---------- */

static const char b64_alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

int oci_base64_encode(const void *in, size_t len, char *out, size_t cap)
{
	const unsigned char *s = in;
	size_t need, o = 0;

	if (len > ((size_t)INT32_MAX / 4) * 3 - 3)
		return -1;
	need = (len + 2) / 3 * 4;
	if (!out || cap < need + 1)
		return -1;
	for (size_t i = 0; i < len; i += 3) {
		uint32_t v = (uint32_t)s[i] << 16;

		if (i + 1 < len)
			v |= (uint32_t)s[i + 1] << 8;
		if (i + 2 < len)
			v |= s[i + 2];
		out[o++] = b64_alphabet[(v >> 18) & 63];
		out[o++] = b64_alphabet[(v >> 12) & 63];
		out[o++] = i + 1 < len ? b64_alphabet[(v >> 6) & 63] : '=';
		out[o++] = i + 2 < len ? b64_alphabet[v & 63] : '=';
	}
	out[o] = '\0';
	return (int)o;
}

static int b64_value(unsigned char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '+')
		return 62;
	if (c == '/')
		return 63;
	return -1;
}

bool oci_base64_decode(const char *in, size_t n, unsigned char *out, size_t cap, size_t *outlen)
{
	size_t o = 0;

	if (n == 0 || n % 4 != 0 || n / 4 * 3 > cap)
		return false;
	for (size_t i = 0; i < n; i += 4) {
		int v[4];
		size_t pad = 0;
		bool last = i + 4 == n;

		for (size_t k = 0; k < 4; k++) {
			v[k] = b64_value((unsigned char)in[i + k]);
			if (v[k] < 0) {
				/* '=' only as the final one or two characters. */
				if (in[i + k] != '=' || !last || k < 2)
					return false;
				v[k] = 0;
				pad++;
			} else if (pad) {
				return false;
			}
		}
		uint32_t w = (uint32_t)v[0] << 18 | (uint32_t)v[1] << 12 | (uint32_t)v[2] << 6 | (uint32_t)v[3];

		if ((pad == 1 && (w & 0xff)) || (pad == 2 && (w & 0xffff)))
			return false;
		out[o++] = (unsigned char)(w >> 16);
		if (pad < 2)
			out[o++] = (unsigned char)(w >> 8);
		if (pad < 1)
			out[o++] = (unsigned char)w;
	}
	*outlen = o;
	return true;
}

/* ---------- config.json ---------- */

/* Never echo credential values: errors name only the registry key. */
static int creds_fail(sl_error_t *err, const char *key, const char *why)
{
	char shown[SL_SHOW_BUF];

	sl_show(key, (size_t)-1, shown);
	return sl_error_set(err, SL_E_INVALID, "config.json: auths \"%s\": %s", shown, why);
}

static bool has_nul_or_newline(const char *s, size_t n)
{
	return memchr(s, '\0', n) || memchr(s, '\n', n) || memchr(s, '\r', n);
}

static int creds_from_entry(json_t *entry, const char *key, struct oci_creds *out, sl_error_t *err)
{
	json_t *auth, *user, *pass;

	if (!json_is_object(entry))
		return creds_fail(err, key, "entry must be an object");
	auth = json_object_get(entry, "auth");
	if (auth && !json_is_string(auth))
		return creds_fail(err, key, "\"auth\" must be a string");
	if (auth && json_string_length(auth) > 0) {
		/* user (<= 255) ':' password (<= 1023) */
		unsigned char buf[(sizeof(out->username) + sizeof(out->password) + 2) / 3 * 3 + 3];
		const char *colon;
		size_t n = 0, un;
		bool ok;

		if (json_string_length(auth) > (sizeof(buf) / 3) * 4)
			return creds_fail(err, key, "\"auth\" is too long");
		ok = oci_base64_decode(json_string_value(auth), json_string_length(auth), buf, sizeof(buf), &n);
		colon = ok ? memchr(buf, ':', n) : NULL;
		if (!ok || !colon || has_nul_or_newline((const char *)buf, n)) {
			explicit_bzero(buf, sizeof(buf));
			return creds_fail(err, key,
					  "\"auth\" must be strict base64 of \"username:password\" (no NUL or newline)");
		}
		un = (size_t)(colon - (const char *)buf);
		if (un == 0 || un >= sizeof(out->username) || n - un - 1 >= sizeof(out->password)) {
			explicit_bzero(buf, sizeof(buf));
			return creds_fail(err, key, "\"auth\" has an empty or too long username, or a too long password");
		}
		memcpy(out->username, buf, un);
		out->username[un] = '\0';
		memcpy(out->password, colon + 1, n - un - 1);
		out->password[n - un - 1] = '\0';
		explicit_bzero(buf, sizeof(buf));
		out->present = true;
		return 0;
	}

	user = json_object_get(entry, "username");
	pass = json_object_get(entry, "password");
	if ((user && !json_is_string(user)) || (pass && !json_is_string(pass)))
		return creds_fail(err, key, "\"username\" and \"password\" must be strings");
	if (!user || !pass || json_string_length(user) == 0)
		return 0; /* e.g. {} left by a credsStore login: anonymous */
	if (json_string_length(user) >= sizeof(out->username) || json_string_length(pass) >= sizeof(out->password))
		return creds_fail(err, key, "\"username\" or \"password\" is too long");
	if (has_nul_or_newline(json_string_value(user), json_string_length(user)) ||
	    has_nul_or_newline(json_string_value(pass), json_string_length(pass)))
		return creds_fail(err, key, "\"username\" or \"password\" contains NUL or a newline");
	memcpy(out->username, json_string_value(user), json_string_length(user) + 1);
	memcpy(out->password, json_string_value(pass), json_string_length(pass) + 1);
	out->present = true;
	return 0;
}

int oci_creds_from_config(const char *json, size_t len, const char *registry, struct oci_creds *out,
			  sl_error_t *err)
{
	_cleanup_json_ json_t *root = NULL;
	_cleanup_free_ char *https_key = NULL;
	json_t *auths;
	const char *keys[3];
	size_t nkeys = 0;
	int r;

	memset(out, 0, sizeof(*out));
	if (!registry || !*registry)
		return sl_error_set(err, SL_E_INVALID, "config.json: no registry to look up");
	if (sl_json_parse(json, len, "config.json", &root, err) < 0)
		return -1;
	if (!json_is_object(root))
		return sl_error_set(err, SL_E_INVALID, "config.json: top level must be an object");
	auths = json_object_get(root, "auths");
	if (!auths)
		return 0;
	if (!json_is_object(auths))
		return sl_error_set(err, SL_E_INVALID, "config.json: \"auths\" must be an object");

	if (asprintf(&https_key, "https://%s", registry) < 0) {
		https_key = NULL;
		return sl_error_set(err, SL_E_NOMEM, "config.json: out of memory");
	}
	keys[nkeys++] = registry;
	keys[nkeys++] = https_key;
	/* docker login writes Hub credentials under its v1 index URL. */
	if (strcmp(registry, "docker.io") == 0)
		keys[nkeys++] = HUB_LEGACY_KEY;
	for (size_t i = 0; i < nkeys; i++) {
		json_t *entry = json_object_get(auths, keys[i]);

		if (!entry)
			continue;
		r = creds_from_entry(entry, keys[i], out, err);
		if (r < 0)
			explicit_bzero(out, sizeof(*out));
		return r;
	}
	return 0;
}

int oci_creds_load(const char *registry, struct oci_creds *out, sl_error_t *err)
{
	_cleanup_free_ char *path = NULL, *buf = NULL;
	sl_error_t rerr = NULL;
	const char *dir = getenv("DOCKER_CONFIG"), *home = getenv("HOME");
	size_t len = 0;
	int r;

	memset(out, 0, sizeof(*out));
	if (dir && *dir)
		r = asprintf(&path, "%s/config.json", dir);
	else if (home && *home)
		r = asprintf(&path, "%s/.docker/config.json", home);
	else
		return 0; /* nowhere to look: anonymous */
	if (r < 0) {
		path = NULL;
		return sl_error_set(err, SL_E_NOMEM, "docker config: out of memory");
	}
	if (sl_read_path(path, CONFIG_MAX, &buf, &len, &rerr) < 0) {
		if (rerr->code == SL_E_NOT_FOUND || rerr->sys_errno == ENOTDIR) {
			sl_error_free(&rerr);
			return 0;
		}
		*err = rerr;
		return -1;
	}
	r = oci_creds_from_config(buf, len, registry, out, err);
	explicit_bzero(buf, len);
	if (r < 0)
		return sl_error_wrap(err, "%s", path);
	return 0;
}

/* ---------- token endpoint replies ---------- */

int oci_token_parse(const char *json, size_t len, char *token, size_t cap, long *expires_in, sl_error_t *err)
{
	static const char *const fields[] = {"token", "access_token"};
	_cleanup_json_ json_t *root = NULL;
	const char *tok = NULL;
	size_t tok_n = 0;
	json_t *exp;
	json_int_t ttl = TOKEN_TTL_MIN;

	if (token && cap)
		token[0] = '\0';
	if (expires_in)
		*expires_in = TOKEN_TTL_MIN;
	if (sl_json_parse(json, len, "token reply", &root, err) < 0)
		return -1;
	if (!json_is_object(root))
		return sl_error_set(err, SL_E_INVALID, "token reply: top level must be an object");
	for (size_t i = 0; i < 2; i++) {
		json_t *t = json_object_get(root, fields[i]);

		if (!t || json_is_null(t))
			continue;
		if (!json_is_string(t))
			return sl_error_set(err, SL_E_INVALID, "token reply: \"%s\" must be a string", fields[i]);
		if (!tok && json_string_length(t) > 0) {
			tok = json_string_value(t);
			tok_n = json_string_length(t);
		}
	}
	if (!tok)
		return sl_error_set(err, SL_E_INVALID, "token reply: neither \"token\" nor \"access_token\" is set");
	if (!token || tok_n >= cap)
		return sl_error_set(err, SL_E_INVALID, "token reply: token is longer than %zu bytes",
				    cap ? cap - 1 : 0);
	/* It goes into an Authorization header: no spaces, controls or NULs. */
	for (size_t i = 0; i < tok_n; i++)
		if ((unsigned char)tok[i] <= 0x20 || (unsigned char)tok[i] >= 0x7f)
			return sl_error_set(err, SL_E_INVALID,
					    "token reply: token contains a space, control or non-ASCII byte");

	exp = json_object_get(root, "expires_in");
	if (exp && !json_is_null(exp)) {
		if (!json_is_integer(exp))
			return sl_error_set(err, SL_E_INVALID, "token reply: \"expires_in\" must be an integer");
		ttl = json_integer_value(exp);
		if (ttl < TOKEN_TTL_MIN)
			ttl = TOKEN_TTL_MIN;
		if (ttl > TOKEN_TTL_MAX)
			ttl = TOKEN_TTL_MAX;
	}
	memcpy(token, tok, tok_n);
	token[tok_n] = '\0';
	if (expires_in)
		*expires_in = (long)ttl;
	return 0;
}
