/* A bounded TOML statement scanner: splits a document into lines-level statements with byte ranges and decoded key paths. */
#ifndef NODE_TOML_SCAN_H
#define NODE_TOML_SCAN_H

#include <stdbool.h>
#include <stddef.h>

#include "sl/error.h"

/* Limits that keep a hostile file from costing more than linear work. */
#define TSCAN_MAX_DEPTH 32       /* nested arrays / inline tables */
#define TSCAN_MAX_KEY_PARTS 32   /* parts of one dotted key or header */
#define TSCAN_MAX_KEY_LEN 1024   /* bytes of one decoded key part */
#define TSCAN_MAX_STMTS 65536

enum tscan_kind {
	TS_BLANK,       /* an empty line, whitespace, or a comment line */
	TS_TABLE,       /* [a.b] */
	TS_ARRAY_TABLE, /* [[a.b]] */
	TS_KEYVAL,      /* key = value (the value may span lines) */
};

enum tscan_vtype { TV_NONE, TV_STRING, TV_BOOL, TV_ARRAY, TV_INLINE_TABLE, TV_OTHER };

struct tscan_stmt {
	enum tscan_kind kind;
	size_t start, end;   /* [start, end): from the line's first byte to after its newline (or EOF) */
	size_t line;         /* 1-based line of start */
	char **key;          /* header path, or the key (dotted parts) of a key/value */
	size_t nkey;
	int table;           /* key/value: index of its table header statement, -1 for the root table */
	enum tscan_vtype vtype;
	size_t vstart, vend; /* key/value: the value's raw bytes */
	size_t cstart;       /* TS_BLANK: offset of '#' when the line is a comment, else end */
};

struct tscan_doc {
	struct tscan_stmt *stmts;
	size_t n;
	bool ends_with_newline; /* an empty document counts as ending with one */
};

/* Scans buf (len bytes; it must not need a NUL terminator). Refuses, naming
 * the line, what is not TOML as far as structure goes (headers, keys,
 * strings, arrays, inline tables, comments, newlines, UTF-8, control
 * characters) and what exceeds the limits above. Scalars are only checked to
 * consist of TOML's scalar characters. */
int tscan_parse(const char *buf, size_t len, struct tscan_doc *doc, sl_error_t *err);
void tscan_free(struct tscan_doc *doc);

/* True when the statement's path (key parts) equals parts[0..n). */
bool tscan_key_eq(char *const *key, size_t nkey, const char *const *parts, size_t n);
/* True when parts[0..n) is a prefix of (or equal to) key. */
bool tscan_key_has_prefix(char *const *key, size_t nkey, const char *const *parts, size_t n);

#endif
