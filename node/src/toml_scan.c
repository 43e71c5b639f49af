/* A bounded TOML statement scanner (TOML 1.0 structure: headers, keys, strings, arrays, inline tables, comments). */
#include <stdint.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "toml_scan.h"

struct sc {
	const char *b;
	size_t len, p, line;
	sl_error_t *err;
};

/* Errors name the line (1-based) where the offending construct starts, which
 * is what an administrator looking at config.toml needs. */
__attribute__((format(printf, 3, 4)))
static int fail_at(struct sc *s, size_t line, const char *fmt, ...)
{
	char msg[256];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	return sl_error_set(s->err, SL_E_INVALID, "line %zu: %s", line, msg);
}

static int peek(const struct sc *s, size_t off)
{
	return s->p + off < s->len ? (unsigned char)s->b[s->p + off] : -1;
}

static void skip_ws(struct sc *s)
{
	while (s->p < s->len && (s->b[s->p] == ' ' || s->b[s->p] == '\t'))
		s->p++;
}

/* The pre-pass guarantees a '\r' is always followed by '\n'. */
static bool at_eol(const struct sc *s)
{
	return s->p >= s->len || s->b[s->p] == '\n' || s->b[s->p] == '\r';
}

static void eat_eol(struct sc *s)
{
	if (s->p >= s->len)
		return;
	if (s->b[s->p] == '\r')
		s->p++;
	if (s->p < s->len && s->b[s->p] == '\n') {
		s->p++;
		s->line++;
	}
}

static void skip_comment(struct sc *s)
{
	if (s->p < s->len && s->b[s->p] == '#')
		while (!at_eol(s))
			s->p++;
}

/* Whitespace, newlines and comments, as allowed between array elements. */
static void skip_ws_nl(struct sc *s)
{
	for (;;) {
		skip_ws(s);
		skip_comment(s);
		if (s->p < s->len && (s->b[s->p] == '\n' || s->b[s->p] == '\r'))
			eat_eol(s);
		else
			return;
	}
}

static int end_of_statement(struct sc *s, const char *after)
{
	skip_ws(s);
	skip_comment(s);
	if (!at_eol(s))
		return fail_at(s, s->line, "unexpected '%c' after %s (one statement per line)",
			       s->b[s->p], after);
	eat_eol(s);
	return 0;
}

/* Whole-document checks first, so later stages can rely on them: valid UTF-8,
 * no control characters but tab and newline, '\r' only as part of "\r\n". */
static int check_bytes(struct sc *s)
{
	const unsigned char *b = (const unsigned char *)s->b;
	size_t line = 1;

	if (s->len >= 3 && b[0] == 0xef && b[1] == 0xbb && b[2] == 0xbf)
		return fail_at(s, 1, "starts with a byte order mark; save the file without it");
	for (size_t i = 0; i < s->len;) {
		unsigned c = b[i];

		if (c == '\n') {
			line++;
			i++;
			continue;
		}
		if (c == '\r') {
			if (i + 1 >= s->len || b[i + 1] != '\n')
				return fail_at(s, line, "carriage return not followed by a newline");
			i++;
			continue;
		}
		if ((c < 0x20 && c != '\t') || c == 0x7f)
			return fail_at(s, line, "control character 0x%02x", c);
		if (c < 0x80) {
			i++;
			continue;
		}
		size_t n;
		uint32_t cp;

		if (c >= 0xc2 && c <= 0xdf) {
			n = 2;
			cp = c & 0x1f;
		} else if (c >= 0xe0 && c <= 0xef) {
			n = 3;
			cp = c & 0x0f;
		} else if (c >= 0xf0 && c <= 0xf4) {
			n = 4;
			cp = c & 0x07;
		} else {
			return fail_at(s, line, "invalid UTF-8 byte 0x%02x", c);
		}
		if (i + n > s->len)
			return fail_at(s, line, "truncated UTF-8 sequence");
		for (size_t k = 1; k < n; k++) {
			if ((b[i + k] & 0xc0) != 0x80)
				return fail_at(s, line, "invalid UTF-8 sequence");
			cp = (cp << 6) | (b[i + k] & 0x3f);
		}
		if ((n == 3 && cp < 0x800) || (n == 4 && cp < 0x10000) || cp > 0x10ffff ||
		    (cp >= 0xd800 && cp <= 0xdfff))
			return fail_at(s, line, "invalid UTF-8 sequence (overlong or surrogate)");
		i += n;
	}
	return 0;
}

/* Appends code point cp as UTF-8 to out (room checked by the caller). */
static size_t put_utf8(char *out, uint32_t cp)
{
	if (cp < 0x80) {
		out[0] = (char)cp;
		return 1;
	}
	if (cp < 0x800) {
		out[0] = (char)(0xc0 | (cp >> 6));
		out[1] = (char)(0x80 | (cp & 0x3f));
		return 2;
	}
	if (cp < 0x10000) {
		out[0] = (char)(0xe0 | (cp >> 12));
		out[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
		out[2] = (char)(0x80 | (cp & 0x3f));
		return 3;
	}
	out[0] = (char)(0xf0 | (cp >> 18));
	out[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
	out[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
	out[3] = (char)(0x80 | (cp & 0x3f));
	return 4;
}

static int hexval(int c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* One escape after '\\' in a basic string; writes its bytes to out when out
 * is non-NULL (at most 4). Returns the byte count or -1. */
static int scan_escape(struct sc *s, char *out)
{
	int c = peek(s, 0);
	uint32_t cp = 0;
	int digits;

	switch (c) {
	case 'b': cp = '\b'; break;
	case 't': cp = '\t'; break;
	case 'n': cp = '\n'; break;
	case 'f': cp = '\f'; break;
	case 'r': cp = '\r'; break;
	case '"': cp = '"'; break;
	case '\\': cp = '\\'; break;
	case 'u':
	case 'U':
		digits = c == 'u' ? 4 : 8;
		for (int i = 1; i <= digits; i++) {
			int h = hexval(peek(s, (size_t)i));

			if (h < 0)
				return fail_at(s, s->line, "bad \\%c escape: %d hex digits expected", c, digits);
			cp = cp << 4 | (uint32_t)h;
		}
		if (cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
			return fail_at(s, s->line, "escape \\%c names no Unicode scalar value", c);
		s->p += (size_t)digits;
		break;
	default:
		return fail_at(s, s->line, "invalid escape in a string");
	}
	s->p++;
	return out ? (int)put_utf8(out, cp) : (int)put_utf8((char[4]){0}, cp);
}

/* A single-line basic ("...") or literal ('...') string at s->p. With out,
 * the decoded text (for keys) is returned in a malloc'd buffer. */
static int scan_line_string(struct sc *s, char **out)
{
	char q = s->b[s->p];
	size_t line = s->line;
	char *buf = NULL;
	size_t n = 0;

	if (out) {
		buf = malloc(TSCAN_MAX_KEY_LEN + 5);
		if (!buf)
			return sl_error_set(s->err, SL_E_NOMEM, "out of memory");
	}
	s->p++;
	for (;;) {
		if (at_eol(s)) {
			free(buf);
			return fail_at(s, line, "unterminated string");
		}
		char c = s->b[s->p];

		if (c == q) {
			s->p++;
			break;
		}
		if (c == '\\' && q == '"') {
			char tmp[4];

			s->p++;
			int k = scan_escape(s, tmp);

			if (k < 0) {
				free(buf);
				return -1;
			}
			if (buf && n + (size_t)k <= TSCAN_MAX_KEY_LEN) {
				memcpy(buf + n, tmp, (size_t)k);
			}
			n += (size_t)k;
		} else {
			if (buf && n < TSCAN_MAX_KEY_LEN)
				buf[n] = c;
			n++;
			s->p++;
		}
		if (buf && n > TSCAN_MAX_KEY_LEN) {
			free(buf);
			return fail_at(s, line, "key longer than %d bytes", TSCAN_MAX_KEY_LEN);
		}
	}
	if (buf) {
		buf[n] = '\0';
		*out = buf;
	}
	return 0;
}

/* """...""" or '''...''' at s->p; up to two extra quotes may end the content. */
static int scan_multiline_string(struct sc *s)
{
	char q = s->b[s->p];
	size_t line = s->line;

	s->p += 3;
	for (;;) {
		if (s->p >= s->len)
			return fail_at(s, line, "unterminated multi-line string");
		char c = s->b[s->p];

		if (c == q && peek(s, 1) == q && peek(s, 2) == q) {
			s->p += 3;
			for (int extra = 0; extra < 2 && peek(s, 0) == q; extra++)
				s->p++;
			return 0;
		}
		if (c == '\n' || c == '\r') {
			eat_eol(s);
			continue;
		}
		if (c == '\\' && q == '"') {
			s->p++;
			int n = peek(s, 0);

			if (n == ' ' || n == '\t' || n == '\n' || n == '\r') {
				/* line-ending backslash: whitespace up to the newline */
				skip_ws(s);
				if (!at_eol(s) || s->p >= s->len)
					return fail_at(s, s->line, "backslash followed by spaces but no newline");
				continue;
			}
			if (scan_escape(s, NULL) < 0)
				return -1;
			continue;
		}
		s->p++;
	}
}

static bool scalar_char(int c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
	       c == '_' || c == '+' || c == '-' || c == '.' || c == ':';
}

static bool is_date(const char *p, size_t n)
{
	if (n != 10)
		return false;
	for (size_t i = 0; i < n; i++)
		if ((i == 4 || i == 7) ? p[i] != '-' : (p[i] < '0' || p[i] > '9'))
			return false;
	return true;
}

static int scan_value(struct sc *s, int depth, enum tscan_vtype *vt);
static int scan_key(struct sc *s, char ***parts, size_t *n);

static int scan_array(struct sc *s, int depth)
{
	size_t line = s->line;

	s->p++;
	for (;;) {
		skip_ws_nl(s);
		if (s->p >= s->len)
			return fail_at(s, line, "unterminated array");
		if (s->b[s->p] == ']') {
			s->p++;
			return 0;
		}
		if (scan_value(s, depth + 1, NULL) < 0)
			return -1;
		skip_ws_nl(s);
		if (s->p >= s->len)
			return fail_at(s, line, "unterminated array");
		if (s->b[s->p] == ',') {
			s->p++;
			continue;
		}
		if (s->p < s->len && s->b[s->p] == ']') {
			s->p++;
			return 0;
		}
		return fail_at(s, s->line, "expected ',' or ']' in the array begun on line %zu", line);
	}
}

static void free_parts(char **parts, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(parts[i]);
	free(parts);
}

static int scan_inline_table(struct sc *s, int depth)
{
	size_t line = s->line;

	s->p++;
	skip_ws(s);
	if (peek(s, 0) == '}') {
		s->p++;
		return 0;
	}
	for (;;) {
		char **parts = NULL;
		size_t n = 0;

		skip_ws(s);
		if (at_eol(s))
			return fail_at(s, line, "inline table not closed on its line");
		if (scan_key(s, &parts, &n) < 0)
			return -1;
		free_parts(parts, n);
		skip_ws(s);
		if (peek(s, 0) != '=')
			return fail_at(s, s->line, "expected '=' in the inline table");
		s->p++;
		skip_ws(s);
		if (scan_value(s, depth + 1, NULL) < 0)
			return -1;
		skip_ws(s);
		if (peek(s, 0) == ',') {
			s->p++;
			continue;
		}
		if (peek(s, 0) == '}') {
			s->p++;
			return 0;
		}
		return fail_at(s, s->line, "expected ',' or '}' in the inline table");
	}
}

static int scan_value(struct sc *s, int depth, enum tscan_vtype *vt)
{
	enum tscan_vtype t;
	int c = peek(s, 0);

	if (depth >= TSCAN_MAX_DEPTH)
		return fail_at(s, s->line, "values nested deeper than %d", TSCAN_MAX_DEPTH);
	if (c == '"' || c == '\'') {
		t = TV_STRING;
		if (peek(s, 1) == c && peek(s, 2) == c) {
			if (scan_multiline_string(s) < 0)
				return -1;
		} else if (scan_line_string(s, NULL) < 0) {
			return -1;
		}
	} else if (c == '[') {
		t = TV_ARRAY;
		if (scan_array(s, depth) < 0)
			return -1;
	} else if (c == '{') {
		t = TV_INLINE_TABLE;
		if (scan_inline_table(s, depth) < 0)
			return -1;
	} else {
		size_t start = s->p;

		while (s->p < s->len && scalar_char((unsigned char)s->b[s->p]))
			s->p++;
		/* A date-time may use a space instead of 'T'. */
		if (is_date(s->b + start, s->p - start) && peek(s, 0) == ' ' &&
		    peek(s, 1) >= '0' && peek(s, 1) <= '9') {
			s->p++;
			while (s->p < s->len && scalar_char((unsigned char)s->b[s->p]))
				s->p++;
		}
		if (s->p == start)
			return fail_at(s, s->line, "expected a value");
		size_t n = s->p - start;

		if ((n == 4 && memcmp(s->b + start, "true", 4) == 0) ||
		    (n == 5 && memcmp(s->b + start, "false", 5) == 0))
			t = TV_BOOL;
		else
			t = TV_OTHER;
	}
	if (vt)
		*vt = t;
	return 0;
}

static bool bare_char(int c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
	       c == '_' || c == '-';
}

static int scan_simple_key(struct sc *s, char **out)
{
	int c = peek(s, 0);

	if (c == '"' || c == '\'') {
		if (peek(s, 1) == c && peek(s, 2) == c)
			return fail_at(s, s->line, "a multi-line string cannot be a key");
		return scan_line_string(s, out);
	}
	size_t start = s->p;

	while (s->p < s->len && bare_char((unsigned char)s->b[s->p]))
		s->p++;
	if (s->p == start)
		return fail_at(s, s->line, "expected a key");
	if (s->p - start > TSCAN_MAX_KEY_LEN)
		return fail_at(s, s->line, "key longer than %d bytes", TSCAN_MAX_KEY_LEN);
	*out = strndup(s->b + start, s->p - start);
	if (!*out)
		return sl_error_set(s->err, SL_E_NOMEM, "out of memory");
	return 0;
}

static int scan_key(struct sc *s, char ***parts, size_t *n)
{
	char **v = calloc(TSCAN_MAX_KEY_PARTS, sizeof(*v));
	size_t k = 0;

	if (!v)
		return sl_error_set(s->err, SL_E_NOMEM, "out of memory");
	for (;;) {
		if (k == TSCAN_MAX_KEY_PARTS) {
			free_parts(v, k);
			return fail_at(s, s->line, "key with more than %d dotted parts", TSCAN_MAX_KEY_PARTS);
		}
		if (scan_simple_key(s, &v[k]) < 0) {
			free_parts(v, k);
			return -1;
		}
		k++;
		skip_ws(s);
		if (peek(s, 0) != '.')
			break;
		s->p++;
		skip_ws(s);
	}
	*parts = v;
	*n = k;
	return 0;
}

void tscan_free(struct tscan_doc *doc)
{
	for (size_t i = 0; i < doc->n; i++)
		free_parts(doc->stmts[i].key, doc->stmts[i].nkey);
	free(doc->stmts);
	doc->stmts = NULL;
	doc->n = 0;
}

static int scan_stmt(struct sc *s, struct tscan_stmt *st, int table)
{
	st->start = s->p;
	st->line = s->line;
	st->table = -1;
	skip_ws(s);
	if (at_eol(s) || s->b[s->p] == '#') {
		st->kind = TS_BLANK;
		st->cstart = s->p;
		skip_comment(s);
		if (st->cstart == s->p)
			st->cstart = SIZE_MAX; /* fixed up below: no comment */
		eat_eol(s);
		st->end = s->p;
		if (st->cstart == SIZE_MAX)
			st->cstart = st->end;
		return 0;
	}
	if (s->b[s->p] == '[') {
		bool arr = peek(s, 1) == '[';

		st->kind = arr ? TS_ARRAY_TABLE : TS_TABLE;
		s->p += arr ? 2 : 1;
		skip_ws(s);
		if (scan_key(s, &st->key, &st->nkey) < 0)
			return -1;
		skip_ws(s);
		if (peek(s, 0) != ']' || (arr && peek(s, 1) != ']'))
			return fail_at(s, st->line, "table header not closed by '%s'", arr ? "]]" : "]");
		s->p += arr ? 2 : 1;
		if (end_of_statement(s, "a table header") < 0)
			return -1;
		st->end = s->p;
		return 0;
	}
	st->kind = TS_KEYVAL;
	st->table = table;
	if (scan_key(s, &st->key, &st->nkey) < 0)
		return -1;
	skip_ws(s);
	if (peek(s, 0) != '=')
		return fail_at(s, st->line, "expected '=' after a key");
	s->p++;
	skip_ws(s);
	st->vstart = s->p;
	if (scan_value(s, 0, &st->vtype) < 0)
		return -1;
	st->vend = s->p;
	if (end_of_statement(s, "a value") < 0)
		return -1;
	st->end = s->p;
	return 0;
}

int tscan_parse(const char *buf, size_t len, struct tscan_doc *doc, sl_error_t *err)
{
	struct sc s = {.b = buf, .len = len, .line = 1, .err = err};
	size_t cap = 0;
	int table = -1;

	doc->stmts = NULL;
	doc->n = 0;
	doc->ends_with_newline = len == 0 || buf[len - 1] == '\n';
	if (check_bytes(&s) < 0)
		return -1;
	while (s.p < s.len) {
		if (doc->n == TSCAN_MAX_STMTS) {
			tscan_free(doc);
			return fail_at(&s, s.line, "more than %d statements", TSCAN_MAX_STMTS);
		}
		if (doc->n == cap) {
			size_t ncap = cap ? cap * 2 : 64;
			struct tscan_stmt *n = realloc(doc->stmts, ncap * sizeof(*n));

			if (!n) {
				tscan_free(doc);
				return sl_error_set(err, SL_E_NOMEM, "out of memory");
			}
			doc->stmts = n;
			cap = ncap;
		}
		struct tscan_stmt *st = &doc->stmts[doc->n];

		memset(st, 0, sizeof(*st));
		if (scan_stmt(&s, st, table) < 0) {
			free_parts(st->key, st->nkey);
			tscan_free(doc);
			return -1;
		}
		if (st->kind == TS_TABLE || st->kind == TS_ARRAY_TABLE)
			table = (int)doc->n;
		doc->n++;
	}
	return 0;
}

bool tscan_key_has_prefix(char *const *key, size_t nkey, const char *const *parts, size_t n)
{
	if (nkey < n)
		return false;
	for (size_t i = 0; i < n; i++)
		if (strcmp(key[i], parts[i]) != 0)
			return false;
	return true;
}

bool tscan_key_eq(char *const *key, size_t nkey, const char *const *parts, size_t n)
{
	return nkey == n && tscan_key_has_prefix(key, nkey, parts, n);
}
