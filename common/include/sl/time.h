/* Absolute deadlines for pthread_cond_timedwait and friends. */
#ifndef SL_TIME_H
#define SL_TIME_H

#include <time.h>

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
