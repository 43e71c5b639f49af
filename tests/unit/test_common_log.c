/* Unit tests for logfmt output (captured through a pipe) and value quoting. */
#include <errno.h>
#include <fcntl.h>
#include <regex.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "sl/log.h"

struct kv {
	char key[64];
	char val[8192];
};

/* A strict logfmt reader: key=value pairs separated by single spaces, values
 * bare (no space, quote or '=') or double-quoted with \" \\ \n escapes, and
 * exactly one trailing newline. Returns the pair count, -1 if malformed. */
static int logfmt_parse(const char *line, size_t len, struct kv *out, int max)
{
	const char *p = line, *end = line + len;
	int n = 0;

	if (len == 0 || line[len - 1] != '\n' || memchr(line, '\n', len) != end - 1)
		return -1;
	end--;
	while (p < end) {
		size_t k = 0, v = 0;

		if (n == max)
			return -1;
		while (p < end && *p != '=' && *p != ' ' && *p != '"' && k < 63)
			out[n].key[k++] = *p++;
		out[n].key[k] = '\0';
		if (k == 0 || p >= end || *p++ != '=')
			return -1;
		if (p < end && *p == '"') {
			p++;
			for (;;) {
				if (p >= end)
					return -1;
				if (*p == '"') {
					p++;
					break;
				}
				if ((unsigned char)*p < 0x20)
					return -1;
				if (*p == '\\') {
					if (++p >= end)
						return -1;
					switch (*p) {
					case 'n': out[n].val[v++] = '\n'; break;
					case 'r': out[n].val[v++] = '\r'; break;
					case 't': out[n].val[v++] = '\t'; break;
					case '"': out[n].val[v++] = '"'; break;
					case '\\': out[n].val[v++] = '\\'; break;
					case 'u': p += 4; out[n].val[v++] = '?'; break;
					default: return -1;
					}
					p++;
				} else {
					out[n].val[v++] = *p++;
				}
				if (v >= sizeof(out[n].val) - 1)
					return -1;
			}
		} else {
			while (p < end && *p != ' ') {
				if (*p == '"' || *p == '=' || (unsigned char)*p < 0x20)
					return -1;
				out[n].val[v++] = *p++;
				if (v >= sizeof(out[n].val) - 1)
					return -1;
			}
		}
		out[n].val[v] = '\0';
		n++;
		if (p < end) {
			if (*p != ' ' || p + 1 >= end)
				return -1;
			p++;
		}
	}
	return n;
}

struct capture {
	int rd, wr;
	char buf[16384];
	ssize_t len;
	struct kv kv[16];
	int nkv;
};

static int cap_setup(void **state)
{
	struct capture *c = calloc(1, sizeof(*c));
	int p[2];

	if (!c || pipe2(p, O_CLOEXEC | O_NONBLOCK) < 0)
		return -1;
	c->rd = p[0];
	c->wr = p[1];
	*state = c;
	return 0;
}

static int cap_teardown(void **state)
{
	struct capture *c = *state;

	sl_log_init("test", SL_LOG_INFO, 2);
	close(c->rd);
	close(c->wr);
	free(c);
	return 0;
}

/* Reads what is in the pipe; one sl_log call must be exactly one line. */
static void cap_read(struct capture *c)
{
	c->len = read(c->rd, c->buf, sizeof(c->buf) - 1);
	assert_true(c->len > 0);
	c->buf[c->len] = '\0';
	c->nkv = logfmt_parse(c->buf, (size_t)c->len, c->kv, 16);
	if (c->nkv < 0)
		fail_msg("not valid logfmt: %s", c->buf);
}

static const char *cap_get(struct capture *c, const char *key)
{
	for (int i = 0; i < c->nkv; i++)
		if (strcmp(c->kv[i].key, key) == 0)
			return c->kv[i].val;
	fail_msg("key %s missing in: %s", key, c->buf);
	return NULL;
}

static void test_line_format(void **state)
{
	struct capture *c = *state;
	regex_t re;
	char q[64];

	sl_log_init("sporelet-test", SL_LOG_DEBUG, c->wr);
	sl_info("snapshot taken", "id=%s size=%d path=%s", "abc", 42,
		sl_log_quote("/a b/c", q, sizeof(q)));
	cap_read(c);
	assert_int_equal(regcomp(&re,
				 "^ts=[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\\.[0-9]{3}Z "
				 "level=info prog=sporelet-test msg=\"snapshot taken\" "
				 "id=abc size=42 path=\"/a b/c\"\n$",
				 REG_EXTENDED | REG_NOSUB), 0);
	if (regexec(&re, c->buf, 0, NULL, 0) != 0)
		fail_msg("unexpected line: %s", c->buf);
	regfree(&re);
	assert_int_equal(c->nkv, 7);
	assert_string_equal(cap_get(c, "path"), "/a b/c");
}

static void test_levels_and_filtering(void **state)
{
	struct capture *c = *state;
	char b;

	sl_log_init("p", SL_LOG_WARN, c->wr);
	sl_info("hidden", NULL);
	sl_debug("hidden", "k=%d", 1);
	assert_int_equal(read(c->rd, &b, 1), -1);
	assert_int_equal(errno, EAGAIN);
	sl_warn("shown", NULL);
	cap_read(c);
	assert_string_equal(cap_get(c, "level"), "warn");
	assert_string_equal(cap_get(c, "msg"), "shown");
	assert_int_equal(c->nkv, 4);
	sl_err("bad", "%s", "");
	cap_read(c);
	assert_string_equal(cap_get(c, "level"), "error");

	sl_log_init("p", SL_LOG_DEBUG, c->wr);
	sl_debug("dbg", "a=%d", 1);
	cap_read(c);
	assert_string_equal(cap_get(c, "level"), "debug");
	assert_string_equal(cap_get(c, "a"), "1");
}

static void test_msg_escaping(void **state)
{
	struct capture *c = *state;

	sl_log_init("prog with space", SL_LOG_INFO, c->wr);
	sl_info("line1\nline2 \"quoted\" back\\slash a=b", NULL);
	cap_read(c);
	assert_string_equal(cap_get(c, "msg"), "line1\nline2 \"quoted\" back\\slash a=b");
	assert_string_equal(cap_get(c, "prog"), "prog with space");
}

static void test_long_line_truncated(void **state)
{
	struct capture *c = *state;
	static char big[20000];
	char q[64];

	memset(big, 'm', sizeof(big) - 1);
	sl_log_init("p", SL_LOG_INFO, c->wr);
	sl_info(big, NULL);
	cap_read(c);
	assert_true(c->len <= 4096);
	assert_int_equal(c->buf[c->len - 1], '\n');

	sl_info("short", "k=%s tail=%s", big, sl_log_quote("x y", q, sizeof(q)));
	c->len = read(c->rd, c->buf, sizeof(c->buf) - 1);
	assert_true(c->len > 0 && c->len <= 4096);
	assert_int_equal(c->buf[c->len - 1], '\n');
	assert_null(memchr(c->buf, '\n', (size_t)c->len - 1));
}

static void test_quote(void **state)
{
	char b[64];
	char tiny[6];

	(void)state;
	assert_string_equal(sl_log_quote("plain", b, sizeof(b)), "plain");
	assert_string_equal(sl_log_quote("a\\b", b, sizeof(b)), "a\\b");
	assert_string_equal(sl_log_quote("", b, sizeof(b)), "\"\"");
	assert_string_equal(sl_log_quote(NULL, b, sizeof(b)), "\"\"");
	assert_string_equal(sl_log_quote("has space", b, sizeof(b)), "\"has space\"");
	assert_string_equal(sl_log_quote("k=v", b, sizeof(b)), "\"k=v\"");
	assert_string_equal(sl_log_quote("say \"hi\"", b, sizeof(b)), "\"say \\\"hi\\\"\"");
	assert_string_equal(sl_log_quote("a\nb", b, sizeof(b)), "\"a\\nb\"");
	assert_string_equal(sl_log_quote("tab\there", b, sizeof(b)), "\"tab\\there\"");
	assert_string_equal(sl_log_quote("x y\\z", b, sizeof(b)), "\"x y\\\\z\"");
	assert_string_equal(sl_log_quote("bell\a", b, sizeof(b)), "\"bell\\u0007\"");

	/* Truncation keeps the value a single well-formed token. */
	assert_string_equal(sl_log_quote("abcdefgh", tiny, sizeof(tiny)), "abcde");
	assert_string_equal(sl_log_quote("a b c d e", tiny, sizeof(tiny)), "\"a b\"");
	assert_string_equal(sl_log_quote("\"\"\"", tiny, sizeof(tiny)), "\"\\\"\"");
	assert_string_equal(sl_log_quote("x y", tiny, 1), "");
	assert_string_equal(sl_log_quote("x y", tiny, 2), "");
	assert_string_equal(sl_log_quote("x y", tiny, 0), "");
}

static void test_level_parse(void **state)
{
	(void)state;
	assert_int_equal(sl_log_level_parse("debug"), SL_LOG_DEBUG);
	assert_int_equal(sl_log_level_parse("info"), SL_LOG_INFO);
	assert_int_equal(sl_log_level_parse("warn"), SL_LOG_WARN);
	assert_int_equal(sl_log_level_parse("error"), SL_LOG_ERROR);
	assert_int_equal(sl_log_level_parse("verbose"), -1);
	assert_int_equal(sl_log_level_parse(""), -1);
	assert_int_equal(sl_log_level_parse(NULL), -1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_line_format, cap_setup, cap_teardown),
		cmocka_unit_test_setup_teardown(test_levels_and_filtering, cap_setup, cap_teardown),
		cmocka_unit_test_setup_teardown(test_msg_escaping, cap_setup, cap_teardown),
		cmocka_unit_test_setup_teardown(test_long_line_truncated, cap_setup, cap_teardown),
		cmocka_unit_test(test_quote),
		cmocka_unit_test(test_level_parse),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
