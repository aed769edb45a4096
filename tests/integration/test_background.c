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
 *   - a forced background save keeps "already exists" synchronous.
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

static int bg_save(ckpt_manager *m, uint64_t step, const ckpt_tree *t,
    int force, int *saved)
{
	ckpt_save_args *a = ckpt_save_args_new();
	int r = ckpt_save_args_add_tree(a, NULL, CKPT_HANDLER_STANDARD, t);

	if (r == 0)
		r = ckpt_save_args_set_background(a, 1);
	if (r == 0 && force)
		r = ckpt_save_args_set_force(a, 1);
	if (r == 0)
		r = ckpt_save(m, step, a, saved);
	ckpt_save_args_free(a);
	return r;
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
	hx_cleanup(&d);
	return done_testing();
}
