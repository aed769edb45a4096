/*
 * benchclock.h - the clock and the median of the S3 benchmarks.
 */
#ifndef CKPT_TESTS_BENCHCLOCK_H
#define CKPT_TESTS_BENCHCLOCK_H

/* Seconds on the monotonic clock. */
double benchclock_now(void);
/* The median of the n values of v (sorted in place). */
double benchclock_median(double *v, int n);

#endif
