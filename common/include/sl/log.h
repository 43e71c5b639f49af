/* Logfmt logging for programs (libraries return errors and never log). */
#ifndef SL_LOG_H
#define SL_LOG_H

enum sl_log_level { SL_LOG_DEBUG = 0, SL_LOG_INFO, SL_LOG_WARN, SL_LOG_ERROR };

/* Default: level info, file descriptor 2, program name unset. */
void sl_log_init(const char *prog, int level, int fd);
int sl_log_level_parse(const char *s); /* "debug".."error", -1 if unknown */

/* Writes one line:
 *   ts=2026-11-22T10:00:00.123Z level=info prog=spore msg="..." k=v ...
 * `kv` is a printf format producing the trailing key=value pairs (may be
 * NULL); values containing spaces, quotes or '=' must be passed through
 * sl_log_quote. One write(2) per line, so concurrent lines do not mix. */
void sl_log(int level, const char *msg, const char *kv, ...)
	__attribute__((format(printf, 3, 4)));

/* Quotes a logfmt value if needed into buf (always NUL-terminated). */
const char *sl_log_quote(const char *value, char *buf, unsigned long bufsz);

#define sl_debug(msg, ...) sl_log(SL_LOG_DEBUG, msg, __VA_ARGS__)
#define sl_info(msg, ...) sl_log(SL_LOG_INFO, msg, __VA_ARGS__)
#define sl_warn(msg, ...) sl_log(SL_LOG_WARN, msg, __VA_ARGS__)
#define sl_err(msg, ...) sl_log(SL_LOG_ERROR, msg, __VA_ARGS__)

#endif
