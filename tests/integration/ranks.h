/*
 * ranks.h - the job the distributed libckpt tests save, rank by rank: a
 * global F32 array "w" of RANKS_ROWS x RANKS_COLS, of which each rank
 * saves its rows as two pieces (two halves), and the replicated leaves
 * "b" (an F64 array only the primary writes) and "step". After restoring,
 * the whole array and column piece targets are checked against it.
 *
 *	ranks_fill(42);
 *	ranks_open(c, root, "job", i, n, &m);     (in each rank's thread)
 *	ranks_add_pieces(t, i, n);
 *	ranks_add_replicated(t, step);
 *	rc = ranks_save(m, step, t);
 */
#ifndef CKPT_TEST_RANKS_H
#define CKPT_TEST_RANKS_H

#include <stdint.h>

#include <ckpt/ckpt.h>

#include "harness.h"

#define RANKS_ROWS 37   /* not a multiple of the rank count */
#define RANKS_COLS 24
#define RANKS_NCOLBLOCKS 3      /* column piece targets (divides RANKS_COLS) */

/* One rank of a job, run in a thread of the test: what it saves and what
 * came back. */
struct rank {
	int index;
	uint64_t step;
	int skip;               /* disconnect instead of saving */
	int hold_ms;            /* after saving, wait this long, then
				 * disconnect without waiting */
	int save_rc, wait_rc;
	char msg[512];          /* the manager's (or the client's) message */
};

/* The global array (filled by ranks_fill) and the replicated array. */
extern float ranks_g[RANKS_ROWS * RANKS_COLS];
extern double ranks_b[5];

/* Fill the global array with finite floats drawn from seed. */
void ranks_fill(uint64_t seed);
/* The rows [*lo, *hi) of rank r when parts ranks share the rows. */
void ranks_rows(int r, int parts, int64_t *lo, int64_t *hi);
/* Open a manager on root as process index of count in job: as
 * ckpt_manager_open. */
int ranks_open(ckpt_client *c, const char *root, const char *job,
    int index, int count, ckpt_manager **m);
/* Rank k (none of whose results are in yet: CKPT_EINTERNAL) connects to
 * d and opens its manager on root as ranks_open: 0, or -1 with k->msg
 * saying why (*c may be set then, for the caller to disconnect). */
int ranks_join(struct rank *k, struct hx_daemon *d, const char *root,
    const char *job, int count, ckpt_client **c, ckpt_manager **m);
/* Add rank r's two pieces of "w" (parts ranks sharing the rows) to t. */
void ranks_add_pieces(ckpt_tree *t, int r, int parts);
/* Add the replicated leaves "b" and "step" to t. */
void ranks_add_replicated(ckpt_tree *t, uint64_t step);
/* Save t (still the caller's) as step's standard item: as ckpt_save,
 * CKPT_EINTERNAL when the manager did not save it. */
int ranks_save(ckpt_manager *m, uint64_t step, const ckpt_tree *t);
/* 1 when the restored tree t holds the whole global array "w" (no global
 * shape, bit for bit). */
int ranks_whole_ok(const ckpt_tree *t);
/* 1 when the restored tree t holds "b" as saved. */
int ranks_replicated_ok(const ckpt_tree *t);
/* A target tree of RANKS_NCOLBLOCKS column pieces of "w" as F64; cols gets
 * their buffers (zeroed; free with ranks_columns_free). */
ckpt_tree *ranks_column_targets(double *cols[RANKS_NCOLBLOCKS]);
/* 1 when every column block equals the global array's columns. */
int ranks_columns_ok(double *const cols[RANKS_NCOLBLOCKS]);
void ranks_columns_free(double *cols[RANKS_NCOLBLOCKS]);
/* 1 when the n ranks of k saved and waited with success; each that did
 * not is told (diag), prefixed by what. */
int ranks_all_ok(const struct rank *k, int n, const char *what);

#endif
