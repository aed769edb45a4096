/*
 * tap.h - TAP output for the etcd tests (meson `protocol : 'tap'`).
 */
#ifndef CKPT_TEST_TAP_H
#define CKPT_TEST_TAP_H

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <time.h>

static int tap_n, tap_failed;

static __attribute__((unused)) void __attribute__((format(printf, 1, 2)))
diag(const char *fmt, ...)
{
	va_list ap;

	printf("# ");
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf("\n");
	fflush(stdout);
}

static __attribute__((unused)) int __attribute__((format(printf, 4, 5)))
tap_ok(int cond, const char *file, int line, const char *fmt, ...)
{
	va_list ap;

	printf("%sok %d - ", cond ? "" : "not ", ++tap_n);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf("\n");
	if (!cond) {
		printf("#   failed at %s:%d\n", file, line);
		tap_failed++;
	}
	fflush(stdout);
	return cond;
}

#define ok(cond, ...) tap_ok(!!(cond), __FILE__, __LINE__, __VA_ARGS__)

/* Print the plan; the exit status of the test. */
static __attribute__((unused)) int
done_testing(void)
{
	printf("1..%d\n", tap_n);
	return tap_failed != 0 || tap_n == 0;
}

/* A fatal setup failure. */
static __attribute__((unused)) void
bail_out(const char *why)
{
	printf("Bail out! %s\n", why);
	fflush(stdout);
}

static __attribute__((unused)) int64_t
tap_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static __attribute__((unused)) int64_t
tap_now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static __attribute__((unused)) void
tap_sleep_ms(int ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000 };

	nanosleep(&ts, NULL);
}

#endif
