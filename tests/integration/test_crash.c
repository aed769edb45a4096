/*
 * test_crash.c - kill -9 of ckptd in the middle of a large save, then a
 * restart on the same state directory: the step is either absent or
 * complete (restores byte for byte), never listed half-written, and a step
 * that did not survive can be saved again (a leftover tmp dir never blocks
 * it). Two rounds: killed as soon as the tmp dir appears, and a little
 * later (while data is being written or fsynced).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"

#define LEAVES 4
#define LEAF_BYTES (128u << 20)    /* 4 x 128 MiB = 512 MiB per step */

static struct hx_daemon d;
static void *bufs[LEAVES];

static void fill_step(uint64_t step)
{
	int i;

	for (i = 0; i < LEAVES; i++)
		hx_fill(bufs[i], LEAF_BYTES, step * 100 + (uint64_t)i);
}

static int save_step(ckpt_manager *m, uint64_t step, size_t bytes, int force)
{
	ckpt_tree *t = ckpt_tree_new();
	ckpt_save_args *a = ckpt_save_args_new();
	int64_t shape[1] = { (int64_t)bytes / 4 };
	char name[32];
	int i, r;

	fill_step(step);
	for (i = 0; i < LEAVES; i++) {
		snprintf(name, sizeof name, "layer%d/w", i);
		ckpt_tree_add_array(t, name, CKPT_F32, 1, shape, bufs[i], bytes);
	}
	ckpt_save_args_add_tree(a, NULL, CKPT_HANDLER_STANDARD, t);
	ckpt_save_args_set_force(a, force);
	r = ckpt_save(m, step, a, NULL);
	ckpt_save_args_free(a);
	ckpt_tree_free(t);
	return r;
}

/* 1 when `step` restores with every leaf identical. */
static int step_intact(ckpt_manager *m, uint64_t step, size_t bytes)
{
	ckpt_restored *res = NULL;
	const ckpt_tree *t;
	ckpt_leaf lf;
	char name[32];
	int i, good = 1;
	long k;

	if (ckpt_restore(m, (int64_t)step, NULL, &res) != 0)
		return 0;
	fill_step(step);
	t = ckpt_restored_item_tree(res, 0);
	for (i = 0; i < LEAVES && good; i++) {
		snprintf(name, sizeof name, "layer%d/w", i);
		k = t ? ckpt_tree_find(t, name) : -1;
		good = k >= 0 && ckpt_tree_leaf(t, (size_t)k, &lf) == 0 &&
		    lf.nbytes == bytes && memcmp(lf.data, bufs[i], bytes) == 0;
	}
	ckpt_restored_free(res);
	return good;
}

static int has_step(ckpt_manager *m, uint64_t step)
{
	uint64_t *steps = NULL;
	size_t n = 0, i;
	int found = 0;

	if (ckpt_all_steps(m, &steps, &n) != 0)
		return -1;
	for (i = 0; i < n; i++)
		if (steps[i] == step)
			found = 1;
	free(steps);
	return found;
}

static void crash_round(uint64_t step, int delay_ms)
{
	char root[HX_PATH], tmp[HX_PATH], fin[HX_PATH], meta[HX_PATH];
	ckpt_client *c = NULL;
	ckpt_manager *m = NULL;
	int64_t t0;
	int r, seen_tmp = 0, present;

	hx_path(&d, root, "crash");
	hx_path(&d, tmp, "crash/%llu.ckptd-tmp", (unsigned long long)step);
	hx_path(&d, fin, "crash/%llu", (unsigned long long)step);
	if (hx_connect(&d, &c) != 0 ||
	    ckpt_manager_open(c, root, NULL, &m) != 0) {
		ok(0, "round %llu: connect and open", (unsigned long long)step);
		return;
	}
	r = save_step(m, step, LEAF_BYTES, 0);
	ok_call(r, c, "round %llu: save of %u MiB accepted",
	    (unsigned long long)step, LEAVES * (LEAF_BYTES >> 20));
	t0 = hx_now_ms();
	while (hx_now_ms() - t0 < 20000) {
		if (hx_exists(tmp)) {
			seen_tmp = 1;
			break;
		}
		if (hx_exists(fin))
			break;
		usleep(200);
	}
	if (delay_ms)
		usleep((useconds_t)delay_ms * 1000);
	hx_kill9(&d);
	diag("round %llu: killed %lld ms after the save was accepted (tmp dir "
	    "%s, step dir %s)", (unsigned long long)step,
	    (long long)(hx_now_ms() - t0), seen_tmp ? "seen" : "not seen",
	    hx_exists(fin) ? "present" : "absent");
	r = ckpt_wait_until_finished(m);
	ok(r != 0 || hx_exists(fin),
	    "round %llu: the client notices the daemon died (%s)",
	    (unsigned long long)step, ckpt_strerror(r));
	ckpt_manager_close(m);
	ckpt_disconnect(c);

	if (!ok(hx_start(&d) == 0, "round %llu: ckptd restarts",
	    (unsigned long long)step))
		bail_out("ckptd did not restart");
	c = NULL;
	m = NULL;
	if (hx_connect(&d, &c) != 0 ||
	    !ok_call(ckpt_manager_open(c, root, NULL, &m), c,
	    "round %llu: reopen the root", (unsigned long long)step))
		return;
	is_int(has_step(m, 0), 1, "round %llu: step 0 (committed before) listed",
	    (unsigned long long)step);
	ok(step_intact(m, 0, 1 << 20), "round %llu: step 0 restores intact",
	    (unsigned long long)step);
	present = has_step(m, step);
	hx_path(&d, meta, "crash/%llu/_CHECKPOINT_METADATA",
	    (unsigned long long)step);
	if (present == 1) {
		diag("round %llu: the step survived the kill",
		    (unsigned long long)step);
		ok(hx_exists(meta), "round %llu: listed step is complete on disk",
		    (unsigned long long)step);
		ok(step_intact(m, step, LEAF_BYTES),
		    "round %llu: listed step restores byte for byte",
		    (unsigned long long)step);
		r = save_step(m, step, LEAF_BYTES, 1);
		if (r == 0)
			r = ckpt_wait_until_finished(m);
		is_int(r, CKPT_EEXIST, "round %llu: saving it again (force) is "
		    "EEXIST",
		    (unsigned long long)step);
		ckpt_check_for_errors(m);
	} else {
		is_int(present, 0, "round %llu: the step is not listed",
		    (unsigned long long)step);
		ok(!hx_exists(fin) || hx_exists(meta),
		    "round %llu: no half-written step directory",
		    (unsigned long long)step);
		r = save_step(m, step, LEAF_BYTES, 0);
		ok_call(r, c, "round %llu: the step can be saved again",
		    (unsigned long long)step);
		ok_call(ckpt_wait_until_finished(m), c,
		    "round %llu: ... and commits", (unsigned long long)step);
		is_int(has_step(m, step), 1, "round %llu: now listed",
		    (unsigned long long)step);
		ok(step_intact(m, step, LEAF_BYTES),
		    "round %llu: and restores byte for byte",
		    (unsigned long long)step);
		ok(!hx_exists(tmp), "round %llu: no tmp dir left",
		    (unsigned long long)step);
	}
	ckpt_manager_close(m);
	ckpt_disconnect(c);
}

int main(void)
{
	char root[HX_PATH];
	ckpt_client *c = NULL;
	ckpt_manager *m = NULL;
	int i;

	hx_init(&d);
	/* The client here must notice the death, not ride it out (that is
	 * test_reconnect): no reconnecting. */
	setenv("CKPT_RECONNECT_TIMEOUT_MS", "0", 1);
	if (d.external) {
		tap_skip("needs a private daemon to kill (CKPTD_TEST_SOCKET set)");
		hx_cleanup(&d);
		return done_testing();
	}
	for (i = 0; i < LEAVES; i++)
		if (!(bufs[i] = malloc(LEAF_BYTES)))
			bail_out("out of memory");
	if (hx_start(&d) != 0)
		bail_out("ckptd did not start");

	/* A committed step to start from. */
	hx_path(&d, root, "crash");
	if (hx_connect(&d, &c) != 0 ||
	    ckpt_manager_open(c, root, NULL, &m) != 0)
		bail_out("cannot open the root");
	ok_call(save_step(m, 0, 1 << 20, 0), c, "step 0 saved");
	ok_call(ckpt_wait_until_finished(m), c, "step 0 committed");
	ckpt_manager_close(m);
	ckpt_disconnect(c);

	crash_round(1, 0);
	crash_round(2, 150);

	is_int(hx_stop(&d), 0, "ckptd exits cleanly");
	hx_cleanup(&d);
	for (i = 0; i < LEAVES; i++)
		free(bufs[i]);
	return done_testing();
}
