/*
 * test_soak.c - 64 clients x mixed saves, restores, lists and waits for a
 * bounded time (CKPT_SOAK_SECS, default 30), against one daemon:
 *  - zero errors, every restore byte-exact;
 *  - the daemon's resident memory is flat: at the end of the run no more
 *    than 25% + 16 MiB above its level after the first third;
 *  - its open fds return to the count before the clients came.
 *
 * Each client has its own root (max_to_keep 3) and a second manager on
 * the root of the next client, which it lists and waits on. Steps carry
 * 1 KiB..256 KiB of bytes derived from (client, step), plus an int and a
 * string leaf. In the sanitizer build the suite runs this under ASan.
 */
#include <dirent.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"

#define CLIENTS 64
#define MAX_BYTES (256u << 10)

static struct hx_daemon d;
static int64_t deadline_ms;
static atomic_long ops, saves, restores, lists, waits, errors;

struct client {
	int idx;
	char root[HX_PATH], peer[HX_PATH];
	char err[512];
};
static struct client cl[CLIENTS];

static size_t step_bytes(int idx, uint64_t step)
{
	uint64_t h = ((uint64_t)idx * 1000003u + step) * 0x9e3779b97f4a7c15ull;

	return 1024 + (size_t)((h >> 40) % (MAX_BYTES - 1024));
}

static void fail(struct client *c, const char *what, int r, const char *msg)
{
	if (c->err[0] == '\0')
		snprintf(c->err, sizeof c->err, "client %d: %s: %s (%s)",
		    c->idx, what, ckpt_strerror(r), msg ? msg : "");
	errors++;
}

static int save_step(struct client *c, ckpt_manager *m, uint64_t step,
    unsigned char *buf)
{
	size_t n = step_bytes(c->idx, step);
	int64_t shape[1] = { (int64_t)n };
	ckpt_tree *t = ckpt_tree_new();
	ckpt_save_args *a = ckpt_save_args_new();
	char s[64];
	int r, saved = 0;

	hx_fill(buf, n, (uint64_t)c->idx << 32 | step);
	snprintf(s, sizeof s, "client %d step %llu", c->idx,
	    (unsigned long long)step);
	ckpt_tree_add_array(t, "params/w", CKPT_U8, 1, shape, buf, n);
	ckpt_tree_add_int(t, "step", (int64_t)step);
	ckpt_tree_add_str(t, "note", s);
	ckpt_save_args_add_tree(a, NULL, CKPT_HANDLER_STANDARD, t);
	r = ckpt_save(m, step, a, &saved);
	if (r == 0 && !saved)
		r = CKPT_EINTERNAL;
	ckpt_save_args_free(a);
	ckpt_tree_free(t);
	return r;
}

/* Restore step and compare every leaf. 0, or a CKPT_E* code. */
static int check_step(struct client *c, ckpt_manager *m, uint64_t step,
    unsigned char *buf)
{
	size_t n = step_bytes(c->idx, step);
	ckpt_restored *res = NULL;
	const ckpt_tree *t;
	ckpt_leaf lf;
	long k;
	int r;

	if ((r = ckpt_restore(m, (int64_t)step, NULL, &res)) != 0)
		return r;
	hx_fill(buf, n, (uint64_t)c->idx << 32 | step);
	r = CKPT_ECORRUPT;
	if ((t = ckpt_restored_item_tree(res, 0)) != NULL &&
	    (k = ckpt_tree_find(t, "params/w")) >= 0 &&
	    ckpt_tree_leaf(t, (size_t)k, &lf) == 0 && lf.nbytes == n &&
	    memcmp(lf.data, buf, n) == 0 &&
	    (k = ckpt_tree_find(t, "step")) >= 0 &&
	    ckpt_tree_leaf(t, (size_t)k, &lf) == 0 &&
	    lf.kind == CKPT_LEAF_INT && lf.i == (int64_t)step)
		r = 0;
	ckpt_restored_free(res);
	return r;
}

static void *client_main(void *arg)
{
	struct client *c = arg;
	ckpt_client *cc = NULL;
	ckpt_manager *m = NULL, *pm = NULL;
	ckpt_options *o = ckpt_options_new();
	unsigned char *buf = malloc(MAX_BYTES);
	uint64_t step = 0, *steps;
	size_t nsteps;
	int64_t got;
	int r, round = 0;

	ckpt_options_set_max_to_keep(o, 3);
	if ((r = hx_connect(&d, &cc)) != 0) {
		fail(c, "connect", r, ckpt_connect_errmsg());
		goto out;
	}
	if ((r = ckpt_manager_open(cc, c->root, o, &m)) != 0) {
		fail(c, "open", r, ckpt_client_errmsg(cc));
		goto out;
	}
	while (hx_now_ms() < deadline_ms) {
		round++;
		step++;
		if ((r = save_step(c, m, step, buf)) != 0) {
			fail(c, "save", r, ckpt_manager_errmsg(m));
			break;
		}
		saves++;
		ops++;
		if (round % 2 == 0) {
			if ((r = ckpt_wait_until_finished(m)) != 0) {
				fail(c, "wait_until_finished", r,
				    ckpt_manager_errmsg(m));
				break;
			}
			waits++;
			if ((r = check_step(c, m, step, buf)) != 0) {
				fail(c, "restore", r, ckpt_manager_errmsg(m));
				break;
			}
			restores++;
			ops += 2;
		}
		if (round % 3 == 0) {
			if ((r = ckpt_wait_for_step(m, (int64_t)step - 1, 60000,
			    &got)) != 0 || got < (int64_t)step) {
				fail(c, "wait_for_step", r, ckpt_manager_errmsg(m));
				break;
			}
			if ((r = ckpt_all_steps(m, &steps, &nsteps)) != 0 ||
			    nsteps == 0 || nsteps > 4 ||
			    steps[nsteps - 1] != step) {
				fail(c, "all_steps", r, "latest missing or more "
				    "than max_to_keep + 1 steps");
				if (r == 0)
					free(steps);
				break;
			}
			free(steps);
			waits++;
			lists++;
			ops += 2;
		}
		if (round % 5 == 0) {
			/* The next client's root: list it, read-only. */
			ckpt_options *ro = ckpt_options_new();

			ckpt_options_set_read_only(ro, 1);
			ckpt_options_set_create(ro, 0);
			if (pm == NULL &&
			    ckpt_manager_open(cc, c->peer, ro, &pm) != 0)
				pm = NULL;      /* not created yet: fine */
			ckpt_options_free(ro);
			if (pm != NULL) {
				if ((r = ckpt_all_steps(pm, &steps, &nsteps))
				    != 0) {
					fail(c, "peer all_steps", r,
					    ckpt_manager_errmsg(pm));
					break;
				}
				free(steps);
				lists++;
				ops++;
			}
		}
	}
	if (c->err[0] == '\0' && (r = ckpt_wait_until_finished(m)) != 0)
		fail(c, "final wait", r, ckpt_manager_errmsg(m));
	if (c->err[0] == '\0' && (r = check_step(c, m, step, buf)) != 0)
		fail(c, "final restore", r, ckpt_manager_errmsg(m));
out:
	if (pm != NULL)
		ckpt_manager_close(pm);
	if (m != NULL)
		ckpt_manager_close(m);
	ckpt_disconnect(cc);
	ckpt_options_free(o);
	free(buf);
	return NULL;
}

/* ---- the daemon's resources ---------------------------------------------------- */

static long daemon_rss_kib(void)
{
	char path[64], text[4096], *p;
	FILE *f;
	size_t n;

	snprintf(path, sizeof path, "/proc/%d/status", (int)d.pid);
	if ((f = fopen(path, "re")) == NULL)
		return -1;
	n = fread(text, 1, sizeof text - 1, f);
	fclose(f);
	text[n] = '\0';
	if ((p = strstr(text, "VmRSS:")) == NULL)
		return -1;
	return strtol(p + 6, NULL, 10);
}

static int daemon_fds(void)
{
	char path[64];
	struct dirent *de;
	DIR *dir;
	int n = 0;

	snprintf(path, sizeof path, "/proc/%d/fd", (int)d.pid);
	if ((dir = opendir(path)) == NULL)
		return -1;
	while ((de = readdir(dir)) != NULL)
		n += de->d_name[0] != '.';
	closedir(dir);
	return n;
}

int main(void)
{
	const char *env = getenv("CKPT_SOAK_SECS");
	int secs = env != NULL && atoi(env) > 0 ? atoi(env) : 30;
	pthread_t th[CLIENTS];
	long rss_mid = -1, rss_end;
	int fds0, fds1, i, started = 0;
	int64_t t0;

	hx_init(&d);
	if (getenv("CKPTD_TEST_SOCKET") != NULL) {
		tap_skip("measures its own daemon's memory and fds");
		return done_testing();
	}
	/* Under ASan, freed memory waits in a quarantine of 256 MiB by
	 * default, which would read as growth: keep it small for the
	 * daemon (no effect on a build without ASan). */
	{
		const char *ao = getenv("ASAN_OPTIONS");
		char buf[1024];

		snprintf(buf, sizeof buf, "%s%squarantine_size_mb=4:"
		    "thread_local_quarantine_size_kb=64", ao ? ao : "",
		    ao && *ao ? ":" : "");
		setenv("ASAN_OPTIONS", buf, 1);
	}
	if (hx_start(&d) != 0)
		bail_out("ckptd did not start");
	for (i = 0; i < CLIENTS; i++) {
		cl[i].idx = i;
		hx_path(&d, cl[i].root, "root-%02d", i);
		hx_path(&d, cl[i].peer, "root-%02d", (i + 1) % CLIENTS);
	}
	fds0 = daemon_fds();
	diag("%d clients for %d s (CKPT_SOAK_SECS)", CLIENTS, secs);
	t0 = hx_now_ms();
	deadline_ms = t0 + secs * 1000LL;
	for (i = 0; i < CLIENTS; i++)
		if (pthread_create(&th[i], NULL, client_main, &cl[i]) == 0)
			started++;
		else
			th[i] = 0;
	is_int(started, CLIENTS, "%d clients started", CLIENTS);
	/* Steady state after the first third of the run. */
	while (hx_now_ms() < t0 + secs * 1000LL / 3)
		hx_sleep_ms(100);
	rss_mid = daemon_rss_kib();
	while (hx_now_ms() < deadline_ms - 500)
		hx_sleep_ms(100);
	rss_end = daemon_rss_kib();
	for (i = 0; i < CLIENTS; i++)
		if (th[i] != 0)
			pthread_join(th[i], NULL);
	hx_sleep_ms(500);               /* the daemon sees the disconnects */
	fds1 = daemon_fds();

	diag("%ld operations: %ld saves, %ld restores, %ld lists, %ld waits, "
	    "in %.1f s", (long)ops, (long)saves, (long)restores, (long)lists,
	    (long)waits, (double)(hx_now_ms() - t0) / 1000.0);
	for (i = 0; i < CLIENTS; i++)
		if (cl[i].err[0] != '\0')
			diag("%s", cl[i].err);
	is_int(errors, 0, "no client saw an error");
	ok(saves >= CLIENTS && restores > 0 && lists > 0 && waits > 0,
	    "every kind of operation ran (%ld saves, %ld restores)",
	    (long)saves, (long)restores);
	diag("daemon VmRSS %ld KiB after %d s, %ld KiB at the end", rss_mid,
	    secs / 3, rss_end);
	ok(rss_mid > 0 && rss_end > 0 &&
	    rss_end <= rss_mid + rss_mid / 4 + 16 * 1024,
	    "the daemon's RSS is flat (%ld KiB -> %ld KiB)", rss_mid, rss_end);
	diag("daemon fds: %d before the clients, %d after", fds0, fds1);
	ok(fds0 > 0 && fds1 >= 0 && fds1 <= fds0,
	    "the daemon's open fds return to their count before the clients "
	    "(%d -> %d)", fds0, fds1);
	if (!ok(hx_alive(&d), "ckptd survived"))
		hx_dump_log(&d, 30);
	is_int(hx_stop(&d), 0, "ckptd exits cleanly");
	hx_cleanup(&d);
	return done_testing();
}
