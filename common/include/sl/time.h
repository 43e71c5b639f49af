/* Absolute deadlines for pthread_cond_timedwait and friends. */
#ifndef SL_TIME_H
#define SL_TIME_H

#include <stdint.h>
#include <time.h>

/* Milliseconds on the monotonic clock, for deadlines and durations. */
static inline int64_t sl_now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* *ts = now on clk + ms milliseconds, normalised. */
static inline void sl_deadline_ms(struct timespec *ts, clockid_t clk, unsigned long ms)
{
	clock_gettime(clk, ts);
	ts->tv_sec += (time_t)(ms / 1000);
	ts->tv_nsec += (long)(ms % 1000) * 1000000L;
	if (ts->tv_nsec >= 1000000000L) {
		ts->tv_sec++;
		ts->tv_nsec -= 1000000000L;
	}
}

#endif
