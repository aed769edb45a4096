/*
 * ranks.c - the job the distributed libckpt tests save (see ranks.h).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "ranks.h"

#define COLBLOCK (RANKS_COLS / RANKS_NCOLBLOCKS)

float ranks_g[RANKS_ROWS * RANKS_COLS];
double ranks_b[5] = { 1.5, -2.25, 3.0, 1e300, -0.0 };

void
ranks_fill(uint64_t seed)
{
	int i;

	hx_fill(ranks_g, sizeof ranks_g, seed);
	for (i = 0; i < RANKS_ROWS * RANKS_COLS; i++)
		ranks_g[i] = (float)((int32_t)((uint32_t *)ranks_g)[i] %
		    100000) / 7.0f;
}

void
ranks_rows(int r, int parts, int64_t *lo, int64_t *hi)
{
	int64_t q = RANKS_ROWS / parts, rem = RANKS_ROWS % parts;

	*lo = r * q + (r < rem ? r : rem);
	*hi = *lo + q + (r < rem ? 1 : 0);
}

int
ranks_open(ckpt_client *c, const char *root, const char *job, int index,
    int count, ckpt_manager **m)
{
	ckpt_options *o = ckpt_options_new();
	int r;

	ckpt_options_set_process_index(o, (uint32_t)index);
	ckpt_options_set_process_count(o, (uint32_t)count);
	ckpt_options_set_job(o, job);
	r = ckpt_manager_open(c, root, o, m);
	ckpt_options_free(o);
	return r;
}

int
ranks_join(struct rank *k, struct hx_daemon *d, const char *root,
    const char *job, int count, ckpt_client **c, ckpt_manager **m)
{
	k->save_rc = k->wait_rc = CKPT_EINTERNAL;
	if (hx_connect(d, c) == 0 &&
	    ranks_open(*c, root, job, k->index, count, m) == 0)
		return 0;
	snprintf(k->msg, sizeof k->msg, "open: %s",
	    *c != NULL ? ckpt_client_errmsg(*c) : "connect");
	return -1;
}

void
ranks_add_pieces(ckpt_tree *t, int r, int parts)
{
	int64_t lo, hi, mid, gs[2] = { RANKS_ROWS, RANKS_COLS };
	int64_t off[2], shp[2];

	ranks_rows(r, parts, &lo, &hi);
	mid = lo + (hi - lo) / 2;
	off[0] = lo; off[1] = 0; shp[0] = mid - lo; shp[1] = RANKS_COLS;
	ckpt_tree_add_piece(t, "w", CKPT_F32, 2, gs, off, shp,
	    &ranks_g[lo * RANKS_COLS],
	    (size_t)(shp[0] * RANKS_COLS) * sizeof(float));
	off[0] = mid; shp[0] = hi - mid;
	ckpt_tree_add_piece(t, "w", CKPT_F32, 2, gs, off, shp,
	    &ranks_g[mid * RANKS_COLS],
	    (size_t)(shp[0] * RANKS_COLS) * sizeof(float));
}

void
ranks_add_replicated(ckpt_tree *t, uint64_t step)
{
	int64_t bs = 5;

	ckpt_tree_add_array(t, "b", CKPT_F64, 1, &bs, ranks_b,
	    sizeof ranks_b);
	ckpt_tree_add_int(t, "step", (int64_t)step);
}

int
ranks_save(ckpt_manager *m, uint64_t step, const ckpt_tree *t)
{
	ckpt_save_args *a = ckpt_save_args_new();
	int rc, saved = 0;

	ckpt_save_args_add_tree(a, NULL, CKPT_HANDLER_STANDARD, t);
	rc = ckpt_save(m, step, a, &saved);
	if (rc == 0 && !saved)
		rc = CKPT_EINTERNAL;
	ckpt_save_args_free(a);
	return rc;
}

int
ranks_whole_ok(const ckpt_tree *t)
{
	ckpt_leaf lf;

	return ckpt_tree_leaf(t, (size_t)ckpt_tree_find(t, "w"), &lf) == 0 &&
	    lf.global_shape == NULL && lf.ndim == 2 &&
	    lf.shape[0] == RANKS_ROWS && lf.shape[1] == RANKS_COLS &&
	    lf.nbytes == sizeof ranks_g &&
	    memcmp(lf.data, ranks_g, sizeof ranks_g) == 0;
}

int
ranks_replicated_ok(const ckpt_tree *t)
{
	ckpt_leaf lf;

	return ckpt_tree_leaf(t, (size_t)ckpt_tree_find(t, "b"), &lf) == 0 &&
	    lf.nbytes == sizeof ranks_b &&
	    memcmp(lf.data, ranks_b, sizeof ranks_b) == 0;
}

ckpt_tree *
ranks_column_targets(double *cols[RANKS_NCOLBLOCKS])
{
	ckpt_tree *tg = ckpt_tree_new();
	int64_t gs[2] = { RANKS_ROWS, RANKS_COLS }, off[2], shp[2];
	size_t n = (size_t)(RANKS_ROWS * COLBLOCK);
	int i;

	for (i = 0; i < RANKS_NCOLBLOCKS; i++) {
		off[0] = 0; off[1] = i * COLBLOCK;
		shp[0] = RANKS_ROWS; shp[1] = COLBLOCK;
		cols[i] = calloc(n, sizeof(double));
		ckpt_tree_add_piece_target(tg, "w", CKPT_F64, 2, gs, off, shp,
		    cols[i], n * sizeof(double));
	}
	return tg;
}

int
ranks_columns_ok(double *const cols[RANKS_NCOLBLOCKS])
{
	int64_t r, col;
	int i, good = 1;

	for (i = 0; i < RANKS_NCOLBLOCKS; i++)
		for (r = 0; r < RANKS_ROWS; r++)
			for (col = 0; col < COLBLOCK; col++)
				good &= cols[i][r * COLBLOCK + col] ==
				    (double)ranks_g[r * RANKS_COLS +
				    i * COLBLOCK + col];
	return good;
}

void
ranks_columns_free(double *cols[RANKS_NCOLBLOCKS])
{
	int i;

	for (i = 0; i < RANKS_NCOLBLOCKS; i++) {
		free(cols[i]);
		cols[i] = NULL;
	}
}

int
ranks_all_ok(const struct rank *k, int n, const char *what)
{
	int i, all = 1;

	for (i = 0; i < n; i++) {
		if (k[i].save_rc != 0 || k[i].wait_rc != 0)
			diag("%s: rank %d: save %d wait %d: %s", what, i,
			    k[i].save_rc, k[i].wait_rc, k[i].msg);
		all &= k[i].save_rc == 0 && k[i].wait_rc == 0;
	}
	return all;
}
