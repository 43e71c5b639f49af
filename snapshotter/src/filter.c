/* containerd's filter language for List: parsing and matching snapshot infos. */
#include <regex.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "filter.h"

enum filter_op { OP_PRESENT, OP_EQUAL, OP_NOT_EQUAL, OP_MATCHES };

struct filter_sel {
	char *field;   /* "name", "parent", "kind" or "labels" */
	char *key;     /* labels: the rest of the path joined by '.' */
	enum filter_op op;
	char *value;
	regex_t re;
	bool has_re;
};

struct filter_all {
	struct filter_sel *sels;
	size_t n;
};

struct snap_filter {
	struct filter_all *alts;
	size_t n;
};

struct scan {
	const char *s;
	size_t len, pos;
	size_t expr; /* which filter string, for messages */
};

static bool is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f'; }
static bool is_field_char(char c)
{
	return c == '_' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}
static bool is_quote(char c) { return c == '"' || c == '/' || c == '|'; }
static bool is_op_char(char c) { return c == '=' || c == '!' || c == '~'; }
/* Value runes: anything graphic but ',' and spaces (bytes >= 0x80 are
 * parts of UTF-8 letters). */
static bool is_value_char(char c) { return c != ',' && !is_space(c) && ((unsigned char)c > 0x20 && c != 0x7f); }

static void skip_space(struct scan *sc)
{
	while (sc->pos < sc->len && is_space(sc->s[sc->pos]))
		sc->pos++;
}

static char peek(struct scan *sc)
{
	skip_space(sc);
	return sc->pos < sc->len ? sc->s[sc->pos] : '\0';
}

static int bad(struct scan *sc, sl_error_t *err, const char *what)
{
	return sl_error_set(err, SL_E_INVALID, "filter %zu at offset %zu: %s", sc->expr, sc->pos, what);
}

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

static size_t put_utf8(char *o, uint32_t cp)
{
	if (cp < 0x80) {
		o[0] = (char)cp;
		return 1;
	}
	if (cp < 0x800) {
		o[0] = (char)(0xc0 | cp >> 6);
		o[1] = (char)(0x80 | (cp & 0x3f));
		return 2;
	}
	if (cp < 0x10000) {
		o[0] = (char)(0xe0 | cp >> 12);
		o[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
		o[2] = (char)(0x80 | (cp & 0x3f));
		return 3;
	}
	o[0] = (char)(0xf0 | cp >> 18);
	o[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
	o[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
	o[3] = (char)(0x80 | (cp & 0x3f));
	return 4;
}

/* A quoted literal starting at sc->pos (its quote char), with Go's escapes:
 * \a \b \f \n \r \t \v \\ \<quote> \xHH \ooo \uHHHH \UHHHHHHHH.
 * alt_ok allows the '/' and '|' quotes (regex values only). */
static int quoted(struct scan *sc, bool alt_ok, char **out, sl_error_t *err)
{
	char q = sc->s[sc->pos];
	if (q != '"' && !alt_ok)
		return bad(sc, err, "this quote is only allowed around a ~= value");
	size_t start = sc->pos++;
	char *o = malloc(sc->len - start + 4); /* escapes never grow the text past 4 bytes per 2 */
	if (!o)
		return sl_error_set(err, SL_E_NOMEM, "filter: out of memory");
	size_t n = 0;
	for (;;) {
		if (sc->pos >= sc->len || sc->s[sc->pos] == '\n') {
			free(o);
			sc->pos = start;
			return bad(sc, err, "quoted literal not terminated");
		}
		char c = sc->s[sc->pos++];
		if (c == q)
			break;
		if (c != '\\') {
			o[n++] = c;
			continue;
		}
		if (sc->pos >= sc->len)
			continue; /* reported as unterminated above */
		char e = sc->s[sc->pos++];
		const char *simple = "a\ab\bf\fn\nr\rt\tv\v\\\\";
		const char *hit = NULL;
		for (const char *p = simple; *p; p += 2)
			if (*p == e)
				hit = p;
		if (hit) {
			o[n++] = hit[1];
		} else if (e == q) {
			o[n++] = q;
		} else if (e == 'x' || e == 'u' || e == 'U') {
			size_t digits = e == 'x' ? 2 : e == 'u' ? 4 : 8;
			uint32_t v = 0;
			for (size_t i = 0; i < digits; i++) {
				int h = sc->pos < sc->len ? hexval(sc->s[sc->pos]) : -1;
				if (h < 0) {
					free(o);
					return bad(sc, err, "bad hex escape in a quoted literal");
				}
				v = v << 4 | (uint32_t)h;
				sc->pos++;
			}
			if (e == 'x') {
				o[n++] = (char)v;
			} else {
				if (v > 0x10ffff || (v >= 0xd800 && v < 0xe000)) {
					free(o);
					return bad(sc, err, "escape is not a valid code point");
				}
				n += put_utf8(o + n, v);
			}
		} else if (e >= '0' && e <= '7') {
			uint32_t v = (uint32_t)(e - '0');
			for (int i = 0; i < 2; i++) {
				if (sc->pos >= sc->len || sc->s[sc->pos] < '0' || sc->s[sc->pos] > '7') {
					free(o);
					return bad(sc, err, "bad octal escape in a quoted literal");
				}
				v = v * 8 + (uint32_t)(sc->s[sc->pos++] - '0');
			}
			if (v > 255) {
				free(o);
				return bad(sc, err, "octal escape above 255");
			}
			o[n++] = (char)v;
		} else {
			free(o);
			sc->pos--;
			return bad(sc, err, "unknown escape in a quoted literal");
		}
	}
	o[n] = '\0';
	if (memchr(o, '\0', n)) {
		free(o);
		return bad(sc, err, "NUL in a quoted literal");
	}
	*out = o;
	return 0;
}

static int field(struct scan *sc, char **out, sl_error_t *err)
{
	char c = peek(sc);
	if (is_quote(c))
		return quoted(sc, false, out, err);
	size_t start = sc->pos;
	while (sc->pos < sc->len && is_field_char(sc->s[sc->pos]))
		sc->pos++;
	if (sc->pos == start)
		return bad(sc, err, "expected a field name or a quoted field");
	*out = strndup(sc->s + start, sc->pos - start);
	return *out ? 0 : sl_error_set(err, SL_E_NOMEM, "filter: out of memory");
}

static void sel_clear(struct filter_sel *s)
{
	free(s->field);
	free(s->key);
	free(s->value);
	if (s->has_re)
		regfree(&s->re);
	memset(s, 0, sizeof(*s));
}

static int fieldpath(struct scan *sc, struct filter_sel *sel, sl_error_t *err)
{
	if (field(sc, &sel->field, err) < 0)
		return -1;
	/* The rest of the path is a label key: joined by '.', as containerd does. */
	size_t cap = 0, n = 0;
	while (peek(sc) == '.') {
		sc->pos++;
		_cleanup_free_ char *f = NULL;
		if (field(sc, &f, err) < 0)
			return -1;
		size_t fl = strlen(f);
		if (n + fl + 2 > cap) {
			cap = (n + fl + 2) * 2;
			char *k = realloc(sel->key, cap);
			if (!k)
				return sl_error_set(err, SL_E_NOMEM, "filter: out of memory");
			sel->key = k;
		}
		if (n)
			sel->key[n++] = '.';
		memcpy(sel->key + n, f, fl + 1);
		n += fl;
	}
	return 0;
}

/* glibc's regcomp copies a subexpression once per repetition it can make
 * and has no budget: a short pattern of stacked quantifiers (`a+++...`) or
 * large counts (`(a{100}){100}`) takes gigabytes (found by the fuzzer).
 * containerd uses RE2, which is linear; here patterns are kept to what a
 * filter needs: short, few quantifiers, none stacked, small counts, no
 * back-references. */
#define REGEX_MAX_LEN 256
#define REGEX_MAX_QUANTIFIERS 16
#define REGEX_MAX_COUNT 16

/* Length of a bracket expression starting at re[i] == '[' (its contents are
 * literal, quantifier characters included); 0 when unterminated. */
static size_t bracket_len(const char *re, size_t i, size_t n)
{
	size_t j = i + 1;
	if (j < n && re[j] == '^')
		j++;
	if (j < n && re[j] == ']')
		j++; /* a leading ] is a member */
	for (; j < n; j++) {
		if (re[j] == '[' && j + 1 < n && (re[j + 1] == ':' || re[j + 1] == '.' || re[j + 1] == '=')) {
			char kind = re[j + 1];
			const char *close = NULL;
			for (size_t k = j + 2; k + 1 < n; k++)
				if (re[k] == kind && re[k + 1] == ']') {
					close = re + k;
					break;
				}
			if (!close)
				return 0;
			j = (size_t)(close - re) + 1;
			continue;
		}
		if (re[j] == ']')
			return j - i + 1;
	}
	return 0;
}

/* A bound {m}, {m,} or {m,n} at re[i]: its length, and its largest count. */
static size_t bound_len(const char *re, size_t i, size_t n, unsigned long *max)
{
	size_t j = i + 1;
	*max = 0;
	for (int part = 0; part < 2; part++) {
		size_t d = j;
		unsigned long v = 0;
		while (j < n && re[j] >= '0' && re[j] <= '9' && j - d < 6)
			v = v * 10 + (unsigned long)(re[j++] - '0');
		if (j < n && re[j] >= '0' && re[j] <= '9')
			return 0; /* too many digits */
		if (j == d && part == 0)
			return 0;
		if (v > *max)
			*max = v;
		if (j < n && re[j] == '}')
			return j - i + 1;
		if (part == 0 && j < n && re[j] == ',')
			j++;
		else
			return 0;
	}
	return 0;
}

static const char *regex_problem(const char *re)
{
	size_t n = strlen(re), quantifiers = 0;
	if (n > REGEX_MAX_LEN)
		return "regex longer than 256 bytes";
	bool after_quantifier = false;
	for (size_t i = 0; i < n; i++) {
		char c = re[i];
		size_t len = 1;
		bool quant = false;
		unsigned long count = 0;
		if (c == '\\') {
			if (i + 1 < n && re[i + 1] >= '1' && re[i + 1] <= '9')
				return "regex back-references are not supported";
			len = 2;
		} else if (c == '[') {
			len = bracket_len(re, i, n);
			if (!len)
				return "regex with an unterminated bracket expression";
		} else if (c == '*' || c == '+' || c == '?') {
			quant = true;
		} else if (c == '{' && (len = bound_len(re, i, n, &count)) != 0) {
			quant = true;
			if (count > REGEX_MAX_COUNT)
				return "regex repetition count above 16";
		} else if (c == '{') {
			return "regex with a '{' that is not a repetition count";
		}
		if (quant) {
			if (after_quantifier)
				return "regex with a quantifier on a quantifier";
			if (++quantifiers > REGEX_MAX_QUANTIFIERS)
				return "regex with more than 16 quantifiers";
		}
		after_quantifier = quant;
		i += len - 1;
	}
	return NULL;
}

static int selector(struct scan *sc, struct filter_sel *sel, sl_error_t *err)
{
	if (fieldpath(sc, sel, err) < 0)
		return -1;
	char c = peek(sc);
	if (c == ',' || c == '\0') {
		sel->op = OP_PRESENT;
		return 0;
	}
	if (!is_op_char(c) || sc->pos + 1 >= sc->len || sc->s[sc->pos + 1] != '=')
		return bad(sc, err, "expected an operator (==, != or ~=)");
	sel->op = c == '=' ? OP_EQUAL : c == '!' ? OP_NOT_EQUAL : OP_MATCHES;
	sc->pos += 2;
	c = peek(sc);
	if (is_quote(c)) {
		if (quoted(sc, sel->op == OP_MATCHES, &sel->value, err) < 0)
			return -1;
	} else {
		size_t start = sc->pos;
		while (sc->pos < sc->len && is_value_char(sc->s[sc->pos]))
			sc->pos++;
		if (sc->pos == start)
			return bad(sc, err, "expected a value or a quoted value");
		sel->value = strndup(sc->s + start, sc->pos - start);
		if (!sel->value)
			return sl_error_set(err, SL_E_NOMEM, "filter: out of memory");
	}
	if (sel->op == OP_MATCHES) {
		/* POSIX extended regular expressions (containerd uses Go's RE2
		 * syntax; the common subset is the same). */
		const char *why = regex_problem(sel->value);
		if (why)
			return bad(sc, err, why);
		if (regcomp(&sel->re, sel->value, REG_EXTENDED | REG_NOSUB) != 0)
			return bad(sc, err, "the ~= value is not a valid regular expression");
		sel->has_re = true;
	}
	return 0;
}

static int parse_one(struct scan *sc, struct filter_all *all, sl_error_t *err)
{
	for (;;) {
		if (all->n == SNAP_FILTER_MAX_SELECTORS)
			return sl_error_set(err, SL_E_LIMIT, "filter %zu: more than %d selectors", sc->expr,
					    SNAP_FILTER_MAX_SELECTORS);
		struct filter_sel *s = realloc(all->sels, (all->n + 1) * sizeof(*s));
		if (!s)
			return sl_error_set(err, SL_E_NOMEM, "filter: out of memory");
		all->sels = s;
		memset(&s[all->n], 0, sizeof(*s));
		int rc = selector(sc, &s[all->n], err);
		all->n++; /* cleared on failure by snap_filter_free */
		if (rc < 0)
			return -1;
		char c = peek(sc);
		if (c == '\0')
			return 0;
		if (c != ',')
			return bad(sc, err, "unexpected input after a selector");
		sc->pos++;
	}
}

void snap_filter_free(struct snap_filter *f)
{
	if (!f)
		return;
	for (size_t i = 0; i < f->n; i++) {
		for (size_t j = 0; j < f->alts[i].n; j++)
			sel_clear(&f->alts[i].sels[j]);
		free(f->alts[i].sels);
	}
	free(f->alts);
	free(f);
}

int snap_filter_parse(struct snap_filter **out, char *const *exprs, size_t n, sl_error_t *err)
{
	if (n > SNAP_FILTER_MAX_EXPRS)
		return sl_error_set(err, SL_E_LIMIT, "more than %d filters", SNAP_FILTER_MAX_EXPRS);
	struct snap_filter *f = calloc(1, sizeof(*f));
	if (!f || (n && !(f->alts = calloc(n, sizeof(*f->alts))))) {
		free(f);
		return sl_error_set(err, SL_E_NOMEM, "filter: out of memory");
	}
	for (size_t i = 0; i < n; i++) {
		struct scan sc = {.s = exprs[i] ? exprs[i] : "", .expr = i};
		sc.len = strlen(sc.s);
		if (sc.len > SNAP_FILTER_MAX_LEN) {
			snap_filter_free(f);
			return sl_error_set(err, SL_E_LIMIT, "filter %zu: longer than %d bytes", i, SNAP_FILTER_MAX_LEN);
		}
		f->n++;
		if (peek(&sc) == '\0')
			continue; /* empty: matches everything */
		if (parse_one(&sc, &f->alts[i], err) < 0) {
			snap_filter_free(f);
			return -1;
		}
	}
	*out = f;
	return 0;
}

static const char *kind_name(enum snap_kind k)
{
	switch (k) {
	case SNAP_KIND_ACTIVE: return "active";
	case SNAP_KIND_VIEW: return "view";
	case SNAP_KIND_COMMITTED: return "committed";
	default: return NULL;
	}
}

/* The field's value, as containerd's snapshot adaptor gives it; NULL when absent. */
static const char *field_value(const struct filter_sel *s, const struct snap_info *info)
{
	if (!strcmp(s->field, "name"))
		return s->key ? NULL : info->name ? info->name : "";
	if (!strcmp(s->field, "parent"))
		return s->key ? NULL : info->parent ? info->parent : "";
	if (!strcmp(s->field, "kind"))
		return s->key ? NULL : kind_name(info->kind);
	if (!strcmp(s->field, "labels") && s->key)
		for (size_t i = 0; i < info->nlabels; i++)
			if (!strcmp(info->labels[i].key, s->key))
				return info->labels[i].value;
	return NULL;
}

static bool sel_match(const struct filter_sel *s, const struct snap_info *info)
{
	const char *v = field_value(s, info);
	switch (s->op) {
	case OP_PRESENT: return v != NULL;
	case OP_EQUAL: return v && !strcmp(v, s->value);
	case OP_NOT_EQUAL: return !v ? s->value[0] != '\0' : strcmp(v, s->value) != 0;
	case OP_MATCHES: return regexec(&s->re, v ? v : "", 0, NULL, 0) == 0;
	}
	return false;
}

bool snap_filter_match(const struct snap_filter *f, const struct snap_info *info)
{
	if (!f || f->n == 0)
		return true;
	for (size_t i = 0; i < f->n; i++) {
		bool all = true;
		for (size_t j = 0; j < f->alts[i].n && all; j++)
			all = sel_match(&f->alts[i].sels[j], info);
		if (all)
			return true;
	}
	return false;
}
