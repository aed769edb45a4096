/*
 * test_distributed_lib.c - distributed steps through libckpt: RANKS threads,
 * each its own connection and manager (process index/count), save one step
 * together: each rank two pieces of a global F32 array "w" (its rows, in
 * two halves) and the replicated leaves "b" (an array only the primary
 * writes) and "step".
 *  - the step commits on every rank; a manager of one process restores the
 *    whole array; piece targets of another layout (columns, F64) are
 *    filled from the overlapping pieces (columns, and rows where whole
 *    pieces are read straight into place); item metadata lists the pieces;
 *  - a rank that disconnects without saving fails the step on the others
 *    with CKPT_ERANK naming it; nothing is listed; the next step commits;
 *  - a rank holding no piece of "w" (an empty list at its path) while the
 *    others cover it: the step commits and restores alike;
 *  - a restore target holding an empty list at "w" (a rank asking for no
 *    piece of it) gives an empty list there.
 */
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "ranks.h"

#define RANKS 4
#define ROWS RANKS_ROWS
#define COLS RANKS_COLS

static struct hx_daemon d;
static char root[HX_PATH];
/* Every rank has its manager open before any saves or goes away (a rank
 * leaving before the others joined leaves no trace: the job was empty). */
static pthread_barrier_t opened;
/* The last rank holds no piece of "w" (an empty list at its path); the
 * others share its rows. */
static int g_nopiece;

static void *rank_thread(void *arg)
{
	struct rank *k = arg;
	ckpt_client *c = NULL;
	ckpt_manager *m = NULL;
	ckpt_tree *t = ckpt_tree_new();

	if (ranks_join(k, &d, root, "c-test", RANKS, &c, &m) != 0) {
		pthread_barrier_wait(&opened);
		goto out;
	}
	pthread_barrier_wait(&opened);
	if (k->skip) {
		/* the process "dies" before handing its part */
		ckpt_disconnect(c);
		c = NULL;
		m = NULL;
		goto out;
	}
	if (g_nopiece && k->index == RANKS - 1) {
		ckpt_key key = { CKPT_KEY_DICT, "w", 0 };

		ckpt_tree_add_scalar_k(t, &key, 1, CKPT_LEAF_EMPTY_LIST, 0, 0,
		    0, NULL);
	} else {
		ranks_add_pieces(t, k->index, g_nopiece ? RANKS - 1 : RANKS);
	}
	ranks_add_replicated(t, k->step);
	k->save_rc = ranks_save(m, k->step, t);
	k->wait_rc = ckpt_wait_until_finished(m);
	snprintf(k->msg, sizeof k->msg, "%s", ckpt_manager_errmsg(m));
out:
	ckpt_tree_free(t);
	ckpt_manager_close(m);
	ckpt_disconnect(c);
	return NULL;
}

static void run_job(uint64_t step, int skip, struct rank *k)
{
	pthread_t th[RANKS];
	int i;

	pthread_barrier_init(&opened, NULL, RANKS);
	for (i = 0; i < RANKS; i++) {
		memset(&k[i], 0, sizeof k[i]);
		k[i].index = i;
		k[i].step = step;
		k[i].skip = i == skip;
		pthread_create(&th[i], NULL, rank_thread, &k[i]);
	}
	for (i = 0; i < RANKS; i++)
		pthread_join(th[i], NULL);
	pthread_barrier_destroy(&opened);
}

static int listed(ckpt_manager *m, uint64_t step)
{
	uint64_t *v = NULL;
	size_t n = 0, i;
	int found = 0;

	if (ckpt_all_steps(m, &v, &n) != 0)
		return -1;
	for (i = 0; i < n; i++)
		found |= v[i] == step;
	free(v);
	return found;
}

static void check_restores(ckpt_client *c, ckpt_manager *m, uint64_t step,
    int npieces)
{
	ckpt_restored *res = NULL;
	ckpt_restore_args *ra;
	ckpt_tree *tg;
	const ckpt_tree *t;
	ckpt_leaf lf;
	int64_t gs[2] = { ROWS, COLS }, off[2], shp[2];
	double *cols[RANKS_NCOLBLOCKS];
	int i, good, pieces;
	size_t j;

	/* whole arrays, assembled */
	if (!ok_call(ckpt_restore(m, (int64_t)step, NULL, &res), c,
	    "step %" PRIu64 " restores in one process", step))
		return;
	t = ckpt_restored_item_tree(res, 0);
	ok(ranks_whole_ok(t), "the whole global array is assembled from %d "
	    "pieces, bit for bit", npieces);
	ok(ranks_replicated_ok(t), "the replicated array restores");
	ckpt_restored_free(res);

	/* piece targets of another layout: 3 column blocks, cast to F64 */
	tg = ranks_column_targets(cols);
	ra = ckpt_restore_args_new();
	ckpt_restore_args_add_item(ra, "default", tg, 1);
	if (ok_call(ckpt_restore(m, (int64_t)step, ra, &res), c,
	    "restore into column piece targets")) {
		ok(ranks_columns_ok(cols), "each column block is filled from "
		    "the rows of every rank, cast to F64");
		t = ckpt_restored_item_tree(res, 0);
		pieces = 0;
		for (j = 0; j < ckpt_tree_nleaves(t); j++)
			if (ckpt_tree_leaf(t, j, &lf) == 0 &&
			    lf.global_shape != NULL)
				pieces++;
		is_int(pieces, 3, "the restored tree holds the 3 target pieces");
		ckpt_restored_free(res);
	}
	ckpt_restore_args_free(ra);
	ckpt_tree_free(tg);
	ranks_columns_free(cols);

	/* piece targets of rows, cast to F64 and at a destination 8 bytes
	 * past an aligned start: the saved pieces wholly inside a target
	 * are read (cast) straight into place, the others copied by region */
	{
		int64_t half = ROWS / 2, r, col;
		double *rows[2], *mem[2];

		tg = ckpt_tree_new();
		for (i = 0; i < 2; i++) {
			off[0] = i == 0 ? 0 : half; off[1] = 0;
			shp[0] = i == 0 ? half : ROWS - half; shp[1] = COLS;
			mem[i] = calloc((size_t)(shp[0] * COLS) + 1,
			    sizeof(double));
			rows[i] = mem[i] + 1;
			ckpt_tree_add_piece_target(tg, "w", CKPT_F64, 2, gs, off,
			    shp, rows[i], (size_t)(shp[0] * COLS) *
			    sizeof(double));
		}
		ra = ckpt_restore_args_new();
		ckpt_restore_args_add_item(ra, "default", tg, 1);
		if (ok_call(ckpt_restore(m, (int64_t)step, ra, &res), c,
		    "restore into row piece targets")) {
			good = 1;
			for (r = 0; r < ROWS; r++)
				for (col = 0; col < COLS; col++)
					good &= (r < half ? rows[0][r * COLS +
					    col] : rows[1][(r - half) * COLS +
					    col]) == (double)ranks_g[r * COLS + col];
			ok(good, "each row block is filled, cast to F64");
			ckpt_restored_free(res);
		}
		ckpt_restore_args_free(ra);
		ckpt_tree_free(tg);
		free(mem[0]);
		free(mem[1]);
	}

	/* a rank asking for no piece of "w": an empty list at its path */
	tg = ckpt_tree_new();
	{
		ckpt_key key = { CKPT_KEY_DICT, "w", 0 };

		ckpt_tree_add_scalar_k(tg, &key, 1, CKPT_LEAF_EMPTY_LIST, 0, 0,
		    0, NULL);
	}
	ra = ckpt_restore_args_new();
	ckpt_restore_args_add_item(ra, "default", tg, 1);
	if (ok_call(ckpt_restore(m, (int64_t)step, ra, &res), c,
	    "restore with an empty list as the target of 'w'")) {
		t = ckpt_restored_item_tree(res, 0);
		ok(ckpt_tree_nleaves(t) == 1 && ckpt_tree_leaf(t, 0, &lf) == 0 &&
		    lf.kind == CKPT_LEAF_EMPTY_LIST &&
		    strcmp(lf.path_str, "w") == 0, "... gives an empty list "
		    "there, once for its %d pieces", npieces);
		ckpt_restored_free(res);
	}
	ckpt_restore_args_free(ra);
	ckpt_tree_free(tg);

	/* item metadata: one leaf per saved piece */
	if (ok_call(ckpt_item_metadata(m, (int64_t)step, &res), c,
	    "item metadata")) {
		int64_t covered = 0;
		t = ckpt_restored_item_tree(res, 0);
		pieces = 0;
		for (j = 0; j < ckpt_tree_nleaves(t); j++) {
			if (ckpt_tree_leaf(t, j, &lf) != 0 ||
			    strcmp(lf.path_str, "w") != 0 || lf.global_shape == NULL)
				continue;
			pieces++;
			covered += lf.shape[0] * lf.shape[1];
		}
		is_int(pieces, npieces, "item metadata lists every saved piece");
		is_int(covered, ROWS * COLS, "... covering the global shape");
		ckpt_restored_free(res);
	}
}

int main(void)
{
	struct rank k[RANKS];
	ckpt_client *c = NULL;
	ckpt_manager *m = NULL;
	int i, all;

	ranks_fill(42);
	hx_init(&d);
	if (hx_start(&d) != 0)
		bail_out("ckptd did not start");
	hx_path(&d, root, "root");
	if (hx_connect(&d, &c) != 0 ||
	    ckpt_manager_open(c, root, NULL, &m) != 0)
		bail_out("cannot open the root");

	run_job(1, -1, k);
	ok(ranks_all_ok(k, RANKS, "step 1"), "%d ranks save step 1 together and wait for its commit",
	    RANKS);
	is_int(listed(m, 1), 1, "step 1 is listed");
	check_restores(c, m, 1, 2 * RANKS);

	run_job(2, 3, k);
	all = 1;
	for (i = 0; i < 3; i++) {
		/* the step may have failed before this rank's save arrived:
		 * the save reports it then, else the wait does */
		int rc = k[i].save_rc != 0 ? k[i].save_rc : k[i].wait_rc;

		all &= rc == CKPT_ERANK && strstr(k[i].msg, "3") != NULL;
		if (rc != CKPT_ERANK)
			diag("rank %d: save %d wait %d: %s", i, k[i].save_rc,
			    k[i].wait_rc, k[i].msg);
	}
	ok(all, "rank 3 disconnects without its part: the others get "
	    "CKPT_ERANK naming it");
	if (k[0].msg[0] != '\0')
		diag("message: %s", k[0].msg);
	is_int(listed(m, 2), 0, "step 2 is not listed");

	run_job(3, -1, k);
	ok(ranks_all_ok(k, RANKS, "step 3"), "the next step commits");
	is_int(listed(m, 3), 1, "step 3 is listed");

	g_nopiece = 1;
	run_job(4, -1, k);
	g_nopiece = 0;
	ok(ranks_all_ok(k, RANKS, "step 4"), "rank %d holds no piece of 'w' (an empty list): step 4 "
	    "commits, the others covering it", RANKS - 1);
	check_restores(c, m, 4, 2 * (RANKS - 1));

	ckpt_manager_close(m);
	ckpt_disconnect(c);
	ok(hx_alive(&d), "ckptd still running");
	is_int(hx_stop(&d), 0, "ckptd exits cleanly");
	hx_cleanup(&d);
	return done_testing();
}
