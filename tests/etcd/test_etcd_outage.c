/*
 * test_etcd_outage.c - etcd cannot be reached while a step is saved.
 *
 * Two nodes (namespaces), a daemon on each, one etcd member on node 0;
 * four ranks, two per node. Step 1 commits. Then etcd stops (its only
 * member is SIGKILLed): the ranks saving step 2 get a clear error (etcd
 * named, CKPT_ECONN or CKPT_ETIMEDOUT) within a few --etcd-timeout; step
 * 2 is listed nowhere and has no step directory; the daemons keep serving
 * and say the lease's etcd is unreachable. etcd starts again on its data:
 * the daemons recover and step 3 commits on both nodes.
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "nodes.h"

#define NODES 2
#define RANKS 4
#define TIMEOUT_MS 1000

static struct nodes s;

int main(void)
{
	char line[1024];
	int i, clear, listed;
	int64_t t0, el;

	ranks_fill(5);
	nodes_init(&s, NODES, 1, RANKS, 2, TIMEOUT_MS);
	ok(nodes_step(&s, 1), "step 1 commits on 2 nodes");

	bed_kill(&s.b, 0);
	t0 = hx_now_ms();
	nodes_save(&s, 0, RANKS, 2);
	nodes_join(&s, 0, RANKS);
	el = hx_now_ms() - t0;
	for (i = 0, clear = 1; i < RANKS; i++) {
		int rc = nodes_rc(&s, i);

		diag("rank %d: %d %s", i, rc, s.k[i].msg);
		clear &= (rc == CKPT_ECONN || rc == CKPT_ETIMEDOUT ||
		    rc == CKPT_ERANK) && strstr(s.k[i].msg, "etcd") != NULL;
	}
	ok(clear, "etcd down: every rank's save of step 2 fails with an error "
	    "that names etcd");
	ok(el < 6 * TIMEOUT_MS + 2000, "within a few --etcd-timeout (%" PRId64
	    " ms)", el);
	for (i = listed = 0; i < NODES; i++)
		listed += nodes_listed(&s, i, 2) != 0;
	is_int(listed, 0, "step 2 is listed on no node");
	is_int(nodes_step_dir(&s, 2), 0, "step 2 has no step directory");
	is_int(nodes_listed(&s, 1, 1), 1, "node 1's daemon still serves "
	    "(lists step 1)");
	nodes_coordination(&s, 0, "(etcd unreachable", 5000, line,
	    sizeof line);
	diag("node 0: %s", line);
	has(line, "(etcd unreachable", "status: node 0's lease cannot be "
	    "kept: etcd unreachable");

	ok(bed_revive(&s.b, 0) == 0 && bed_leader(&s.b, 10000) == 0,
	    "etcd starts again on its data");
	t0 = hx_now_ms();
	ok(nodes_step(&s, 3), "with etcd back, step 3 commits");
	diag("step 3 took %" PRId64 " ms", hx_now_ms() - t0);
	for (i = 0; i < NODES; i++)
		is_int(nodes_listed(&s, i, 3), 1, "node %d's daemon lists step 3",
		    i);
	is_int(nodes_listed(&s, 1, 2), 0, "step 2 is still not listed");
	nodes_coordination(&s, 0, "(alive", 5000, line, sizeof line);
	has(line, "(alive", "status: node 0's lease is alive again");

	/* etcd goes away in the middle of step 4: node 1's parts are
	 * durable and published, node 0 (the primary's) has not begun. */
	s.async_timeout = 3;
	nodes_save(&s, 2, RANKS, 4);
	nodes_coordination(&s, 1, "step 4: 2 of 4 parts durable", 10000, line,
	    sizeof line);
	has(line, "step 4: 2 of 4 parts durable", "node 1's parts of step 4 "
	    "are durable");
	bed_kill(&s.b, 0);
	nodes_save(&s, 0, 2, 4);
	nodes_join(&s, 0, RANKS);
	for (i = 0, clear = 1; i < RANKS; i++) {
		diag("rank %d: %d %s", i, nodes_rc(&s, i), s.k[i].msg);
		clear &= nodes_rc(&s, i) != 0;
	}
	ok(clear, "etcd down mid-step: step 4 fails on every rank");
	for (i = listed = 0; i < NODES; i++)
		listed += nodes_listed(&s, i, 4) != 0;
	is_int(listed, 0, "step 4 is listed on no node");
	is_int(nodes_step_dir(&s, 4), 0, "step 4 has no step directory");
	ok(bed_revive(&s.b, 0) == 0 && bed_leader(&s.b, 10000) == 0,
	    "etcd starts again");
	s.async_timeout = 0;
	ok(nodes_step(&s, 5), "step 5 commits");
	for (i = 0; i < NODES; i++) {
		is_int(nodes_listed(&s, i, 5), 1, "node %d's daemon lists step 5",
		    i);
		is_int(nodes_listed(&s, i, 4), 0, "node %d's daemon does not "
		    "list step 4", i);
	}
	diag("%d entries left in the root (tmp dirs of the failed steps)",
	    nodes_leftovers(&s));

	nodes_fini(&s);
	return done_testing();
}
