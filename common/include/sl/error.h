/* Error object carried from libraries up to the caller, with cleanup helpers. */
#ifndef SL_ERROR_H
#define SL_ERROR_H

#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

/* Error categories; the CLI maps them to exit statuses and messages. */
enum sl_error_code {
	SL_E_OK = 0,
	SL_E_IO,          /* a system call failed; sys_errno says why */
	SL_E_INVALID,     /* bad input: malformed file, argument or request */
	SL_E_INTEGRITY,   /* content does not match its digest */
	SL_E_UNSUPPORTED, /* unknown format version, unmet platform contract */
	SL_E_NOT_FOUND,   /* a named file, chunk or object is missing */
	SL_E_KVM,         /* the hypervisor refused an operation */
	SL_E_NOMEM,       /* allocation failed */
	SL_E_GUEST,       /* the guest did something the VMM cannot honour */
	SL_E_LIMIT,       /* an input exceeded a documented cap */
	SL_E_EXISTS,      /* the object to be created already exists */
	SL_E_PRECONDITION, /* the object is in the wrong state for the operation */
};

struct sl_error {
	int code;      /* enum sl_error_code */
	int sys_errno; /* errno at the failure, 0 if none */
	char *msg;     /* "context: context: cause", always set */
};

/* NULL means "no error". Functions taking `sl_error_t *err` return 0 on
 * success and -1 on failure, with *err set (it must be NULL on entry). */
typedef struct sl_error *sl_error_t;

/* All of these return -1 so callers can `return sl_error_set(...)`. */
int sl_error_set(sl_error_t *err, int code, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
/* Like sl_error_set with code SL_E_IO, appending ": strerror(errno)". */
int sl_error_sys(sl_error_t *err, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
/* Same with an explicit errno value (for APIs returning -errno). */
int sl_error_errno(sl_error_t *err, int errnum, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
/* Prepends "context: " to an existing error's message. */
int sl_error_wrap(sl_error_t *err, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

const char *sl_error_msg(const sl_error_t err);

/* Renders at most n bytes of untrusted text (stopping at NUL) for an error
 * message: at most SL_SHOW_MAX bytes, non-printable bytes and '"' as '?', and
 * "..." when cut, so a hostile string can neither flood nor corrupt a log line.
 * NULL renders as "(null)". */
#define SL_SHOW_MAX 80
#define SL_SHOW_BUF (SL_SHOW_MAX + 4)
void sl_show(const char *s, size_t n, char out[SL_SHOW_BUF]);
const char *sl_error_code_name(int code);
void sl_error_free(sl_error_t *err);

/* cleanup attributes */
static inline void sl_freep(void *p) { free(*(void **)p); }
static inline void sl_closep(int *fd) { if (*fd >= 0) close(*fd); }
static inline void sl_fclosep(FILE **f) { if (*f) fclose(*f); }
static inline void sl_error_freep(sl_error_t *e) { sl_error_free(e); }

#define _cleanup_free_ __attribute__((cleanup(sl_freep)))
#define _cleanup_close_ __attribute__((cleanup(sl_closep)))
#define _cleanup_fclose_ __attribute__((cleanup(sl_fclosep)))
#define _cleanup_error_ __attribute__((cleanup(sl_error_freep)))

/* Hand ownership out of a cleanup variable. */
#define sl_steal_ptr(p) ({ __typeof__(p) _t = (p); (p) = NULL; _t; })
#define sl_steal_fd(fd) ({ int _t = (fd); (fd) = -1; _t; })

#endif
