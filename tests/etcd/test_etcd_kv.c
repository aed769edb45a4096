/*
 * test_etcd_kv.c - the etcd client against one real member: keys,
 * prefixes, transactions, leases (kept alive, expired, revoked) and a
 * watch that sees the delete of an expired lease's key.
 *
 * Node 0 runs etcd, the test is a client on node 1.
 */
#include <inttypes.h>
#include <string.h>

#include "bed.h"
#include "etcd.h"
#include "evlog.h"
#include "tap.h"

static void
test_keys(struct etcd *c)
{
	struct etcd_kvs kvs;
	struct etcd_kv old;
	int64_t rev = 0, rev2 = 0, deleted = 0;
	int won = -1, r;
	ckd_err e = { 0 };

	r = etcd_put(c, "/t/kv/a", "one", 3, 0, &rev, &e);
	ok(r == 0 && rev > 0, "put /t/kv/a (rev %" PRId64 ") %s", rev, e.msg);
	ok(etcd_put(c, "/t/kv/b", "", 0, 0, NULL, &e) == 0, "put an empty value");
	ok(etcd_put(c, "/t/kw", "x", 1, 0, NULL, &e) == 0, "put /t/kw");
	ok(etcd_get(c, "/t/kv/a", 0, &kvs, &e) == 0 && kvs.n == 1 &&
	    strcmp(kvs.kv[0].key, "/t/kv/a") == 0 &&
	    kvs.kv[0].value_len == 3 && memcmp(kvs.kv[0].value, "one", 3) == 0 &&
	    kvs.kv[0].mod_revision == rev, "get one key back");
	etcd_kvs_free(&kvs);
	r = etcd_get(c, "/t/kv/", 1, &kvs, &e);
	ok(r == 0 && kvs.n == 2 &&
	    strcmp(kvs.kv[0].key, "/t/kv/a") == 0 &&
	    strcmp(kvs.kv[1].key, "/t/kv/b") == 0 && kvs.kv[1].value_len == 0,
	    "prefix /t/kv/ has a and b, not /t/kw (%zu)", kvs.n);
	etcd_kvs_free(&kvs);
	ok(etcd_get(c, "/t/none", 0, &kvs, &e) == 0 && kvs.n == 0 &&
	    kvs.revision >= rev, "a missing key: no kvs, a revision");
	etcd_kvs_free(&kvs);

	/* Commit once. */
	ok(etcd_create(c, "/t/once", "n1", 2, 0, &won, &rev, NULL, &e) == 0 &&
	    won == 1, "create a new key: won");
	ok(etcd_create(c, "/t/once", "n2", 2, 0, &won, NULL, &old, &e) == 0 &&
	    won == 0 && old.value_len == 2 && memcmp(old.value, "n1", 2) == 0,
	    "create it again: lost, the winner's value is returned");
	etcd_kv_free(&old);

	/* Compare-and-swap on mod_revision. */
	ok(etcd_cas(c, "/t/once", rev, "n3", 2, 0, &won, &rev2, &e) == 0 &&
	    won == 1 && rev2 > rev, "cas at the current revision: swapped");
	ok(etcd_cas(c, "/t/once", rev, "n4", 2, 0, &won, NULL, &e) == 0 &&
	    won == 0, "cas at an old revision: not swapped");
	ok(etcd_cas(c, "/t/cas-new", 0, "v", 1, 0, &won, NULL, &e) == 0 &&
	    won == 1, "cas with 0 creates a missing key");
	ok(etcd_get(c, "/t/once", 0, &kvs, &e) == 0 && kvs.n == 1 &&
	    memcmp(kvs.kv[0].value, "n3", 2) == 0, "the value is the swapped one");
	etcd_kvs_free(&kvs);

	r = etcd_delete(c, "/t/kv/", 1, &deleted, &e);
	ok(r == 0 && deleted == 2,
	    "delete the prefix: 2 keys (%" PRId64 ")", deleted);
	ok(etcd_delete(c, "/t/kv/a", 0, &deleted, &e) == 0 && deleted == 0,
	    "delete a missing key: 0");
	ok(etcd_put(c, "", "x", 1, 0, NULL, &e) == CKPT_EINVAL,
	    "an empty key is refused: %s", e.msg);
}

static void
test_leases(struct etcd *c)
{
	struct etcd_kvs kvs;
	struct etcd_watch *w;
	struct evlog log;
	int64_t lease = 0, lease2 = 0, ttl = 0, t0;
	long idx;
	ckd_err e = { 0 };
	int r;

	evlog_init(&log);
	r = etcd_lease_grant(c, 2, &lease, &e);
	ok(r == 0 && lease != 0, "grant a lease of 2 s: %s", e.msg);
	ok(etcd_put(c, "/t/lease/part", "durable", 7, lease, NULL, &e) == 0,
	    "put a key under it");
	r = etcd_lease_keepalive(c, lease, &ttl, &e);
	ok(r == 0 && ttl == 2,
	    "one keep-alive: TTL %" PRId64, ttl);
	ok(etcd_lease_keep(c, lease, 2, &e) == 0, "keep it alive from a thread");
	w = etcd_watch_start(c, "/t/lease/", 1, 0, evlog_cb, &log, &e);
	ok(w != NULL, "watch /t/lease/ %s", w == NULL ? e.msg : "");

	tap_sleep_ms(5000);
	ok(etcd_get(c, "/t/lease/part", 0, &kvs, &e) == 0 && kvs.n == 1 &&
	    kvs.kv[0].lease == lease, "after 5 s (2.5 TTLs) the key is there");
	etcd_kvs_free(&kvs);
	ok(etcd_lease_kept(c) == 0, "the keeper reports the lease alive");

	/* The node dies: nothing refreshes the lease any more. */
	etcd_lease_unkeep(c);
	t0 = tap_now_ms();
	idx = evlog_wait(&log, "/t/lease/part", ETCD_EVENT_DELETE, 15000);
	ok(idx >= 0, "the watch sees the key deleted when the lease expires "
	    "(after %" PRId64 " ms)", tap_now_ms() - t0);
	ok(etcd_get(c, "/t/lease/part", 0, &kvs, &e) == 0 && kvs.n == 0,
	    "the key is gone");
	etcd_kvs_free(&kvs);
	r = etcd_lease_keepalive(c, lease, NULL, &e);
	ok(r == CKPT_ENOTFOUND, "keep-alive of the expired lease: ENOTFOUND (%s)",
	    e.msg);

	/* The keeper learns that its lease is gone. */
	ok(etcd_lease_keep(c, lease, 2, &e) == 0, "keep the dead lease");
	for (t0 = tap_now_ms(); etcd_lease_kept(c) == 0 &&
	    tap_now_ms() - t0 < 5000;)
		tap_sleep_ms(50);
	ok(etcd_lease_kept(c) == CKPT_ENOTFOUND, "the keeper reports it lost");
	etcd_lease_unkeep(c);

	/* Revoke: the key goes at once. */
	ok(etcd_lease_grant(c, 60, &lease2, &e) == 0, "grant a lease of 60 s");
	ok(etcd_put(c, "/t/lease/other", "v", 1, lease2, NULL, &e) == 0,
	    "put a key under it");
	ok(etcd_lease_revoke(c, lease2, &e) == 0, "revoke it");
	ok(evlog_wait(&log, "/t/lease/other", ETCD_EVENT_DELETE, 5000) >= 0,
	    "the watch sees the delete");
	ok(etcd_lease_revoke(c, lease2, &e) == CKPT_ENOTFOUND,
	    "revoke it again: ENOTFOUND (%s)", e.msg);
	ok(etcd_put(c, "/t/lease/x", "v", 1, lease2, NULL, &e) == CKPT_ENOTFOUND,
	    "put under a revoked lease: ENOTFOUND (%s)", e.msg);
	ok(etcd_watch_reconnects(w) == 0, "the watch stream never broke");
	etcd_watch_stop(w);
	evlog_free(&log);
}

/* Delete a prefix only when nothing under it is newer than a revision. */
static void
test_delete_older(struct etcd *c)
{
	struct etcd_kvs kvs;
	ckd_err e = { 0 };
	int64_t rev_a = 0, rev_b = 0, n = -1;
	int done = -1, r;

	ok(etcd_put(c, "/t/older/s/a", "1", 1, 0, &rev_a, &e) == 0 &&
	    etcd_put(c, "/t/older/idx", "", 0, 0, NULL, &e) == 0,
	    "put a key under a prefix and one beside it");
	ok(etcd_put(c, "/t/older/s/b", "2", 1, 0, &rev_b, &e) == 0 &&
	    rev_b > rev_a, "put a newer key under the prefix");
	ok(etcd_delete_older(c, "/t/older/s/", rev_a, "/t/older/idx", &done,
	    &n, &e) == 0 && done == 0, "delete_older at the first key's "
	    "revision: not done (a newer key)");
	ok(etcd_get(c, "/t/older/", 1, &kvs, &e) == 0 && kvs.n == 3,
	    "all three keys stay (%zu)", kvs.n);
	etcd_kvs_free(&kvs);
	r = etcd_delete_older(c, "/t/older/s/", rev_b, "/t/older/idx", &done,
	    &n, &e);
	ok(r == 0 && done == 1 && n == 2, "delete_older at the newer key's "
	    "revision: done, 2 keys under the prefix (%" PRId64 ")", n);
	ok(etcd_get(c, "/t/older/", 1, &kvs, &e) == 0 && kvs.n == 0,
	    "the prefix and the key beside it are gone (%zu left)", kvs.n);
	etcd_kvs_free(&kvs);
	ok(etcd_delete_older(c, "/t/older/s/", rev_b, NULL, &done, &n,
	    &e) == 0 && done == 1 && n == 0, "on an empty prefix: done, "
	    "nothing deleted");
}

static void
test_bad_endpoints(void)
{
	struct etcd *c = NULL;
	ckd_err e = { 0 };

	ok(etcd_open(&c, "", 1000, &e) == CKPT_EINVAL, "no endpoints: %s", e.msg);
	ok(etcd_open(&c, "10.66.0.1:2379", 1000, &e) == CKPT_EINVAL,
	    "no scheme: %s", e.msg);
	ok(etcd_open(&c, "http://a,,http://b", 1000, &e) == CKPT_EINVAL,
	    "an empty endpoint: %s", e.msg);
	ok(etcd_open(&c, "http://a", 10, &e) == CKPT_EINVAL,
	    "a timeout below 100 ms: %s", e.msg);
}

int
main(void)
{
	struct bed b;
	struct etcd *c = NULL;
	ckd_err e = { 0 };

	if (bed_init(&b, 2) != 0 || bed_etcd_start(&b, 1) != 0) {
		bail_out("cannot set up the test bed (root, ip, etcd-server)");
		bed_fini(&b);
		return 1;
	}
	if (bed_enter(&b, 1) != 0 ||
	    etcd_open(&c, b.endpoints, 3000, &e) != 0) {
		bail_out(e.msg);
		bed_fini(&b);
		return 1;
	}
	test_keys(c);
	test_leases(c);
	test_delete_older(c);
	test_bad_endpoints();
	etcd_close(c);
	bed_enter(&b, -1);
	bed_fini(&b);
	return done_testing();
}
