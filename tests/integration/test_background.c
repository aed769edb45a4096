/*
 * test_background.c - array leaves given as pieces (the shards of a device
 * array) and saves copied in the background (ckpt_save_args_set_background):
 *
 *   - pieces that leave a gap, overlap, overrun or have no data are refused;
 *     pieces in any order land at their offsets;
 *   - a background save returns with the step taken, the copy and the Save
 *     follow; wait_until_finished, restore, the next save, close and
 *     disconnect all wait for it; bytes round-trip;
 *   - the policy still decides at once (saved 0, nothing sent);
 *   - a save ckptd refuses when it gets it (--max-leaves) is the save's
 *     async error: reported once per thread, the next save proceeds;
 *   - a forced background save keeps "already exists" synchronous;
 *   - many leaves of pieces in one call (ckpt_tree_add_arrays_pieces_k):
 *     tags, a spec that fails names itself and keeps the ones before;
 *   - the decision asked early (ckpt_save_ask_early) is the one the save
 *     of that step and timestamp takes; another step, another timestamp,
 *     a save that is not background, close and a daemon restart in
 *     between all leave the save deciding correctly.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"

#define N_ROWS 64
#define N_COLS 4096     /* 1 MiB of float32 per array */

static struct hx_daemon d;

/* A 2-D float32 array as 8 row blocks (pieces), handed over in reverse. */
struct sharded {
	float *block[8];
	ckpt_piece pieces[8];
	float *whole;           /* the same bytes, for comparing */
};

static void sharded_make(struct sharded *s, uint64_t seed)
{
	size_t rows = N_ROWS / 8, nb = rows * N_COLS * sizeof(float);
	int i;

	s->whole = malloc((size_t)N_ROWS * N_COLS * sizeof(float));
	if (s->whole == NULL)
		bail_out("out of memory");
	hx_fill(s->whole, (size_t)N_ROWS * N_COLS * sizeof(float), seed);
	for (i = 0; i < 8; i++) {
		if ((s->block[i] = malloc(nb)) == NULL)
			bail_out("out of memory");
		memcpy(s->block[i], (char *)s->whole + (size_t)i * nb, nb);
		s->pieces[7 - i].offset = (uint64_t)i * nb;
		s->pieces[7 - i].data = s->block[i];
		s->pieces[7 - i].nbytes = nb;
	}
}

static void sharded_free(struct sharded *s)
{
	int i;

	for (i = 0; i < 8; i++)
		free(s->block[i]);
	free(s->whole);
}

static ckpt_tree *tree_of(struct sharded *s, int extra_leaves)
{
	ckpt_tree *t = ckpt_tree_new();
	ckpt_key k = { CKPT_KEY_DICT, "w", 0 };
	int64_t shape[2] = { N_ROWS, N_COLS };
	char name[16];
	int i;

	if (t == NULL ||
	    ckpt_tree_add_array_pieces_k(t, &k, 1, CKPT_F32, 2, shape,
	    s->pieces, 8) != 0)
		bail_out("cannot build the tree");
	ckpt_tree_add_int(t, "n", 42);
	for (i = 0; i < extra_leaves; i++) {
		snprintf(name, sizeof name, "x%d", i);
		ckpt_tree_add_int(t, name, i);
	}
	return t;
}

static int save_at(ckpt_manager *m, uint64_t step, const ckpt_tree *t,
    int force, int bg, int64_t ts, int *saved)
{
	ckpt_save_args *a = ckpt_save_args_new();
	int r = ckpt_save_args_add_tree(a, NULL, CKPT_HANDLER_STANDARD, t);

	if (r == 0 && bg)
		r = ckpt_save_args_set_background(a, 1);
	if (r == 0 && force)
		r = ckpt_save_args_set_force(a, 1);
	if (r == 0 && ts != 0)
		r = ckpt_save_args_set_timestamp(a, ts);
	if (r == 0)
		r = ckpt_save(m, step, a, saved);
	ckpt_save_args_free(a);
	return r;
}

static int bg_save(ckpt_manager *m, uint64_t step, const ckpt_tree *t,
    int force, int *saved)
{
	return save_at(m, step, t, force, 1, 0, saved);
}

/* Step `step` holds w == s->whole and n == 42. */
static int restored_equal(ckpt_manager *m, int64_t step,
    const struct sharded *s)
{
	ckpt_restored *res = NULL;
	const ckpt_tree *rt;
	ckpt_leaf lf;
	long li;
	int same = 0;

	if (ckpt_restore(m, step, NULL, &res) != 0)
		return 0;
	rt = ckpt_restored_item_tree(res, 0);
	li = rt != NULL ? ckpt_tree_find(rt, "w") : -1;
	if (li >= 0 && ckpt_tree_leaf(rt, (size_t)li, &lf) == 0 &&
	    lf.nbytes == (size_t)N_ROWS * N_COLS * sizeof(float) &&
	    memcmp(lf.data, s->whole, lf.nbytes) == 0) {
		li = ckpt_tree_find(rt, "n");
		same = li >= 0 && ckpt_tree_leaf(rt, (size_t)li, &lf) == 0 &&
		    lf.kind == CKPT_LEAF_INT && lf.i == 42;
	}
	ckpt_restored_free(res);
	return same;
}

static void test_pieces_validation(void)
{
	static char buf[64];
	ckpt_key k = { CKPT_KEY_DICT, "a", 0 };
	int64_t shape[1] = { 16 };      /* 64 bytes of float32 */
	ckpt_piece gap[2] = { { 0, buf, 16 }, { 32, buf + 32, 32 } };
	ckpt_piece overlap[2] = { { 0, buf, 40 }, { 32, buf + 32, 32 } };
	ckpt_piece overrun[1] = { { 0, buf, 80 } };
	ckpt_piece nodata[2] = { { 0, buf, 32 }, { 32, NULL, 32 } };
	ckpt_piece shuffled[3] = { { 48, buf + 48, 16 }, { 0, buf, 0 },
	    { 0, buf, 48 } };
	ckpt_tree *t = ckpt_tree_new();

	is_int(ckpt_tree_add_array_pieces_k(t, &k, 1, CKPT_F32, 1, shape, gap,
	    2), CKPT_EINVAL, "pieces with a gap are refused");
	is_int(ckpt_tree_add_array_pieces_k(t, &k, 1, CKPT_F32, 1, shape,
	    overlap, 2), CKPT_EINVAL, "overlapping pieces are refused");
	is_int(ckpt_tree_add_array_pieces_k(t, &k, 1, CKPT_F32, 1, shape,
	    overrun, 1), CKPT_EINVAL, "a piece past the end is refused");
	is_int(ckpt_tree_add_array_pieces_k(t, &k, 1, CKPT_F32, 1, shape,
	    nodata, 2), CKPT_EINVAL, "a piece without data is refused");
	is_int(ckpt_tree_add_array_pieces_k(t, &k, 1, CKPT_F32, 1, shape,
	    shuffled, 3), 0, "pieces in any order (and an empty one) are taken");
	is_int((long long)ckpt_tree_nleaves(t), 1,
	    "only the accepted leaf is in the tree");
	is_int(ckpt_tree_add_array_pieces_k(t, &k, 1, (ckpt_dtype)999, 1,
	    shape, shuffled, 3), CKPT_EDTYPE, "an unknown dtype is refused");
	ckpt_tree_free(t);
}

static void test_round_trip(void)
{
	struct sharded s, s2;
	ckpt_client *c = NULL;
	ckpt_manager *m = NULL;
	ckpt_options *o = ckpt_options_new();
	ckpt_tree *t, *t2;
	char root[HX_PATH];
	uint64_t *steps = NULL;
	size_t n = 0;
	int saved = -1, r;

	sharded_make(&s, 1);
	sharded_make(&s2, 2);
	hx_path(&d, root, "rt");
	ckpt_options_set_save_interval_steps(o, 2);
	if (hx_connect(&d, &c) != 0 || ckpt_manager_open(c, root, o, &m) != 0)
		bail_out("cannot open %s", root);
	t = tree_of(&s, 0);
	t2 = tree_of(&s2, 0);

	r = bg_save(m, 0, t, 0, &saved);
	ok_call(r, c, "background save of step 0");
	is_int(saved, 1, "the policy took step 0");
	ok(ckpt_is_saving_in_progress(m), "step 0 is in progress");
	ok_call(ckpt_wait_until_finished(m), c, "wait_until_finished");
	ok(!ckpt_is_saving_in_progress(m), "nothing in progress after it");
	ok(restored_equal(m, 0, &s), "step 0 restores the pieces' bytes");

	saved = -1;
	ok_call(bg_save(m, 1, t2, 0, &saved), c, "background save of step 1");
	is_int(saved, 0, "the policy declined step 1 at once");

	ok_call(bg_save(m, 2, t2, 0, &saved), c, "background save of step 2");
	is_int(saved, 1, "the policy took step 2");
	/* restore right away waits for the copy and the commit */
	ok(restored_equal(m, 2, &s2), "step 2 restores right after save");

	ok_call(bg_save(m, 4, t, 0, &saved), c, "background save of step 4");
	ok_call(bg_save(m, 6, t2, 0, &saved), c,
	    "background save of step 6 right after (waits for step 4)");
	is_int(bg_save(m, 6, t, 1, &saved), CKPT_EEXIST,
	    "a forced save of step 6 fails at once: already exists");
	ok_call(ckpt_manager_close(m), c, "close waits for the saves");
	m = NULL;
	ckpt_tree_free(t);
	ckpt_tree_free(t2);

	if (ckpt_manager_open(c, root, NULL, &m) != 0)
		bail_out("cannot reopen %s", root);
	ok_call(ckpt_all_steps(m, &steps, &n), c, "all_steps");
	ok(n == 4 && steps[0] == 0 && steps[1] == 2 && steps[2] == 4 &&
	    steps[3] == 6, "steps 0 2 4 6 (got %zu)", n);
	free(steps);
	ok(restored_equal(m, 4, &s) && restored_equal(m, 6, &s2),
	    "steps 4 and 6 hold their own bytes");

	/* disconnecting with a background save in flight waits for it */
	t = tree_of(&s, 0);
	ok_call(bg_save(m, 8, t, 0, &saved), c, "background save of step 8");
	ckpt_disconnect(c);
	ckpt_tree_free(t);
	if (hx_connect(&d, &c) != 0 || ckpt_manager_open(c, root, NULL,
	    &m) != 0)
		bail_out("cannot reopen %s", root);
	{
		int64_t got = -1;

		ok_call(ckpt_wait_for_step(m, 7, 30000, &got), c,
		    "step 8 was handed over before disconnect returned");
		is_int(got, 8, "the step waited for is 8");
	}
	ok(restored_equal(m, 8, &s), "step 8 restores");
	ckpt_manager_close(m);
	ckpt_disconnect(c);
	ckpt_options_free(o);
	sharded_free(&s);
	sharded_free(&s2);
}

static void test_refused_when_taken(void)
{
	struct sharded s;
	ckpt_client *c = NULL;
	ckpt_manager *m = NULL;
	ckpt_tree *big, *small;
	char root[HX_PATH];
	int saved = -1, r;

	sharded_make(&s, 3);
	hx_path(&d, root, "limits");
	if (hx_connect(&d, &c) != 0 || ckpt_manager_open(c, root, NULL,
	    &m) != 0)
		bail_out("cannot open %s", root);
	big = tree_of(&s, 8);           /* 10 leaves: over --max-leaves 4 */
	small = tree_of(&s, 0);
	r = bg_save(m, 0, big, 0, &saved);
	ok_call(r, c, "ckpt_save returns before ckptd sees the save");
	is_int(saved, 1, "the policy took it");
	r = ckpt_wait_until_finished(m);
	is_int(r, CKPT_ETOOBIG, "wait_until_finished reports ckptd's refusal");
	has(ckpt_manager_errmsg(m), "leaves", "with ckptd's message (%s)",
	    ckpt_manager_errmsg(m));
	is_int(ckpt_wait_until_finished(m), 0, "reported once");
	ok_call(bg_save(m, 1, small, 0, &saved), c, "the next save proceeds");
	ok_call(ckpt_wait_until_finished(m), c, "and commits");
	ok(restored_equal(m, 1, &s), "step 1 restores");
	ckpt_tree_free(big);
	ckpt_tree_free(small);
	ckpt_manager_close(m);
	ckpt_disconnect(c);
	sharded_free(&s);
}

/* Three arrays of pieces in one call: w (the sharded array, tagged), v
 * (its first two blocks as one array, untagged) and u (one block). */
static void test_many_specs(void)
{
	struct sharded s;
	ckpt_key kw = { CKPT_KEY_DICT, "w", 0 }, kv = { CKPT_KEY_DICT, "v", 0 };
	ckpt_key ku = { CKPT_KEY_DICT, "u", 0 }, kx = { CKPT_KEY_DICT, "x", 0 };
	int64_t shape_w[2] = { N_ROWS, N_COLS };
	int64_t shape_v[2] = { 2 * N_ROWS / 8, N_COLS };
	int64_t shape_u[2] = { N_ROWS / 8, N_COLS };
	size_t nb = (size_t)N_ROWS / 8 * N_COLS * sizeof(float), failed = 99;
	ckpt_piece table[11];
	ckpt_array_spec specs[3] = {
		{ &kw, 1, CKPT_F32, 2, shape_w, 0, 8, "jax:8:d:d" },
		{ &kv, 1, CKPT_F32, 2, shape_v, 8, 2, NULL },
		{ &ku, 1, CKPT_F32, 2, shape_u, 10, 1, NULL },
	};
	ckpt_array_spec bad[2] = {
		{ &kx, 1, CKPT_F32, 2, shape_u, 10, 1, NULL },
		{ &ku, 1, CKPT_F32, 2, shape_v, 10, 1, NULL },  /* too few bytes */
	};
	ckpt_client *c = NULL;
	ckpt_manager *m = NULL;
	ckpt_restored *res = NULL;
	const ckpt_tree *rt;
	ckpt_leaf lf;
	ckpt_tree *t;
	char root[HX_PATH];
	long li;
	int saved = -1, same;

	sharded_make(&s, 5);
	memcpy(table, s.pieces, sizeof s.pieces);
	table[8] = (ckpt_piece){ nb, s.block[1], nb };   /* v, in reverse */
	table[9] = (ckpt_piece){ 0, s.block[0], nb };
	table[10] = (ckpt_piece){ 0, s.block[7], nb };
	t = ckpt_tree_new();
	is_int(ckpt_tree_add_arrays_pieces_k(t, specs, 3, table, &failed), 0,
	    "three arrays of pieces in one call");
	is_int((long long)failed, 0, "nothing failed");
	is_int((long long)ckpt_tree_nleaves(t), 3, "three leaves");
	is_int(ckpt_tree_add_arrays_pieces_k(t, bad, 2, table, &failed),
	    CKPT_EINVAL, "a spec whose pieces do not cover its array fails");
	is_int((long long)failed, 1, "and names itself (index 1)");
	is_int((long long)ckpt_tree_nleaves(t), 4, "the spec before it stays");
	is_int(ckpt_tree_add_arrays_pieces_k(t, specs, 1, table, &failed),
	    CKPT_EINVAL, "a path added twice fails");
	is_int((long long)failed, 0, "at index 0");
	is_int(ckpt_tree_add_arrays_pieces_k(NULL, specs, 1, table, NULL),
	    CKPT_EINVAL, "a NULL tree is refused");
	ckpt_tree_free(t);

	t = ckpt_tree_new();
	if (ckpt_tree_add_arrays_pieces_k(t, specs, 3, table, NULL) != 0)
		bail_out("cannot build the tree");
	hx_path(&d, root, "specs");
	if (hx_connect(&d, &c) != 0 || ckpt_manager_open(c, root, NULL,
	    &m) != 0)
		bail_out("cannot open %s", root);
	ok_call(bg_save(m, 0, t, 0, &saved), c, "background save of them");
	ok_call(ckpt_wait_until_finished(m), c, "committed");
	ckpt_tree_free(t);
	if (ckpt_restore(m, 0, NULL, &res) != 0)
		bail_out("cannot restore");
	rt = ckpt_restored_item_tree(res, 0);
	li = ckpt_tree_find(rt, "w");
	same = li >= 0 && ckpt_tree_leaf(rt, (size_t)li, &lf) == 0 &&
	    lf.nbytes == 8 * nb && memcmp(lf.data, s.whole, lf.nbytes) == 0;
	ok(same, "w restores the whole array");
	is_str(same ? lf.tag : "", "jax:8:d:d", "with its tag");
	li = ckpt_tree_find(rt, "v");
	same = li >= 0 && ckpt_tree_leaf(rt, (size_t)li, &lf) == 0 &&
	    lf.nbytes == 2 * nb && memcmp(lf.data, s.whole, lf.nbytes) == 0;
	ok(same, "v restores its two blocks in order");
	is_str(same ? lf.tag : "x", "", "untagged");
	li = ckpt_tree_find(rt, "u");
	same = li >= 0 && ckpt_tree_leaf(rt, (size_t)li, &lf) == 0 &&
	    lf.nbytes == nb && memcmp(lf.data, (char *)s.whole + 7 * nb,
	    nb) == 0;
	ok(same, "u restores the last block");
	ckpt_restored_free(res);
	ckpt_manager_close(m);
	ckpt_disconnect(c);
	sharded_free(&s);
}

static void test_ask_early(void)
{
	struct sharded s;
	ckpt_client *c = NULL, *c2 = NULL;
	ckpt_manager *m = NULL, *m2 = NULL;
	ckpt_options *o = ckpt_options_new(), *ro = ckpt_options_new();
	ckpt_tree *t;
	char root[HX_PATH];
	uint64_t *steps = NULL;
	size_t n = 0;
	int saved = -1;
	int64_t ts = 1700000000000000000LL;

	sharded_make(&s, 6);
	t = tree_of(&s, 0);
	hx_path(&d, root, "early");
	ckpt_options_set_save_interval_steps(o, 2);
	if (hx_connect(&d, &c) != 0 || ckpt_manager_open(c, root, o, &m) != 0)
		bail_out("cannot open %s", root);

	ok_call(ckpt_save_ask_early(m, 0, ts), c, "ask early for step 0");
	ok_call(save_at(m, 0, t, 0, 1, ts, &saved), c, "save step 0");
	is_int(saved, 1, "the early answer took step 0");
	ok_call(ckpt_save_ask_early(m, 1, ts + 1), c, "ask early for step 1");
	saved = -1;
	ok_call(save_at(m, 1, t, 0, 1, ts + 1, &saved), c, "save step 1");
	is_int(saved, 0, "the early answer declined step 1");
	ok_call(ckpt_save_ask_early(m, 3, ts + 2), c, "ask early for step 3");
	saved = -1;
	ok_call(save_at(m, 2, t, 0, 1, ts + 2, &saved), c,
	    "save step 2 instead");
	is_int(saved, 1, "step 2 is decided on its own (taken)");
	ok_call(ckpt_save_ask_early(m, 5, ts + 3), c, "ask early for step 5");
	saved = -1;
	ok_call(save_at(m, 5, t, 0, 1, ts + 4, &saved), c,
	    "save step 5 at another time");
	is_int(saved, 0, "decided again (declined)");
	ok_call(ckpt_save_ask_early(m, 4, ts + 5), c, "ask early for step 4");
	ok_call(save_at(m, 4, t, 0, 0, ts + 5, &saved), c,
	    "a save that copies before it returns");
	is_int(saved, 1, "takes step 4 (the Save decides)");
	ok_call(ckpt_wait_until_finished(m), c, "steps committed");

	/* The answer is the one of the time it was asked: step 6 committed
	 * by another manager in between is still taken here, and its Save
	 * then fails as any save of a step that exists. */
	if (hx_connect(&d, &c2) != 0 || ckpt_manager_open(c2, root, o,
	    &m2) != 0)
		bail_out("cannot open %s again", root);
	ok_call(ckpt_save_ask_early(m, 6, ts + 6), c, "ask early for step 6");
	ok_call(save_at(m2, 6, t, 0, 0, ts + 6, &saved), c2,
	    "another manager saves step 6 first");
	ok_call(ckpt_wait_until_finished(m2), c2, "and commits it");
	saved = -1;
	ok_call(save_at(m, 6, t, 0, 1, ts + 6, &saved), c,
	    "this manager's save of step 6");
	is_int(saved, 1, "took the early answer (step 6 was not yet there)");
	is_int(ckpt_wait_until_finished(m), CKPT_EEXIST,
	    "its Save is refused: the step exists");
	ok(restored_equal(m, 6, &s), "step 6 holds the other save");
	ckpt_manager_close(m2);
	ckpt_disconnect(c2);

	/* asked, then closed without a save */
	ok_call(ckpt_save_ask_early(m, 8, ts + 7), c, "ask early for step 8");
	ok_call(ckpt_manager_close(m), c, "close drops the answer");
	if (ckpt_manager_open(c, root, o, &m) != 0)
		bail_out("cannot reopen %s", root);

	/* asked, then the daemon restarts: the save asks again */
	ok_call(ckpt_save_ask_early(m, 8, ts + 8), c, "ask early for step 8");
	if (hx_restart(&d) != 0)
		bail_out("ckptd did not restart");
	saved = -1;
	ok_call(save_at(m, 8, t, 0, 1, ts + 8, &saved), c,
	    "save step 8 after a restart");
	is_int(saved, 1, "taken");
	ok_call(ckpt_wait_until_finished(m), c, "committed");
	ok_call(ckpt_all_steps(m, &steps, &n), c, "all_steps");
	ok(n == 5 && steps[0] == 0 && steps[1] == 2 && steps[2] == 4 &&
	    steps[3] == 6 && steps[4] == 8, "steps 0 2 4 6 8 (got %zu)", n);
	free(steps);
	ckpt_manager_close(m);

	/* read-only: nothing is asked */
	ckpt_options_set_read_only(ro, 1);
	if (ckpt_manager_open(c, root, ro, &m) != 0)
		bail_out("cannot open %s read-only", root);
	ok_call(ckpt_save_ask_early(m, 10, ts), c,
	    "ask early on a read-only manager does nothing");
	ckpt_manager_close(m);
	ckpt_disconnect(c);
	ckpt_tree_free(t);
	ckpt_options_free(o);
	ckpt_options_free(ro);
	sharded_free(&s);
}

int main(void)
{
	hx_init(&d);
	d.extra[0] = "--max-leaves";
	d.extra[1] = "4";
	d.extra[2] = NULL;
	if (hx_start(&d) != 0)
		bail_out("ckptd did not start");
	test_pieces_validation();
	test_round_trip();
	test_refused_when_taken();
	test_many_specs();
	test_ask_early();
	hx_cleanup(&d);
	return done_testing();
}
