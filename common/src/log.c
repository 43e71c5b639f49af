/* Logfmt logging facility for programs: one line per event, one write(2). */
#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "sl/log.h"

/* Sized so a line normally fits in one atomic pipe write (PIPE_BUF). */
#define LINE_MAX_BYTES 4096
/* Text (plus its NUL) may fill all but the last byte, which is kept for the
 * newline so truncation never has to overwrite a closing quote. */
#define LINE_TEXT_CAP (LINE_MAX_BYTES - 1)

static int log_level = SL_LOG_INFO;
static int log_fd = 2;
/* Copied so callers may pass a temporary (e.g. a basename buffer). */
static char log_prog[64];

static const char *const level_names[] = {
	[SL_LOG_DEBUG] = "debug",
	[SL_LOG_INFO] = "info",
	[SL_LOG_WARN] = "warn",
	[SL_LOG_ERROR] = "error",
};

void sl_log_init(const char *prog, int level, int fd)
{
	snprintf(log_prog, sizeof(log_prog), "%s", prog ? prog : "");
	if (level >= SL_LOG_DEBUG && level <= SL_LOG_ERROR)
		log_level = level;
	log_fd = fd;
}

int sl_log_level_parse(const char *s)
{
	if (!s)
		return -1;
	for (int i = SL_LOG_DEBUG; i <= SL_LOG_ERROR; i++)
		if (strcasecmp(s, level_names[i]) == 0)
			return i;
	if (strcasecmp(s, "warning") == 0)
		return SL_LOG_WARN;
	return -1;
}

static bool needs_quote(const char *v)
{
	if (!*v)
		return true;
	for (const unsigned char *p = (const unsigned char *)v; *p; p++)
		if (*p <= ' ' || *p == '"' || *p == '=' || *p == 0x7f)
			return true;
	return false;
}

/* Writes v into dst (cap bytes including the NUL), quoted when needed or
 * forced. Truncation never splits an escape and always keeps the closing
 * quote, so a cut value is still one parseable token. Returns the length. */
static size_t quote_into(char *dst, size_t cap, const char *v, bool force)
{
	size_t n = 0;

	if (cap == 0)
		return 0;
	if (!v)
		v = "";
	if (!force && !needs_quote(v)) {
		n = strnlen(v, cap - 1);
		memcpy(dst, v, n);
		dst[n] = '\0';
		return n;
	}
	if (cap < 3) {
		dst[0] = '\0';
		return 0;
	}
	dst[n++] = '"';
	for (const unsigned char *p = (const unsigned char *)v; *p; p++) {
		char esc[8];
		size_t elen;

		switch (*p) {
		case '"': elen = (size_t)snprintf(esc, sizeof(esc), "\\\""); break;
		case '\\': elen = (size_t)snprintf(esc, sizeof(esc), "\\\\"); break;
		case '\n': elen = (size_t)snprintf(esc, sizeof(esc), "\\n"); break;
		case '\r': elen = (size_t)snprintf(esc, sizeof(esc), "\\r"); break;
		case '\t': elen = (size_t)snprintf(esc, sizeof(esc), "\\t"); break;
		default:
			if (*p < ' ' || *p == 0x7f)
				elen = (size_t)snprintf(esc, sizeof(esc), "\\u%04x", *p);
			else {
				esc[0] = (char)*p;
				elen = 1;
			}
		}
		/* Keep room for the closing quote and the NUL. */
		if (n + elen + 2 > cap)
			break;
		memcpy(dst + n, esc, elen);
		n += elen;
	}
	dst[n++] = '"';
	dst[n] = '\0';
	return n;
}

const char *sl_log_quote(const char *value, char *buf, unsigned long bufsz)
{
	if (!buf || bufsz == 0)
		return "";
	quote_into(buf, bufsz, value, false);
	return buf;
}

struct line {
	char buf[LINE_MAX_BYTES];
	size_t len;
};

static void line_add(struct line *l, const char *s)
{
	size_t room = LINE_TEXT_CAP - 1 - l->len;
	size_t n = strlen(s);

	if (n > room)
		n = room;
	memcpy(l->buf + l->len, s, n);
	l->len += n;
	l->buf[l->len] = '\0';
}

static void line_add_quoted(struct line *l, const char *v, bool force)
{
	size_t room = LINE_TEXT_CAP - l->len;

	l->len += quote_into(l->buf + l->len, room, v, force);
}

static void format_ts(char *out, size_t sz)
{
	struct timespec ts;
	struct tm tm;
	char base[32];

	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	strftime(base, sizeof(base), "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(out, sz, "%s.%03ldZ", base, ts.tv_nsec / 1000000L);
}

void sl_log(int level, const char *msg, const char *kv, ...)
{
	struct line l = { .len = 0 };
	char ts[48];
	int saved = errno;

	if (level < log_level)
		return;
	if (level < SL_LOG_DEBUG || level > SL_LOG_ERROR)
		level = SL_LOG_ERROR;

	format_ts(ts, sizeof(ts));
	line_add(&l, "ts=");
	line_add(&l, ts);
	line_add(&l, " level=");
	line_add(&l, level_names[level]);
	line_add(&l, " prog=");
	line_add_quoted(&l, log_prog[0] ? log_prog : "-", false);
	line_add(&l, " msg=");
	line_add_quoted(&l, msg, true);

	if (kv && *kv) {
		size_t room, before;
		va_list ap;
		int n;

		before = l.len;
		line_add(&l, " ");
		room = LINE_TEXT_CAP - l.len;
		va_start(ap, kv);
		n = vsnprintf(l.buf + l.len, room, kv, ap);
		va_end(ap);
		/* An empty expansion must not leave a dangling separator. */
		if (n <= 0) {
			l.len = before;
			l.buf[l.len] = '\0';
		} else if ((size_t)n >= room) {
			l.len = LINE_TEXT_CAP - 1;
		} else {
			l.len += (size_t)n;
		}
	}

	l.buf[l.len++] = '\n';

	while (write(log_fd, l.buf, l.len) < 0 && errno == EINTR)
		;
	errno = saved;
}
