/*
 * test_etcd_cut.c - a node cut off from the network cannot commit alone.
 *
 * Three nodes (namespaces), an etcd member and a ckptd in each; six
 * ranks, two per node, the primary (rank 0) on node 2, the one that
 * commits. Step 1 commits. For step 2, node 2's ranks hand their parts
 * (durable, published), then node 2's link is cut (its veth down): its
 * member is in a minority, its daemon hears nothing more. Nodes 0 and
 * 1's ranks then hand theirs: the step cannot commit, since only node 2
 * may; once node 2's lease expires in the majority, nodes 0 and 1 fail
 * the step with CKPT_ERANK naming n2, and node 2's ranks fail at their
 * async timeout. Step 2 is listed nowhere and has no step directory; with
 * the link back, step 3 commits on the three nodes.
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "nodes.h"

#define NODES 3
#define RANKS 6

static struct nodes s;

int main(void)
{
	char line[1024];
	int i, all, named, listed;
	int64_t t0;

	ranks_fill(3);
	nodes_init(&s, NODES, 3, RANKS, 2, 1000);
	for (i = 0; i < RANKS; i++)
		s.rank_node[i] = NODES - 1 - i * NODES / RANKS;
	ok(nodes_step(&s, 1), "step 1 commits on 3 nodes");

	s.async_timeout = 4;
	nodes_save(&s, 0, 2, 2);
	nodes_coordination(&s, 2, "step 2: 2 of 6 parts durable", 10000, line,
	    sizeof line);
	has(line, "step 2: 2 of 6 parts durable", "node 2's parts of step 2 "
	    "are durable");
	ok(bed_link(&s.b, 2, 0) == 0, "node 2's link is cut");
	t0 = hx_now_ms();
	nodes_save(&s, 2, RANKS, 2);
	nodes_join(&s, 2, RANKS);
	diag("nodes 0 and 1 gave up after %" PRId64 " ms", hx_now_ms() - t0);
	for (i = 2, all = 1, named = 0; i < RANKS; i++) {
		diag("rank %d: %d %s", i, nodes_rc(&s, i), s.k[i].msg);
		all &= nodes_rc(&s, i) == CKPT_ERANK;
		named += strstr(s.k[i].msg, "n2") != NULL;
	}
	ok(all && named > 0, "the ranks of nodes 0 and 1 get CKPT_ERANK naming "
	    "node n2 once its lease expires");
	nodes_coordination(&s, 2, "unreachable", 3000, line, sizeof line);
	diag("node 2, cut: %s", line);
	nodes_join(&s, 0, 2);
	for (i = 0, all = 1; i < 2; i++) {
		diag("rank %d: %d %s", i, nodes_rc(&s, i), s.k[i].msg);
		all &= nodes_rc(&s, i) != 0;
	}
	ok(all, "node 2's ranks, cut off with every part of their own "
	    "durable, do not commit step 2");
	for (i = listed = 0; i < NODES; i++)
		listed += nodes_listed(&s, i, 2) != 0;
	is_int(listed, 0, "step 2 is listed on no node");
	is_int(nodes_step_dir(&s, 2), 0, "step 2 has no step directory");

	ok(bed_link(&s.b, 2, 1) == 0, "node 2's link is back");
	ok(bed_leader(&s.b, 10000) >= 0, "etcd has a leader");
	s.async_timeout = 0;
	t0 = hx_now_ms();
	ok(nodes_step(&s, 3), "step 3 commits on the 3 nodes");
	diag("step 3 took %" PRId64 " ms", hx_now_ms() - t0);
	for (i = 0; i < NODES; i++) {
		is_int(nodes_listed(&s, i, 3), 1, "node %d's daemon lists step 3",
		    i);
		is_int(nodes_listed(&s, i, 2), 0, "node %d's daemon does not "
		    "list step 2", i);
	}
	nodes_coordination(&s, 2, "(alive", 5000, line, sizeof line);
	has(line, "(alive", "status: node 2's lease is alive again");
	diag("%d entries left in the root", nodes_leftovers(&s));

	nodes_fini(&s);
	return done_testing();
}
