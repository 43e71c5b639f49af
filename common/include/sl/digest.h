/* sha256 digests: hashing (OpenSSL libcrypto) and the "sha256:<hex>" text form. */
#ifndef SL_DIGEST_H
#define SL_DIGEST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "sl/error.h"

#define SL_DIGEST_LEN 32
#define SL_DIGEST_HEXLEN 64
#define SL_DIGEST_STRLEN (7 + SL_DIGEST_HEXLEN + 1) /* "sha256:" hex NUL */

typedef struct sl_digest {
	uint8_t b[SL_DIGEST_LEN];
} sl_digest;

/* Accepts exactly "sha256:" followed by 64 lowercase hex digits. */
int sl_digest_parse(const char *s, sl_digest *out, sl_error_t *err);
/* Accepts exactly 64 lowercase hex digits. */
int sl_digest_parse_hex(const char *hex, sl_digest *out, sl_error_t *err);
void sl_digest_format(const sl_digest *d, char out[SL_DIGEST_STRLEN]);
void sl_digest_hex(const sl_digest *d, char out[SL_DIGEST_HEXLEN + 1]);
bool sl_digest_equal(const sl_digest *a, const sl_digest *b);

void sl_sha256(const void *buf, size_t len, sl_digest *out);

/* Streaming hash; the context is opaque and heap-allocated. */
typedef struct sl_sha256_ctx sl_sha256_ctx;
sl_sha256_ctx *sl_sha256_new(void);
void sl_sha256_update(sl_sha256_ctx *c, const void *buf, size_t len);
void sl_sha256_final(sl_sha256_ctx *c, sl_digest *out); /* also frees c */

/* Hashes a whole file from its current offset to EOF. */
int sl_sha256_fd(int fd, sl_digest *out, uint64_t *size_out, sl_error_t *err);

#endif
