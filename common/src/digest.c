/* sha256 hashing (OpenSSL libcrypto) and the strict "sha256:<hex>" text form. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* The one-shot SHA256_* interface is deprecated in OpenSSL 3 in favour of
 * EVP, but EVP costs a spore restore (a short-lived process) about 2 ms of
 * provider set-up; see below. */
#define OPENSSL_SUPPRESS_DEPRECATED
#include <openssl/sha.h>

#include "sl/digest.h"

/* OpenSSL's SHA256_* functions, linked statically from libcrypto.a
 * (common/CMakeLists.txt): a spore restore is a short-lived process, and on
 * the hosts we measured the shared libcrypto cost 1.45 ms to load and
 * relocate and EVP another 1.0 ms of provider set-up before the first
 * digest. Linked statically, only the SHA-256 code and the CPU capability
 * probe come along: process start costs the same as without libcrypto, and
 * it hashes with SHA-NI (docs/performance.md). */

#define PREFIX "sha256:"
#define PREFIX_LEN (sizeof(PREFIX) - 1)
#define FD_BLOCK (1024 * 1024)

struct sl_sha256_ctx {
	SHA256_CTX h;
};

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

/* Decodes exactly 64 lowercase hex digits followed by the end of s. */
static bool decode_hex(const char *hex, sl_digest *out)
{
	sl_digest d;

	for (size_t i = 0; i < SL_DIGEST_LEN; i++) {
		int hi, lo;

		/* Checking hi before touching lo keeps us from reading past a
		 * NUL in a short string. */
		hi = hexval(hex[2 * i]);
		if (hi < 0)
			return false;
		lo = hexval(hex[2 * i + 1]);
		if (lo < 0)
			return false;
		d.b[i] = (uint8_t)(hi << 4 | lo);
	}
	if (hex[SL_DIGEST_HEXLEN] != '\0')
		return false;
	*out = d;
	return true;
}

int sl_digest_parse(const char *s, sl_digest *out, sl_error_t *err)
{
	char shown[SL_SHOW_BUF];

	if (!s || strncmp(s, PREFIX, PREFIX_LEN) != 0 ||
	    !decode_hex(s + PREFIX_LEN, out)) {
		sl_show(s, (size_t)-1, shown);
		return sl_error_set(err, SL_E_INVALID,
				    "invalid digest \"%s\": expected sha256: followed by 64 lowercase hex digits",
				    shown);
	}
	return 0;
}

int sl_digest_parse_hex(const char *hex, sl_digest *out, sl_error_t *err)
{
	char shown[SL_SHOW_BUF];

	if (!hex || !decode_hex(hex, out)) {
		sl_show(hex, (size_t)-1, shown);
		return sl_error_set(err, SL_E_INVALID,
				    "invalid digest hex \"%s\": expected 64 lowercase hex digits",
				    shown);
	}
	return 0;
}

void sl_digest_hex(const sl_digest *d, char out[SL_DIGEST_HEXLEN + 1])
{
	static const char digits[] = "0123456789abcdef";

	for (size_t i = 0; i < SL_DIGEST_LEN; i++) {
		out[2 * i] = digits[d->b[i] >> 4];
		out[2 * i + 1] = digits[d->b[i] & 0xf];
	}
	out[SL_DIGEST_HEXLEN] = '\0';
}

void sl_digest_format(const sl_digest *d, char out[SL_DIGEST_STRLEN])
{
	memcpy(out, PREFIX, PREFIX_LEN);
	sl_digest_hex(d, out + PREFIX_LEN);
}

bool sl_digest_equal(const sl_digest *a, const sl_digest *b)
{
	return memcmp(a->b, b->b, SL_DIGEST_LEN) == 0;
}

void sl_sha256(const void *buf, size_t len, sl_digest *out)
{
	SHA256_CTX h;

	SHA256_Init(&h);
	SHA256_Update(&h, len ? buf : (const void *)"", len);
	SHA256_Final(out->b, &h);
}

sl_sha256_ctx *sl_sha256_new(void)
{
	sl_sha256_ctx *c = malloc(sizeof(*c));

	if (c)
		SHA256_Init(&c->h);
	return c;
}

void sl_sha256_update(sl_sha256_ctx *c, const void *buf, size_t len)
{
	if (!c || len == 0)
		return;
	SHA256_Update(&c->h, buf, len);
}

void sl_sha256_final(sl_sha256_ctx *c, sl_digest *out)
{
	/* A context that failed to allocate yields a zero digest, which never
	 * matches real content: integrity checks fail closed. */
	if (!c) {
		memset(out->b, 0, SL_DIGEST_LEN);
		return;
	}
	SHA256_Final(out->b, &c->h);
	free(c);
}

static void sha256_ctx_freep(sl_sha256_ctx **c)
{
	free(*c);
}

int sl_sha256_fd(int fd, sl_digest *out, uint64_t *size_out, sl_error_t *err)
{
	/* Heap, not stack: 1 MiB would blow small thread stacks. */
	_cleanup_free_ unsigned char *buf = malloc(FD_BLOCK);
	__attribute__((cleanup(sha256_ctx_freep))) sl_sha256_ctx *c = sl_sha256_new();
	uint64_t total = 0;

	if (!buf || !c)
		return sl_error_set(err, SL_E_NOMEM, "hashing file: out of memory");
	for (;;) {
		ssize_t n = read(fd, buf, FD_BLOCK);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return sl_error_sys(err, "hashing file: read");
		}
		if (n == 0)
			break;
		sl_sha256_update(c, buf, (size_t)n);
		total += (uint64_t)n;
	}
	sl_sha256_final(sl_steal_ptr(c), out);
	if (size_out)
		*size_out = total;
	return 0;
}
