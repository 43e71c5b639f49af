/* Image references "[registry/]repository[:tag][@sha256:hex]": strict parsing, Docker Hub defaults, formatting. */
#include <arpa/inet.h>
#include <ctype.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "oci/ref.h"

/* distribution-spec: the whole name (host/path) is at most 255 bytes. */
#define NAME_MAX_LEN 255
#define TAG_MAX_LEN 128
#define LABEL_MAX_LEN 63
#define LEGACY_HUB "index.docker.io"

/* All parse errors share one prefix naming the whole input. */
static int ref_fail(sl_error_t *err, const char *input, const char *fmt, const char *part, size_t part_n)
{
	char in[SL_SHOW_BUF], pt[SL_SHOW_BUF], why[256];

	sl_show(input, (size_t)-1, in);
	sl_show(part ? part : "", part ? part_n : 0, pt);
	/* fmt is one of this file's literals with at most one %s for the part. */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wformat-nonliteral"
	snprintf(why, sizeof(why), fmt, pt);
#pragma GCC diagnostic pop
	return sl_error_set(err, SL_E_INVALID, "reference \"%s\": %s", in, why);
}

static bool is_lower_alnum(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
}

static bool is_alnum(char c)
{
	return is_lower_alnum(c) || (c >= 'A' && c <= 'Z');
}

/* One path component: [a-z0-9]+((\.|_|__|-+)[a-z0-9]+)* */
static int check_component(const char *in, const char *c, size_t n, sl_error_t *err)
{
	size_t i = 0;

	if (n == 0)
		return ref_fail(err, in, "empty repository component (leading, trailing or doubled '/')", NULL, 0);
	for (i = 0; i < n; i++) {
		if (c[i] >= 'A' && c[i] <= 'Z')
			return ref_fail(err, in, "repository component \"%s\" must be lowercase", c, n);
		if (!is_lower_alnum(c[i]) && c[i] != '.' && c[i] != '_' && c[i] != '-')
			return ref_fail(err, in,
					"repository component \"%s\" may only contain [a-z0-9] and the separators '.', '_', '-'",
					c, n);
	}
	for (i = 0; i < n;) {
		size_t run = 0;
		char sep;

		while (i < n && is_lower_alnum(c[i]))
			i++, run++;
		if (run == 0)
			goto bad; /* leading separator, or two separators in a row */
		if (i == n)
			return 0;
		sep = c[i];
		run = 0;
		while (i < n && !is_lower_alnum(c[i])) {
			if (c[i] != sep)
				goto bad; /* mixed separators such as "._" */
			i++, run++;
		}
		if (i == n)
			goto bad; /* trailing separator */
		if ((sep == '.' && run > 1) || (sep == '_' && run > 2))
			goto bad;
	}
	return 0;
bad:
	return ref_fail(err, in,
			"repository component \"%s\" must start and end with [a-z0-9] and separate runs of them with "
			"'.', '_', '__' or dashes",
			c, n);
}

/* [A-Za-z0-9_][A-Za-z0-9._-]{0,127} */
static int check_tag(const char *in, const char *t, size_t n, sl_error_t *err)
{
	if (n == 0)
		return ref_fail(err, in, "empty tag after ':'", NULL, 0);
	if (n > TAG_MAX_LEN)
		return ref_fail(err, in, "tag \"%s\" is longer than 128 characters", t, n);
	if (!is_alnum(t[0]) && t[0] != '_')
		return ref_fail(err, in, "tag \"%s\" must start with [A-Za-z0-9_]", t, n);
	for (size_t i = 1; i < n; i++)
		if (!is_alnum(t[i]) && t[i] != '_' && t[i] != '.' && t[i] != '-')
			return ref_fail(err, in, "tag \"%s\" may only contain [A-Za-z0-9._-]", t, n);
	return 0;
}

/* ":port" with 1..65535 and no leading zero (one spelling per port keeps
 * references canonical). p points after the ':'. */
static bool port_ok(const char *p, size_t n)
{
	unsigned long v = 0;

	if (n == 0 || n > 5 || p[0] == '0')
		return false;
	for (size_t i = 0; i < n; i++) {
		if (p[i] < '0' || p[i] > '9')
			return false;
		v = v * 10 + (unsigned long)(p[i] - '0');
	}
	return v >= 1 && v <= 65535;
}

/* DNS name: dot-separated labels of [A-Za-z0-9-], not starting or ending
 * with '-'. */
static bool hostname_ok(const char *h, size_t n)
{
	size_t label = 0;

	if (n == 0)
		return false;
	for (size_t i = 0; i <= n; i++) {
		if (i == n || h[i] == '.') {
			if (label == 0 || label > LABEL_MAX_LEN || h[i - 1] == '-')
				return false;
			label = 0;
			continue;
		}
		if (!is_alnum(h[i]) && h[i] != '-')
			return false;
		if (label == 0 && h[i] == '-')
			return false;
		label++;
	}
	return true;
}

/* An IPv6 literal between brackets (no zone id). */
static bool ipv6_ok(const char *a, size_t n)
{
	char buf[INET6_ADDRSTRLEN];
	struct in6_addr addr;

	if (n == 0 || n >= sizeof(buf))
		return false;
	for (size_t i = 0; i < n; i++)
		if (!isxdigit((unsigned char)a[i]) && a[i] != ':' && a[i] != '.')
			return false;
	memcpy(buf, a, n);
	buf[n] = '\0';
	return inet_pton(AF_INET6, buf, &addr) == 1;
}

/* host[:port] or [ipv6][:port]; stored lowercased (host names and hex
 * digits are case-insensitive) so one registry has one spelling, which
 * the docker.io rules and config.json lookups rely on. */
static int check_registry(const char *in, const char *r, size_t n, char out[256], sl_error_t *err)
{
	const char *port = NULL;
	size_t host_n;

	if (n >= NAME_MAX_LEN)
		return ref_fail(err, in, "registry \"%s\" is too long", r, n);
	if (r[0] == '[') {
		const char *close = memchr(r, ']', n);

		if (!close || !ipv6_ok(r + 1, (size_t)(close - r - 1)))
			return ref_fail(err, in, "registry \"%s\" is not a valid [IPv6] address", r, n);
		host_n = (size_t)(close - r) + 1;
		if (host_n < n && r[host_n] != ':')
			return ref_fail(err, in, "registry \"%s\": unexpected text after ']'", r, n);
	} else {
		const char *colon = memchr(r, ':', n);

		host_n = colon ? (size_t)(colon - r) : n;
		if (!hostname_ok(r, host_n))
			return ref_fail(err, in,
					"registry \"%s\": host must be dot-separated labels of letters, digits and '-'", r,
					n);
	}
	if (host_n < n) {
		port = r + host_n + 1;
		if (!port_ok(port, n - host_n - 1))
			return ref_fail(err, in, "registry \"%s\": port must be a number from 1 to 65535", r, n);
	}
	for (size_t i = 0; i < n; i++)
		out[i] = (char)tolower((unsigned char)r[i]);
	out[n] = '\0';
	/* Docker's legacy name for Hub; both mean docker.io. */
	if (strcmp(out, LEGACY_HUB) == 0)
		strcpy(out, OCI_DEFAULT_REGISTRY);
	return 0;
}

static bool first_is_registry(const char *c, size_t n)
{
	return memchr(c, '.', n) || memchr(c, ':', n) || (n == 9 && memcmp(c, "localhost", 9) == 0);
}

int oci_ref_parse(const char *s, struct oci_ref *ref, sl_error_t *err)
{
	struct oci_ref r;
	const char *at, *name_end, *slash, *colon, *repo;
	size_t name_n, prefix_n, repo_n;

	memset(ref, 0, sizeof(*ref));
	memset(&r, 0, sizeof(r));
	if (!s || !*s)
		return ref_fail(err, s ? s : "", "empty reference", NULL, 0);

	at = strchr(s, '@');
	if (at) {
		sl_error_t derr = NULL;

		if (strncmp(at + 1, "sha256:", 7) != 0) {
			const char *d = at + 1;

			return ref_fail(err, s, "digest \"%s\": only sha256:<64 lowercase hex> digests are supported", d,
					strlen(d));
		}
		if (sl_digest_parse(at + 1, &r.digest, &derr) < 0) {
			sl_error_free(&derr);
			return ref_fail(err, s, "digest \"%s\" must be sha256: followed by 64 lowercase hex digits",
					at + 1, strlen(at + 1));
		}
		r.has_digest = true;
		name_end = at;
	} else {
		name_end = s + strlen(s);
	}
	name_n = (size_t)(name_end - s);
	if (name_n == 0)
		return ref_fail(err, s, "missing repository name before '@'", NULL, 0);

	/* A ':' after the last '/' starts the tag; one before it is a port. */
	slash = memrchr(s, '/', name_n);
	colon = memrchr(slash ? slash : s, ':', (size_t)(name_end - (slash ? slash : s)));
	if (colon) {
		if (check_tag(s, colon + 1, (size_t)(name_end - colon - 1), err) < 0)
			return -1;
		memcpy(r.tag, colon + 1, (size_t)(name_end - colon - 1));
		name_end = colon;
		name_n = (size_t)(name_end - s);
	}
	if (name_n == 0)
		return ref_fail(err, s, "missing repository name", NULL, 0);

	slash = memchr(s, '/', name_n);
	if (slash && first_is_registry(s, (size_t)(slash - s))) {
		if (check_registry(s, s, (size_t)(slash - s), r.registry, err) < 0)
			return -1;
		repo = slash + 1;
	} else {
		strcpy(r.registry, OCI_DEFAULT_REGISTRY);
		repo = s;
	}
	repo_n = (size_t)(name_end - repo);

	for (const char *c = repo;;) {
		const char *e = memchr(c, '/', (size_t)(name_end - c));
		size_t cn = e ? (size_t)(e - c) : (size_t)(name_end - c);

		if (check_component(s, c, cn, err) < 0)
			return -1;
		if (!e)
			break;
		c = e + 1;
	}

	/* Docker Hub keeps official images under library/. */
	prefix_n = 0;
	if (strcmp(r.registry, OCI_DEFAULT_REGISTRY) == 0 && !memchr(repo, '/', repo_n))
		prefix_n = strlen("library/");
	if (strlen(r.registry) + 1 + prefix_n + repo_n > NAME_MAX_LEN)
		return ref_fail(err, s, "registry/repository is longer than 255 bytes", NULL, 0);
	memcpy(r.repository, "library/", prefix_n);
	memcpy(r.repository + prefix_n, repo, repo_n);
	r.repository[prefix_n + repo_n] = '\0';
	*ref = r;
	return 0;
}

int oci_ref_format(const struct oci_ref *ref, char *out, size_t cap)
{
	char dig[SL_DIGEST_STRLEN] = "";
	int n;

	if (ref->has_digest)
		sl_digest_format(&ref->digest, dig);
	n = snprintf(out, cap, "%s/%s%s%s%s%s", ref->registry, ref->repository, ref->tag[0] ? ":" : "", ref->tag,
		     ref->has_digest ? "@" : "", dig);
	if (n < 0 || (size_t)n >= cap)
		return -1;
	return n;
}

void oci_ref_reference(const struct oci_ref *ref, char out[OCI_REF_REFERENCE_MAX])
{
	if (ref->has_digest)
		sl_digest_format(&ref->digest, out);
	else
		snprintf(out, OCI_REF_REFERENCE_MAX, "%s", ref->tag[0] ? ref->tag : "latest");
}

const char *oci_registry_api_host(const char *registry)
{
	if (strcmp(registry, OCI_DEFAULT_REGISTRY) == 0 || strcmp(registry, LEGACY_HUB) == 0)
		return OCI_DOCKER_HUB_API_HOST;
	return registry;
}

bool oci_registry_is_loopback(const char *registry)
{
	char host[INET6_ADDRSTRLEN];
	const char *end, *rest;
	size_t n;

	if (!registry || !*registry)
		return false;
	if (registry[0] == '[') {
		struct in6_addr a6;

		end = strchr(registry, ']');
		if (!end)
			return false;
		n = (size_t)(end - registry - 1);
		rest = end + 1;
		if (n >= sizeof(host))
			return false;
		memcpy(host, registry + 1, n);
		host[n] = '\0';
		if (inet_pton(AF_INET6, host, &a6) != 1 || !IN6_IS_ADDR_LOOPBACK(&a6))
			return false;
	} else {
		struct in_addr a4;

		end = strchr(registry, ':');
		n = end ? (size_t)(end - registry) : strlen(registry);
		rest = registry + n;
		if (n >= sizeof(host))
			return false;
		memcpy(host, registry, n);
		host[n] = '\0';
		if (strcasecmp(host, "localhost") != 0 &&
		    (inet_pton(AF_INET, host, &a4) != 1 || (ntohl(a4.s_addr) >> 24) != 127))
			return false;
	}
	/* Whatever follows the host must be a port, nothing else. */
	return *rest == '\0' || (*rest == ':' && port_ok(rest + 1, strlen(rest + 1)));
}
