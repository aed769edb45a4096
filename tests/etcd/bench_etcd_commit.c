/*
 * bench_etcd_commit.c - how long from a commit transaction to the watch
 * event on another node: the coordination's share of a multi-node step
 * commit (target: the whole commit within 50 ms).
 *
 *     bench_etcd_commit [ROUNDS]      (root; default 300 rounds)
 *
 * Two set-ups on the test bed: (a) one member, the committer and the
 * watcher on the member's node (loopback); (b) three members on nodes
 * 0..2, the committer on node 3 and the watcher on node 4 (veth through a
 * bridge). Each round creates /bench/<n>/commit (create-once txn) and
 * waits for the watcher's event; it prints the txn round trip and the
 * commit -> event latency (median, p90, p99, max) in ms.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bed.h"
#include "etcd.h"
#include "evlog.h"
#include "tap.h"

static int
cmp_i64(const void *a, const void *b)
{
	int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;

	return x < y ? -1 : x > y;
}

static void
report(const char *what, int64_t *us, int n)
{
	qsort(us, (size_t)n, sizeof(*us), cmp_i64);
	printf("%-34s median %7.2f  p90 %7.2f  p99 %7.2f  max %7.2f ms\n",
	    what, us[n / 2] / 1000.0, us[n * 9 / 10] / 1000.0,
	    us[n * 99 / 100] / 1000.0, us[n - 1] / 1000.0);
}

static int64_t
now_us(void)
{
	return tap_now_us();
}

static int
run(struct bed *b, const char *name, int commit_node, int watch_node,
    int rounds)
{
	struct etcd *cc = NULL, *wc = NULL;
	struct etcd_watch *w = NULL;
	struct evlog log;
	int64_t *txn = calloc((size_t)rounds, sizeof(int64_t));
	int64_t *lat = calloc((size_t)rounds, sizeof(int64_t));
	char key[64], what[80];
	ckd_err e = { 0 };
	int i, won, r = -1;

	evlog_init(&log);
	if (txn == NULL || lat == NULL)
		goto out;
	if (bed_enter(b, watch_node) != 0 ||
	    etcd_open(&wc, b->endpoints, 5000, &e) != 0 ||
	    (w = etcd_watch_start(wc, "/bench/", 1, 0, evlog_cb, &log, &e)) == NULL ||
	    bed_enter(b, commit_node) != 0 ||
	    etcd_open(&cc, b->endpoints, 5000, &e) != 0) {
		fprintf(stderr, "%s: %s\n", name, e.msg);
		goto out;
	}
	for (i = -20; i < rounds; i++) {  /* 20 rounds of warm-up */
		int64_t t0, t1;
		long idx;

		snprintf(key, sizeof(key), "/bench/%s/%d/commit", name, i);
		t0 = now_us();
		if (etcd_create(cc, key, "n", 1, 0, &won, NULL, NULL, &e) != 0 ||
		    !won) {
			fprintf(stderr, "%s: %s\n", name, e.msg);
			goto out;
		}
		t1 = now_us();
		if ((idx = evlog_wait(&log, key, ETCD_EVENT_PUT, 5000)) < 0) {
			fprintf(stderr, "%s: no event for %s\n", name, key);
			goto out;
		}
		if (i < 0)
			continue;
		txn[i] = t1 - t0;
		pthread_mutex_lock(&log.lock);
		lat[i] = log.ev[idx].at_us - t0;
		pthread_mutex_unlock(&log.lock);
	}
	snprintf(what, sizeof(what), "%s: txn round trip", name);
	report(what, txn, rounds);
	snprintf(what, sizeof(what), "%s: commit -> watch event", name);
	report(what, lat, rounds);
	r = 0;
out:
	etcd_watch_stop(w);
	etcd_close(wc);
	etcd_close(cc);
	evlog_free(&log);
	free(txn);
	free(lat);
	bed_enter(b, -1);
	return r;
}

int
main(int argc, char **argv)
{
	int rounds = argc > 1 ? atoi(argv[1]) : 300;
	struct bed b;
	int r = 0;

	if (rounds < 10 || rounds > 100000) {
		fprintf(stderr, "usage: bench_etcd_commit [ROUNDS 10..100000]\n");
		return 2;
	}
	printf("%d rounds each\n", rounds);
	if (bed_init(&b, 1) != 0 || bed_etcd_start(&b, 1) != 0 ||
	    run(&b, "1 member, loopback", 0, 0, rounds) != 0)
		r = 1;
	bed_fini(&b);
	if (bed_init(&b, 5) != 0 || bed_etcd_start(&b, 3) != 0 ||
	    run(&b, "3 members, veth", 3, 4, rounds) != 0)
		r = 1;
	bed_fini(&b);
	return r;
}
