/*
 * test_etcd_partition.c - a node cut off from the network cannot commit.
 *
 * Three members on nodes 0..2; node 2 also runs a client that talks only
 * to its own member (on its own address, which stays reachable from
 * inside the node), node 3 a client of every member. Cutting node 2's
 * link leaves its member in a minority: the client there cannot complete
 * a txn (ETIMEDOUT or ECONN, the outcome unknown), and the majority
 * never sees its key. The client on node 3, cut off as well, fails in
 * the same way; both work again once the links are back.
 */
#include <inttypes.h>
#include <string.h>

#include "bed.h"
#include "etcd.h"
#include "tap.h"

#define TIMEOUT_MS 2000

static int
try_commit(struct bed *b, int node, const char *eps, const char *key,
    int64_t *ms, ckd_err *e)
{
	struct etcd *c = NULL;
	int won = 0, r;
	int64_t t0;

	if (bed_enter(b, node) != 0)
		return -1;
	if ((r = etcd_open(&c, eps, TIMEOUT_MS, e)) != 0)
		return r;
	t0 = tap_now_ms();
	r = etcd_create(c, key, "x", 1, 0, &won, NULL, NULL, e);
	*ms = tap_now_ms() - t0;
	etcd_close(c);
	if (r == 0 && !won)
		r = CKPT_EEXIST;
	return r;
}

/* Is key in the majority's store? */
static int
majority_has(struct bed *b, const char *key)
{
	struct etcd *c = NULL;
	struct etcd_kvs kvs = { 0 };
	char eps[128];
	ckd_err e;
	int r = -1;

	bed_enter(b, 0);
	snprintf(eps, sizeof(eps), "http://10.66.0.1:2379,http://10.66.0.2:2379");
	if (etcd_open(&c, eps, 5000, &e) == 0 && etcd_get(c, key, 0, &kvs, &e) == 0)
		r = kvs.n > 0;
	etcd_kvs_free(&kvs);
	etcd_close(c);
	return r;
}

int
main(void)
{
	struct bed b;
	ckd_err e = { 0 };
	int64_t ms = 0;
	int r;

	if (bed_init(&b, 4) != 0 || bed_etcd_start(&b, 3) != 0) {
		bail_out("cannot set up the test bed (root, ip, etcd-server)");
		bed_fini(&b);
		return 1;
	}
	r = try_commit(&b, 2, "http://10.66.0.3:2379", "/p/before", &ms, &e);
	ok(r == 0, "node 2 commits through its own member while connected: %s",
	    e.msg);
	r = try_commit(&b, 3, b.endpoints, "/p/before3", &ms, &e);
	ok(r == 0, "node 3 commits while connected: %s", e.msg);

	bed_enter(&b, -1);
	ok(bed_link(&b, 2, 0) == 0 && bed_link(&b, 3, 0) == 0,
	    "cut nodes 2 and 3");
	/* Node 2's member notices the leader is gone after an election
	 * timeout; the call fails either way. */
	r = try_commit(&b, 2, "http://10.66.0.3:2379", "/p/cut2", &ms, &e);
	ok(r == CKPT_ETIMEDOUT || r == CKPT_ECONN,
	    "node 2 (minority member) cannot commit: %s (%s)",
	    err_code_name(r) ? err_code_name(r) : "0", e.msg);
	ok(ms <= TIMEOUT_MS + 1500, "it fails within the timeout (%" PRId64
	    " ms)", ms);
	r = try_commit(&b, 3, b.endpoints, "/p/cut3", &ms, &e);
	ok(r == CKPT_ETIMEDOUT || r == CKPT_ECONN,
	    "node 3 cannot commit: %s (%s)",
	    err_code_name(r) ? err_code_name(r) : "0", e.msg);
	ok(ms <= TIMEOUT_MS + 1500, "it fails within the timeout (%" PRId64
	    " ms)", ms);
	ok(majority_has(&b, "/p/cut2") == 0, "the majority has no key of node 2");
	ok(majority_has(&b, "/p/cut3") == 0, "the majority has no key of node 3");
	ok(majority_has(&b, "/p/before") == 1, "the majority has the key "
	    "committed before the cut");

	bed_enter(&b, -1);
	ok(bed_link(&b, 2, 1) == 0 && bed_link(&b, 3, 1) == 0,
	    "restore the links");
	/* The member of node 2 catches up with the leader (an election
	 * timeout or two); the client's timeout covers it or we ask again. */
	{
		int64_t end = tap_now_ms() + 20000;

		do
			r = try_commit(&b, 2, "http://10.66.0.3:2379", "/p/after",
			    &ms, &e);
		while (r != 0 && r != CKPT_EEXIST && tap_now_ms() < end);
	}
	ok(r == 0 || r == CKPT_EEXIST, "node 2 commits again: %s", e.msg);
	r = try_commit(&b, 3, b.endpoints, "/p/after3", &ms, &e);
	ok(r == 0, "node 3 commits again: %s", e.msg);
	bed_enter(&b, -1);
	bed_fini(&b);
	return done_testing();
}
