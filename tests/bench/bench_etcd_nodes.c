/*
 * bench_etcd_nodes.c - the cost of committing a distributed step through
 * etcd: 4 ranks (libckpt threads) save steps, split over the daemons of 2
 * nodes (network namespaces, one etcd member) against all 4 on one daemon
 * without --etcd. Each step: every rank saves its part and waits for the
 * commit; the time from the start of the step to the last rank's
 * wait_until_finished returning is measured, median over the rounds, in
 * alternating order.
 *
 * The commit overhead itself is read off etcd: the bench watches the
 * step keys and takes the time of the last part's rank key (the last
 * part durable and published) to the commit key (decided) and to the
 * last rank's wait returning (the commit visible on every node).
 *
 *   bench_etcd_nodes [ROUNDS [PART_BYTES]]     (root; defaults 30, 64 KiB)
 */
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bed.h"
#include "harness.h"

#define NODES 2
#define RANKS 4

static struct bed b;
static struct hx_daemon d[NODES + 1];   /* d[NODES]: the single daemon */
static char root_multi[HX_PATH], root_single[HX_PATH];
static char roots[4][HX_PATH];
static size_t part_bytes = 64 << 10;
static int rounds = 30;
static pthread_barrier_t bar;

/* What the watch saw of the round under way (ms, hx_now_ms). */
static pthread_mutex_t ev_mu = PTHREAD_MUTEX_INITIALIZER;
static int64_t ev_last_rank, ev_commit;

static void on_event(void *arg, int put, const char *key)
{
	size_t n = strlen(key);
	int64_t now = hx_now_ms();

	(void)arg;
	if (!put)
		return;
	pthread_mutex_lock(&ev_mu);
	if (strstr(key, "/rank/") != NULL)
		ev_last_rank = now;
	else if (n > 7 && strcmp(key + n - 7, "/commit") == 0)
		ev_commit = now;
	pthread_mutex_unlock(&ev_mu);
}

struct rank {
	int index, single;
	char *data;
	int fails;
	int64_t done;           /* the round's wait returned (ms) */
};

static void *rank_thread(void *arg)
{
	struct rank *k = arg;
	struct hx_daemon *dd = k->single ? &d[NODES] : &d[k->index * NODES /
	    RANKS];
	ckpt_client *c = NULL;
	ckpt_manager *m = NULL;
	ckpt_options *o = ckpt_options_new();
	int64_t gs = (int64_t)(part_bytes * RANKS), off, shp;
	int i, saved;

	if (hx_connect(dd, &c) != 0)
		k->fails++;
	ckpt_options_set_process_index(o, (uint32_t)k->index);
	ckpt_options_set_process_count(o, RANKS);
	ckpt_options_set_job(o, "bench");
	if (c != NULL && ckpt_manager_open(c, k->single ? root_single :
	    root_multi, o, &m) != 0)
		k->fails++;
	ckpt_options_free(o);
	off = (int64_t)part_bytes * k->index;
	shp = (int64_t)part_bytes;
	for (i = 1; i <= rounds; i++) {
		ckpt_tree *t = ckpt_tree_new();
		ckpt_save_args *a = ckpt_save_args_new();

		ckpt_tree_add_piece(t, "w", CKPT_U8, 1, &gs, &off, &shp,
		    k->data, part_bytes);
		ckpt_save_args_add_tree(a, NULL, CKPT_HANDLER_STANDARD, t);
		pthread_barrier_wait(&bar);
		saved = 0;
		if (m == NULL || ckpt_save(m, (uint64_t)i, a, &saved) != 0 ||
		    !saved || ckpt_wait_until_finished(m) != 0) {
			if (k->fails++ == 0 && m != NULL)
				diag("rank %d step %d: %s", k->index, i,
				    ckpt_manager_errmsg(m));
		}
		k->done = hx_now_ms();
		pthread_barrier_wait(&bar);
		ckpt_save_args_free(a);
		ckpt_tree_free(t);
	}
	ckpt_manager_close(m);
	ckpt_disconnect(c);
	return NULL;
}

static int cmp_double(const void *pa, const void *pb)
{
	double x = *(const double *)pa, y = *(const double *)pb;

	return x < y ? -1 : x > y;
}

static double median(double *v, int n)
{
	qsort(v, (size_t)n, sizeof *v, cmp_double);
	return v[n / 2];
}

/* Of the multi-node rounds: last part published -> commit key, and ->
 * the last rank's wait returned; medians. */
static double *dec_ms, *vis_ms;
static int ndec;

/* Median ms per step of the 4 ranks on 2 nodes (single 0) or 1 daemon. */
static double run(int single, int *fails)
{
	pthread_t th[RANKS];
	struct rank k[RANKS];
	double *ms = calloc((size_t)rounds, sizeof *ms), med;
	int i, j;

	pthread_barrier_init(&bar, NULL, RANKS + 1);
	for (i = 0; i < RANKS; i++) {
		memset(&k[i], 0, sizeof k[i]);
		k[i].index = i;
		k[i].single = single;
		k[i].data = malloc(part_bytes);
		hx_fill(k[i].data, part_bytes, (uint64_t)i + 1);
		pthread_create(&th[i], NULL, rank_thread, &k[i]);
	}
	for (i = 0; i < rounds; i++) {
		int64_t t0;

		pthread_mutex_lock(&ev_mu);
		ev_last_rank = ev_commit = 0;
		pthread_mutex_unlock(&ev_mu);
		pthread_barrier_wait(&bar);
		t0 = hx_now_ms();
		pthread_barrier_wait(&bar);
		ms[i] = (double)(hx_now_ms() - t0);
		if (!single) {
			int64_t last = 0;

			for (j = 0; j < RANKS; j++)
				if (k[j].done > last)
					last = k[j].done;
			/* the watch may trail the ranks by a little */
			hx_sleep_ms(20);
			pthread_mutex_lock(&ev_mu);
			if (ev_last_rank > 0 && ev_commit >= ev_last_rank) {
				dec_ms[ndec] = (double)(ev_commit -
				    ev_last_rank);
				vis_ms[ndec++] = (double)(last - ev_last_rank);
			}
			pthread_mutex_unlock(&ev_mu);
		}
	}
	*fails = 0;
	for (i = 0; i < RANKS; i++) {
		pthread_join(th[i], NULL);
		*fails += k[i].fails;
		free(k[i].data);
	}
	pthread_barrier_destroy(&bar);
	med = median(ms, rounds);
	diag("%s: step save->commit on every rank, median %.1f ms, worst "
	    "%.1f ms", single ? "1 daemon" : "2 nodes", med, ms[rounds - 1]);
	free(ms);
	return med;
}

static int start_node(int node)
{
	int r;

	if (bed_enter(&b, node) != 0)
		return -1;
	r = hx_start(&d[node]);
	return bed_enter(&b, -1) != 0 ? -1 : r;
}

int main(int argc, char **argv)
{
	static const char *names[NODES] = { "n0", "n1" };
	double multi, single, m1, m2, s1, s2;
	struct bed_watch *w;
	int i, f, fm = 0, fs = 0;

	if (argc > 1)
		rounds = atoi(argv[1]);
	if (argc > 2)
		part_bytes = (size_t)strtoull(argv[2], NULL, 10);
	if (rounds < 1 || part_bytes < 1)
		bail_out("usage: bench_etcd_nodes [ROUNDS [PART_BYTES]]");
	if (geteuid() != 0)
		bail_out("needs root (network namespaces)");
	if (bed_init(&b, NODES) != 0 || bed_etcd_start(&b, 1) != 0) {
		bed_fini(&b);
		bail_out("cannot make the test bed");
	}
	for (i = 0; i <= NODES; i++) {
		hx_init(&d[i]);
		if (i < NODES) {
			d[i].extra[0] = "--etcd";
			d[i].extra[1] = b.endpoints;
			d[i].extra[2] = "--node";
			d[i].extra[3] = names[i];
			d[i].extra[4] = NULL;
		}
		if ((i < NODES ? start_node(i) : hx_start(&d[i])) != 0) {
			bed_fini(&b);
			bail_out("ckptd %d did not start", i);
		}
	}
	/* the watch runs on a thread started inside node 0 */
	dec_ms = calloc((size_t)rounds * 2, sizeof *dec_ms);
	vis_ms = calloc((size_t)rounds * 2, sizeof *vis_ms);
	if ((w = bed_watch(&b, 0, "/ckpt/v1/job/", on_event, NULL)) == NULL)
		bail_out("cannot watch etcd");
	/* two runs each, alternating, each into a root of its own */
	for (i = 0; i < 4; i++) {
		char name[16];

		snprintf(name, sizeof name, "root%d", i);
		hx_path(&d[0], roots[i], "%s", name);
		hx_mkdirs(roots[i]);
	}
	snprintf(root_single, sizeof root_single, "%s", roots[0]);
	s1 = run(1, &f);
	fs += f;
	snprintf(root_multi, sizeof root_multi, "%s", roots[1]);
	m1 = run(0, &f);
	fm += f;
	snprintf(root_multi, sizeof root_multi, "%s", roots[2]);
	m2 = run(0, &f);
	fm += f;
	snprintf(root_single, sizeof root_single, "%s", roots[3]);
	s2 = run(1, &f);
	fs += f;
	multi = (m1 + m2) / 2;
	single = (s1 + s2) / 2;
	diag("medians: 1 daemon %.1f, %.1f ms; 2 nodes %.1f, %.1f ms", s1, s2,
	    m1, m2);
	ok(fm == 0 && fs == 0, "every step committed (%d and %d failures)", fm,
	    fs);
	printf("# %d rounds, 4 ranks x %zu bytes: step save->commit on every "
	    "rank, median: 2 nodes via etcd %.1f ms, 1 daemon %.1f ms, "
	    "coordination +%.1f ms (ratio %.2f)\n", rounds, part_bytes, multi,
	    single, multi - single, single > 0 ? multi / single : 0.0);
	ok(ndec > 0, "the watch saw %d of %d commits", ndec, 2 * rounds);
	if (ndec > 0) {
		double dm, vm, vmax = 0, dmax = 0;

		for (i = 0; i < ndec; i++) {
			if (vis_ms[i] > 50)
				diag("slow round: last part -> commit key %.0f "
				    "ms, -> visible everywhere %.0f ms",
				    dec_ms[i], vis_ms[i]);
			if (vis_ms[i] > vmax)
				vmax = vis_ms[i];
			if (dec_ms[i] > dmax)
				dmax = dec_ms[i];
		}
		diag("last part -> commit key: worst %.1f ms", dmax);
		dm = median(dec_ms, ndec);
		vm = median(vis_ms, ndec);
		printf("# commit overhead, last part durable (its rank key in "
		    "etcd) -> commit key: median %.1f ms; -> commit visible "
		    "on every node (last rank's wait returned): median %.1f "
		    "ms, max %.1f ms (target <= 50 ms)\n", dm, vm, vmax);
	}
	bed_unwatch(w);
	free(dec_ms);
	free(vis_ms);
	for (i = 0; i <= NODES; i++) {
		hx_stop(&d[i]);
		hx_cleanup(&d[i]);
	}
	bed_fini(&b);
	return done_testing();
}
