/* sha256 hashing via OpenSSL EVP and the strict "sha256:<hex>" text form. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "sl/digest.h"
#include <openssl/crypto.h>
#include <pthread.h>

/* One explicit fetch for the process, without reading openssl.cnf: the
 * implicit per-call lookup and the config load cost a cold restore about a
 * millisecond, and spore has no OpenSSL configuration to honour. */
static pthread_once_t md_once = PTHREAD_ONCE_INIT;
static EVP_MD *md_sha256;
static void md_init(void)
{
	OPENSSL_init_crypto(OPENSSL_INIT_NO_LOAD_CONFIG, NULL);
	md_sha256 = EVP_MD_fetch(NULL, "SHA256", NULL);
}
static const EVP_MD *sha256_md(void)
{
	pthread_once(&md_once, md_init);
	return md_sha256 ? md_sha256 : EVP_sha256();
}

#define PREFIX "sha256:"
#define PREFIX_LEN (sizeof(PREFIX) - 1)
#define FD_BLOCK (1024 * 1024)
/* Digests come from untrusted manifests; cap what we echo back. */
#define SHOW_MAX 80

struct sl_sha256_ctx {
	EVP_MD_CTX *md;
};

/* Renders untrusted input for an error message: bounded and printable, so
 * a hostile string cannot flood or corrupt a log line. */
static void show(const char *s, char out[SHOW_MAX + 4])
{
	size_t i;

	if (!s) {
		strcpy(out, "(null)");
		return;
	}
	for (i = 0; s[i] && i < SHOW_MAX; i++) {
		unsigned char c = (unsigned char)s[i];

		out[i] = (c >= 0x20 && c < 0x7f && c != '"') ? (char)c : '?';
	}
	if (s[i]) {
		memcpy(out + i, "...", 3);
		i += 3;
	}
	out[i] = '\0';
}

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
	char shown[SHOW_MAX + 4];

	if (!s || strncmp(s, PREFIX, PREFIX_LEN) != 0 ||
	    !decode_hex(s + PREFIX_LEN, out)) {
		show(s, shown);
		return sl_error_set(err, SL_E_INVALID,
				    "invalid digest \"%s\": expected sha256: followed by 64 lowercase hex digits",
				    shown);
	}
	return 0;
}

int sl_digest_parse_hex(const char *hex, sl_digest *out, sl_error_t *err)
{
	char shown[SHOW_MAX + 4];

	if (!hex || !decode_hex(hex, out)) {
		show(hex, shown);
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
	unsigned int olen = 0;

	/* EVP_Digest only fails on allocation failure inside OpenSSL; a zero
	 * digest then never matches real content, so integrity checks fail
	 * closed rather than comparing stack garbage. */
	if (!EVP_Digest(len ? buf : "", len, out->b, &olen, sha256_md(), NULL) ||
	    olen != SL_DIGEST_LEN)
		memset(out->b, 0, SL_DIGEST_LEN);
}

sl_sha256_ctx *sl_sha256_new(void)
{
	sl_sha256_ctx *c = calloc(1, sizeof(*c));

	if (!c)
		return NULL;
	c->md = EVP_MD_CTX_new();
	if (!c->md || !EVP_DigestInit_ex(c->md, sha256_md(), NULL)) {
		EVP_MD_CTX_free(c->md);
		free(c);
		return NULL;
	}
	return c;
}

void sl_sha256_update(sl_sha256_ctx *c, const void *buf, size_t len)
{
	if (!c || len == 0)
		return;
	EVP_DigestUpdate(c->md, buf, len);
}

void sl_sha256_final(sl_sha256_ctx *c, sl_digest *out)
{
	unsigned int olen = 0;

	if (!c || !EVP_DigestFinal_ex(c->md, out->b, &olen) ||
	    olen != SL_DIGEST_LEN)
		memset(out->b, 0, SL_DIGEST_LEN);
	if (c) {
		EVP_MD_CTX_free(c->md);
		free(c);
	}
}

static void sha256_ctx_freep(sl_sha256_ctx **c)
{
	if (*c) {
		EVP_MD_CTX_free((*c)->md);
		free(*c);
	}
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
