/*
 * test_copy.c - libckpt's streaming copies (copy_nt, copy_nt_ahead): every
 * size around the vector and line widths, at every alignment of source
 * and destination, copies exactly the bytes asked and nothing around them.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "internal.h"

#define GUARD 256
#define SLACK 8192      /* room for the offsets */

/* A source of n bytes at soff, a destination at doff (each below
 * SLACK), both in buffers with GUARD bytes around them. */
static void
check_copy(size_t n, size_t soff, size_t doff, int how)
{
	unsigned char *src = malloc(n + 2 * GUARD + SLACK);
	unsigned char *dst = malloc(n + 2 * GUARD + SLACK);
	unsigned char *s, *d;
	size_t i, bad;

	assert_non_null(src);
	assert_non_null(dst);
	for (i = 0; i < n + 2 * GUARD + SLACK; i++) {
		src[i] = (unsigned char)(i * 131 + 7);
		dst[i] = 0xA5;
	}
	s = src + GUARD + soff;
	d = dst + GUARD + doff;
	if (how == 0) {
		copy_nt(d, s, n);
	} else {
		/* the second half of the source is the range read next */
		copy_nt_ahead(d, s, n / 2, how == 2 ? s + n / 2 : NULL);
		copy_nt_ahead(d + n / 2, s + n / 2, n - n / 2, NULL);
	}
	copy_nt_fence();
	assert_true(memcmp(d, s, n) == 0);
	for (i = 0, bad = 0; i < GUARD + doff; i++)
		bad += dst[i] != 0xA5;
	for (i = GUARD + doff + n; i < n + 2 * GUARD + SLACK; i++)
		bad += dst[i] != 0xA5;
	assert_int_equal(bad, 0);
	free(src);
	free(dst);
}

static void
test_small_sizes(void **state)
{
	size_t n, so, dof;
	int how;

	(void)state;
	for (how = 0; how < 3; how++)
		for (n = 0; n <= 300; n += n < 140 ? 1 : 13)
			for (so = 0; so < 64; so += 5)
				for (dof = 0; dof < 64; dof += 3)
					check_copy(n, so, dof, how);
}

static void
test_large_sizes(void **state)
{
	static const size_t sizes[] = { COPY_NT_MIN - 1, COPY_NT_MIN,
	    COPY_NT_MIN + 77, (1u << 20) + 4096 + 16 };
	static const size_t offs[][2] = { { 0, 0 }, { 0, 16 }, { 16, 0 },
	    { 3, 61 }, { 4096, 16 }, { 63, 1 } };
	size_t i, k;
	int how;

	(void)state;
	for (how = 0; how < 3; how++)
		for (i = 0; i < sizeof sizes / sizeof sizes[0]; i++)
			for (k = 0; k < sizeof offs / sizeof offs[0]; k++)
				check_copy(sizes[i], offs[k][0], offs[k][1],
				    how);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_small_sizes),
		cmocka_unit_test(test_large_sizes),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
