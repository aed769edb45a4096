/*
 * test_etcd_compact.c - a delete made while a node's watch was away,
 * in a history etcd compacted since, still reaches that node.
 *
 * Two nodes (namespaces), one etcd member on node 0, four ranks, two per
 * node's daemon; a manager held open on each node lists the steps (its
 * root stays loaded: what it lists is what the daemon learned). Steps 1
 * and 2 commit on both nodes. Then node 1's link is cut and the etcd
 * member is killed and started again, so that node 1's watch stream is
 * gone with nothing sent after it; step 1 is deleted through node 0 and
 * etcd's history is compacted past that delete. With the link back,
 * node 1's watch resumes from a compacted revision: its daemon reads the
 * steps' keys again and drops step 1 (its directory gone, its commit no
 * longer in etcd) within 20 s, and still lists step 2. Step 3 then
 * commits on both nodes.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nodes.h"

#define NODES 2
#define RANKS 4

static struct nodes s;
static ckpt_client *lc[NODES];
static ckpt_manager *lm[NODES];

/* The steps node lists, " 1 2", into got; 0 or -1. */
static int
listed(int node, char *got, size_t len)
{
	uint64_t *v = NULL;
	size_t n = 0, i, off = 0;

	got[0] = '\0';
	if (ckpt_all_steps(lm[node], &v, &n) != 0) {
		snprintf(got, len, "error: %s", ckpt_manager_errmsg(lm[node]));
		return -1;
	}
	for (i = 0; i < n && off < len; i++)
		off += (size_t)snprintf(got + off, len - off, " %" PRIu64,
		    v[i]);
	free(v);
	return 0;
}

/* Node lists exactly want within timeout_ms. */
static int
lists_within(int node, const char *want, int timeout_ms, char *got,
    size_t len)
{
	int64_t end = hx_now_ms() + timeout_ms;

	for (;;) {
		if (listed(node, got, len) == 0 && strcmp(got, want) == 0)
			return 1;
		if (hx_now_ms() >= end)
			return 0;
		hx_sleep_ms(50);
	}
}

int main(void)
{
	char got[256];
	int node, found;
	int64_t t0;

	ranks_fill(11);
	nodes_init(&s, NODES, 1, RANKS, 2, 1000);
	for (node = 0; node < NODES; node++)
		ok(hx_connect(&s.d[node], &lc[node]) == 0 &&
		    ckpt_manager_open(lc[node], s.root, NULL, &lm[node]) == 0,
		    "a manager is open on node %d to list the steps", node);
	ok(nodes_step(&s, 1), "step 1 commits on both nodes");
	ok(nodes_step(&s, 2), "step 2 commits on both nodes");
	for (node = 0; node < NODES; node++)
		ok(lists_within(node, " 1 2", 1000, got, sizeof got),
		    "node %d lists steps 1 and 2 (lists%s)", node, got);

	ok(bed_link(&s.b, 1, 0) == 0, "node 1's link is cut");
	ok(bed_kill(&s.b, 0) == 0 && bed_revive(&s.b, 0) == 0 &&
	    bed_leader(&s.b, 10000) >= 0, "the etcd member is killed and "
	    "started again (node 1's watch stream is gone)");
	t0 = hx_now_ms();
	while (ckpt_delete(lm[0], 1) != 0 && hx_now_ms() - t0 < 10000)
		hx_sleep_ms(200);
	ok(lists_within(0, " 2", 5000, got, sizeof got), "step 1 deleted "
	    "through node 0 (lists%s)", got);
	ok(!nodes_step_dir(&s, 1), "step 1's directory is gone");
	ok(bed_compact(&s.b, 0) > 0, "etcd's history is compacted past the "
	    "delete");
	ok(listed(1, got, sizeof got) == 0 && strcmp(got, " 1 2") == 0,
	    "node 1, cut off, still lists step 1 (lists%s)", got);
	ok(bed_link(&s.b, 1, 1) == 0, "node 1's link is back");
	t0 = hx_now_ms();
	found = lists_within(1, " 2", 20000, got, sizeof got);
	ok(found, "node 1 drops step 1 after its watch found the history "
	    "compacted (lists%s, after %" PRId64 " ms)", got,
	    hx_now_ms() - t0);

	s.async_timeout = 10;
	ok(nodes_step(&s, 3), "step 3 commits on both nodes");
	for (node = 0; node < NODES; node++)
		ok(lists_within(node, " 2 3", 2000, got, sizeof got),
		    "node %d lists steps 2 and 3 (lists%s)", node, got);

	for (node = 0; node < NODES; node++) {
		ckpt_manager_close(lm[node]);
		ckpt_disconnect(lc[node]);
	}
	nodes_fini(&s);
	return done_testing();
}
