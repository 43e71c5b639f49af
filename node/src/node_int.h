/* Private helpers shared by libsporelet-node's sources. */
#ifndef NODE_INT_H
#define NODE_INT_H

#include <stdbool.h>
#include <stddef.h>

/* A growable NUL-terminated byte buffer; after an allocation failure every
 * further add fails and `failed` stays set. */
struct nbuf {
	char *p;
	size_t len, cap;
	bool failed;
};

int nbuf_add(struct nbuf *b, const char *s, size_t n);
int nbuf_addf(struct nbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void nbuf_free(struct nbuf *b);

#endif
