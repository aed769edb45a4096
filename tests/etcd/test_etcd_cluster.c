/*
 * test_etcd_cluster.c - a job on three nodes, an etcd of three members,
 * and the loss of its leader.
 *
 * Three network namespaces (bed.c), an etcd member and a ckptd in each;
 * six ranks (libckpt threads), two per node's daemon, save pieces of a
 * global array and a replicated leaf (ranks.h):
 *  - step 1 commits once and every daemon lists it; it restores whole
 *    through node 2's daemon and resharded to two nodes: node 0's and
 *    node 1's daemons each fill one half of the rows (F64 targets);
 *  - the etcd leader (asked of etcd) is SIGKILLed while step 3 is being
 *    saved: step 3 is committed on every node or on none, and once a new
 *    leader is elected steps 4 and 5 commit and every daemon lists them;
 *  - the job saves steps 1 and 2 again into a second root: they commit.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nodes.h"

#define NODES 3
#define RANKS 6

static struct nodes s;

/* Rows [lo, hi) of "w" restored as F64 through node's daemon. */
static int restore_rows(int node, uint64_t step, int64_t lo, int64_t hi)
{
	int64_t gs[2] = { RANKS_ROWS, RANKS_COLS };
	int64_t off[2] = { lo, 0 }, shp[2] = { hi - lo, RANKS_COLS }, r, col;
	size_t n = (size_t)((hi - lo) * RANKS_COLS);
	double *v = calloc(n, sizeof *v);
	ckpt_client *c = NULL;
	ckpt_manager *m = NULL;
	ckpt_restored *res = NULL;
	ckpt_restore_args *ra = ckpt_restore_args_new();
	ckpt_tree *tg = ckpt_tree_new();
	int good = 0;

	ckpt_tree_add_piece_target(tg, "w", CKPT_F64, 2, gs, off, shp, v,
	    n * sizeof *v);
	ckpt_restore_args_add_item(ra, "default", tg, 1);
	if (hx_connect(&s.d[node], &c) != 0 ||
	    ckpt_manager_open(c, s.root, NULL, &m) != 0 ||
	    ckpt_restore(m, (int64_t)step, ra, &res) != 0) {
		diag("restore through node %d: %s", node, c != NULL ?
		    ckpt_client_errmsg(c) : "connect");
		goto out;
	}
	good = 1;
	for (r = lo; r < hi; r++)
		for (col = 0; col < RANKS_COLS; col++)
			good &= v[(r - lo) * RANKS_COLS + col] ==
			    (double)ranks_g[r * RANKS_COLS + col];
	ckpt_restored_free(res);
out:
	ckpt_restore_args_free(ra);
	ckpt_tree_free(tg);
	ckpt_manager_close(m);
	ckpt_disconnect(c);
	free(v);
	return good;
}

static void check_whole(int node, uint64_t step)
{
	ckpt_client *c = NULL;
	ckpt_manager *m = NULL;
	ckpt_restored *res = NULL;
	const ckpt_tree *t;

	if (hx_connect(&s.d[node], &c) != 0 ||
	    ckpt_manager_open(c, s.root, NULL, &m) != 0 ||
	    !ok_call(ckpt_restore(m, (int64_t)step, NULL, &res), c,
	    "step %" PRIu64 " restores through node %d's daemon", step,
	    node)) {
		ckpt_manager_close(m);
		ckpt_disconnect(c);
		return;
	}
	t = ckpt_restored_item_tree(res, 0);
	ok(ranks_whole_ok(t), "the global array is assembled from the pieces "
	    "of 3 nodes, bit for bit");
	ok(ranks_replicated_ok(t), "the replicated array restores");
	ckpt_restored_free(res);
	ckpt_manager_close(m);
	ckpt_disconnect(c);
}

static int listed_everywhere(uint64_t step)
{
	int i, n = 0;

	for (i = 0; i < NODES; i++)
		n += nodes_listed(&s, i, step) == 1;
	return n;
}

int main(void)
{
	int i, leader, nok, nlisted;
	int64_t t0;

	ranks_fill(11);
	nodes_init(&s, NODES, 3, RANKS, 2, 2000);

	ok(nodes_step(&s, 1), "6 ranks on 3 nodes save step 1 and each waits "
	    "for its commit");
	is_int(listed_everywhere(1), NODES, "every node's daemon lists step 1");
	check_whole(2, 1);
	ok(restore_rows(0, 1, 0, RANKS_ROWS / 2) &&
	    restore_rows(1, 1, RANKS_ROWS / 2, RANKS_ROWS),
	    "resharded to 2 nodes: each restores its half of the rows (F64) "
	    "from the pieces of all 3 nodes");
	ok(nodes_step(&s, 2), "step 2 commits");

	/* The leader dies while step 3 is in flight. */
	leader = bed_leader(&s.b, 5000);
	ok(leader >= 0, "etcd names its leader (member %d)", leader);
	if (leader < 0)
		bail_out("no etcd leader");
	nodes_save(&s, 0, RANKS, 3);
	hx_sleep_ms(30);
	t0 = hx_now_ms();
	bed_kill(&s.b, leader);
	nodes_join(&s, 0, RANKS);
	for (i = nok = 0; i < RANKS; i++) {
		nok += nodes_rc(&s, i) == 0;
		if (nodes_rc(&s, i) != 0)
			diag("step 3, rank %d: %d %s", i, nodes_rc(&s, i),
			    s.k[i].msg);
	}
	nlisted = listed_everywhere(3);
	diag("step 3 with the leader killed: %d of %d ranks committed, listed "
	    "on %d nodes, %" PRId64 " ms", nok, RANKS, nlisted,
	    hx_now_ms() - t0);
	ok((nok == RANKS && nlisted == NODES) || (nok == 0 && nlisted == 0),
	    "step 3 (leader killed meanwhile) is committed on every node or on "
	    "none");
	is_int(nodes_step_dir(&s, 3), nlisted == NODES,
	    "step 3's directory is there exactly when it is committed");
	ok(bed_leader(&s.b, 5000) >= 0, "the other two members elect a leader");
	ok(nodes_step(&s, 4), "after the election step 4 commits");
	ok(nodes_step(&s, 5), "and step 5");
	is_int(listed_everywhere(4), NODES, "every node's daemon lists step 4");
	is_int(listed_everywhere(5), NODES, "every node's daemon lists step 5");
	check_whole(1, 5);

	/* The same job saves into a second root, from step 1 again. */
	hx_path(&s.d[0], s.root, "second-root");
	hx_mkdirs(s.root);
	ok(nodes_step(&s, 1), "the job saves step 1 into a second root: it "
	    "commits (the first root's keys are not this one's)");
	is_int(listed_everywhere(1), NODES, "every node's daemon lists step 1 "
	    "of the second root");
	ok(nodes_step(&s, 2), "and step 2");

	nodes_fini(&s);
	return done_testing();
}
