/*
 * bench_etcd_nodes.c - the cost of committing a distributed step through
 * etcd: 4 ranks (libckpt threads) save steps, split over the daemons of 2
 * nodes (network namespaces, one etcd member) against all 4 on one daemon
 * without --etcd. Each step: every rank saves its part and waits for the
 * commit; the time from the start of the step to the last rank's
 * wait_until_finished returning is measured, median over the rounds, in
 * alternating order.
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

struct rank {
	int index, single;
	char *data;
	int fails;
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

/* Median ms per step of the 4 ranks on 2 nodes (single 0) or 1 daemon. */
static double run(int single, int *fails)
{
	pthread_t th[RANKS];
	struct rank k[RANKS];
	double *ms = calloc((size_t)rounds, sizeof *ms), med;
	int i;

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

		pthread_barrier_wait(&bar);
		t0 = hx_now_ms();
		pthread_barrier_wait(&bar);
		ms[i] = (double)(hx_now_ms() - t0);
	}
	*fails = 0;
	for (i = 0; i < RANKS; i++) {
		pthread_join(th[i], NULL);
		*fails += k[i].fails;
		free(k[i].data);
	}
	pthread_barrier_destroy(&bar);
	qsort(ms, (size_t)rounds, sizeof *ms, cmp_double);
	med = ms[rounds / 2];
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
	for (i = 0; i <= NODES; i++) {
		hx_stop(&d[i]);
		hx_cleanup(&d[i]);
	}
	bed_fini(&b);
	return done_testing();
}
