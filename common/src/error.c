/* Error objects: heap-allocated messages with an out-of-memory fallback. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sl/error.h"

/* Handed out when we cannot even allocate the error itself; callers must
 * still see a failure with a message, so this object is never freed. */
static char oom_msg[] = "out of memory";
static struct sl_error oom_error = {
	.code = SL_E_NOMEM,
	.sys_errno = ENOMEM,
	.msg = oom_msg,
};

static void set_oom(sl_error_t *err)
{
	sl_error_free(err);
	*err = &oom_error;
}

static char *vformat(const char *fmt, va_list ap)
{
	char *s = NULL;

	if (vasprintf(&s, fmt, ap) < 0)
		return NULL;
	return s;
}

/* Takes ownership of msg. A stray existing error is freed rather than
 * leaked: the newest failure is the one worth reporting. */
static int install(sl_error_t *err, int code, int sys_errno, char *msg)
{
	struct sl_error *e;

	if (!err) {
		free(msg);
		return -1;
	}
	if (!msg) {
		set_oom(err);
		return -1;
	}
	e = malloc(sizeof(*e));
	if (!e) {
		free(msg);
		set_oom(err);
		return -1;
	}
	e->code = code;
	e->sys_errno = sys_errno;
	e->msg = msg;
	sl_error_free(err);
	*err = e;
	return -1;
}

int sl_error_set(sl_error_t *err, int code, const char *fmt, ...)
{
	va_list ap;
	char *msg;
	int saved = errno;

	va_start(ap, fmt);
	msg = vformat(fmt, ap);
	va_end(ap);
	install(err, code, 0, msg);
	errno = saved;
	return -1;
}

static int errno_common(sl_error_t *err, int errnum, const char *fmt, va_list ap)
{
	_cleanup_free_ char *head = vformat(fmt, ap);
	char *msg = NULL;

	if (head && asprintf(&msg, "%s: %s", head, strerror(errnum)) < 0)
		msg = NULL;
	install(err, SL_E_IO, errnum, msg);
	return -1;
}

int sl_error_sys(sl_error_t *err, const char *fmt, ...)
{
	va_list ap;
	int saved = errno;

	va_start(ap, fmt);
	errno_common(err, saved, fmt, ap);
	va_end(ap);
	errno = saved;
	return -1;
}

int sl_error_errno(sl_error_t *err, int errnum, const char *fmt, ...)
{
	va_list ap;
	int saved = errno;

	/* APIs returning -errno are easy to pass through unnegated by mistake. */
	if (errnum < 0)
		errnum = -errnum;
	va_start(ap, fmt);
	errno_common(err, errnum, fmt, ap);
	va_end(ap);
	errno = saved;
	return -1;
}

int sl_error_wrap(sl_error_t *err, const char *fmt, ...)
{
	va_list ap;
	_cleanup_free_ char *ctx = NULL;
	char *msg = NULL;
	int saved = errno;

	if (!err)
		return -1;
	/* Wrapping nothing still has to report a failure to the caller. */
	if (!*err) {
		va_start(ap, fmt);
		ctx = vformat(fmt, ap);
		va_end(ap);
		install(err, SL_E_INVALID, 0, sl_steal_ptr(ctx));
		errno = saved;
		return -1;
	}
	/* The static OOM object cannot be rewritten; it already says enough. */
	if (*err == &oom_error)
		return -1;

	va_start(ap, fmt);
	ctx = vformat(fmt, ap);
	va_end(ap);
	if (!ctx || asprintf(&msg, "%s: %s", ctx, (*err)->msg) < 0) {
		set_oom(err);
		errno = saved;
		return -1;
	}
	free((*err)->msg);
	(*err)->msg = msg;
	errno = saved;
	return -1;
}

const char *sl_error_msg(const sl_error_t err)
{
	if (!err)
		return "no error";
	return err->msg ? err->msg : "unknown error";
}

const char *sl_error_code_name(int code)
{
	switch (code) {
	case SL_E_OK: return "ok";
	case SL_E_IO: return "io";
	case SL_E_INVALID: return "invalid";
	case SL_E_INTEGRITY: return "integrity";
	case SL_E_UNSUPPORTED: return "unsupported";
	case SL_E_NOT_FOUND: return "not-found";
	case SL_E_KVM: return "kvm";
	case SL_E_NOMEM: return "nomem";
	case SL_E_GUEST: return "guest";
	case SL_E_LIMIT: return "limit";
	case SL_E_EXISTS: return "exists";
	case SL_E_PRECONDITION: return "precondition";
	}
	return "unknown";
}

void sl_error_free(sl_error_t *err)
{
	if (!err || !*err)
		return;
	if (*err != &oom_error) {
		free((*err)->msg);
		free(*err);
	}
	*err = NULL;
}

void sl_show(const char *s, size_t n, char out[SL_SHOW_BUF])
{
	size_t i;

	if (!s) {
		strcpy(out, "(null)");
		return;
	}
	for (i = 0; i < n && s[i] && i < SL_SHOW_MAX; i++) {
		unsigned char c = (unsigned char)s[i];

		out[i] = (c >= 0x20 && c < 0x7f && c != '"') ? (char)c : '?';
	}
	if (i < n && s[i]) {
		memcpy(out + i, "...", 3);
		i += 3;
	}
	out[i] = '\0';
}
