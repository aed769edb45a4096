/*
 * untouched.h - the check the bad-input tests run after each bad input:
 * ckptd still runs, another client is served, and the watched root (one
 * committed step 0) is unchanged on disk, file for file.
 */
#ifndef CKPT_TEST_UNTOUCHED_H
#define CKPT_TEST_UNTOUCHED_H

#include "harness.h"

struct untouched {
	char root[HX_PATH];
	char *before;           /* hx_snapshot of root when it was watched */
};

/* Make <d's dir>/<name> a root with step 0 (a float32 "w" of 4 values),
 * committed, and watch it. Bails out when that fails. */
void untouched_make(struct hx_daemon *d, struct untouched *u,
    const char *name);
/* Watch root u->root as it is now (a root the test made itself). */
void untouched_watch(struct untouched *u);
/* The checks, each named "<what>: ...". */
void untouched_probe(struct hx_daemon *d, const struct untouched *u,
    const char *what);
void untouched_free(struct untouched *u);

#endif
