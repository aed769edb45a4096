/*
 * test_concurrency.c - several clients and several requests in flight:
 *  - two clients save to two roots at the same time;
 *  - one client saves while another lists the same root (live index);
 *  - a pending wait_for_step on a connection does not block all_steps or
 *    status on the same connection (requests are multiplexed);
 *  - a pending wait_until_finished does not block all_steps either.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"

#define SAVES 5
#define SAVE_MIB 8

static struct hx_daemon d;

/* Save one array "w" of `bytes` bytes filled from seed as `step`. */
static int save_array(ckpt_manager *m, uint64_t step, size_t bytes,
    uint64_t seed)
{
	int64_t shape[1] = { (int64_t)bytes };
	void *buf = malloc(bytes);
	ckpt_tree *t = ckpt_tree_new();
	ckpt_save_args *a = ckpt_save_args_new();
	int r, saved = 0;

	hx_fill(buf, bytes, seed);
	ckpt_tree_add_array(t, "w", CKPT_U8, 1, shape, buf, bytes);
	ckpt_save_args_add_tree(a, NULL, CKPT_HANDLER_STANDARD, t);
	r = ckpt_save(m, step, a, &saved);
	if (r == 0 && !saved)
		r = CKPT_EINTERNAL;
	ckpt_save_args_free(a);
	ckpt_tree_free(t);
	free(buf);
	return r;
}

/* Restore `step` and compare "w" with the bytes from seed. 1 on match. */
static int check_array(ckpt_manager *m, uint64_t step, size_t bytes,
    uint64_t seed)
{
	ckpt_restored *res = NULL;
	const ckpt_tree *t;
	ckpt_leaf lf;
	void *want;
	int good = 0;

	if (ckpt_restore(m, (int64_t)step, NULL, &res) != 0)
		return 0;
	t = ckpt_restored_item_tree(res, 0);
	want = malloc(bytes);
	hx_fill(want, bytes, seed);
	if (t && ckpt_tree_find(t, "w") >= 0 &&
	    ckpt_tree_leaf(t, (size_t)ckpt_tree_find(t, "w"), &lf) == 0 &&
	    lf.nbytes == bytes && memcmp(lf.data, want, bytes) == 0)
		good = 1;
	free(want);
	ckpt_restored_free(res);
	return good;
}

/* ---- two clients, two roots ------------------------------------------------ */

struct saver {
	const char *name;
	uint64_t seed;
	int nsteps;
	size_t bytes;
	int fails;
	char root[HX_PATH];
	atomic_int *done;
};

static void *saver_thread(void *arg)
{
	struct saver *s = arg;
	ckpt_client *c = NULL;
	ckpt_manager *m = NULL;
	int i, r;

	if (hx_connect(&d, &c) != 0 ||
	    ckpt_manager_open(c, s->root, NULL, &m) != 0) {
		s->fails = -1;
		goto out;
	}
	for (i = 0; i < s->nsteps; i++) {
		r = save_array(m, (uint64_t)i, s->bytes, s->seed + (uint64_t)i);
		if (r != 0) {
			diag("%s: save %d: %s: %s", s->name, i, ckpt_strerror(r),
			    ckpt_client_errmsg(c));
			s->fails++;
		}
	}
	r = ckpt_wait_until_finished(m);
	if (r != 0) {
		diag("%s: wait: %s", s->name, ckpt_strerror(r));
		s->fails++;
	}
	for (i = 0; i < s->nsteps; i++)
		if (!check_array(m, (uint64_t)i, s->bytes, s->seed + (uint64_t)i)) {
			diag("%s: step %d does not restore", s->name, i);
			s->fails++;
		}
out:
	if (s->done)
		atomic_store(s->done, 1);
	ckpt_manager_close(m);
	ckpt_disconnect(c);
	return NULL;
}

static void two_roots(void)
{
	struct saver a = { "A", 1000, SAVES, SAVE_MIB << 20, 0, "", NULL };
	struct saver b = { "B", 2000, SAVES, SAVE_MIB << 20, 0, "", NULL };
	pthread_t ta, tb;

	hx_path(&d, a.root, "rootA");
	hx_path(&d, b.root, "rootB");
	pthread_create(&ta, NULL, saver_thread, &a);
	pthread_create(&tb, NULL, saver_thread, &b);
	pthread_join(ta, NULL);
	pthread_join(tb, NULL);
	is_int(a.fails, 0, "client A: %d steps saved and restored intact", SAVES);
	is_int(b.fails, 0, "client B: %d steps saved and restored intact", SAVES);
}

/* ---- saving while another client lists ---------------------------------------- */

static void save_while_listing(void)
{
	atomic_int done = 0;
	struct saver s = { "S", 3000, 20, 2 << 20, 0, "", &done };
	ckpt_client *c = NULL;
	ckpt_manager *m = NULL;
	pthread_t ts;
	size_t maxn = 0, n, i;
	uint64_t *steps;
	int lists = 0, sorted = 1, bounded = 1, shrunk = 0, errors = 0;

	hx_path(&d, s.root, "rootS");
	if (hx_connect(&d, &c) != 0 ||
	    !ok_call(ckpt_manager_open(c, s.root, NULL, &m), c,
	    "lister: open the root the saver writes")) {
		ckpt_disconnect(c);
		return;
	}
	pthread_create(&ts, NULL, saver_thread, &s);
	while (!atomic_load(&done)) {
		steps = NULL;
		n = 0;
		if (ckpt_all_steps(m, &steps, &n) != 0) {
			errors++;
			continue;
		}
		lists++;
		for (i = 0; i < n; i++) {
			if (i && steps[i] <= steps[i - 1])
				sorted = 0;
			if (steps[i] >= 20)
				bounded = 0;
		}
		if (n < maxn)
			shrunk = 1;
		if (n > maxn)
			maxn = n;
		free(steps);
	}
	pthread_join(ts, NULL);
	is_int(s.fails, 0, "saver: 20 steps saved while being listed");
	is_int(errors, 0, "lister: all_steps never failed (%d calls)", lists);
	ok(lists > 0, "lister: listed %d times during the saves", lists);
	ok(sorted && bounded, "lister: every listing ascending and in range");
	ok(!shrunk, "lister: the number of steps never went down");
	steps = NULL;
	n = 0;
	ckpt_all_steps(m, &steps, &n);
	ok(n == 20 && steps && steps[0] == 0 && steps[19] == 19,
	    "lister sees all 20 committed steps without reload (got %zu)", n);
	free(steps);
	ckpt_manager_close(m);
	ckpt_disconnect(c);
}

/* ---- a pending wait does not block other requests ------------------------------ */

struct waiter {
	ckpt_manager *m;
	int64_t after;
	int r;
	int64_t step;
	atomic_int finished;
};

static void *wait_for_step_thread(void *arg)
{
	struct waiter *w = arg;

	w->r = ckpt_wait_for_step(w->m, w->after, 30000, &w->step);
	atomic_store(&w->finished, 1);
	return NULL;
}

static void *wait_saves_thread(void *arg)
{
	struct waiter *w = arg;

	w->r = ckpt_wait_until_finished(w->m);
	atomic_store(&w->finished, 1);
	return NULL;
}

static void multiplexing(void)
{
	char root[HX_PATH];
	ckpt_client *c = NULL, *c2 = NULL;
	ckpt_manager *m = NULL, *m2 = NULL;
	struct waiter w = { 0 };
	ckpt_status st;
	pthread_t tw;
	uint64_t *steps = NULL;
	size_t n = 0;
	int64_t t0, dt;
	int r, i;

	hx_path(&d, root, "rootW");
	if (hx_connect(&d, &c) != 0 || hx_connect(&d, &c2) != 0 ||
	    ckpt_manager_open(c, root, NULL, &m) != 0 ||
	    ckpt_manager_open(c2, root, NULL, &m2) != 0) {
		ok(0, "multiplexing: set up two clients on one root");
		goto out;
	}

	w.m = m;
	w.after = -1;
	pthread_create(&tw, NULL, wait_for_step_thread, &w);
	usleep(300 * 1000);
	ok(!atomic_load(&w.finished), "wait_for_step is pending (no step yet)");

	t0 = hx_now_ms();
	r = ckpt_all_steps(m, &steps, &n);
	dt = hx_now_ms() - t0;
	ok_call(r, c, "all_steps on the waiting connection answers");
	ok(dt < 2000, "... promptly (%lld ms) while wait_for_step is pending",
	    (long long)dt);
	is_int(n, 0, "... and the root has no step yet");
	free(steps);
	t0 = hx_now_ms();
	r = ckpt_status_get(c, &st);
	ok_call(r, c, "status on the same connection answers (%lld ms)",
	    (long long)(hx_now_ms() - t0));
	ok(!atomic_load(&w.finished), "wait_for_step still pending");

	r = save_array(m2, 5, 1 << 20, 55);
	ok_call(r, c2, "another client saves step 5");
	ok_call(ckpt_wait_until_finished(m2), c2, "step 5 committed");
	for (i = 0; i < 1000 && !atomic_load(&w.finished); i++)
		usleep(10 * 1000);
	ok(atomic_load(&w.finished), "wait_for_step woke up");
	pthread_join(tw, NULL);
	is_int(w.r, 0, "wait_for_step returned 0");
	is_int(w.step, 5, "wait_for_step reports step 5");

	/* A timeout is reported as such. */
	{
		int64_t got = -7;

		t0 = hx_now_ms();
		r = ckpt_wait_for_step(m, 5, 300, &got);
		is_int(r, CKPT_ETIMEDOUT, "wait_for_step(after=5, 300 ms) times out");
		ok(hx_now_ms() - t0 < 5000, "... in bounded time");
	}

	/* wait_until_finished pending on a large save vs all_steps. */
	r = save_array(m, 6, 128u << 20, 66);
	ok_call(r, c, "save step 6 (128 MiB)");
	memset(&w, 0, sizeof w);
	w.m = m;
	pthread_create(&tw, NULL, wait_saves_thread, &w);
	t0 = hx_now_ms();
	steps = NULL;
	r = ckpt_all_steps(m, &steps, &n);
	dt = hx_now_ms() - t0;
	ok_call(r, c, "all_steps while wait_until_finished runs (%lld ms, "
	    "wait %s)", (long long)dt,
	    atomic_load(&w.finished) ? "already done" : "still pending");
	free(steps);
	pthread_join(tw, NULL);
	is_int(w.r, 0, "wait_until_finished returned 0");
	ok(check_array(m, 6, 128u << 20, 66), "step 6 restores intact");
out:
	ckpt_manager_close(m);
	ckpt_manager_close(m2);
	ckpt_disconnect(c);
	ckpt_disconnect(c2);
}

int main(void)
{
	hx_init(&d);
	d.workers = 2;
	if (hx_start(&d) != 0)
		bail_out("ckptd did not start");
	two_roots();
	save_while_listing();
	multiplexing();
	ok(hx_alive(&d), "ckptd still running");
	is_int(hx_stop(&d), 0, "ckptd exits cleanly");
	hx_cleanup(&d);
	return done_testing();
}
