/*
 * test_etcd_decide.c - the nodes of a job save exactly the same steps
 * under a time-based save policy, whatever their clocks say.
 *
 * Two nodes (namespaces) with a ckptd each, one etcd member, four ranks
 * (two per node) whose managers save every 60 s (Continuous, no step
 * interval). The ranks ask for steps 1..STEPS in lockstep, each with the
 * save's test clock: node 0's ranks at 30 s * step, node 1's 35 s ahead
 * on even steps, so that some steps straddle the interval (node 0 would
 * not save, node 1 would). Each daemon alone would then decide its own
 * way and the step would wait for parts that never come; the job's one
 * decision (the first node's to ask, recorded in etcd) makes every rank
 * get the same answer, every step saved commit, and both daemons list
 * the same steps. Either node's ranks ask first, in turns.
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "nodes.h"

#define NODES 2
#define RANKS 4
#define STEPS 10
#define INTERVAL_S 60
#define NS 1000000000ll

static struct nodes s;
static pthread_barrier_t go;
static int64_t base_ns;

struct dr {
	int index;
	int saved[STEPS + 1];           /* -1: the save failed */
	int rc[STEPS + 1];              /* of the save, then of the wait */
	char msg[STEPS + 1][256];
};

static struct dr dr[RANKS];

/* The test clock of node's ranks at step. */
static int64_t
clock_of(int node, int step)
{
	int64_t t = base_ns + (int64_t)step * 30 * NS;

	if (node == 1 && step % 2 == 0)
		t += 35 * NS;
	return t;
}

static void *
rank_main(void *arg)
{
	struct dr *d = arg;
	int node = s.rank_node[d->index], step;
	ckpt_client *c = NULL;
	ckpt_manager *m = NULL;
	ckpt_options *o = ckpt_options_new();
	int opened;

	ckpt_options_set_process_index(o, (uint32_t)d->index);
	ckpt_options_set_process_count(o, RANKS);
	ckpt_options_set_job(o, s.job);
	ckpt_options_set_async_timeout(o, 5);
	ckpt_options_set_save_interval_steps(o, 0);
	ckpt_options_save_policy_add(o, CKPT_SAVE_CONTINUOUS, 0, NULL, 0,
	    INTERVAL_S);
	opened = hx_connect(&s.d[node], &c) == 0 &&
	    ckpt_manager_open(c, s.root, o, &m) == 0;
	if (!opened)
		snprintf(d->msg[0], sizeof d->msg[0], "open: %s", c != NULL ?
		    ckpt_client_errmsg(c) : "connect");
	for (step = 1; step <= STEPS; step++) {
		ckpt_save_args *a = ckpt_save_args_new();
		ckpt_tree *t = ckpt_tree_new();
		int saved = 0;

		pthread_barrier_wait(&go);
		/* Either node asks first, in turns of two steps. */
		if (node == (step / 2) % 2)
			hx_sleep_ms(100);
		d->saved[step] = -1;
		d->rc[step] = CKPT_EINTERNAL;
		if (opened) {
			ranks_add_pieces(t, d->index, RANKS);
			ranks_add_replicated(t, (uint64_t)step);
			ckpt_save_args_add_tree(a, NULL, CKPT_HANDLER_STANDARD,
			    t);
			ckpt_save_args_set_timestamp(a, clock_of(node, step));
			d->rc[step] = ckpt_save(m, (uint64_t)step, a, &saved);
			if (d->rc[step] == 0) {
				d->saved[step] = saved;
				d->rc[step] = ckpt_wait_until_finished(m);
			}
			if (d->rc[step] != 0)
				snprintf(d->msg[step], sizeof d->msg[step],
				    "%s", ckpt_manager_errmsg(m));
		}
		ckpt_save_args_free(a);
		ckpt_tree_free(t);
	}
	ckpt_options_free(o);
	ckpt_manager_close(m);
	ckpt_disconnect(c);
	return NULL;
}

int main(void)
{
	pthread_t th[RANKS];
	int64_t last[NODES] = { -1, -1 };
	int i, step, agree, saved, nsaved = 0, nskipped = 0, straddles = 0;
	int local[NODES], node;

	ranks_fill(9);
	nodes_init(&s, NODES, 1, RANKS, 5, 2000);
	base_ns = (int64_t)time(NULL) * NS;
	pthread_barrier_init(&go, NULL, RANKS);
	for (i = 0; i < RANKS; i++) {
		dr[i].index = i;
		pthread_create(&th[i], NULL, rank_main, &dr[i]);
	}
	for (i = 0; i < RANKS; i++)
		pthread_join(th[i], NULL);

	for (step = 1; step <= STEPS; step++) {
		saved = dr[0].saved[step];
		for (i = 0, agree = 1; i < RANKS; i++) {
			if (dr[i].rc[step] != 0)
				diag("step %d, rank %d: %d %s", step, i,
				    dr[i].rc[step], dr[i].msg[step]);
			agree &= dr[i].rc[step] == 0 &&
			    dr[i].saved[step] == saved;
		}
		/* What each node's policy alone says, given the steps the
		 * job saved so far. */
		for (node = 0; node < NODES; node++)
			local[node] = last[node] < 0 || clock_of(node, step) -
			    last[node] >= INTERVAL_S * NS;
		straddles += local[0] != local[1];
		ok(agree, "step %d: every rank saved it (%d) or skipped it, the "
		    "same on both nodes (node 0 alone: %d, node 1 alone: %d)",
		    step, saved, local[0], local[1]);
		if (saved == 1) {
			nsaved++;
			for (node = 0; node < NODES; node++)
				last[node] = clock_of(node, step);
		} else if (saved == 0) {
			nskipped++;
		}
		for (node = 0; node < NODES; node++)
			is_int(nodes_listed(&s, node, (uint64_t)step),
			    saved == 1, "step %d: node %d's daemon lists it "
			    "if saved", step, node);
		is_int(nodes_step_dir(&s, (uint64_t)step), saved == 1,
		    "step %d: a step directory if saved", step);
	}
	ok(straddles > 0, "%d steps straddled the interval (the nodes alone "
	    "would have decided differently)", straddles);
	ok(nsaved > 0 && nskipped > 0, "%d steps saved, %d skipped", nsaved,
	    nskipped);
	is_int(nodes_leftovers(&s), 0, "nothing left in the root");
	pthread_barrier_destroy(&go);
	nodes_fini(&s);
	return done_testing();
}
